"""The out-of-scope flag reaches every form of a result: JSON, FHIR, SR, the review page, drift metrics.

derm-cnn's manifest carries the score's threshold; the fake preprocess sends a score above it
(an image unlike the training data) or below it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from sightline_common.manifest import load_manifest

from tests.unit.gateway.gateway_fixtures import MODEL_REPOSITORY, Harness, harness, token
from tests.unit.gateway.test_gateway_api import _sample_value
from tests.unit.gateway.test_review_ui import login

OOS = load_manifest(MODEL_REPOSITORY, "derm-cnn").out_of_scope


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    if OOS is None:
        pytest.fail("derm-cnn has no out-of-scope score in its manifest (sightline fit-out-of-scope)")
    with harness(tmp_path, environment="development") as hh:
        yield hh


def _study(h: Harness, score: float | None) -> str:
    h.preprocess.out_of_scope_score = score
    r = h.submit(mode="sync")
    assert r.status_code == 200, r.text
    return r.headers["Location"].rsplit("/", 1)[1]


def _flagged_count(h: Harness, flagged: str) -> float:
    try:
        return _sample_value(
            h.client.get("/metrics").text,
            "sightline_model_out_of_scope_results_total",
            model="derm-cnn",
            segment="hospital-a",
            flagged=flagged,
        )
    except AssertionError:
        return 0.0


def test_a_flagged_image_warns_in_json_fhir_and_sr(h: Harness) -> None:
    assert OOS is not None
    before = _flagged_count(h, "true")
    study_id = _study(h, OOS.threshold * 3)
    body = h.client.get(f"/v1/studies/{study_id}/result", headers=token()).json()
    assert body["instances"][0]["out_of_scope"] == {
        "score": round(OOS.threshold * 3, 4),
        "threshold": OOS.threshold,
        "flagged": True,
    }
    assert body["out_of_scope"]["flagged"] and body["out_of_scope"]["flagged_instances"] == [0]
    assert body["out_of_scope_warning"].startswith("OUT OF SCOPE")

    fhir = h.client.get(f"/v1/studies/{study_id}/result.fhir", headers=token()).json()
    report, observation = (e["resource"] for e in fhir["entry"][:2])
    component = observation["component"][0]
    assert component["valueQuantity"]["value"] == round(OOS.threshold * 3, 4)
    assert component["interpretation"][0]["text"].startswith("out of scope")
    assert any(n["text"].startswith("OUT OF SCOPE") for n in observation["note"])
    assert "OUT OF SCOPE" in report["conclusion"]

    sr = pydicom.dcmread(
        io.BytesIO(h.client.get(f"/v1/studies/{study_id}/result.dcm", headers=token()).content)
    )
    meanings = [
        item.ConceptCodeSequence[0].CodeMeaning
        for item in _walk(sr.ContentSequence)
        if "ConceptCodeSequence" in item
    ]
    assert "Out of scope: unlike the training images" in meanings
    assert _flagged_count(h, "true") == before + 1


def test_an_image_within_scope_says_so_without_a_warning(h: Harness) -> None:
    assert OOS is not None
    before = _flagged_count(h, "false")
    study_id = _study(h, OOS.threshold / 2)
    body = h.client.get(f"/v1/studies/{study_id}/result", headers=token()).json()
    assert body["instances"][0]["out_of_scope"]["flagged"] is False
    assert body["out_of_scope"]["flagged"] is False and "out_of_scope_warning" not in body
    fhir = h.client.get(f"/v1/studies/{study_id}/result.fhir", headers=token()).json()
    observation = fhir["entry"][1]["resource"]
    assert observation["component"][0]["interpretation"][0]["text"] == "within scope"
    assert _flagged_count(h, "false") == before + 1


def test_no_score_means_no_claim_about_scope(h: Harness) -> None:
    body = h.client.get(f"/v1/studies/{_study(h, None)}/result", headers=token()).json()
    assert "out_of_scope" not in body["instances"][0] and "out_of_scope" not in body


def test_the_review_page_shows_the_warning(h: Harness) -> None:
    assert OOS is not None
    flagged, fine = _study(h, OOS.threshold * 3), _study(h, OOS.threshold / 2)
    login(h)
    page = h.client.get(f"/review/studies/{flagged}").text
    assert 'id="out-of-scope-warning"' in page and "OUT OF SCOPE" in page
    assert "<strong>flagged</strong>" in page
    calm = h.client.get(f"/review/studies/{fine}").text
    assert 'id="out-of-scope-warning"' not in calm and "within scope" in calm


def _walk(seq: pydicom.Sequence) -> Iterator[pydicom.Dataset]:
    for item in seq:
        yield item
        if "ContentSequence" in item:
            yield from _walk(item.ContentSequence)
