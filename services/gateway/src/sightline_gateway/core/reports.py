"""A study's stored results as JSON and FHIR (DiagnosticReport + Observation + Device); the DICOM
SR (TID 1500) is ``core.sr``, from the same wording.

A study routed to several models has one result per model, in routing order: the JSON lists a
finding per model (its top level stays the first model's, as for a single-model study), FHIR
has one Observation and Device per model, and the SR one measurement group per model.

Every form says the same three things: the model and its digest, the calibrated probability
against the operating threshold, and that the finding is assistive and preliminary until a
clinician reviews it. For a model with an out-of-scope score, each form also says whether an
image was flagged as unlike the model's training data (and then warns in words).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydicom.uid import Comprehensive3DSRStorage
from sightline_common.manifest import ModelManifest

ASSISTIVE_STATEMENT = (
    "Sightline assists clinicians; it does not diagnose. This probability must be reviewed by a "
    "qualified clinician before any clinical decision."
)
REFER = "refer for clinician review"
NO_REFER = "no referral suggested by the model (clinician review still required)"
PLACEHOLDER_NOTE = "PLACEHOLDER MODEL (untrained weights): not for any clinical use."
OUT_OF_SCOPE_NOTE = (
    "OUT OF SCOPE: at least one image is unlike the images this model was trained and evaluated on "
    "(another modality, a non-dermoscopic photograph, a blurred or badly exposed image, or an unseen "
    "device). Do not rely on this probability; review the image itself."
)


OUT_OF_SCOPE_FLAG = "out of scope: unlike the training images"


def out_of_scope_summary(result: Any) -> dict[str, Any] | None:
    """Whether any instance was flagged, which, the highest score and the threshold; None when the
    result carries no out-of-scope assessment (a model without the score, an older result)."""
    entries = [
        (int(i.get("index", n)), i["out_of_scope"])
        for n, i in enumerate(result.instances or [])
        if isinstance(i, dict) and isinstance(i.get("out_of_scope"), dict)
    ]
    if not entries:
        return None
    flagged = [n for n, e in entries if e.get("flagged")]
    return {
        "flagged": bool(flagged),
        "flagged_instances": flagged,
        "max_score": max(float(e["score"]) for _, e in entries),
        "threshold": entries[0][1]["threshold"],
    }


def model_card_link(model_name: str) -> str:
    """The gateway's page of a model's manifest and card."""
    return f"/v1/models/{model_name}"


def finding(result: Any, manifest: ModelManifest | None, links: dict[str, str]) -> dict[str, Any]:
    """One model's result as JSON: the model, its probability against its threshold, the decision,
    the explanation (with its links) and the out-of-scope flag when the model has one."""
    explanation = dict(result.explanation or {})
    explanation.pop("heatmap_key", None)
    explanation.pop("overlay_key", None)
    if links:
        explanation["links"] = links
    body: dict[str, Any] = {
        "model": {
            "name": result.model_name,
            "version": result.model_version,
            "sha256": result.model_sha256,
            "placeholder": result.placeholder,
            "positive_label": manifest.positive_label if manifest else None,
        },
        "status": result.status,
        "probability": round(result.probability, 6),
        "calibrated": True,
        "threshold": result.threshold,
        "decision": REFER if result.refer else NO_REFER,
        "refer": result.refer,
        "instances": [{k: v for k, v in i.items() if k != "image_stats"} for i in result.instances],
        "explanation": explanation or None,
        "model_card": model_card_link(result.model_name),
    }
    if result.placeholder:
        body["warning"] = PLACEHOLDER_NOTE
    scope = out_of_scope_summary(result)
    if scope is not None:
        body["out_of_scope"] = scope
        if scope["flagged"]:
            body["out_of_scope_warning"] = OUT_OF_SCOPE_NOTE
    return body


def result_body(
    *,
    study_id: str,
    results: Sequence[Any],
    manifests: Sequence[ModelManifest | None],
    links: Sequence[dict[str, str]],
    reviews: list[Any],
) -> dict[str, Any]:
    """The JSON result a hospital system reads: the first model's result at the top level (what a
    single-model study always said), and ``findings``, one per model in routing order."""
    findings = [finding(r, m, ln) for r, m, ln in zip(results, manifests, links, strict=True)]
    first, result = findings[0], results[0]
    body: dict[str, Any] = {
        "study_id": study_id,
        "status": first["status"],
        "model": first["model"],
        "probability": first["probability"],
        "calibrated": True,
        "threshold": first["threshold"],
        "decision": first["decision"],
        "refer": first["refer"],
        "instances": first["instances"],
        "explanation": first["explanation"],
        "trace_id": result.trace_id,
        "created_at": result.created_at.isoformat(),
        "finalised_at": result.finalised_at.isoformat() if result.finalised_at else None,
        "reviews": [
            {
                "id": r.id,
                "verdict": r.verdict,
                "corrected_label": r.corrected_label,
                "reviewer": r.reviewer,
                "created_at": r.created_at.isoformat(),
            }
            for r in reviews
        ],
        "statement": ASSISTIVE_STATEMENT,
    }
    for key in ("warning", "out_of_scope", "out_of_scope_warning"):
        if key in first:
            body[key] = first[key]
    body["findings"] = findings
    return body


def imaging_study(study_id: str, study_uid: str, series_uid: str, sop_instance_uid: str) -> dict[str, Any]:
    """A FHIR ImagingStudy of the result SR, under the de-identified StudyInstanceUID (DICOMweb's names)."""
    return {
        "resourceType": "ImagingStudy",
        "id": f"study-{study_id}",
        "status": "available",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"}],
        "subject": {"display": "de-identified subject"},
        "numberOfSeries": 1,
        "numberOfInstances": 1,
        "series": [
            {
                "uid": series_uid,
                "number": 900,
                "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "SR"},
                "numberOfInstances": 1,
                "instance": [
                    {
                        "uid": sop_instance_uid,
                        "sopClass": {
                            "system": "urn:ietf:rfc:3986",
                            "code": f"urn:oid:{Comprehensive3DSRStorage}",
                        },
                        "number": 1,
                    }
                ],
            }
        ],
    }


#: HL7 v2 table 0203 identifier type of an accession number (the order's number at the hospital).
ACCESSION_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]}


