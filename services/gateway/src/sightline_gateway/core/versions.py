"""Model versions: which version a study gets, and where a version's evaluation report lives.

A tenant's studies go to a model's serving version; with a candidate under trial, a canary
share of them get the candidate's result instead (the result names the version), and with
shadow on, the candidate also scores every study silently. Which studies are canaries is a
keyed hash of the study id, so a study keeps its assignment across retries and replicas, and
the share of studies over any large set is the configured share.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sightline_common.errors import InvalidInput, NotFound

#: Reports are looked for at ``evaluation/<version>/evaluation.json`` first, then at the model's
#: ``evaluation/evaluation.json`` when that one is of the version asked for.
REPORT_NAME = "evaluation.json"


#: The ``model_versions`` key that applies to every tenant without an entry for the model.
DEFAULT_TENANT = "*"


@dataclass(frozen=True)
class VersionPolicy:
    """One tenant's versions of one model (gateway setting ``model_versions``)."""

    serving: int | None = None  # pinned; None: the promoted version
    candidate: int | None = None
    shadow: bool = False
    canary_share: float = 0.0


@dataclass(frozen=True)
class StudyVersions:
    """What one study gets from one model: the version whose result it is, and a shadow version."""

    serving: int
    result_version: int
    canary: bool
    shadow_version: int | None

    def as_dict(self) -> dict[str, int | bool | None]:
        return {
            "serving": self.serving,
            "result_version": self.result_version,
            "canary": self.canary,
            "shadow_version": self.shadow_version,
        }


def canary_point(key: str, model: str, study_id: str) -> float:
    """A study's point in [0, 1): HMAC-SHA256 of (model, study id) under ``key``."""
    digest = hmac.new(key.encode(), f"{model}\x00{study_id}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def versions_for(
    policy: VersionPolicy | None, promoted: int, *, key: str, model: str, study_id: str
) -> StudyVersions:
    """The versions a study gets; the canary (not the shadow) when both would apply.

    ``promoted``: the version serving platform-wide (the last promotion, else the manifest's),
    which a tenant's ``serving`` pin overrides.
    """
    serving = policy.serving if policy is not None and policy.serving is not None else promoted
    cand = policy.candidate if policy is not None else None
    if policy is None or cand is None or cand == serving:
        return StudyVersions(serving, serving, False, None)
    if policy.canary_share > 0 and canary_point(key, model, study_id) < policy.canary_share:
        return StudyVersions(serving, cand, True, None)
    return StudyVersions(serving, serving, False, cand if policy.shadow else None)


class VersionPlanner:
    """Each tenant's version policy per model: the tenant's own entry for the model, else ``*``'s."""

    def __init__(self, policies: Mapping[str, Mapping[str, VersionPolicy]], key: str) -> None:
        self.policies, self.key = policies, key

    def policy(self, tenant: str, model: str) -> VersionPolicy | None:
        own = self.policies.get(tenant, {}).get(model)
        return own if own is not None else self.policies.get(DEFAULT_TENANT, {}).get(model)

    def plan(self, tenant: str, model: str, study_id: str, promoted: int) -> StudyVersions:
        return versions_for(
            self.policy(tenant, model), promoted, key=self.key, model=model, study_id=study_id
        )


def version_dir(repository: Path, model: str, version: int) -> Path:
    """The version's directory, refused (not found) when the repository has none."""
    path = repository / model / str(version)
    if not path.is_dir():
        raise NotFound(f"model {model} has no version {version} in the repository")
    return path


def report_path(repository: Path, model: str, version: int) -> Path:
    """Where the version's evaluation report is; invalid input when it has none."""
    per_version = repository / model / "evaluation" / str(version) / REPORT_NAME
    if per_version.is_file():
        return per_version
    shared = repository / model / "evaluation" / REPORT_NAME
    if shared.is_file():
        return shared
    raise InvalidInput(f"model {model} version {version} has no evaluation report (run sightline evaluate)")


def manifest_path(repository: Path, model: str, version: int) -> Path | None:
    """The version's own manifest (``<version>/manifest.json``), else the model's; None without."""
    for path in (repository / model / str(version) / "manifest.json", repository / model / "manifest.json"):
        if path.is_file():
            return path
    return None
