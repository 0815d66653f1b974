"""In-process sections of the GPU suite: torch variants, Grad-CAM, training, ONNX Runtime, CPU.

Each ``run_*`` takes the plan (a JSON-able dict built by ``__main__``) and returns JSON-able
figures; the orchestrator runs each in its own process under its own timeout.
"""

# The timed closures run inside the loop iteration that defines them.
# ruff: noqa: B023
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import torch
from sightline_explain.core.gradcam import explain_batch
from torch import nn

from benchmarks.gpu.common import (
    ModelSpec,
    count_flops,
    figures,
    load_model,
    measured_matmul_tflops,
    model_spec,
    precision_peak,
    synthetic,
    time_fn,
)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

#: (name, precision, channels-last, CUDA graph, input from host memory)
VARIANTS: list[tuple[str, str, bool, bool, bool]] = [
    ("fp32", "fp32", False, False, False),
    ("fp32-cl", "fp32", True, False, False),
    ("bf16", "bf16", False, False, False),
    ("fp16", "fp16", False, False, False),
    ("bf16-cl", "bf16", True, False, False),
    ("fp16-cl", "fp16", True, False, False),
    ("bf16-cl-graph", "bf16", True, True, False),
    ("fp16-cl-graph", "fp16", True, True, False),
    # What a server does per request: copy in from host memory, run, copy the logits out.
    ("bf16-cl-host", "bf16", True, False, True),
]


def _device(plan: dict[str, Any]) -> torch.device:
    device = torch.device(plan["device"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def _autocast(device: torch.device, precision: str, cache: bool = True) -> torch.autocast:
    dtype = DTYPES[precision]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32, cache_enabled=cache)


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-12))


def _forward(
    model: nn.Module, device: torch.device, precision: str
) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), _autocast(device, precision, cache=False):
            out: torch.Tensor = model(x)
        return out

    return run


