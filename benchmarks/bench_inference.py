"""Preprocess + Triton against the bare in-process model, on this CPU (prints figures, never fails).

Starts tritonserver (python backend, configs/local.pbtxt) and the preprocess service with the same
``Stack`` that ``sightline up`` uses, on free loopback ports, unless ``--preprocess-grpc`` points at
a running one. Images: HAM10000 dermoscopy JPEGs wrapped as JPEG-baseline XC DICOM (what a
hospital sends for this model), or pydicom's US1_UNCR (480x640 RGB) without the data set.

Reported, on the same images in the same run:
- bare in-process: ONNX Runtime on model.onnx at batch 1 and batched (model only), and the full
  in-process pipeline (decode + transform + ONNX Runtime) at batch 1;
- through the stack: v2 gRPC to preprocess with DICOM bytes, p50/p99 at concurrency 1 and 8, and
  throughput; then where the time went (preprocess stage histograms, Triton queue/compute times,
  average batch size formed by the dynamic batcher).

Variants of configs/local.pbtxt can be measured with ``--instances/--onnx-threads/--delay-us``:
the model repository is copied to a temporary directory and the copy's configuration edited.

    .venv/bin/python -m benchmarks.bench_inference [--seconds 10] [--images 16]
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import struct
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from sightline.ml.data import dataset_root

REPO = Path(__file__).resolve().parents[1]

HAM = dataset_root() / "images"


def dermoscopy_dicoms(n: int, modality: str, sop_class: str) -> list[bytes]:
    """HAM10000 JPEGs as JPEG-baseline DICOM (no re-encoding), or a pydicom sample without them."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, generate_uid

    jpegs = sorted(HAM.glob("*.jpg"))[:n] if HAM.is_dir() else []
    out = []
    for path in jpegs:
        from PIL import Image

        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = (
            sop_class,
            ds.SOPInstanceUID,
        )
        ds.Modality = modality
        ds.Rows, ds.Columns, ds.SamplesPerPixel = height, width, 3
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PlanarConfiguration = 0
        ds.PixelData = encapsulate([data])
        ds["PixelData"].VR = "OB"
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    if out:
        return out
    sample = Path(pydicom.data.__file__).parent.parent / "data_store" / "data" / "US1_UNCR.dcm"
    ds = pydicom.dcmread(sample)
    ds.Modality, ds.SOPClassUID = modality, sop_class
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return [buf.getvalue()] * n


