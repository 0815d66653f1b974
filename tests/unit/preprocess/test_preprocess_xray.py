"""Chest radiographs through the real decode path, into cxr-pneumonia's single-channel input.

The dataset's JPEGs are wrapped as 12-bit DX instances whose display pipeline (modality LUT,
window or VOI LUT, MONOCHROME1 inversion) gives the JPEG's grey back exactly: a decoder that
skipped a step, or applied it wrongly, would show the radiologist (and the model) other pixels.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from sightline_common.errors import UnprocessableInput
from sightline_common.imaging import (
    channels,
    check_accepted,
    normalise,
    prepare,
    read_dicom,
    resize,
    to_rgb_uint8,
)
from sightline_common.manifest import ModelManifest, load_manifest
from sightline_preprocess.clients.triton import ModelMetadata, TensorSpec
from sightline_preprocess.core.contract import contract_problems
from sightline_preprocess.core.transform import transform_batch

from sightline.xray import STORED_OFFSET, STORED_SCALE
from tests.unit.preprocess.preprocess_files import REPO, accepted, to_bytes
from tests.unit.preprocess.xray_files import MODEL, xray_bytes, xray_dataset, xray_grey


@pytest.fixture(scope="module")
def cxr() -> ModelManifest:
    return load_manifest(REPO / "model_repository", MODEL)


@pytest.mark.parametrize("voi", ["window", "lut"])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_display_pipeline_gives_the_radiograph_back(photometric: Any, voi: Any) -> None:
    grey, _ = xray_grey(0)
    decoded = to_rgb_uint8(read_dicom(xray_bytes(0, photometric=photometric, voi=voi)))
    assert decoded.shape == (*grey.shape, 3)
    np.testing.assert_array_equal(decoded[:, :, 0], grey)
    np.testing.assert_array_equal(decoded[:, :, 1], decoded[:, :, 2])


def test_monochrome1_is_inverted() -> None:
    """MONOCHROME1 stores white as 0: read without inversion it would be the negative."""
    ds = xray_dataset(1, photometric="MONOCHROME1")
    grey, _ = xray_grey(1)
    stored = ds.pixel_array.astype(np.int64)
    assert stored[grey == grey.max()].max() < stored[grey == grey.min()].min()  # bright is stored low
    np.testing.assert_array_equal(to_rgb_uint8(ds)[:, :, 0], grey)


def test_window_is_applied_not_the_stored_range() -> None:
    """A narrower window (same centre, half the width) stretches contrast and clips both ends."""
    ds = xray_dataset(2)
    grey, _ = xray_grey(2)
    ds.WindowWidth = (float(ds.WindowWidth) - 1) / 2 + 1
    out = to_rgb_uint8(ds)[:, :, 0].astype(np.int64)
    # The window spans grey levels 64..191 now: level g maps to about 2 (g - 64), clipped.
    expected = np.clip(np.round((grey.astype(np.float64) - 63.75) * 255 / 127.5), 0, 255)
    assert np.abs(out - expected).max() <= 1
    assert (out[grey < 60] == 0).all() and (out[grey > 195] == 255).all()


def test_modality_lut_is_applied_before_the_window() -> None:
    """Without the rescale intercept the window would miss the pixels entirely (all black or white)."""
    ds = xray_dataset(3)
    grey, _ = xray_grey(3)
    assert float(ds.RescaleIntercept) != 0
    np.testing.assert_array_equal(to_rgb_uint8(ds)[:, :, 0], grey)
    ds.RescaleIntercept = 0  # the same window now falls on other values
    assert not np.array_equal(to_rgb_uint8(ds)[:, :, 0], grey)


def test_voi_lut_sequence_is_applied() -> None:
    """The VOI LUT maps stored values to grey levels; a LUT that inverts them inverts the image."""
    ds = xray_dataset(4, voi="lut")
    grey, _ = xray_grey(4)
    item = ds.VOILUTSequence[0]
    index = np.arange(4096)
    levels = np.clip(np.round((index - STORED_OFFSET) / STORED_SCALE), 0, 255)
    item.LUTData = ((255 - levels) * STORED_SCALE).astype("<u2").tobytes()
    np.testing.assert_array_equal(to_rgb_uint8(ds)[:, :, 0], 255 - grey)


def test_model_input_is_one_channel_from_its_own_manifest(cxr: ModelManifest) -> None:
    spec = cxr.preprocessing
    assert spec.colour == "MONOCHROME" and len(spec.mean) == len(spec.std) == 1
    grey, _ = xray_grey(5)
    x, _, _ = prepare(read_dicom(xray_bytes(5, photometric="MONOCHROME1")), spec)
    assert x.shape == (1, spec.height, spec.width) and x.dtype == np.float32
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    np.testing.assert_allclose(x, normalise(resize(rgb, spec), spec), atol=1e-6)
    expected = (resize(rgb, spec)[:, :, 0] / 255.0 - spec.mean[0]) / spec.std[0]
    np.testing.assert_allclose(x[0], expected, atol=1e-5)
    batch, stats = transform_batch([xray_bytes(5), xray_bytes(6, voi="lut")], spec, 1 << 24)
    assert batch.shape == (2, 1, spec.height, spec.width) and stats.shape[0] == 2


def test_each_model_accepts_only_its_own_studies(cxr: ModelManifest, manifest: ModelManifest) -> None:
    """A DX/CR chest X-ray is the chest model's; a dermoscopy photograph is not, and vice versa."""
    for modality in ("DX", "CR"):
        check_accepted(xray_dataset(0, modality=modality), cxr.preprocessing)  # type: ignore[arg-type]
    with pytest.raises(UnprocessableInput, match="modality DX"):
        check_accepted(xray_dataset(0), manifest.preprocessing)
    with pytest.raises(UnprocessableInput, match="modality"):
        check_accepted(accepted("SC_rgb.dcm", manifest.preprocessing), cxr.preprocessing)


