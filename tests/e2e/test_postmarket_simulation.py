"""Post-market monitoring through the real stack, watched by a real Prometheus (issue 20).

Three hospitals send HAM10000 test-split lesions (tests/e2e/postmarket, see build_fixture.py)
through the whole stack (gateway, deid, preprocess, Triton) as photographs with their sidecar
attributes, and a pathology interface posts the confirmed diagnoses:

- ``clinic-a`` sends 100 lesions like the training sites'; outcomes arrive for every referred
  lesion and for a third of the others (benign lesions are biopsied less often: verification bias).
  The gateway's real-world sensitivity and specificity must equal an independent computation from
  the results it returned and the outcomes posted, exactly, and Prometheus must hold the same
  values.
- ``clinic-b`` sends 24 malignant lesions the model under-calls: the sensitivity alert must fire
  for it and not for clinic-a.
- ``clinic-c`` sends clinic-a's images as another camera would take them (darker, bluer): the input
  drift alert must fire for it and not for clinic-a.

The rules are infra/prometheus/rules as shipped, with only ``for:`` shortened to 0s, evaluated
every second. The stack recomputes the real-world gauges every 2 s instead of every minute.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from sightline.stack import Stack, http_ok, settings_on_free_ports
from sightline.stack.prometheus import prometheus_component
from tests.conftest import REPO, free_ports, skip_or_fail_in_ci

pytestmark = pytest.mark.timeout(900)

FIXTURE = Path(__file__).resolve().parent / "postmarket"
MODEL, VERSION = "derm-cnn", "1"
#: The z of a two-sided 95% interval, as the gateway uses for its Wilson bounds.
Z95 = 1.959963984540054
#: A camera unlike the training sites': darker and bluer (per-channel gain, then a gamma).
CAMERA_GAIN, CAMERA_GAMMA = np.array([0.70, 0.80, 1.10]), 1.6
RATE_LIMITED_RETRIES = 60


@dataclass(frozen=True)
class Case:
    image_id: str
    malignant: bool
    sex: str
    age: str
    localization: str
    site: str
    code_system: str
    code: str


@dataclass
class Sent:
    case: Case
    study_id: str
    refer: bool
    probability: float


def cases(stream: str) -> list[Case]:
    with (FIXTURE / "cases.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["stream"] == stream]
    return [
        Case(
            r["image_id"],
            r["malignant"] == "1",
            r["sex"],
            r["age"],
            r["localization"],
            r["site"],
            r["code_system"],
            r["code"],
        )
        for r in rows
    ]


def photograph(case: Case, camera: bool = False) -> bytes:
    data = (FIXTURE / "images" / f"{case.image_id}.jpg").read_bytes()
    if not camera:
        return data
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float64) / 255.0
    shifted = np.clip((rgb * CAMERA_GAIN) ** CAMERA_GAMMA, 0, 1)
    out = io.BytesIO()
    Image.fromarray((shifted * 255).round().astype(np.uint8)).save(out, "JPEG", quality=92)
    return out.getvalue()


def sidecar(case: Case) -> str:
    meta: dict[str, Any] = {
        "sex": case.sex,
        "body_site": case.localization,
        "device": f"dermoscope ({case.site})",
    }
    if case.age:
        meta["age"] = int(case.age)
    return json.dumps(meta)


async def post_waiting_out_429(client: httpx.AsyncClient, url: str, **kwargs: Any) -> httpx.Response:
    """POST as a well-behaved client: a 429 is waited out (its Retry-After) and sent again."""
    for _ in range(RATE_LIMITED_RETRIES):
        r = await client.post(url, **kwargs)
        if r.status_code != 429:
            return r
        await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
    return r


@dataclass
class Hospital:
    """The stack, its Prometheus and tokens per tenant."""

    stack: Stack
    prometheus: str

    @property
    def url(self) -> str:
        return f"http://{self.stack.settings.host}:{self.stack.settings.gateway_port}"

    def token(self, tenant: str, role: str) -> str:
        from sightline_gateway.core.auth import mint_dev_token

        secret = json.loads((self.stack.settings.data_dir / "secrets.json").read_text())["jwt_secret"]
        return mint_dev_token(secret, "sightline-dev", "sightline", tenant, [role], 3600, f"{tenant}-{role}")

    def submit(self, tenant: str, sent: list[Case], camera: bool = False) -> list[Sent]:
        return asyncio.run(self._submit(tenant, sent, camera))

    async def _submit(self, tenant: str, batch: list[Case], camera: bool) -> list[Sent]:
        gate = asyncio.Semaphore(4)
        headers = {"Authorization": f"Bearer {self.token(tenant, 'submitter')}"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=180) as client:

            async def one(case: Case) -> Sent:
                # As a hospital client would: one key per study, a 429 waited out and retried.
                key, files = (
                    f"{tenant}-{case.image_id}",
                    {
                        "image": (f"{case.image_id}.jpg", photograph(case, camera), "image/jpeg"),
                        "metadata": (None, sidecar(case)),
                    },
                )
                async with gate:
                    r = await post_waiting_out_429(
                        client,
                        "/v1/studies",
                        params={"mode": "sync", "explain": "false"},
                        files=files,
                        headers={"Idempotency-Key": key},
                    )
                assert r.status_code == 200, f"{case.image_id}: {r.status_code} {r.text[:300]}"
                body = r.json()
                assert body["model"]["name"] == MODEL
                return Sent(case, body["study_id"], body["refer"], body["probability"])

            return list(await asyncio.gather(*(one(c) for c in batch)))

    def post_outcomes(self, tenant: str, sent: list[Sent]) -> None:
        asyncio.run(self._post_outcomes(tenant, sent))

    async def _post_outcomes(self, tenant: str, sent: list[Sent]) -> None:
        headers = {"Authorization": f"Bearer {self.token(tenant, 'outcome-reporter')}"}
        today = date.today().isoformat()
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60) as client:
            for s in sent:
                method = "histopathology" if s.refer or s.case.malignant else "clinical-follow-up"
                body = {
                    "code_system": s.case.code_system,
                    "code": s.case.code,
                    "method": method,
                    "diagnosed_on": today,
                }
                r = await post_waiting_out_429(client, f"/v1/studies/{s.study_id}/outcome", json=body)
                assert r.status_code == 201, r.text
                assert r.json()["positive"] is s.case.malignant

    def gateway_gauges(self) -> dict[tuple[str, ...], float]:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        out: dict[tuple[str, ...], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "sightline_realworld_estimate":
                    labels = sample.labels
                    out[("estimate", labels["tenant"], labels["metric"], labels["bound"])] = sample.value
                elif sample.name == "sightline_realworld_cases":
                    out[("cases", sample.labels["tenant"], sample.labels["kind"])] = sample.value
        return out

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        body = json.loads(urllib.request.urlopen(url, timeout=10).read())
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def firing(self) -> list[dict[str, str]]:
        body = json.loads(urllib.request.urlopen(f"{self.prometheus}/api/v1/alerts", timeout=10).read())
        return [a["labels"] for a in body["data"]["alerts"] if a["state"] == "firing"]


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hospital]:
    if shutil.which("prometheus") is None:
        skip_or_fail_in_ci("prometheus not installed (scripts/get-prometheus.sh)")
    data = tmp_path_factory.mktemp("postmarket")
    settings = settings_on_free_ports(
        data, model_repository=REPO / "model_repository", models=[MODEL], outcome_metrics_interval_s=2.0
    )
    stack = Stack(settings)
    stack.start()
    proc = None
    try:
        comp = prometheus_component(settings, port=free_ports(1)[0], interval="1s")
        for rules in (data / "prometheus" / "rules").glob("*.yaml"):
            rules.write_text(re.sub(r"(?m)^(\s+)for: \S+$", r"\1for: 0s", rules.read_text()))
        proc = subprocess.Popen(comp.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not http_ok(comp.ready_url) and time.monotonic() < deadline:
            assert proc.poll() is None, "prometheus exited"
            time.sleep(0.5)
        yield Hospital(stack, comp.listens["http"])
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        stack.stop()


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson score interval, written out here independently of the gateway's."""
    p, z2 = k / n, Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def wait_for(what: str, check: Any, timeout_s: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1.0)


