"""Benchmark: Sightline's de-identification core vs pydicom/deid's default recipe vs dicognito.

Same generated canary corpus for every tool, one run on this machine. Prints files per second
and, per tool, how many files still contain a canary (and how many canary markers in total).
It does not fail on timing. Run: ``.venv/bin/python benchmarks/bench_deid.py [files-per-modality]``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "unit" / "deid"), str(ROOT / "services" / "deid" / "src"),
                str(ROOT / "services" / "common" / "src")]

import pydicom  # noqa: E402
from deid_canary import canary_corpus, survivors  # noqa: E402
from sightline_deid.core.engine import Deidentifier  # noqa: E402
from sightline_deid.core.recipe import load_recipe  # noqa: E402


def _bytes(ds: pydicom.Dataset) -> bytes:
    buf = BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=False)
    except Exception:  # noqa: BLE001 - deid's output may not be writable (UIDs deleted)
        buf = BytesIO()
        pydicom.filewriter.write_dataset(buf, ds)
    return buf.getvalue()


def run_sightline(corpus: list[tuple[str, bytes]]) -> list[bytes]:
    engine = Deidentifier(load_recipe("sightline-basic"), b"benchmark-secret-benchmark-secret-0")
    return [engine.deidentify(data, "bench").data for _, data in corpus]


def run_dicognito(corpus: list[tuple[str, bytes]]) -> list[bytes]:
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer(seed="bench")
    out = []
    for _, data in corpus:
        ds = pydicom.dcmread(BytesIO(data))
        anonymizer.anonymize(ds)
        buf = BytesIO()
        ds.save_as(buf, enforce_file_format=False)
        out.append(buf.getvalue())
    return out


def run_deid(corpus: list[tuple[str, bytes]]) -> list[bytes]:
    # DeidRecipe() also loads any file named deid* in the working directory: run from an empty one.
    from deid.config import DeidRecipe
    from deid.dicom import replace_identifiers

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, (_, data) in enumerate(corpus):
            path = Path(tmp) / f"f{i:04d}.dcm"
            path.write_bytes(data)
            paths.append(str(path))
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            recipe = DeidRecipe()
            start = time.perf_counter()
            datasets = replace_identifiers(dicom_files=paths, deid=recipe, save=False)
            run_deid.elapsed = time.perf_counter() - start  # type: ignore[attr-defined]
        finally:
            os.chdir(cwd)
    return [_bytes(ds) for ds in datasets]


def measure(name: str, fn: Callable[[list[tuple[str, bytes]]], list[bytes]],
            corpus: list[tuple[str, bytes]]) -> tuple[str, float, int, int, str]:
    start = time.perf_counter()
    try:
        outputs = fn(corpus)
    except Exception as exc:  # noqa: BLE001 - report the failure of a third-party tool, keep going
        return name, float("nan"), -1, -1, f"failed: {type(exc).__name__}"
    elapsed = getattr(fn, "elapsed", None) or (time.perf_counter() - start)
    files_with = sum(1 for data in outputs if survivors(data))
    markers = sum(len(survivors(data)) for data in outputs)
    valid = 0
    for data in outputs:
        with contextlib.suppress(Exception):
            ds = pydicom.dcmread(BytesIO(data), force=True)
            valid += bool(ds.get("SOPInstanceUID") and ds.get("SOPClassUID"))
    return name, len(corpus) / elapsed, files_with, markers, f"{valid}/{len(outputs)} keep SOP UIDs"


def main() -> None:
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    per_modality = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    corpus = canary_corpus(per_modality)
    print(f"corpus: {len(corpus)} generated files, 5 modalities, canaries in every kind of place")
    rows = [measure("sightline_deid (core)", run_sightline, corpus),
            measure("pydicom/deid default recipe", run_deid, corpus),
            measure("dicognito 0.19", run_dicognito, corpus)]
    print(f"{'tool':30s} {'files/s':>9s} {'files w/ canary':>16s} {'canary markers':>15s}  output")
    for name, rate, files_with, markers, note in rows:
        print(f"{name:30s} {rate:9.1f} {files_with:16d} {markers:15d}  {note}")
    base = rows[0][1]
    for name, rate, *_ in rows[1:]:
        if rate == rate and rate > 0:
            print(f"speed-up of sightline_deid over {name}: {base / rate:.1f}x")


if __name__ == "__main__":
    main()
