"""The transform as the manifest declares it, the manifest/Triton contract, and the
transformer's behaviour against a fake Triton (readiness, error mapping, outputs)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sightline_common.errors import DependencyUnavailable, InvalidInput, PayloadTooLarge, UnprocessableInput
from sightline_common.imaging import normalise, prepare, read_dicom, resize
from sightline_common.manifest import ModelManifest, PreprocessSpec, load_manifest
from sightline_preprocess.clients.triton import ModelMetadata, TensorSpec
from sightline_preprocess.core.contract import contract_problems
from sightline_preprocess.core.transform import STAT_FIELDS, transform_batch

from tests.unit.preprocess.preprocess_files import REPO, accepted, real_dataset, to_bytes

MANIFEST = load_manifest(REPO / "model_repository", "derm-cnn")
SPEC = MANIFEST.preprocessing
LOGIT = TensorSpec("logit", "FP32", (-1, 1))
SCORE = TensorSpec("out_of_scope_score", "FP32", (-1, 1))
#: What the repository's derm-cnn declares: the logit, then the out-of-scope score when it has one.
OUTPUTS = (LOGIT, SCORE) if MANIFEST.out_of_scope is not None else (LOGIT,)


def _metadata(shape: tuple[int, ...] | None = None, dtype: str = "FP32", **kw: Any) -> ModelMetadata:
    """Triton metadata that agrees with the repository's manifest unless told otherwise."""
    if shape is None:
        shape = (-1, 3, SPEC.height, SPEC.width)
    inputs = kw.get("inputs", (TensorSpec("image", dtype, shape),))
    outputs = kw.get("outputs", OUTPUTS)
    return ModelMetadata("derm-cnn", ("1",), inputs, outputs)


# --- transform ---------------------------------------------------------------------------


def test_prepare_gives_the_manifest_shape_and_normalisation(spec: PreprocessSpec) -> None:
    x, resized, stats = prepare(accepted("SC_rgb.dcm", spec), spec)
    assert x.shape == (3, spec.height, spec.width) and x.dtype == np.float32
    assert resized.shape == (spec.height, spec.width, 3)
    expected = (resized.astype(np.float32) / 255 - np.asarray(spec.mean, np.float32)) / np.asarray(
        spec.std, np.float32
    )
    np.testing.assert_allclose(x, expected.transpose(2, 0, 1), rtol=1e-6)
    assert (stats.height, stats.width) == (100, 100)


def test_input_size_comes_from_the_manifest(spec: PreprocessSpec) -> None:
    other = spec.model_copy(update={"height": 96, "width": 160, "resize": "stretch"})
    x, _, _ = prepare(accepted("SC_rgb.dcm", other), other)
    assert x.shape == (3, 96, 160)


def test_shorter_side_centre_crop_keeps_the_centre(spec: PreprocessSpec) -> None:
    rgb = np.zeros((100, 300, 3), np.uint8)
    rgb[:, 100:200] = 255  # the centre third is white
    out = resize(rgb, spec)
    assert out.shape == (spec.height, spec.width, 3)
    assert out[:, 2:-2].min() == 255  # only the white centre survives the crop


def test_normalise_is_channel_first(spec: PreprocessSpec) -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255
    x = normalise(rgb, spec)
    assert x.shape == (3, 4, 4)
    assert np.allclose(x[0], (1 - spec.mean[0]) / spec.std[0])
    assert np.allclose(x[1], (0 - spec.mean[1]) / spec.std[1])


def test_unaccepted_modality_is_unprocessable(spec: PreprocessSpec) -> None:
    ds = read_dicom(to_bytes(real_dataset("CT_small.dcm")))
    with pytest.raises(UnprocessableInput, match="modality CT") as err:
        prepare(ds, spec)
    assert err.value.status == 422 and err.value.extra["accepted_modalities"] == spec.accepted_modalities


def test_unaccepted_sop_class_is_unprocessable(spec: PreprocessSpec) -> None:
    ds = accepted("SC_rgb.dcm", spec)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    with pytest.raises(UnprocessableInput, match="SOP class"):
        prepare(ds, spec)


def test_transform_batch_stacks_and_reports_stats(spec: PreprocessSpec) -> None:
    items = [to_bytes(accepted(n, spec)) for n in ("SC_rgb.dcm", "US1_UNCR.dcm", "SC_rgb_jpeg_dcmtk.dcm")]
    batch, stats = transform_batch(items, spec, 1 << 24)
    assert batch.shape == (3, 3, spec.height, spec.width)
    assert stats.shape == (3, len(STAT_FIELDS))
    assert stats[1, STAT_FIELDS.index("height")] == 480 and stats[1, STAT_FIELDS.index("width")] == 640


