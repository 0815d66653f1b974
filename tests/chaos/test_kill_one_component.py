"""No study lost when one component is SIGKILLed under load and comes back later (issue 13).

A hospital client submits STUDIES studies asynchronously (paced, at most 8 in flight, one
Idempotency-Key each, connection errors and 5xx retried with the same key). Once KILL_AFTER
submissions are answered, one component is SIGKILLed; it is started again DOWN_S later, longer
than the gateway's retry window before issue 13 (5 attempts: 1+2+4+8 s). Then every study must reach a
successful result, each key must name one study, each study have at most one result, and every
requested heatmap be there in the end. The time from restart to the first result is reported.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

import pytest

from sightline.stack import Stack, StackState, http_ok, kill_component, restart_component
from tests.chaos.client import HospitalClient, Study, submit_paced
from tests.chaos.conftest import FIGURES, ChaosStack, logs_tail

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

STUDIES = 12
KILL_AFTER = 3
SUBMIT_INTERVAL_S = 0.5
CONCURRENCY = 8
DOWN_S = 20.0
#: After the restart, how long studies may take to finish and heatmaps to be filled in.
SETTLE_S = 120.0
HEATMAP_GRACE_S = 45.0

#: Every component is expected to ride out its outage. (Before fef3559's time-budget retries,
#: triton and preprocess lost studies and explain lost heatmaps here: mark a regression that
#: cannot be fixed at once ``pytest.mark.xfail(strict=True, reason="issue N: ...")``.)
COMPONENTS = ["triton", "preprocess", "deid", "explain", "gateway"]


@dataclass
class Outage:
    killed_at: float = 0.0
    restarted_at: float = 0.0
    ready_at: float = 0.0


def dicoms() -> list[bytes]:
    from tests.unit.gateway.gateway_fixtures import phi_dicom

    return [phi_dicom(rows=96, cols=128, seed=i) for i in range(4)]


def wait_all_ready(stack: Stack, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        urls = [c.ready_url for c in StackState.load(stack.settings.state_file).components]
        if all(http_ok(url) for url in urls):
            return
        time.sleep(1)
    raise AssertionError(f"stack not ready before the case: {stack.status()}")


async def inject(stack: Stack, component: str, under_load: asyncio.Event, outage: Outage) -> None:
    await under_load.wait()
    outage.killed_at = time.time()
    await asyncio.to_thread(kill_component, stack.settings, component)
    await asyncio.sleep(DOWN_S)
    outage.restarted_at = time.time()
    await asyncio.to_thread(restart_component, stack, component)
    outage.ready_at = time.time()


async def run_case(env: ChaosStack, component: str, tenant: str) -> tuple[list[Study], Outage]:
    client = HospitalClient(env.url, env.token(tenant))
    studies = [Study(key=f"{tenant}-{i:03d}", explain=i % 2 == 0) for i in range(STUDIES)]
    under_load, outage = asyncio.Event(), Outage()
    try:
        await asyncio.gather(
            submit_paced(
                client,
                studies,
                dicoms(),
                concurrency=CONCURRENCY,
                interval_s=SUBMIT_INTERVAL_S,
                accepted=under_load,
                accepted_after=KILL_AFTER,
            ),
            inject(env.stack, component, under_load, outage),
        )
        settle = time.monotonic() + SETTLE_S
        await client.follow(studies, deadline=settle)
        await client.await_heatmaps(studies, deadline=min(settle, time.monotonic() + HEATMAP_GRACE_S))
    finally:
        await client.aclose()
    return studies, outage


def figures(component: str, studies: list[Study], outage: Outage, result_times: list[float]) -> str:
    after = [t for t in result_times if t >= outage.restarted_at]
    first = f"{after[0] - outage.restarted_at:.1f}s" if after else "none"
    failed = Counter(
        str((s.error or {}).get("detail", s.status))[:70] for s in studies if s.status != "completed"
    )
    no_heatmap = sum(1 for s in studies if s.explain and s.status == "completed" and not s.heatmap)
    return (
        f"{component:10s} down {outage.restarted_at - outage.killed_at:4.1f}s, ready "
        f"{outage.ready_at - outage.restarted_at:4.1f}s after restart; first result {first} after restart; "
        f"completed {sum(s.status == 'completed' for s in studies)}/{len(studies)}; "
        f"heatmaps missing {no_heatmap}/{sum(s.explain for s in studies)}; "
        f"client transport errors {sum(s.transport_errors for s in studies)}; failed: {dict(failed) or 0}"
    )


@pytest.mark.parametrize("component", COMPONENTS)
def test_no_study_lost_when_a_component_is_killed_and_restarted(
    chaos_stack: ChaosStack, component: str
) -> None:
    wait_all_ready(chaos_stack.stack)
    tenant = f"chaos-{component}"
    studies, outage = asyncio.run(run_case(chaos_stack, component, tenant))
    line = figures(component, studies, outage, chaos_stack.result_times(tenant))
    FIGURES.append(line)
    print(line)

    duplicates = {s.key: sorted(s.study_ids) for s in studies if len(s.study_ids) != 1}
    assert not duplicates, f"keys answered with other than one study: {duplicates}"
    stored = chaos_stack.query("SELECT COUNT(*) FROM studies WHERE tenant_id = ?", tenant)[0][0]
    assert stored == STUDIES, f"{stored} studies stored for {STUDIES} keys"
    doubled = chaos_stack.query(
        "SELECT r.study_id, COUNT(*) FROM results r JOIN studies s ON s.id = r.study_id "
        "WHERE s.tenant_id = ? GROUP BY r.study_id HAVING COUNT(*) > 1",
        tenant,
    )
    assert not doubled, f"studies with more than one result: {doubled}"
    not_done = {s.key: (s.status, s.error) for s in studies if s.status != "completed"}
    assert not not_done, (
        f"studies without a successful result: {not_done}\n{logs_tail(chaos_stack.stack, 'gateway')}"
    )
    no_heatmap = [s.key for s in studies if s.explain and not s.heatmap]
    assert not no_heatmap, f"requested heatmaps missing in the end: {no_heatmap}"
    unasked = [s.key for s in studies if not s.explain and (s.result or {}).get("explanation")]
    assert not unasked, f"explanations nobody asked for: {unasked}"