def percentiles(samples: list[float]) -> tuple[float, float]:
    a = np.asarray(samples) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def bare(model_dir: Path, manifest, images: list[bytes], seconds: float, threads: int) -> dict[str, float]:
    import onnxruntime as ort
    from sightline_preprocess.core.transform import transform_batch

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(model_dir / str(manifest.version) / "model.onnx"), opts, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    spec = manifest.preprocessing
    batch, _ = transform_batch(images, spec, 1 << 26)
    res: dict[str, float] = {}
    for _ in range(5):
        session.run(None, {name: batch[:1]})
    lat = []
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end:
        t = time.perf_counter()
        session.run(None, {name: batch[i % len(batch)][None]})
        lat.append(time.perf_counter() - t)
        i += 1
    res["model_b1_p50"], res["model_b1_p99"] = percentiles(lat)
    big = np.concatenate([batch] * max(1, 16 // len(batch)))[:16]
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        session.run(None, {name: big})
        n += len(big)
    res["model_batched_ips"] = n / (time.perf_counter() - t0)
    lat = []
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end:
        t = time.perf_counter()
        x, _ = transform_batch([images[i % len(images)]], spec, 1 << 26)
        session.run(None, {name: x})
        lat.append(time.perf_counter() - t)
        i += 1
    res["pipeline_b1_p50"], res["pipeline_b1_p99"] = percentiles(lat)
    res["pipeline_b1_ips"] = len(lat) / sum(lat)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        x, _ = transform_batch(images, spec, 1 << 26)
        session.run(None, {name: x})
        n += len(images)
    res["pipeline_batched_ips"] = n / (time.perf_counter() - t0)
    return res


def served(address: str, images: list[bytes], concurrency: int, seconds: float) -> dict[str, float]:
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    requests = []
    for data in images:
        tensor = pb.ModelInferRequest.InferInputTensor(name="dicom", datatype="BYTES", shape=[1])
        raw = struct.pack("<I", len(data)) + data
        requests.append(
            pb.ModelInferRequest(model_name="derm-cnn", inputs=[tensor], raw_input_contents=[raw])
        )
    channel = grpc.insecure_channel(address)
    stub = GRPCInferenceServiceStub(channel)
    for r in requests[:4]:
        stub.ModelInfer(r, timeout=60)
    lat: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker(k: int) -> None:
        mine, i = [], k
        while time.perf_counter() < stop:
            t = time.perf_counter()
            stub.ModelInfer(requests[i % len(requests)], timeout=60)
            mine.append(time.perf_counter() - t)
            i += concurrency
        with lock:
            lat.extend(mine)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    channel.close()
    p50, p99 = percentiles(lat)
    return {"p50": p50, "p99": p99, "ips": len(lat) / elapsed, "n": len(lat)}


def scrape(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, value = line.rsplit(" ", 1)
        out[key] = out.get(key, 0.0) + float(value)
    return out


def where_time_goes(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> None:
    def delta(kind: str, pattern: str) -> float:
        rx = re.compile(pattern)
        return sum(v - before[kind].get(k, 0.0) for k, v in after[kind].items() if rx.search(k))

    for stage in ("transform", "inference"):
        n = delta("pre", rf'sightline_stage_duration_seconds_count\{{.*stage="{stage}"')
        s = delta("pre", rf'sightline_stage_duration_seconds_sum\{{.*stage="{stage}"')
        if n:
            print(f"  preprocess stage {stage:9s}: {1000 * s / n:7.2f} ms per request")
    req = delta("triton", r'^nv_inference_request_success\{.*model="derm-cnn"')
    execs = delta("triton", r'^nv_inference_exec_count\{.*model="derm-cnn"')
    if req:
        for metric in ("queue", "compute_input", "compute_infer", "compute_output", "request"):
            us = delta("triton", rf'^nv_inference_{metric}_duration_us\{{.*model="derm-cnn"')
            print(f"  triton {metric:14s}: {us / req / 1000:7.2f} ms per request")
        batch = req / max(execs, 1)
        print(f"  triton average batch: {batch:.2f} ({int(req)} requests, {int(execs)} executions)")


def edited_repository(tmp: Path, instances: int | None, threads: int | None, delay_us: int | None) -> Path:
    repo = tmp / "model_repository"
    shutil.copytree(REPO / "model_repository", repo, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = repo / "derm-cnn" / "configs" / "local.pbtxt"
    text = cfg.read_text()
    if instances is not None:
        text = re.sub(r"count: \d+", f"count: {instances}", text)
    if threads is not None:
        text = re.sub(r'(key: "onnx_threads" value: \{ string_value: ")\d+', rf"\g<1>{threads}", text)
    if delay_us is not None:
        text = re.sub(r"max_queue_delay_microseconds: \d+", f"max_queue_delay_microseconds: {delay_us}", text)
    cfg.write_text(text)
    return repo


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument(
        "--instances", type=int, help="override instance_group count in a copy of local.pbtxt"
    )
    parser.add_argument("--onnx-threads", type=int, help="override onnx_threads in a copy of local.pbtxt")
    parser.add_argument("--delay-us", type=int, help="override max_queue_delay_microseconds in a copy")
    args = parser.parse_args()

    from sightline_common.manifest import load_manifest

    from sightline.stack import Stack, settings_on_free_ports

    manifest = load_manifest(REPO / "model_repository", "derm-cnn")
    spec = manifest.preprocessing
    images = dermoscopy_dicoms(args.images, spec.accepted_modalities[0], spec.accepted_sop_classes[0])
    print(f"model {manifest.name} v{manifest.version} (placeholder={manifest.placeholder})")
    print(f"input 3x{spec.height}x{spec.width}")
    print(f"{len(images)} images, {np.mean([len(b) for b in images]) / 1024:.0f} KiB mean DICOM size")

    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        repo = REPO / "model_repository"
        if any(v is not None for v in (args.instances, args.onnx_threads, args.delay_us)):
            repo = edited_repository(Path(tmp), args.instances, args.onnx_threads, args.delay_us)
        text = (repo / "derm-cnn" / "configs" / "local.pbtxt").read_text()
        knobs = re.findall(r"count: \d+|string_value: \"\d+\"|max_queue_delay_microseconds: \d+", text)
        print("local.pbtxt:", ", ".join(knobs))
        onnx_threads = int(re.search(r'onnx_threads" value: \{ string_value: "(\d+)', text).group(1))
        settings = settings_on_free_ports(Path(tmp) / "stack", model_repository=repo)
        stack = Stack(settings)
        t = time.perf_counter()
        stack.start(only=["triton", "preprocess"])
        print(f"stack ready in {time.perf_counter() - t:.1f}s")
        try:
            b = bare(repo / "derm-cnn", manifest, images, args.seconds, onnx_threads)
            address = f"127.0.0.1:{settings.preprocess_grpc_port}"
            urls = {
                "pre": f"http://127.0.0.1:{settings.preprocess_http_port}/metrics",
                "triton": f"http://127.0.0.1:{settings.triton_metrics_port}/metrics",
            }
            results = {}
            for c in (1, 8):
                before = {k: scrape(u) for k, u in urls.items()}
                results[c] = served(address, images, c, args.seconds)
                after = {k: scrape(u) for k, u in urls.items()}
                print(f"\nthrough preprocess + Triton, concurrency {c}: {results[c]['n']} requests")
                where_time_goes(before, after)
        finally:
            stack.stop()

    print("\n=== figures (ms; images/s) ===")
    print(
        f"bare ONNX Runtime, model only, batch 1:   p50 {b['model_b1_p50']:.2f}  p99 {b['model_b1_p99']:.2f}"
    )
    print(f"bare ONNX Runtime, model only, batch 16:  {b['model_batched_ips']:.1f} img/s")
    print(f"bare decode+transform+ONNX, batch {len(images)}:     {b['pipeline_batched_ips']:.1f} img/s")
    print(
        f"bare decode+transform+ONNX, batch 1:      p50 {b['pipeline_b1_p50']:.2f}"
        f"  p99 {b['pipeline_b1_p99']:.2f}  ({b['pipeline_b1_ips']:.1f} img/s)"
    )
    for c, r in results.items():
        print(f"served, concurrency {c}:  p50 {r['p50']:.2f}  p99 {r['p99']:.2f}  {r['ips']:.1f} img/s")
    print("\n=== goals ===")
    print(
        f"p50 served c1 / bare pipeline b1 = {results[1]['p50'] / b['pipeline_b1_p50']:.2f}x (goal <= 1.5x)"
    )
    print(f"p50 served c1 / bare model b1    = {results[1]['p50'] / b['model_b1_p50']:.2f}x (model only)")
    ratio = results[8]["ips"] / b["model_batched_ips"]
    print(f"throughput c8 / bare model batched = {ratio:.2f}x (goal >= 0.7x)")
    print(f"throughput c8 / bare pipeline b1   = {results[8]['ips'] / b['pipeline_b1_ips']:.2f}x")
    ratio = results[8]["ips"] / b["pipeline_batched_ips"]
    print(f"throughput c8 / bare pipeline batched = {ratio:.2f}x (decode + transform + batched model)")


if __name__ == "__main__":
    main()
