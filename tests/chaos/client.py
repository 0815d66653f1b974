"""A hospital system as a client of the gateway: it submits, retries with the same key, follows up.

Each study carries its own Idempotency-Key; a connection error, a 5xx gateway error or a 429 is
retried with that same key (the gateway must answer the earlier study, not create a second);
any other answer is final. Every answer's study id is kept, so a key answered with two studies
shows as a duplicate. The soak benchmark uses the same client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

#: Answers a client retries with the same key: the gateway or a proxy in front of it is unwell.
RETRIED_STATUS = frozenset({429, 500, 502, 503, 504})
TERMINAL = frozenset({"completed", "failed"})


class RetriableAnswer(Exception):
    """An answer the client retries (see :data:`RETRIED_STATUS`)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"{response.status_code}: {response.text[:200]}")
        self.response = response


@dataclass
class Study:
    """One study as the client sees it: its key, every study id the gateway answered, its outcome."""

    key: str
    explain: bool
    sync: bool = False
    study_ids: set[str] = field(default_factory=set)
    submit_attempts: int = 0
    submitted_at: float | None = None
    accepted_at: float | None = None
    latency_s: float | None = None
    status: str | None = None
    error: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    final_answer: int | None = None
    transport_errors: int = 0

    @property
    def study_id(self) -> str | None:
        return next(iter(self.study_ids)) if len(self.study_ids) == 1 else None

    @property
    def heatmap(self) -> bool:
        explanation = (self.result or {}).get("explanation") or {}
        links = explanation.get("links") or {}
        return explanation.get("status") == "available" and "heatmap_npy" in links


class HospitalClient:
    """Submit studies and follow them, retrying transient failures for up to ``give_up_s``."""

    def __init__(
        self, base_url: str, token: str, *, give_up_s: float = 300.0, timeout_s: float = 120.0
    ) -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=32),
        )
        self.give_up_s = give_up_s

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _call(self, method: str, url: str, study: Study | None = None, **kwargs: Any) -> httpx.Response:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((httpx.TransportError, RetriableAnswer)),
            wait=wait_exponential_jitter(initial=0.25, max=2.0),
            stop=stop_after_delay(self.give_up_s),
            reraise=True,
        ):
            with attempt:
                try:
                    response = await self.http.request(method, url, **kwargs)
                except httpx.TransportError:
                    if study is not None:
                        study.transport_errors += 1
                    raise
                if response.status_code in RETRIED_STATUS:
                    raise RetriableAnswer(response)
                return response
        raise AssertionError("unreachable: tenacity reraises")

    async def submit(self, study: Study, body: bytes) -> None:
        """POST the study (same key on every retry); a sync submission also gets its result."""
        study.submitted_at = time.monotonic()
        params = {"mode": "sync" if study.sync else "async", "explain": str(study.explain).lower()}
        headers = {"Content-Type": "application/dicom", "Idempotency-Key": study.key}

        async def post() -> httpx.Response:
            study.submit_attempts += 1
            response = await self._call(
                "POST", "/v1/studies", study, params=params, content=body, headers=headers
            )
            if "Location" in response.headers:
                study.study_ids.add(response.headers["Location"].rsplit("/", 1)[-1])
            return response

        try:
            response = await post()
        except RetriableAnswer as exc:
            response = exc.response
        study.final_answer = response.status_code
        study.accepted_at = time.monotonic()
        if response.status_code == 200:
            study.status, study.result = "completed", response.json()
            study.latency_s = study.accepted_at - study.submitted_at
        elif response.status_code != 202:
            study.status, study.error = (
                "refused",
                {"code": response.status_code, "detail": response.text[:300]},
            )

    async def poll(self, study: Study) -> None:
        """Read the study's status once (and its result once completed)."""
        if study.study_id is None:
            return
        response = await self._call("GET", f"/v1/studies/{study.study_id}", study)
        body = response.json()
        study.status, study.error = body.get("status"), body.get("error")
        if study.status == "completed":
            await self.fetch_result(study)
            if study.latency_s is None and study.submitted_at is not None:
                study.latency_s = time.monotonic() - study.submitted_at

    async def fetch_result(self, study: Study) -> None:
        response = await self._call("GET", f"/v1/studies/{study.study_id}/result", study)
        if response.status_code == 200:
            study.result = response.json()

    async def follow(self, studies: Iterable[Study], deadline: float, interval_s: float = 1.0) -> None:
        """Poll every unfinished study until each is completed or failed, or until ``deadline``."""
        pending = [s for s in studies if s.status not in TERMINAL and s.status != "refused"]
        while pending and time.monotonic() < deadline:
            for study in pending:
                await self.poll(study)
            pending = [s for s in pending if s.status not in TERMINAL]
            if pending:
                await asyncio.sleep(interval_s)

    async def await_heatmaps(
        self, studies: Iterable[Study], deadline: float, interval_s: float = 2.0
    ) -> None:
        """Re-read completed results that asked for a heatmap and lack one (a backfill fills it in)."""
        missing = [s for s in studies if s.explain and s.status == "completed" and not s.heatmap]
        while missing and time.monotonic() < deadline:
            await asyncio.sleep(interval_s)
            for study in missing:
                await self.fetch_result(study)
            missing = [s for s in missing if not s.heatmap]


async def submit_paced(
    client: HospitalClient,
    studies: list[Study],
    bodies: list[bytes],
    *,
    concurrency: int,
    interval_s: float,
    accepted: asyncio.Event | None = None,
    accepted_after: int = 0,
) -> None:
    """Start one submission every ``interval_s``, at most ``concurrency`` at once.

    ``accepted`` is set once ``accepted_after`` submissions have been answered (the moment to
    inject a fault under load).
    """
    gate = asyncio.Semaphore(concurrency)
    answered = 0

    async def one(study: Study, body: bytes) -> None:
        nonlocal answered
        async with gate:
            await client.submit(study, body)
        answered += 1
        if accepted is not None and answered >= accepted_after:
            accepted.set()

    tasks = []
    for i, study in enumerate(studies):
        tasks.append(asyncio.create_task(one(study, bodies[i % len(bodies)])))
        await asyncio.sleep(interval_s)
    await asyncio.gather(*tasks)
