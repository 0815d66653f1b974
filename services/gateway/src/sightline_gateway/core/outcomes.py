"""Confirmed diagnoses (outcomes): the shipped code table, the JSON body, and FHIR parsing.

An outcome says what a lesion turned out to be (a SNOMED CT or ICD-O-3 code, confirmed by e.g.
histopathology on a date). The code table (``resources/outcome_codes.json``) maps each accepted
code to the model's label; a code outside it is refused, never guessed. Error messages name the
field at fault, never the value sent.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from importlib import resources
from typing import Any, Literal

import pydicom
import pydicom.errors
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sightline_common.errors import InvalidInput, UnprocessableInput

from sightline_gateway.core.review import age_band, parse_dicom_age

CodeSystem = Literal["snomed", "icdo3"]
Method = Literal["histopathology", "cytology", "clinical-follow-up"]
METHODS: tuple[str, ...] = ("histopathology", "cytology", "clinical-follow-up")
#: HL7 v2 table 0074 diagnostic service sections of a pathology DiagnosticReport.
FHIR_SECTIONS = {"SP": "histopathology", "PAT": "histopathology", "CP": "cytology"}
FINAL_STATUSES = frozenset({"final", "amended", "corrected"})
_SITE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")


@dataclass(frozen=True)
class CodeTable:
    """Accepted diagnosis codes: (system, code) -> model label; FHIR system URIs -> system."""

    version: str
    labels: dict[tuple[str, str], str]
    uris: dict[str, str]

    def label(self, system: str, code: str) -> str:
        """The model label of a code, else 422 saying which part is unknown."""
        if system not in self.uris.values():
            raise UnprocessableInput(
                "code_system is not one of the accepted systems",
                fields=["code_system"],
                accepted=sorted(self.uris.values()),
            )
        label = self.labels.get((system, code))
        if label is None:
            raise UnprocessableInput(
                "code is not in Sightline's outcome code table (see GET /v1/outcome-codes)",
                fields=["code"],
                table_version=self.version,
            )
        return label


@cache
def code_table() -> CodeTable:
    """The shipped table (``resources/outcome_codes.json``)."""
    raw = json.loads(
        resources.files("sightline_gateway").joinpath("resources/outcome_codes.json").read_text()
    )
    return CodeTable(
        version=str(raw["version"]),
        labels={(c["system"], c["code"]): c["label"] for c in raw["codes"]},
        uris={uri: key for key, uri in raw["systems"].items()},
    )


def code_rows() -> list[dict[str, str]]:
    """The table's rows as shipped (for ``GET /v1/outcome-codes``)."""
    raw = json.loads(
        resources.files("sightline_gateway").joinpath("resources/outcome_codes.json").read_text()
    )
    return list(raw["codes"])


class OutcomeIn(BaseModel):
    """A confirmed diagnosis for one study's lesion."""

    model_config = ConfigDict(extra="forbid")

    code_system: CodeSystem = Field(description="snomed (SNOMED CT) or icdo3 (ICD-O-3 morphology)")
    code: str = Field(min_length=1, max_length=20, pattern=r"^[0-9]{4,18}(/[0-9])?$")
    method: Method = Field(description="how the diagnosis was confirmed")
    diagnosed_on: date = Field(description="date of the confirming report")
    site: str | None = Field(
        default=None, max_length=64, description="the tenant's site (clinic) that saw the patient"
    )


@dataclass(frozen=True)
class Confirmed:
    """A validated outcome: the body's fields plus its label and whether that is the positive class."""

    code_system: str
    code: str
    method: str
    diagnosed_on: date
    site: str
    label: str
    positive: bool
    source: str


