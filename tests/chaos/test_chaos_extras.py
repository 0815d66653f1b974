"""More of issue 13's faults, on the same stack and hospital client as test_kill_one_component:

- two components SIGKILLed at once (deid, which gates intake, and Triton, which stalls jobs);
- the gateway SIGKILLed while a sync request waits for its result: the client retries with the
  same Idempotency-Key and gets one study with one result;
- SIGTERM on the gateway mid-load: it drains within its grace period and exits on its own; 0 lost,
  0 double results.

A 10 s database cut (503 with Retry-After during it, 0 lost after) is covered through a TCP proxy
in front of PostgreSQL by tests/integration/gateway/test_gateway_db_outage.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from sightline_gateway.settings import GatewaySettings

from sightline.stack import StackState, kill_component, restart_component
from sightline.stack.processes import alive, reap
from tests.chaos.client import HospitalClient, Study, submit_paced
from tests.chaos.conftest import FIGURES, ChaosStack, logs_tail
from tests.chaos.test_kill_one_component import (
    CONCURRENCY,
    HEATMAP_GRACE_S,
    SETTLE_S,
    SUBMIT_INTERVAL_S,
    Outage,
    dicoms,
    figures,
    wait_all_ready,
)

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

STUDIES = 10
KILL_AFTER = 3
DOWN_S = 20.0


def _pid(env: ChaosStack, name: str) -> int:
    comp = next(c for c in StackState.load(env.stack.settings.state_file).components if c.name == name)
    assert comp.pid is not None and alive(comp.pid), f"{name} is not running"
    return comp.pid


def assert_none_lost(env: ChaosStack, tenant: str, studies: list[Study]) -> None:
    duplicates = {s.key: sorted(s.study_ids) for s in studies if len(s.study_ids) != 1}
    assert not duplicates, f"keys answered with other than one study: {duplicates}"
    stored = env.query("SELECT COUNT(*) FROM studies WHERE tenant_id = ?", tenant)[0][0]
    assert stored == len(studies), f"{stored} studies stored for {len(studies)} keys"
    doubled = env.query(
        "SELECT r.study_id, COUNT(*) FROM results r JOIN studies s ON s.id = r.study_id "
        "WHERE s.tenant_id = ? GROUP BY r.study_id HAVING COUNT(*) > 1",
        tenant,
    )
    assert not doubled, f"studies with more than one result: {doubled}"
    not_done = {s.key: (s.status, s.error) for s in studies if s.status != "completed"}
    assert not not_done, f"studies without a successful result: {not_done}\n{logs_tail(env.stack, 'gateway')}"
    no_heatmap = [s.key for s in studies if s.explain and not s.heatmap]
    assert not no_heatmap, f"requested heatmaps missing in the end: {no_heatmap}"


async def under_load(env: ChaosStack, tenant: str, fault: object) -> tuple[list[Study], Outage]:
    """The paced client of test_kill_one_component with ``fault(accepted, outage)`` beside it."""
    client = HospitalClient(env.url, env.token(tenant))
    studies = [Study(key=f"{tenant}-{i:03d}", explain=i % 2 == 0) for i in range(STUDIES)]
    accepted, outage = asyncio.Event(), Outage()
    try:
        await asyncio.gather(
            submit_paced(
                client,
                studies,
                dicoms(),
                concurrency=CONCURRENCY,
                interval_s=SUBMIT_INTERVAL_S,
                accepted=accepted,
                accepted_after=KILL_AFTER,
            ),
            fault(accepted, outage),  # type: ignore[operator]
        )
        settle = time.monotonic() + SETTLE_S
        await client.follow(studies, deadline=settle)
        await client.await_heatmaps(studies, deadline=min(settle, time.monotonic() + HEATMAP_GRACE_S))
    finally:
        await client.aclose()
    return studies, outage


def test_two_components_killed_at_once(chaos_stack: ChaosStack) -> None:
    wait_all_ready(chaos_stack.stack)
    tenant, killed = "chaos-two", ("deid", "triton")

    async def fault(accepted: asyncio.Event, outage: Outage) -> None:
        await accepted.wait()
        outage.killed_at = time.time()
        for name in killed:
            await asyncio.to_thread(kill_component, chaos_stack.stack.settings, name)
        await asyncio.sleep(DOWN_S)
        outage.restarted_at = time.time()
        await asyncio.gather(*(asyncio.to_thread(restart_component, chaos_stack.stack, n) for n in killed))
        outage.ready_at = time.time()

    studies, outage = asyncio.run(under_load(chaos_stack, tenant, fault))
    FIGURES.append(figures("+".join(killed), studies, outage, chaos_stack.result_times(tenant)))
    assert_none_lost(chaos_stack, tenant, studies)


def test_gateway_killed_during_a_sync_request(chaos_stack: ChaosStack) -> None:
    """Preprocess is paused (SIGSTOP) so that the sync request is surely waiting when the gateway
    dies; the client's retry with the same key must find the one study and get its one result."""
    wait_all_ready(chaos_stack.stack)
    tenant = "chaos-sync"
    study = Study(key=f"{tenant}-000", explain=False, sync=True)
    preprocess = _pid(chaos_stack, "preprocess")

    async def go() -> None:
        client = HospitalClient(chaos_stack.url, chaos_stack.token(tenant))
        os.killpg(preprocess, signal.SIGSTOP)
        try:
            request = asyncio.create_task(client.submit(study, dicoms()[0]))
            deadline = time.monotonic() + 60
            while not chaos_stack.query("SELECT id FROM studies WHERE tenant_id = ?", tenant):
                assert time.monotonic() < deadline and not request.done(), "the study was not accepted"
                await asyncio.sleep(0.2)
            assert not request.done(), "the sync request answered before the gateway was killed"
            await asyncio.to_thread(kill_component, chaos_stack.stack.settings, "gateway")
        finally:
            os.killpg(preprocess, signal.SIGCONT)
        await asyncio.sleep(3)
        await asyncio.to_thread(restart_component, chaos_stack.stack, "gateway")
        await asyncio.wait_for(request, 180)
        await client.follow([study], deadline=time.monotonic() + SETTLE_S)
        await client.aclose()

    asyncio.run(go())
    assert study.transport_errors >= 1, "the kill did not interrupt the sync request"
    assert_none_lost(chaos_stack, tenant, [study])


