"""`sightline monitor report` on a generated gateway database: the numbers in the HTML are the
offline computation's (scikit-learn's confusion matrix over the generator's truths), the plots are
embedded, the drifting site is flagged. SIGHTLINE_UPDATE_DOCS=1 refreshes docs/monitor-report.png
with headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from sklearn.metrics import confusion_matrix
from typer.testing import CliRunner

from tests.unit.monitor_fixtures import START, generate

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    tmp = tmp_path_factory.mktemp("monitor")
    truths = generate(tmp / "gw.db")
    return tmp, truths


def _run(tmp: Path, *args: str) -> tuple[int, str]:
    from sightline.cli import app

    result = CliRunner().invoke(
        app,
        [
            "monitor", "report", "--since", f"{START:%Y-%m-%d}", "--until", "2026-11-01",
            "--database-url", f"sqlite+aiosqlite:///{tmp / 'gw.db'}",
            "--model-repository", str(ROOT / "model_repository"), "--out", str(tmp / "report.html"), *args,
        ],
    )  # fmt: skip
    return result.exit_code, result.output


def test_report_numbers_match_an_offline_computation(built: tuple[Path, list]) -> None:
    tmp, truths = built
    code, output = _run(tmp)
    assert code == 0, output
    page = (tmp / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 2
    for tenant in ("hospital-a", "hospital-b"):
        mine = [t for t in truths if t.tenant == tenant and t.confirmed]
        tn, fp, fn, tp = confusion_matrix(
            [t.malignant for t in mine], [t.refer for t in mine], labels=[False, True]
        ).ravel()
        row = re.search(rf"<td>derm-cnn</td><td>1</td><td>{tenant}</td>(.*?)</tr>", page)
        assert row, tenant
        cells = row.group(1)
        assert f"{tp}/{tp + fn}</small>" in cells  # sensitivity's count
        assert f"{tn}/{tn + fp}</small>" in cells  # specificity's count
        assert f"{tp / (tp + fn):.2f} <small>" in cells
        results = sum(t.tenant == tenant for t in truths)
        assert f"{len(mine)}/{results}</small>" in cells  # verification share
    assert "Verification bias" in page and "proxy" in page


def test_the_drifting_site_is_flagged(built: tuple[Path, list]) -> None:
    tmp, _ = built
    code, output = _run(tmp, "--since", "2026-08-01")
    assert code == 0, output
    page = (tmp / "report.html").read_text()
    east = re.search(r"<td>1</td><td>hospital-b</td><td>east</td>(.*?)</tr>", page)
    north = re.search(r"<td>1</td><td>hospital-a</td><td>north</td>(.*?)</tr>", page)
    assert east and north
    assert 'class="low"' in east.group(1) and 'class="low"' not in north.group(1)


def test_no_results_is_an_error(built: tuple[Path, list]) -> None:
    tmp, _ = built
    code, output = _run(tmp, "--since", "2030-01-01", "--until", "2030-02-01")
    assert code == 1 and "no derm-cnn results" in output


def test_screenshot_for_the_readme(built: tuple[Path, list]) -> None:
    """The README shows docs/monitor-report.png: it must exist and be a real screenshot.

    SIGHTLINE_UPDATE_DOCS=1 redraws it from a generated database in headless Chromium.
    """
    out = ROOT / "docs" / "monitor-report.png"
    if os.environ.get("SIGHTLINE_UPDATE_DOCS") == "1":
        tmp, _ = built
        assert _run(tmp, "--window-days", "30", "--step-days", "7")[0] == 0
        chromium = shutil.which("chromium")
        assert chromium, "scripts/get-chromium.sh installs it"
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--hide-scrollbars", "--window-size=1200,1900",
             f"--screenshot={out}", (tmp / "report.html").as_uri()],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "docs/monitor-report.png is not a PNG"
    assert len(data) > 10_000, "docs/monitor-report.png looks blank"