def _device(result: Any, note: str) -> dict[str, Any]:
    return {
        "resourceType": "Device",
        "id": f"model-{result.model_name}-{result.model_version}",
        "deviceName": [{"name": result.model_name, "type": "model-name"}],
        "type": {"text": "AI/ML software (clinical decision support, assistive)"},
        "version": [
            {"type": {"text": "model version"}, "value": str(result.model_version)},
            {"type": {"text": "sha256 of model.onnx"}, "value": result.model_sha256 or "unknown"},
        ],
        "note": [{"text": note}],
    }


def _observation(result: Any, obs_id: str, device_id: str, status: str, issued: str) -> dict[str, Any]:
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": obs_id,
        "status": status,
        "code": {"text": f"{result.model_name}: calibrated probability of the positive label"},
        "valueQuantity": {
            "value": round(result.probability, 6),
            "unit": "1",
            "system": "http://unitsofmeasure.org",
            "code": "1",
        },
        "interpretation": [{"text": REFER if result.refer else NO_REFER}],
        "referenceRange": [{"text": f"operating threshold {result.threshold}"}],
        "device": {"reference": f"Device/{device_id}"},
        "issued": issued,
        "note": [{"text": ASSISTIVE_STATEMENT}],
    }
    scope = out_of_scope_summary(result)
    if scope is not None:
        observation["component"] = [
            {
                "code": {"text": f"{result.model_name}: out-of-scope score (highest of the study's images)"},
                "valueQuantity": {
                    "value": round(scope["max_score"], 4),
                    "unit": "1",
                    "system": "http://unitsofmeasure.org",
                    "code": "1",
                },
                "interpretation": [{"text": OUT_OF_SCOPE_FLAG if scope["flagged"] else "within scope"}],
                "referenceRange": [{"text": f"flagged above {scope['threshold']}"}],
            }
        ]
        if scope["flagged"]:
            observation["note"].append({"text": OUT_OF_SCOPE_NOTE})
    return observation