def _graphed(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """``run(x)`` captured once as a CUDA graph; each call replays it on the same buffers."""
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            run(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = run(static_x)

    def replay() -> torch.Tensor:
        graph.replay()
        return static_y

    return replay


def _variant(
    model: nn.Module,
    device: torch.device,
    precision: str,
    x: torch.Tensor,
    host_x: torch.Tensor,
    channels_last: bool,
    graph: bool,
    from_host: bool,
) -> Callable[[], torch.Tensor]:
    """One timed call of a variant: a forward on ``x`` (or on ``host_x`` copied in and back)."""
    run = _forward(model, device, precision)
    xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    if graph:
        return _graphed(run, xin)
    if from_host:

        def from_host_memory() -> torch.Tensor:
            xd = host_x.to(device, non_blocking=True)
            return run(xd.contiguous(memory_format=torch.channels_last)).float().cpu()

        return from_host_memory
    return lambda: run(xin)


def run_inprocess(plan: dict[str, Any]) -> dict[str, Any]:
    """Forward throughput and latency of each variant at each batch size, beside % of peak."""
    device = _device(plan)
    spec = model_spec()
    base = load_model(spec, device)
    cl = load_model(spec, device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    rows: list[dict[str, Any]] = []
    for batch in plan["batches"]:
        x = synthetic(spec, batch, device)
        ref = _forward(base, device, "fp32")(x)
        host_x = x.cpu().pin_memory() if device.type == "cuda" else x.cpu()
        for name, precision, channels_last, graph, from_host in VARIANTS:
            row: dict[str, Any] = {"variant": name, "precision": precision, "batch": batch}
            if graph and device.type != "cuda":
                rows.append({**row, "skipped": "CUDA graphs need a CUDA device"})
                continue
            model = cl if channels_last else base
            try:
                fn = _variant(model, device, precision, x, host_x, channels_last, graph, from_host)
                row["rel_err_vs_fp32"] = round(_rel_err(fn(), ref), 6)
                samples = time_fn(fn, device, iters=plan["iters"], seconds=plan["seconds"])
            except RuntimeError as exc:  # one variant failing (a graph capture, say) keeps the others
                rows.append({**row, "error": str(exc)[:400]})
                continue
            peak = precision_peak(plan["peaks"], precision)
            rows.append({**row, **figures(samples, batch, plan["flops"]["forward"], peak)})
    return {"rows": rows}


def run_gradcam(plan: dict[str, Any]) -> dict[str, Any]:
    """Grad-CAM (the explain service's batched implementation) against a forward pass."""
    device = _device(plan)
    spec = model_spec()
    model = load_model(spec, device)
    rows: list[dict[str, Any]] = []
    for precision in ("fp32", "bf16"):
        forward = _forward(model, device, precision)
        peak = precision_peak(plan["peaks"], precision)
        for batch in plan["gradcam_batches"]:
            x = synthetic(spec, batch, device)
            targets = torch.ones(batch, dtype=torch.long, device=device)

            def cam(x: torch.Tensor = x, targets: torch.Tensor = targets) -> torch.Tensor:
                with _autocast(device, precision):
                    return explain_batch(model, x, targets).heatmaps

            heat = cam()
            fwd = figures(
                time_fn(lambda x=x: forward(x), device, iters=plan["iters"], seconds=plan["seconds"]),
                batch,
                plan["flops"]["forward"],
                peak,
            )
            gc = figures(
                time_fn(cam, device, iters=plan["iters"], seconds=plan["seconds"]),
                batch,
                plan["flops"]["gradcam"],
                peak,
            )
            rows.append(
                {
                    "precision": precision,
                    "batch": batch,
                    "forward": fwd,
                    "gradcam": gc,
                    "ratio": round(gc["p50_ms"] / fwd["p50_ms"], 4),
                    "heatmap_range": [round(float(heat.min()), 4), round(float(heat.max()), 4)],
                }
            )
    return {"rows": rows}


def run_train(plan: dict[str, Any]) -> dict[str, Any]:
    """Training steps per second on synthetic images: fp32, bf16 autocast, fp16 with GradScaler."""
    device = _device(plan)
    spec = model_spec()
    rows: list[dict[str, Any]] = []
    for precision in ("fp32", "bf16", "fp16"):
        for batch in plan["train_batches"]:
            model = load_model(spec, device).train().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            for p in model.parameters():
                p.requires_grad_(True)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
            criterion = nn.BCEWithLogitsLoss()
            x = synthetic(spec, batch, device).contiguous(memory_format=torch.channels_last)
            y = (torch.arange(batch, device=device) % 2).float()[:, None]
            losses: list[torch.Tensor] = []

            def step(
                model: nn.Module = model,
                opt: torch.optim.Optimizer = opt,
                scaler: torch.amp.GradScaler = scaler,
                x: torch.Tensor = x,
                y: torch.Tensor = y,
            ) -> None:
                with _autocast(device, precision):
                    loss = criterion(model(x).float(), y)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                losses.append(loss.detach())

            samples = time_fn(step, device, iters=plan["iters"], seconds=plan["seconds"])
            peak = precision_peak(plan["peaks"], precision)
            row = figures(samples, batch, plan["flops"]["train"], peak)
            row.update(precision=precision, loss_finite=bool(torch.stack(losses).isfinite().all()))
            rows.append(row)
    return {"rows": rows}


def run_cpu_baseline(plan: dict[str, Any]) -> dict[str, Any]:
    """The same forward on this machine's CPU, fp32, beside the CPU's own measured matmul ceiling."""
    threads = min(os.cpu_count() or 1, 16)
    torch.set_num_threads(threads)
    device = torch.device("cpu")
    peak = measured_matmul_tflops(device, torch.float32, plan["cpu_matmul_n"], 5)
    spec = model_spec()
    model = load_model(spec, device)
    forward = _forward(model, device, "fp32")
    rows = []
    for batch in plan["cpu_batches"]:
        x = synthetic(spec, batch, device)
        samples = time_fn(lambda x=x: forward(x), device, iters=plan["iters"], seconds=plan["seconds"])
        rows.append(
            {
                "variant": "cpu-fp32",
                "precision": "fp32",
                **figures(samples, batch, plan["flops"]["forward"], peak),
            }
        )
    return {"threads": threads, "peak_tflops_measured": round(peak, 6), "rows": rows}


def run_onnxruntime(plan: dict[str, Any]) -> dict[str, Any]:
    """model.onnx under ONNX Runtime's CUDA/TensorRT providers when this onnxruntime has them.

    The dry run uses the CPU provider so that this code path runs on every CI machine.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = (
        ["CPUExecutionProvider"]
        if plan["dry_run"]
        else [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
    )
    info: dict[str, Any] = {"onnxruntime": ort.__version__, "available_providers": available}
    if not wanted:
        return {**info, "skipped": "this onnxruntime has no CUDA or TensorRT execution provider"}
    spec = model_spec()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gpu-suite-trt-") as cache:
        for provider in wanted:
            rows += _ort_rows(plan, spec, provider, cache)
    return {**info, "rows": rows}


def _ort_rows(plan: dict[str, Any], spec: ModelSpec, provider: str, cache: str) -> list[dict[str, Any]]:
    """Each batch size through one execution provider (TensorRT builds fp16 engines, cached)."""
    import onnxruntime as ort

    path = spec.repository / "derm-cnn" / str(spec.version) / "model.onnx"
    rows: list[dict[str, Any]] = []
    options: dict[str, Any] = {}
    precision = "fp32"
    if provider == "TensorrtExecutionProvider":
        options = {
            "trt_fp16_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": cache,
        }
        precision = "fp16"
    session = ort.InferenceSession(str(path), providers=[(provider, options)])
    name = session.get_inputs()[0].name
    for batch in plan["batches"]:
        x = synthetic(spec, batch, torch.device("cpu")).numpy()
        samples = time_fn(
            lambda x=x: session.run(None, {name: x}),
            torch.device("cpu"),
            iters=plan["iters"],
            seconds=plan["seconds"],
        )
        peak = precision_peak(plan["peaks"], precision)
        rows.append(
            {
                "variant": f"ort-{provider.removesuffix('ExecutionProvider').lower()}",
                "precision": precision,
                **figures(samples, batch, plan["flops"]["forward"], peak),
            }
        )
    return rows


def run_env(plan: dict[str, Any]) -> dict[str, Any]:
    """The card, its peaks (datasheet and measured in this run) and the model's FLOPs per image."""
    from benchmarks.gpu.common import datasheet_peaks

    device = _device(plan)
    spec = model_spec()
    cpu = torch.device("cpu")
    model = load_model(spec, cpu)
    x1, x2 = synthetic(spec, 1, cpu), synthetic(spec, 2, cpu)
    trainable = load_model(spec, cpu).train()
    for p in trainable.parameters():
        p.requires_grad_(True)
    flops = {
        "forward": count_flops(lambda: model(x1)),
        # FlopCounterMode's module hooks refuse autograd.grad on a leaf (Grad-CAM's feature map): one
        # forward, plus the head's input gradient (2 FLOPs per weight), is all that Grad-CAM adds up.
        "gradcam": count_flops(lambda: model(x1)) + 2 * sum(p.numel() for p in model.head.parameters()),
        "train": count_flops(lambda: trainable(x2).sum().backward()) // 2,
    }
    n, repeats = plan["matmul_n"], 10
    measured = {
        p: round(measured_matmul_tflops(device, DTYPES[p], n, repeats), 6) for p in ("fp32", "bf16", "fp16")
    }
    if device.type == "cuda":
        card = torch.cuda.get_device_name(device)
        props = torch.cuda.get_device_properties(device)
        extra = {
            "multiprocessors": props.multi_processor_count,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }
    else:
        card, extra = f"cpu ({os.cpu_count()} cores)", {}
    sheet = datasheet_peaks(card) if device.type == "cuda" else None
    return {
        "card": card,
        "device": str(device),
        "torch": torch.__version__,
        **extra,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "flops_per_image": flops,
        "input": [3, spec.height, spec.width],
        "peak_tflops_datasheet": sheet,
        "peak_tflops_measured": measured,
        # % of peak is taken against the datasheet where the card is known, else against this run's
        # matrix-product ceiling (fp32 convolutions count against TF32 when cuDNN allows it).
        "peak_source": "datasheet" if sheet else "measured matmul",
        "peaks": sheet or measured,
    }
