"""Which models a study goes to, decided from its DICOM header alone, before anything is stored.

Each model's manifest declares what it accepts (``PreprocessSpec``: modalities, SOP classes,
body parts, photometric interpretations, minimum size); each tenant has models enabled. A
study goes to the enabled models that accept every one of its instances, in the order the
models are served. Refusals name the rule that refused, never a value read from the study.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import Counter
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from sightline_common.errors import InvalidInput, NoModelAccepts, NotFound
from sightline_common.manifest import ModelManifest, PreprocessSpec

from sightline_gateway.core.manifests import ManifestCache

log = logging.getLogger(__name__)

#: The routing rules, in the order they are checked; a refusal names the first one that fails.
MODALITY = "modality"
SOP_CLASS = "sop-class"
BODY_PART = "body-part"
PHOTOMETRIC = "photometric-interpretation"
MIN_SIZE = "minimum-size"
NOT_ENABLED = "not-enabled-for-tenant"

#: Studies (REST) and instances (STOW-RS) by the model routing sent them to, ``none`` when no
#: enabled model accepted them: what hospitals send that no model takes.
ROUTED = Counter(
    "sightline_routing_decisions",
    "Studies (REST) and STOW-RS instances routed, by model; model none: refused before storage",
    ["model"],
)
REFUSED = "none"

#: The audit trail's record of a refusal (REST study or STOW-RS request): the caller is the
#: event's actor, roles and tenant; ``resource_id`` holds :func:`refusal_codes` (model names,
#: rule codes and counts, never a value read from the study).
REFUSAL_ACTION = "study.refused"
REFUSAL_RESOURCE = "routing"
REFUSAL_OUTCOME = "refused"
#: The codes of a refusal when no model is served at all.
NONE_SERVED = "no-model-served"
_RESOURCE_ID_MAX = 200  # audit_events.resource_id

#: How many of the accepting models a study is run on (in served order): every one of them, up
#: to this bound; each gives the study a result of its own.
SERVED_PER_STUDY = 8

#: The ``models_enabled`` key that applies to every tenant without its own entry.
DEFAULT_TENANT = "*"

_TAGS = ["SOPClassUID", "Modality", "BodyPartExamined", "PhotometricInterpretation", "Rows", "Columns"]
#: The identifiers the result forwarder needs to file results back (``core.reidentify``): read in
#: the same pass, kept only in memory until sealed in the tenant's re-identification record.
_IDENTITY_TAGS = [
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "PatientID",
    "IssuerOfPatientID",
    "AccessionNumber",
]


@dataclass(frozen=True, repr=False)
class Identifiers:
    """An instance's original identifiers as received (PHI: in memory only, never logged)."""

    study_uid: str = ""
    series_uid: str = ""
    sop_uid: str = ""
    patient_id: str = ""
    issuer: str = ""
    accession: str = ""

    def __repr__(self) -> str:
        return "Identifiers(<withheld>)"


@dataclass(frozen=True)
class Header:
    """The attributes of one instance that routing reads (held in memory only, never logged).

    ``identity``: the instance's original identifiers, for its tenant's re-identification record
    only; out of ``repr`` so that no log or error message can show them.
    """

    sop_class: str
    modality: str
    body_part: str = ""
    photometric: str = ""
    rows: int = 0
    columns: int = 0
    identity: Identifiers = field(default_factory=Identifiers, repr=False, compare=False)


def read_header(data: bytes) -> Header:
    """The routing attributes of a DICOM instance as received (no pixel data is read)."""
    try:
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=_TAGS + _IDENTITY_TAGS)
        header = Header(
            sop_class=str(ds.get("SOPClassUID", "") or ""),
            modality=str(ds.get("Modality", "") or "").strip().upper(),
            body_part=str(ds.get("BodyPartExamined", "") or "").strip().upper(),
            photometric=str(ds.get("PhotometricInterpretation", "") or "").strip().upper(),
            rows=int(ds.get("Rows", 0) or 0),
            columns=int(ds.get("Columns", 0) or 0),
            identity=Identifiers(
                study_uid=str(ds.get("StudyInstanceUID", "") or ""),
                series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
                sop_uid=str(ds.get("SOPInstanceUID", "") or ""),
                patient_id=str(ds.get("PatientID", "") or ""),
                issuer=str(ds.get("IssuerOfPatientID", "") or ""),
                accession=str(ds.get("AccessionNumber", "") or ""),
            ),
        )
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, OSError, AttributeError):
        raise InvalidInput("the DICOM header cannot be read") from None
    if not header.sop_class:
        raise InvalidInput("the DICOM header has no SOPClassUID")
    return header


