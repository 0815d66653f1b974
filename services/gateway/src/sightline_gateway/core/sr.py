"""A study's stored results as a DICOM Comprehensive 3D SR (TID 1500 measurement report).

One measurement group (finding) per model, each on the de-identified image its model scored
highest: the calibrated probability, the decision and, for a model with the score, whether the
image is out of scope. The observer is the Sightline device; each measurement names its model.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from sightline_gateway.core.reports import out_of_scope_summary


def _measurement_group(hd: Any, result: Any, image: Any, tracking: str) -> Any:
    """One model's finding: its probability and decision (and scope), on its top image."""
    from pydicom.uid import generate_uid

    algorithm = hd.sr.AlgorithmIdentification(name=result.model_name, version=str(result.model_version))
    measurements = [
        hd.sr.Measurement(
            name=hd.sr.CodedConcept(
                "sightline-probability", "99SIGHTLINE", "Calibrated probability of the positive label"
            ),
            value=round(float(result.probability), 6),
            unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
            algorithm_id=algorithm,
        )
    ]
    evaluations = [
        hd.sr.QualitativeEvaluation(
            name=hd.sr.CodedConcept("sightline-decision", "99SIGHTLINE", "Model decision"),
            value=hd.sr.CodedConcept(
                "refer" if result.refer else "no-refer",
                "99SIGHTLINE",
                "Refer for clinician review" if result.refer else "No referral suggested",
            ),
        )
    ]
    scope = out_of_scope_summary(result)
    if scope is not None:
        measurements.append(
            hd.sr.Measurement(
                name=hd.sr.CodedConcept("sightline-oos-score", "99SIGHTLINE", "Out-of-scope score"),
                value=round(float(scope["max_score"]), 4),
                unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
                algorithm_id=algorithm,
            )
        )
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                name=hd.sr.CodedConcept("sightline-scope", "99SIGHTLINE", "Image within model scope"),
                value=hd.sr.CodedConcept(
                    "out-of-scope" if scope["flagged"] else "in-scope",
                    "99SIGHTLINE",
                    "Out of scope: unlike the training images" if scope["flagged"] else "Within scope",
                ),
            )
        )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=tracking),
        measurements=measurements,
        qualitative_evaluations=evaluations,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(image)],
    )


def structured_report(
    *,
    results: Sequence[Any],
    sources: Sequence[bytes],
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> bytes:
    """A Comprehensive 3D SR (TID 1500 measurement report) referencing the de-identified images.

    One measurement group (finding) per model: ``results`` in routing order, ``sources[n]`` the
    de-identified image ``results[n]``'s model scored highest. ``series_uid``/``sop_instance_uid``:
    stable UIDs (DICOMweb names the same object each time).
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    images = [pydicom.dcmread(io.BytesIO(source), stop_before_pixels=True) for source in sources]
    first = results[0]
    names = ", ".join(f"{r.model_name} v{r.model_version}" for r in results)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(),
            name=names if len(results) == 1 else f"Sightline: {names}"[:64],
            model_name=first.model_name,
            manufacturer_name="Sightline",
        ),
    )
    groups = [
        _measurement_group(
            hd, result, image, "whole image" if n == 0 else f"whole image: {result.model_name}"
        )
        for n, (result, image) in enumerate(zip(results, images, strict=True))
    ]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=hd.sr.CodedConcept("sightline-ai", "99SIGHTLINE", "AI-assisted image analysis"),
        imaging_measurements=groups,
    )
    evidence = list({str(image.SOPInstanceUID): image for image in images}.values())
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=series_uid or generate_uid(),
        series_number=900,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=1,
        manufacturer="Sightline",
        is_complete=True,
        is_final=first.status == "final",
        is_verified=False,
        series_description=("PRELIMINARY " if first.status != "final" else "") + "AI assistive result",
    )
    out = io.BytesIO()
    sr.save_as(out, enforce_file_format=True)
    return out.getvalue()
