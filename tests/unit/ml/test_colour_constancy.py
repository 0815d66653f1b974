"""Version 2's training changes: Shades of Gray in the graph, site-label balanced drawing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from sightline_explain.core.nets import ShadesOfGray, build_model, load_checkpoint

from sightline.ml.drawing import site_label_weights
from sightline.ml.export import export_model_atomically
from sightline.ml.placeholder import placeholder_fields
from sightline.ml.train import with_input_statistics

MEAN, STD = [0.76, 0.54, 0.56], [0.14, 0.16, 0.18]


def _normalise(raw: torch.Tensor) -> torch.Tensor:
    return (raw - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def _intensities(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)


def test_a_tinted_illuminant_is_removed_and_a_grey_one_kept() -> None:
    torch.manual_seed(0)
    sog = ShadesOfGray(MEAN, STD, p=6)
    grey = (torch.rand(1, 1, 32, 32) * 0.5 + 0.2).expand(1, 3, 32, 32)
    assert torch.allclose(_intensities(sog(_normalise(grey))), grey, atol=1e-4)
    tint = torch.tensor([1.3, 0.9, 0.8]).view(1, 3, 1, 1)

    def channel_spread(x: torch.Tensor) -> float:
        return float((x.amax(dim=1) - x.amin(dim=1)).max())

    assert channel_spread(grey * tint) > 0.1  # the input is visibly tinted ...
    # ... and comes out grey again: its three channels equal (up to the overall level).
    assert channel_spread(_intensities(sog(_normalise(grey * tint)))) < 1e-4


def test_a_colour_constancy_model_exports_to_the_same_onnx_function(tmp_path: Path) -> None:
    fields = placeholder_fields()
    kwargs = {**fields["architecture"]["kwargs"], "colour_constancy": {"p": 6}}
    fields["architecture"] = with_input_statistics({"name": "LesionNet", "kwargs": kwargs}, MEAN, STD)
    assert fields["architecture"]["kwargs"]["colour_constancy"] == {"p": 6, "mean": MEAN, "std": STD}
    torch.manual_seed(0)
    model = build_model(fields["architecture"]).eval()
    manifest = export_model_atomically(model, tmp_path / "repo", fields, staging=tmp_path / "staging")
    x = _normalise(torch.rand(3, 3, manifest.preprocessing.height, manifest.preprocessing.width))
    # The explain service's load path (state dict + the manifest's architecture) and Triton's ONNX.
    net = load_checkpoint(str(tmp_path / "repo" / manifest.name / "1" / "model.pt"), manifest.architecture)
    with torch.no_grad():
        expected = net(x).numpy()
    session = ort.InferenceSession(
        str(tmp_path / "repo" / manifest.name / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (got,) = session.run(["logit"], {"image": x.numpy()})
    assert float(np.abs(got - expected).max()) < 1e-4


def test_site_label_weights_make_the_label_independent_of_the_site() -> None:
    # Site a: 50% malignant; site b: 10%; overall 30%.
    sites = np.array(["a"] * 100 + ["b"] * 100)
    labels = np.array([1] * 50 + [0] * 50 + [1] * 10 + [0] * 90)
    w = site_label_weights(sites, labels, max_weight=10.0)
    assert abs(w.mean() - 1.0) < 1e-9
    for site in ("a", "b"):
        at = sites == site
        assert abs(w[at & (labels == 1)].sum() / w[at].sum() - 0.30) < 1e-9
    # Capped: site b's one malignant image would weigh P(1)/P(1|b) = 0.255/0.01 = 25.5; it weighs 4
    # (before the common normalisation), against P(0)/P(0|b) = 0.745/0.99 for its benign images.
    labels_rare = np.array([1] * 50 + [0] * 50 + [1] * 1 + [0] * 99)
    w_rare = site_label_weights(sites, labels_rare, max_weight=4.0)
    b = sites == "b"
    ratio = w_rare[b & (labels_rare == 1)][0] / w_rare[b & (labels_rare == 0)][0]
    assert abs(ratio - 4.0 / (0.745 / 0.99)) < 1e-9
