"""Submit a sample photograph to a running gateway and return its result (used by ``sightline up``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def default_sample() -> Path:
    """The first committed sample image."""
    return sorted(SAMPLES.glob("*.jpg"))[0]


def demo_samples() -> list[Path]:
    """One sample per reference model: a dermoscopy photograph and a chest X-ray (DX DICOM)."""
    return [default_sample(), *sorted(SAMPLES.glob("cxr_*.dcm"))[-1:]]


def run_demo(
    gateway_url: str, token: str, sample: Path, *, out_dir: Path | None = None, timeout_s: float = 120.0
) -> dict[str, Any]:
    """Submit ``sample`` (JPEG/PNG with its ``.json`` sidecar, or a DICOM ``.dcm`` file such as the
    chest X-ray samples) synchronously; return the result.

    The returned dict holds ``result`` (the gateway's JSON result), ``study_url``, ``overlay_url``
    (a time-limited link to the Grad-CAM overlay PNG, or None when no explanation was made) and,
    when ``out_dir`` is given, ``overlay_png``: where the overlay was saved.
    """
    sidecar = sample.with_suffix(".json")
    metadata = sidecar.read_text() if sidecar.is_file() else "{}"
    content_type = "image/png" if sample.suffix.lower() == ".png" else "image/jpeg"
    base = gateway_url.rstrip("/")
    with httpx.Client(timeout=timeout_s, headers={"Authorization": f"Bearer {token}"}) as client:
        if sample.suffix.lower() == ".dcm":
            response = client.post(
                f"{base}/v1/studies",
                params={"mode": "sync"},
                content=sample.read_bytes(),
                headers={"Content-Type": "application/dicom"},
            )
        else:
            response = client.post(
                f"{base}/v1/studies",
                params={"mode": "sync"},
                files={
                    "image": (sample.name, sample.read_bytes(), content_type),
                    "metadata": (None, metadata),
                },
            )
        if response.status_code not in (200, 202):
            raise RuntimeError(f"gateway refused the sample ({response.status_code}): {response.text[:300]}")
        location = response.headers.get("Location", "")
        if response.status_code == 202:
            raise RuntimeError(f"no result within the sync bound; poll {base}{location}")
        result = response.json()
        links = (result.get("explanation") or {}).get("links") or {}
        overlay_url = links.get("overlay_png")
        out: dict[str, Any] = {"result": result, "study_url": f"{base}{location}", "overlay_url": overlay_url}
        if overlay_url and out_dir is not None:
            png = client.get(overlay_url)
            png.raise_for_status()
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / f"{result['study_id']}-overlay.png"
            path.write_bytes(png.content)
            out["overlay_png"] = str(path)
    return out


if __name__ == "__main__":  # pragma: no cover - manual use: python -m sightline.demo URL TOKEN [IMAGE]
    import sys

    args = sys.argv[1:]
    print(
        json.dumps(
            run_demo(
                args[0], args[1], Path(args[2]) if len(args) > 2 else default_sample(), out_dir=Path(".")
            ),
            indent=2,
        )
    )