def test_triton_contract_has_one_input_channel(cxr: ModelManifest) -> None:
    spec = cxr.preprocessing
    one = ModelMetadata(
        MODEL,
        ("1",),
        (TensorSpec("image", "FP32", (-1, 1, spec.height, spec.width)),),
        _Triton._metadata(cxr).outputs,
    )
    three = ModelMetadata(
        MODEL, ("1",), (TensorSpec("image", "FP32", (-1, 3, spec.height, spec.width)),), one.outputs
    )
    assert contract_problems(cxr, one) == []
    assert contract_problems(cxr, three)


class _Triton:
    """Answers each model's own metadata; records which model each inference went to."""

    def __init__(self, manifests: list[ModelManifest]) -> None:
        self.md = {m.name: self._metadata(m) for m in manifests}
        self.calls: list[tuple[str, tuple[int, ...]]] = []

    @staticmethod
    def _metadata(m: ModelManifest) -> ModelMetadata:
        spec = m.preprocessing
        shape = (-1, channels(spec), spec.height, spec.width)
        outputs = [TensorSpec("logit", "FP32", (-1, 1))]
        if m.out_of_scope is not None:
            outputs.append(TensorSpec("out_of_scope_score", "FP32", (-1, 1)))
        return ModelMetadata(m.name, ("1",), (TensorSpec("image", "FP32", shape),), tuple(outputs))

    async def model_ready(self, model: str) -> bool:
        return True

    async def metadata(self, model: str) -> ModelMetadata:
        return self.md[model]

    async def infer(
        self, model: str, input_name: str, batch: Any, output_names: list[str], version: str | None = None
    ) -> tuple[list[Any], str]:
        self.calls.append((model, tuple(batch.shape)))
        return [np.zeros((batch.shape[0], 1), np.float32) for _ in output_names], "1"


def test_one_kserve_model_per_manifest_each_with_its_preprocessing(
    cxr: ModelManifest, manifest: ModelManifest
) -> None:
    from kserve import InferInput, InferRequest
    from sightline_preprocess.model import DicomTransformer

    triton = _Triton([manifest, cxr])
    models = {m.name: DicomTransformer(m, triton, 1 << 24) for m in (manifest, cxr)}  # type: ignore[arg-type]
    assert all(asyncio.run(t.healthy()) for t in models.values())

    def request(name: str, item: bytes) -> Any:
        tensor = InferInput("dicom", [1], "BYTES")
        tensor.set_data_from_numpy(np.asarray([item], dtype=np.object_), binary_data=True)
        return InferRequest(model_name=name, infer_inputs=[tensor])

    async def run(name: str, item: bytes) -> Any:
        t = models[name]
        return await t.postprocess(await t.predict(await t.preprocess(request(name, item))))

    asyncio.run(run(MODEL, xray_bytes(0, photometric="MONOCHROME1")))
    asyncio.run(run("derm-cnn", to_bytes(accepted("SC_rgb.dcm", manifest.preprocessing))))
    cs, ds = cxr.preprocessing, manifest.preprocessing
    assert triton.calls == [(MODEL, (1, 1, cs.height, cs.width)), ("derm-cnn", (1, 3, ds.height, ds.width))]