def test_transform_batch_refuses_oversized_items(spec: PreprocessSpec) -> None:
    with pytest.raises(PayloadTooLarge):
        transform_batch([to_bytes(accepted("SC_rgb.dcm", spec))], spec, 1000)


# --- contract ----------------------------------------------------------------------------


def test_contract_agrees_with_the_placeholder(manifest: ModelManifest) -> None:
    assert contract_problems(manifest, _metadata()) == []


@pytest.mark.parametrize(
    ("metadata", "needle"),
    [
        (_metadata(shape=(-1, 3, SPEC.height + 16, SPEC.width)), "shape"),
        (_metadata(shape=(-1, 1, SPEC.height, SPEC.width)), "shape"),
        (_metadata(dtype="UINT8"), "UINT8"),
        (_metadata(outputs=(TensorSpec("logit", "FP32", (-1, 2)), *OUTPUTS[1:])), "output"),
        (_metadata(outputs=(TensorSpec("logit", "FP16", (-1, 1)), *OUTPUTS[1:])), "output"),
        (_metadata(outputs=(LOGIT, TensorSpec("out_of_scope_score", "FP32", (-1, 2)))), "output"),
        (_metadata(outputs=(LOGIT, SCORE, SCORE)), "output tensor"),
        (_metadata(inputs=_metadata().inputs * 2), "one input"),
        (_metadata(outputs=()), "output tensor"),
    ],
)
def test_contract_disagreements_are_named(
    manifest: ModelManifest, metadata: ModelMetadata, needle: str
) -> None:
    problems = contract_problems(manifest, metadata)
    assert problems and any(needle in p for p in problems)


# --- transformer against a fake Triton ---------------------------------------------------


class FakeTriton:
    def __init__(self, metadata: ModelMetadata, ready: bool = True) -> None:
        self.md, self.ready, self.calls = metadata, ready, 0
        self.versions: list[str | None] = []

    async def model_ready(self, model: str) -> bool:
        return self.ready

    async def metadata(self, model: str) -> ModelMetadata:
        if not self.ready:
            raise DependencyUnavailable("down")
        return self.md

    async def infer(
        self, model: str, input_name: str, batch: Any, output_names: list[str], version: str | None = None
    ) -> tuple[list[Any], str]:
        self.calls += 1
        self.versions.append(version)
        if not self.ready:
            raise DependencyUnavailable("Triton inference failed (AioRpcError)")
        values = {"logit": 0.5, "out_of_scope_score": 7.25}
        return [np.full((batch.shape[0], 1), values[n], np.float32) for n in output_names], version or "1"


def _transformer(manifest: ModelManifest, triton: FakeTriton) -> Any:
    from sightline_preprocess.model import DicomTransformer

    return DicomTransformer(manifest, triton, 1 << 24)  # type: ignore[arg-type]


def _request(items: list[bytes], version: str | None = None) -> Any:
    from kserve import InferInput, InferRequest

    tensor = InferInput("dicom", [len(items)], "BYTES")
    tensor.set_data_from_numpy(np.asarray(items, dtype=np.object_), binary_data=True)
    return InferRequest(model_name="derm-cnn", infer_inputs=[tensor], model_version=version)


async def _run(t: Any, request: Any) -> Any:
    return await t.postprocess(await t.predict(await t.preprocess(request)))


def test_ready_only_when_triton_agrees(manifest: ModelManifest) -> None:
    good = _transformer(manifest, FakeTriton(_metadata()))
    bad = _transformer(manifest, FakeTriton(_metadata(shape=(-1, 3, 2 * SPEC.height, 2 * SPEC.width))))
    down = _transformer(manifest, FakeTriton(_metadata(), ready=False))
    assert asyncio.run(good.healthy()) is True
    assert asyncio.run(bad.healthy()) is False and bad.contract_errors
    assert asyncio.run(down.healthy()) is False


def test_disagreeing_triton_is_never_called(manifest: ModelManifest, spec: PreprocessSpec) -> None:
    from sightline_preprocess.model import Unavailable

    triton = FakeTriton(_metadata(shape=(-1, 3, 2 * SPEC.height, 2 * SPEC.width)))
    with pytest.raises(Unavailable, match="dependency-unavailable"):
        asyncio.run(_run(_transformer(manifest, triton), _request([to_bytes(accepted("SC_rgb.dcm", spec))])))
    assert triton.calls == 0


