"""The models in the repository: manifests and model cards."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from sightline_common.errors import NotFound

from sightline_gateway.api.deps import GW, Caller
from sightline_gateway.api.problems import ERRORS
from sightline_gateway.api.schemas import ModelDetail, ModelSummary

router = APIRouter()


@router.get("/models", response_model=list[ModelSummary], tags=["models"], responses=ERRORS)
async def list_models(gw: GW, who: Caller) -> list[ModelSummary]:
    """The models in the repository (name, version, whether a placeholder, whether your studies reach it)."""
    repo = gw.settings.model_repository
    router = gw.pipeline.router
    enabled = set(router.enabled_for(who.tenant))
    out = []
    for path in sorted(repo.glob("*/manifest.json")) if repo.is_dir() else []:
        m = gw.manifest(path.parent.name)
        if m is not None:
            out.append(
                ModelSummary(
                    name=m.name,
                    version=m.version,
                    placeholder=m.placeholder,
                    labels=m.labels,
                    threshold=m.threshold,
                    intended_use=m.intended_use,
                    served=m.name in router.served,
                    enabled=m.name in enabled,
                )
            )
    await gw.record(who, "model.list", "model", None)
    return out


@router.get("/models/{name}", response_model=ModelDetail, tags=["models"], responses=ERRORS)
async def get_model(
    name: Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")], gw: GW, who: Caller
) -> ModelDetail:
    """A model's manifest and model card."""
    m = gw.manifest(name)
    if m is None:
        raise NotFound("model not found")
    card = gw.settings.model_repository / name / "MODEL_CARD.md"
    await gw.record(who, "model.read", "model", name)
    return ModelDetail(
        manifest=m.model_dump(mode="json"), model_card=card.read_text() if card.is_file() else None
    )
