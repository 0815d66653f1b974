"""The model card is generated from an evaluation, with the required sections and caveats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sightline_common.manifest import ModelManifest

from sightline.ml.modelcard import INTENDED_USE, LICENCE, LIMITATIONS, render_model_card, write_model_card
from sightline.ml.placeholder import placeholder_fields
from sightline.ml.prediction import sigmoid
from sightline.ml.report import render_report
from sightline.ml.subgroups import evaluate_predictions

from .conftest import REPOSITORY

SECTIONS = [
    "## Model details",
    "## Intended use",
    "## Factors",
    "## Metrics",
    "## Evaluation data",
    "## Training data",
    "## Quantitative analyses",
    "## Ethical considerations",
    "## Caveats and recommendations",
]


def _evaluation() -> dict[str, Any]:
    rng = np.random.default_rng(3)
    n = 400
    y = (rng.random(n) < 0.4).astype(np.int64)
    prob = sigmoid(rng.normal(0, 1, n) + 2.5 * y - 1.2)
    groups = pd.DataFrame(
        {
            "sex": rng.choice(["F", "M"], n),
            "age_band": rng.choice(["30-44", "60-74"], n),
            "site": rng.choice(["rosendahl", "vidir_modern"], n),
        }
    )
    result = evaluate_predictions(y, prob, 0.3, groups, n_bootstrap=30)
    result.update(
        {"model": "derm-cnn", "version": 1, "split": "test", "temperature": 1.3, "uncalibrated_ece": 0.05}
    )
    return result


def test_model_card_from_a_small_evaluation(tmp_path: Path) -> None:
    fields = {
        **placeholder_fields(),
        "placeholder": False,
        "licence": LICENCE,
        "intended_use": INTENDED_USE,
        "limitations": LIMITATIONS,
    }
    manifest = ModelManifest.model_validate({**fields, "version": 1, "artifacts": {}})
    evaluation = _evaluation()
    card = render_model_card(manifest, evaluation)
    for section in SECTIONS:
        assert section in card
    assert "CC BY-NC-SA 4.0" in card
    auroc = evaluation["overall"]["auroc"]["value"]
    assert f"AUROC {auroc:.3f}" in card
    assert "| rosendahl |" in card and "| F |" in card
    assert "PLACEHOLDER" not in card
    assert "Site is a strong shortcut" in card  # caveats from the dataset README
    assert "## By site" in render_report(evaluation)

    repo = tmp_path / "repo"
    (repo / "derm-cnn" / "evaluation").mkdir(parents=True)
    (repo / "derm-cnn" / "manifest.json").write_text(manifest.model_dump_json())
    (repo / "derm-cnn" / "evaluation" / "evaluation.json").write_text(json.dumps(evaluation))
    assert write_model_card(repo, "derm-cnn").read_text() == card
    assert "| 1 (this card) | centralised:" in card

    # A version kept beside this one, trained another way (issue 19): the card says how.
    kept = ModelManifest.model_validate(
        {
            **fields,
            "version": 2,
            "artifacts": {"2/model.onnx": "ab" * 32},
            "training_data": {"provenance": "federated, 12 rounds, sites rosendahl, vidir_modern"},
        }
    )
    (repo / "derm-cnn" / "2").mkdir()
    (repo / "derm-cnn" / "2" / "manifest.json").write_text(kept.model_dump_json())
    both = write_model_card(repo, "derm-cnn").read_text()
    assert "| 2 | federated, 12 rounds, sites rosendahl, vidir_modern | `abababababab` |" in both
    assert both.index("| 2 |") < both.index("| 1 (this card) |")


def test_committed_chest_model_card_states_the_datasets_caveats() -> None:
    """cxr-pneumonia's card: the Mitchell sections, patient-level CIs, and the caveats in plain words
    (children, one hospital, no subgroup analysis possible, 224 px copies), no invented subgroups."""
    root = REPOSITORY / "cxr-pneumonia"
    card = (root / "MODEL_CARD.md").read_text()
    evaluation = json.loads((root / "evaluation" / "evaluation.json").read_text())
    for section in SECTIONS:
        assert section in card, section
    assert evaluation["bootstrap_unit"] == "patient" and evaluation["group_column"] == "patient_id"
    assert evaluation["by_attribute"] == {} and evaluation["subgroup_columns"] == []
    for caveat in ("No subgroup analysis was possible", "Children aged 1-5", "one hospital", "224 px"):
        assert caveat in card, caveat
    assert "### By " not in card and "calibration_site" not in card
    for plot in ("roc.png", "calibration.png"):
        assert (root / "evaluation" / plot).is_file() and f"evaluation/{plot}" in card