def test_outputs_and_parameters(manifest: ModelManifest, spec: PreprocessSpec) -> None:
    t = _transformer(manifest, FakeTriton(_metadata()))
    items = [to_bytes(accepted(n, spec)) for n in ("SC_rgb.dcm", "SC_rgb_rle.dcm")]
    response = asyncio.run(_run(t, _request(items)))
    out = {o.name: o.as_numpy() for o in response.outputs}
    assert out["probability"].shape == (2, 1) and out["logit"].shape == (2, 1)
    assert np.allclose(out["probability"], manifest.calibrated_probability(0.5))
    assert out["image_stats"].shape == (2, len(STAT_FIELDS))
    assert response.parameters["image_stats_fields"] == ",".join(STAT_FIELDS)
    assert response.model_version == "1"
    if manifest.out_of_scope is not None:
        assert out["out_of_scope_score"].shape == (2, 1) and np.allclose(out["out_of_scope_score"], 7.25)


def test_the_version_a_request_names_is_the_version_triton_runs(
    manifest: ModelManifest, spec: PreprocessSpec
) -> None:
    from kserve.errors import InvalidInput as KServeInvalidInput

    triton = FakeTriton(_metadata())
    t = _transformer(manifest, triton)
    item = [to_bytes(accepted("SC_rgb.dcm", spec))]
    assert asyncio.run(_run(t, _request(item, "2"))).model_version == "2"
    assert asyncio.run(_run(t, _request(item))).model_version == "1"  # Triton's choice, as before
    assert triton.versions == ["2", None]
    for bad in ("0", "two", "-1"):
        with pytest.raises(KServeInvalidInput, match="model_version must be a positive integer"):
            asyncio.run(t.preprocess(_request(item, bad)))


def test_a_version_with_its_own_manifest_is_calibrated_by_it(
    manifest: ModelManifest, spec: PreprocessSpec, tmp_path: Path
) -> None:
    """Version 2 keeps its manifest at <name>/2/manifest.json: its temperature makes its probability."""
    from sightline_preprocess.model import DicomTransformer

    other = manifest.model_copy(update={"version": 2, "temperature": 3.0})
    (tmp_path / manifest.name / "2").mkdir(parents=True)
    (tmp_path / manifest.name / "2" / "manifest.json").write_text(other.model_dump_json())
    t = DicomTransformer(manifest, FakeTriton(_metadata()), 1 << 24, repository=tmp_path)  # type: ignore[arg-type]
    item = [to_bytes(accepted("SC_rgb.dcm", spec))]
    v2 = asyncio.run(_run(t, _request(item, "2")))
    v1 = asyncio.run(_run(t, _request(item)))
    p2 = {o.name: o.as_numpy() for o in v2.outputs}["probability"]
    p1 = {o.name: o.as_numpy() for o in v1.outputs}["probability"]
    assert np.allclose(p2, other.calibrated_probability(0.5)) and np.allclose(
        p1, manifest.calibrated_probability(0.5)
    )
    assert v2.parameters["manifest_version"] == "2" and v1.parameters["manifest_version"] == str(
        manifest.version
    )


def test_a_model_with_an_out_of_scope_score_needs_its_second_output(manifest: ModelManifest) -> None:
    """A Triton config that lost the score output would serve results without the flag: not ready."""
    from sightline_common.manifest import OutOfScopeSpec

    with_score = manifest.model_copy(
        update={"out_of_scope": OutOfScopeSpec(method="m", artifact="1/out_of_scope.npz", threshold=3.0)}
    )
    without = manifest.model_copy(update={"out_of_scope": None})
    assert contract_problems(with_score, _metadata(outputs=(LOGIT, SCORE))) == []
    assert any("two output" in p for p in contract_problems(with_score, _metadata(outputs=(LOGIT,))))
    assert contract_problems(without, _metadata(outputs=(LOGIT,))) == []
    assert contract_problems(without, _metadata(outputs=(LOGIT, SCORE)))


def test_errors_keep_their_sightline_code(manifest: ModelManifest, spec: PreprocessSpec) -> None:
    from kserve.errors import InvalidInput as KServeInvalidInput
    from sightline_preprocess.model import Unprocessable

    t = _transformer(manifest, FakeTriton(_metadata()))
    with pytest.raises(Unprocessable, match=r"^unprocessable: modality CT"):
        asyncio.run(t.preprocess(_request([to_bytes(real_dataset("CT_small.dcm"))])))
    with pytest.raises(KServeInvalidInput, match=r"^invalid-input: "):
        asyncio.run(t.preprocess(_request([b"not dicom"])))
    assert issubclass(Unprocessable, KServeInvalidInput)
    assert InvalidInput.code == "invalid-input"
