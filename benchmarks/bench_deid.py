"""Benchmark: Sightline's de-identification core vs pydicom/deid's default recipe vs dicognito.

Same generated canary corpus for every tool, one run on this machine, and the same boundary for
every tool: each one is handed a file's bytes and must return the de-identified file's bytes
(read, de-identify, write; Sightline's figure also includes its self-check re-parse). Setup
(loading recipes, building the engine) happens once, outside the timing, for every tool.

Tools are timed in interleaved rounds so that load from other processes on the machine hits all
of them alike; the figures are the median files per second with the range over the rounds. Also
printed: per tool, how many files still contain a canary (and how many canary markers in total),
and the ratios against the targets of issue 3. It does not fail on timing.

Run from the repository root: ``.venv/bin/python -m benchmarks.bench_deid [files-per-modality] [rounds]``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from io import BytesIO

import pydicom
from sightline_deid.core import burned_in
from sightline_deid.core.engine import Deidentifier
from sightline_deid.core.recipe import Recipe, load_recipe

from tests.unit.deid.deid_canary import canary_corpus, survivors

Tool = Callable[[bytes], bytes]
TARGETS = {"pydicom/deid default recipe": 10.0, "dicognito": 2.0}


def _save(ds: pydicom.Dataset) -> bytes:
    buf = BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=False)
    except Exception:  # noqa: BLE001 - deid's output may not be writable (UIDs deleted)
        buf = BytesIO()
        pydicom.filewriter.write_dataset(buf, ds)
    return buf.getvalue()


def setup_sightline() -> Tool:
    engine = Deidentifier(load_recipe("sightline-basic"), b"benchmark-secret-benchmark-secret-0")

    def run(data: bytes) -> bytes:
        return engine.deidentify(data, "bench").data

    return run


def setup_dicognito() -> Tool:
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer(seed="bench")

    def run(data: bytes) -> bytes:
        ds = pydicom.dcmread(BytesIO(data))
        anonymizer.anonymize(ds)
        return _save(ds)

    return run


def setup_deid() -> Tool:
    from deid.config import DeidRecipe
    from deid.dicom import replace_identifiers

    # DeidRecipe() also loads any file named deid* in the working directory: build it in an
    # empty one.
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            recipe = DeidRecipe()
        finally:
            os.chdir(cwd)

    def run(data: bytes) -> bytes:
        ds = pydicom.dcmread(BytesIO(data))  # deid accepts a data set in place of a path
        return _save(replace_identifiers(dicom_files=[ds], deid=recipe, save=False)[0])

    return run


def _needs_ocr(recipe: Recipe, data: bytes) -> bool:
    return burned_in.decide(recipe, pydicom.dcmread(BytesIO(data))).ocr is not None


def timed(tool: Tool, corpus: list[bytes]) -> tuple[float, list[bytes]]:
    start = time.perf_counter()
    outputs = [tool(data) for data in corpus]
    return len(corpus) / (time.perf_counter() - start), outputs


def describe(outputs: list[bytes]) -> tuple[int, int, str]:
    files_with = sum(1 for data in outputs if survivors(data))
    markers = sum(len(survivors(data)) for data in outputs)
    valid = 0
    for data in outputs:
        with contextlib.suppress(Exception):
            ds = pydicom.dcmread(BytesIO(data), force=True)
            valid += bool(ds.get("SOPInstanceUID") and ds.get("SOPClassUID"))
    return files_with, markers, f"{valid}/{len(outputs)} keep SOP UIDs"


def main() -> None:
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    per_modality = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    recipe = load_recipe("sightline-basic")
    generated = [data for _, data in canary_corpus(per_modality)]
    # Objects the recipe sends to OCR (CR, XC, US here) cost OCR's time per frame, measured apart
    # by bench_burned_in_ocr.py: this comparison times the files de-identified without OCR.
    corpus = [data for data in generated if not _needs_ocr(recipe, data)]
    print(f"corpus: {len(corpus)} generated files without OCR (of {len(generated)}, 5 modalities), "
          "canaries in every kind of place")
    print("boundary: every tool gets a file's bytes and returns the de-identified file's bytes "
          "(read + de-identify + write); setup is outside the timing")
    tools: dict[str, Tool] = {}
    failed: dict[str, str] = {}
    for name, setup in (("sightline_deid (core)", setup_sightline),
                        ("pydicom/deid default recipe", setup_deid),
                        ("dicognito", setup_dicognito)):
        try:
            tools[name] = setup()
            tools[name](corpus[0])  # warm-up: imports, caches
        except Exception as exc:  # noqa: BLE001 - report the failure of a third-party tool
            failed[name] = f"failed: {type(exc).__name__}"
            tools.pop(name, None)
    rates: dict[str, list[float]] = {name: [] for name in tools}
    outputs: dict[str, list[bytes]] = {}
    for _ in range(rounds):
        for name, tool in tools.items():
            rate, out = timed(tool, corpus)
            rates[name].append(rate)
            outputs.setdefault(name, out)
    print(f"{rounds} interleaved rounds; files/s as median [min-max]")
    print(f"{'tool':30s} {'files/s':>9s} {'range':>15s} {'files w/ canary':>16s} "
          f"{'canary markers':>15s}  output")
    median = {name: statistics.median(r) for name, r in rates.items()}
    for name in tools:
        files_with, markers, note = describe(outputs[name])
        spread = f"[{min(rates[name]):.0f}-{max(rates[name]):.0f}]"
        print(f"{name:30s} {median[name]:9.1f} {spread:>15s} {files_with:16d} {markers:15d}  {note}")
    for name, note in failed.items():
        print(f"{name:30s} {note}")
    ours = "sightline_deid (core)"
    if ours not in median:
        return
    for name, target in TARGETS.items():
        if name in median:
            ratio = median[ours] / median[name]
            verdict = "met" if ratio >= target else "NOT met"
            print(f"sightline_deid vs {name}: {ratio:.1f}x (target >= {target:g}x: {verdict})")
    survivors_ours = describe(outputs[ours])[0]
    print(f"sightline_deid canary survivors: {survivors_ours} (target 0: "
          f"{'met' if survivors_ours == 0 else 'NOT met'})")


if __name__ == "__main__":
    main()