def test_sigterm_on_the_gateway_mid_load_loses_nothing(chaos_stack: ChaosStack) -> None:
    wait_all_ready(chaos_stack.stack)
    tenant = "chaos-sigterm"
    grace_s = GatewaySettings.model_fields["shutdown_grace_s"].default  # the stack keeps it
    exited_after: list[float] = []

    async def fault(accepted: asyncio.Event, outage: Outage) -> None:
        await accepted.wait()
        pid = _pid(chaos_stack, "gateway")
        outage.killed_at = time.time()
        os.killpg(pid, signal.SIGTERM)
        while alive(pid) and time.time() - outage.killed_at < grace_s + 15:
            reap(pid)
            await asyncio.sleep(0.1)
        exited_after.append(time.time() - outage.killed_at)
        await asyncio.to_thread(kill_component, chaos_stack.stack.settings, "gateway")  # if it hung
        await asyncio.sleep(3)
        outage.restarted_at = time.time()
        await asyncio.to_thread(restart_component, chaos_stack.stack, "gateway")
        outage.ready_at = time.time()

    studies, outage = asyncio.run(under_load(chaos_stack, tenant, fault))
    FIGURES.append(
        figures("gateway SIGTERM", studies, outage, chaos_stack.result_times(tenant))
        + f"; exited {exited_after[0]:.1f}s after SIGTERM"
    )
    assert exited_after[0] < grace_s + 10, f"the gateway took {exited_after[0]:.0f}s to exit on SIGTERM"
    assert_none_lost(chaos_stack, tenant, studies)