def confirm(
    body: OutcomeIn, positive_label: str, source: str = "json", today: date | None = None
) -> Confirmed:
    """Check a body against the table and the calendar; 422 with the field at fault otherwise."""
    label = code_table().label(body.code_system, body.code)
    if body.diagnosed_on > (today or datetime.now(UTC).date()):
        raise UnprocessableInput("diagnosed_on is in the future", fields=["diagnosed_on"])
    if body.site is not None and not _SITE.match(body.site):
        raise UnprocessableInput("site must be a short code (letters, digits, . _ -)", fields=["site"])
    return Confirmed(
        code_system=body.code_system,
        code=body.code,
        method=body.method,
        diagnosed_on=body.diagnosed_on,
        site=body.site or "unspecified",
        label=label,
        positive=label == positive_label,
        source=source,
    )


def _coding(concepts: list[Any], field: str) -> tuple[str, str]:
    table = code_table()
    for concept in concepts:
        for coding in concept.coding or []:
            if coding.system in table.uris and coding.code:
                return table.uris[coding.system], str(coding.code)
    raise UnprocessableInput(
        f"{field} has no coding in an accepted system", fields=[field], accepted=sorted(table.uris)
    )


def _fhir_date(value: Any, field: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}", value):
        return date.fromisoformat(value[:10])
    raise UnprocessableInput(f"{field} must be a full date", fields=[field])


def outcome_from_fhir(resource: dict[str, Any]) -> OutcomeIn:
    """An Observation (diagnosis in ``valueCodeableConcept``, ``method``) or a pathology
    DiagnosticReport (``conclusionCode``, ``category`` SP/PAT/CP) as an :class:`OutcomeIn`."""
    kind = resource.get("resourceType")
    try:
        if kind == "Observation":
            obs = Observation.model_validate(resource)
            status = obs.status
            if obs.valueCodeableConcept is None:
                raise UnprocessableInput(
                    "Observation needs valueCodeableConcept", fields=["valueCodeableConcept"]
                )
            system, code = _coding([obs.valueCodeableConcept], "valueCodeableConcept")
            when = _fhir_date(obs.effectiveDateTime, "effectiveDateTime")
            method = None
            if obs.method is not None:
                names = [c.code for c in obs.method.coding or []] + [obs.method.text]
                method = next((m for m in names if m in METHODS), None)
            if method is None:
                raise UnprocessableInput(f"method must name one of {', '.join(METHODS)}", fields=["method"])
        elif kind == "DiagnosticReport":
            report = DiagnosticReport.model_validate(resource)
            status = report.status
            system, code = _coding(list(report.conclusionCode or []), "conclusionCode")
            when = _fhir_date(report.effectiveDateTime or report.issued, "effectiveDateTime")
            sections = [c.code for cat in report.category or [] for c in cat.coding or []]
            method = next((FHIR_SECTIONS[s] for s in sections if s in FHIR_SECTIONS), None)
            if method is None:
                raise UnprocessableInput(
                    "category must be a pathology section (SP, PAT or CP)", fields=["category"]
                )
        else:
            raise InvalidInput(
                "resourceType must be Observation or DiagnosticReport", fields=["resourceType"]
            )
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors()})
        raise InvalidInput(f"invalid FHIR {kind}", fields=fields[:20]) from None
    if status not in FINAL_STATUSES:
        raise UnprocessableInput("status must be final, amended or corrected", fields=["status"])
    try:
        return OutcomeIn(code_system=system, code=code, method=method, diagnosed_on=when)  # type: ignore[arg-type]
    except ValidationError:
        raise UnprocessableInput("code is not in Sightline's outcome code table", fields=["code"]) from None


def subgroup_of(dicom: bytes | None) -> dict[str, str]:
    """Sex and age band from a de-identified image (``unknown`` when absent or unreadable)."""
    unknown = {"sex": "unknown", "age_band": "unknown"}
    if dicom is None:
        return unknown
    try:
        ds = pydicom.dcmread(io.BytesIO(dicom), stop_before_pixels=True)
    except (pydicom.errors.InvalidDicomError, OSError, ValueError):
        return unknown
    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    return {
        "sex": sex if sex in ("F", "M") else "unknown",
        "age_band": age_band(parse_dicom_age(str(ds.get("PatientAge", "") or ""))),
    }