def test_the_monitoring_loop_measures_real_world_performance_and_alerts(hospital: Hospital) -> None:
    held_in = cases("held_in")
    a = hospital.submit("clinic-a", held_in)
    b = hospital.submit("clinic-b", cases("missed"))
    c = hospital.submit("clinic-c", held_in, camera=True)
    assert len(a) == len(c) == 100 and len(b) == 24

    # Outcomes: every referred lesion of clinic-a and a third of the rest; all of clinic-b's.
    a_confirmed = [s for i, s in enumerate(a) if s.refer or i % 3 == 0]
    hospital.post_outcomes("clinic-a", a_confirmed)
    hospital.post_outcomes("clinic-b", b)

    # The gateway's figures equal an independent computation from what it returned.
    expected: dict[tuple[str, ...], float] = {}
    for tenant, confirmed, results in (("clinic-a", a_confirmed, a), ("clinic-b", b, b)):
        tp = sum(s.refer and s.case.malignant for s in confirmed)
        fn = sum(not s.refer and s.case.malignant for s in confirmed)
        tn = sum(not s.refer and not s.case.malignant for s in confirmed)
        fp = sum(s.refer and not s.case.malignant for s in confirmed)
        expected[("cases", tenant, "results")] = len(results)
        expected[("cases", tenant, "with_outcome")] = len(confirmed)
        expected[("cases", tenant, "confirmed_positive")] = tp + fn
        expected[("cases", tenant, "confirmed_negative")] = tn + fp
        for metric, k, n in (("sensitivity", tp, tp + fn), ("specificity", tn, tn + fp)):
            if n:
                expected[("estimate", tenant, metric, "point")] = k / n
                low, high = wilson(k, n)
                expected[("estimate", tenant, metric, "lower")] = low
                expected[("estimate", tenant, metric, "upper")] = high

    def gauges_current() -> dict[tuple[str, ...], float] | None:
        got = hospital.gateway_gauges()
        counted = all(got.get(k) == v for k, v in expected.items() if k[0] == "cases")
        return got if counted else None

    got = wait_for("the gateway's real-world gauges to count every outcome", gauges_current, 30)
    for key, value in expected.items():
        assert got.get(key) == pytest.approx(value, abs=1e-12), key
    point = ("estimate", "clinic-a", "sensitivity", "point")
    assert got[point] == expected[point], "sensitivity is a count ratio: it must match exactly"

    # Prometheus scraped the same values.
    def scraped() -> list[dict[str, Any]]:
        return hospital.query(
            'sightline_realworld_estimate{tenant="clinic-a",metric="sensitivity",bound="point"}'
        )

    series = wait_for("Prometheus to scrape the sensitivity gauge", scraped)
    assert float(series[0]["value"][1]) == expected[point]

    # The alerts: sensitivity for clinic-b only; input drift for clinic-c only.
    claim = float(
        hospital.query(f'sightline_model_claimed{{model="{MODEL}",metric="sensitivity"}}')[0]["value"][1]
    )
    should_fire = {
        t
        for t in ("clinic-a", "clinic-b")
        if expected[("cases", t, "confirmed_positive")] >= 20
        and expected[("estimate", t, "sensitivity", "upper")] < claim
    }
    assert should_fire == {"clinic-b"}, "the fixture no longer separates the two clinics"

    def alerts_in() -> list[dict[str, str]] | None:
        firing = hospital.firing()
        names = {(f["alertname"], f.get("tenant") or f.get("segment")) for f in firing}
        wanted = {("SightlineSensitivityBelowClaim", "clinic-b"), ("SightlineInputDrift", "clinic-c")}
        return firing if wanted <= names else None

    firing = wait_for("the sensitivity and drift alerts to fire", alerts_in, 90)
    sensitivity = {f["tenant"] for f in firing if f["alertname"] == "SightlineSensitivityBelowClaim"}
    drifted = {
        f["segment"] for f in firing if f["alertname"] in ("SightlineInputDrift", "SightlineScoreDrift")
    }
    psi = {
        r["metric"]["segment"]: float(r["value"][1])
        for r in hospital.query('max by (segment) (sightline_drift_psi{feature!="score"})')
    }
    for tenant in ("clinic-a", "clinic-b"):
        print(
            f"{tenant}: sensitivity {expected[('estimate', tenant, 'sensitivity', 'point')]:.3f} "
            f"(95% CI {expected[('estimate', tenant, 'sensitivity', 'lower')]:.3f}-"
            f"{expected[('estimate', tenant, 'sensitivity', 'upper')]:.3f}) over "
            f"{expected[('cases', tenant, 'confirmed_positive')]:.0f} confirmed malignant; claim {claim:.3f}"
        )
    print(
        f"largest input PSI by clinic: {psi}; firing: "
        f"{sorted({(f['alertname'], f.get('tenant') or f.get('segment') or '') for f in firing})}"
    )
    assert sensitivity == should_fire
    assert "clinic-a" not in drifted, f"held-in images raised a drift alert: {firing}"
    assert "clinic-c" in drifted