def _note(result: Any) -> str:
    note = ASSISTIVE_STATEMENT + (" " + PLACEHOLDER_NOTE if result.placeholder else "")
    scope = out_of_scope_summary(result)
    if scope is not None and scope["flagged"]:
        note += " " + OUT_OF_SCOPE_NOTE
    return note


def fhir_bundle(
    *,
    study_id: str,
    results: Sequence[Any],
    base_url: str,
    study: dict[str, Any] | None = None,
    accession: str | None = None,
) -> dict[str, Any]:
    """A FHIR R4 (R4B models) collection Bundle: DiagnosticReport, and an Observation and a Device
    per model (``results`` in routing order), validated.

    The first model's Observation keeps the id a single-model study's always had
    (``obs-<study>``); the others are ``obs-<study>-<n>``. ``study``: an :func:`imaging_study`
    the report and observations then reference (when the de-identified study is still known).
    ``accession``: the hospital's original accession number, given only to the tenant's own
    system; the report is then ``basedOn`` that order (a logical reference by identifier) so
    the hospital can file it without a lookup.
    """
    from fhir.resources.R4B.bundle import Bundle

    first = results[0]
    # The study's review finalises every model's result together.
    status = "final" if first.status == "final" else "preliminary"
    issued = (first.finalised_at or first.created_at).astimezone(UTC).isoformat()
    entries: list[dict[str, Any]] = []
    observations: list[dict[str, Any]] = []
    devices: list[dict[str, Any]] = []
    for n, result in enumerate(results):
        device = _device(result, _note(result))
        obs_id = f"obs-{study_id}" if n == 0 else f"obs-{study_id}-{n}"
        observations.append(_observation(result, obs_id, device["id"], status, issued))
        if all(d["id"] != device["id"] for d in devices):
            devices.append(device)
    if len(results) == 1:
        conclusion = (REFER if first.refer else NO_REFER) + ". " + _note(first)
    else:
        decisions = "; ".join(f"{r.model_name}: {REFER if r.refer else NO_REFER}" for r in results)
        note = ASSISTIVE_STATEMENT
        if any(r.placeholder for r in results):
            note += " " + PLACEHOLDER_NOTE
        if any((out_of_scope_summary(r) or {}).get("flagged") for r in results):
            note += " " + OUT_OF_SCOPE_NOTE
        conclusion = decisions + ". " + note
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": study_id,
        "identifier": [{"system": f"{base_url}/v1/studies", "value": study_id}],
        "status": status,
        "code": {"text": "AI-assisted image analysis (Sightline)"},
        "issued": issued,
        "result": [{"reference": f"Observation/{o['id']}"} for o in observations],
        "conclusion": conclusion,
    }
    if accession:
        order = {"type": "ServiceRequest", "identifier": {"type": ACCESSION_TYPE, "value": accession}}
        report["basedOn"] = [order]
    entries.append({"fullUrl": f"{base_url}/fhir/DiagnosticReport/{study_id}", "resource": report})
    entries += [{"fullUrl": f"{base_url}/fhir/Observation/{o['id']}", "resource": o} for o in observations]
    entries += [{"fullUrl": f"{base_url}/fhir/Device/{d['id']}", "resource": d} for d in devices]
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": datetime.now(UTC).isoformat(),
        "entry": entries,
    }
    if study is not None:
        reference = {"reference": f"ImagingStudy/{study['id']}"}
        report["imagingStudy"] = [reference]
        for observation in observations:
            observation["derivedFrom"] = [reference]
        bundle["entry"].append({"fullUrl": f"{base_url}/fhir/ImagingStudy/{study['id']}", "resource": study})
    return Bundle.model_validate(bundle).model_dump(mode="json", exclude_none=True)


def top_index(result: Any) -> int:
    """The instance a result's model scored highest (the image its finding is about)."""
    return max(range(len(result.instances)), key=lambda n: result.instances[n]["probability"])