def refusing_rule(spec: PreprocessSpec, header: Header) -> str | None:
    """The first rule of ``spec`` that ``header`` fails, ``None`` when the model accepts it."""
    if header.modality.upper() not in {m.upper() for m in spec.accepted_modalities}:
        return MODALITY
    if header.sop_class not in spec.accepted_sop_classes:
        return SOP_CLASS
    if spec.accepted_body_parts is not None and header.body_part.upper() not in {
        b.upper() for b in spec.accepted_body_parts
    }:
        return BODY_PART
    if spec.accepted_photometric_interpretations is not None and header.photometric.upper() not in {
        p.upper() for p in spec.accepted_photometric_interpretations
    }:
        return PHOTOMETRIC
    if header.rows < spec.min_rows or header.columns < spec.min_columns:
        return MIN_SIZE
    return None


@dataclass(frozen=True)
class Route:
    """The models that accept a study (served order), or why none does (model -> rule)."""

    models: tuple[str, ...]
    refusals: Mapping[str, str]

    @property
    def accepted(self) -> bool:
        return bool(self.models)

    def reason(self) -> str:
        """Why no model takes the study: each model and the rule that refused (no study values)."""
        if not self.refusals:
            return "no model is served"
        return "no enabled model accepts this study: " + ", ".join(
            f"{name} ({rule})" for name, rule in self.refusals.items()
        )

    def error(self) -> NoModelAccepts:
        return NoModelAccepts(self.reason(), refused_by=dict(self.refusals))

    def codes(self) -> str:
        """The refusal as the audit trail keeps it: ``model=rule;...`` (see :func:`refusal_codes`)."""
        return refusal_codes({name: [rule] for name, rule in self.refusals.items()})


def refusal_codes(rules: Mapping[str, Collection[str]], refused: tuple[int, int] | None = None) -> str:
    """A refusal for the audit trail: ``[refused=N/M;]model=rule[+rule];...``, at most 200 characters.

    ``rules``: each model (served order) and the rule codes that refused; ``refused``: (refused,
    received) instances of a STOW-RS request. Only served model names, the rule codes of this
    module and counts: never a value read from the study.
    """
    sections = [f"refused={refused[0]}/{refused[1]}"] if refused is not None else []
    sections += [f"{name}={'+'.join(sorted(set(codes)))}" for name, codes in rules.items() if codes]
    if len(sections) == (refused is not None):
        sections.append(NONE_SERVED)
    text = ";".join(sections)
    return text if len(text) <= _RESOURCE_ID_MAX else text[: _RESOURCE_ID_MAX - 3] + "..."


def route(headers: Sequence[Header], manifests: Mapping[str, ModelManifest], enabled: Sequence[str]) -> Route:
    """The models among ``manifests`` (served, in order) enabled for the tenant that accept every instance.

    ``enabled``: the tenant's enabled model names. A model refuses a study when it refuses any of
    its instances; the refusal names the first rule that failed for the first instance refused.
    """
    models: list[str] = []
    refusals: dict[str, str] = {}
    for name, manifest in manifests.items():
        if name not in enabled:
            refusals[name] = NOT_ENABLED
            continue
        rule = next(
            (r for r in (refusing_rule(manifest.preprocessing, h) for h in headers) if r is not None), None
        )
        if rule is None:
            models.append(name)
        else:
            refusals[name] = rule
    return Route(tuple(models), refusals)


class Router:
    """Routing with this gateway's served models, their manifests and each tenant's enabled models."""

    def __init__(
        self,
        manifests: ManifestCache,
        served: Sequence[str],
        enabled: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.manifests, self.served, self.enabled = manifests, list(served), dict(enabled or {})

    def enabled_for(self, tenant: str) -> list[str]:
        """The tenant's models: its own entry, else the ``*`` entry, else every served model."""
        names = self.enabled.get(tenant, self.enabled.get(DEFAULT_TENANT, self.served))
        return [n for n in self.served if n in names]

    def served_manifests(self) -> dict[str, ModelManifest]:
        """Served models with a readable manifest, in served order (one without cannot be routed to)."""
        found = {}
        for name in self.served:
            try:
                found[name] = self.manifests.get(name)
            except (NotFound, OSError, ValueError):
                log.warning("model %s has no readable manifest: no study is routed to it", name)
        return found

    def route(self, tenant: str, headers: Sequence[Header]) -> Route:
        return route(headers, self.served_manifests(), self.enabled_for(tenant))
