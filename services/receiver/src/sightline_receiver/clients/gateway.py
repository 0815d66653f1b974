"""The gateway's STOW-RS intake (``POST /dicomweb/studies``), with retries while it is unavailable."""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_delay,
    stop_when_event_set,
    wait_random_exponential,
)

log = logging.getLogger(__name__)

API_KEY_PREFIX = "slk_"

#: 4xx answers that are not the gateway's word on the study: our credential (401/403) or the URL
#: (404/405) is wrong. The study is kept and retried later, never dropped for these.
NOT_ABOUT_THE_STUDY = frozenset({401, 403, 404, 405})


class DeliveryFailed(Exception):
    """A study was not delivered. ``final``: the gateway refused it for good (a 4xx other than
    408/429 and :data:`NOT_ABOUT_THE_STUDY`); otherwise it may be retried later (the gateway stayed
    unavailable past the retry budget, the credential was refused or unreadable, the receiver stops).
    """

    def __init__(self, reason: str, *, final: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.final = final


class _Transient(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Accepted:
    """What the gateway answered: its study URL and how many instances failed (STOW-RS 202)."""

    location: str | None
    status_code: int
    failed: int = 0


def auth_headers(credential_file: Path) -> dict[str, str]:
    """``X-API-Key`` for a Sightline API key, else a bearer token; read fresh, so it can rotate."""
    credential = credential_file.read_text().strip()
    if not credential:
        raise DeliveryFailed("empty credential file")
    if credential.startswith(API_KEY_PREFIX):
        return {"X-API-Key": credential}
    return {"Authorization": f"Bearer {credential}"}


def multipart_related(instances: Iterable[bytes]) -> tuple[str, bytes]:
    """(content type, body) of a STOW-RS request (PS3.18 10.5.1.1)."""
    boundary = f"sightline-{secrets.token_hex(16)}"
    parts = [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + i for i in instances]
    body = b"\r\n".join(parts) + f"\r\n--{boundary}--\r\n".encode()
    return f'multipart/related; type="application/dicom"; boundary={boundary}', body


class GatewayIntake:
    """Sends one assembled study per STOW-RS request to the gateway."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float,
        retry_budget_s: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry_budget_s = retry_budget_s
        self._client = httpx.Client(timeout=timeout_s, transport=transport)
        self._stopping = threading.Event()

    def stop_retrying(self) -> None:
        """End the retries under way and refuse new deliveries (shutdown: the spool keeps the studies)."""
        self._stopping.set()

    def close(self) -> None:
        self._client.close()

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def ready(self) -> bool:
        """Whether the gateway answers its liveness probe (reported, never gating)."""
        try:
            return self._client.get(f"{self.base_url}/health/live", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def deliver(self, instances: list[bytes], credential_file: Path) -> Accepted:
        """POST the study; retry transport errors, 5xx, 408 and 429 within the retry budget."""
        if self._stopping.is_set():
            raise DeliveryFailed("receiver stopping")
        retrying = Retrying(
            stop=stop_after_delay(self.retry_budget_s) | stop_when_event_set(self._stopping),
            wait=wait_random_exponential(multiplier=0.5, max=30),
            retry=retry_if_exception(lambda e: isinstance(e, _Transient)),
            sleep=self._pause,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._post(instances, credential_file)
        except _Transient as exc:
            raise DeliveryFailed(f"gateway unavailable past the retry budget ({exc.reason})") from None
        raise AssertionError("unreachable")  # pragma: no cover - Retrying either returns or raises

    def _post(self, instances: list[bytes], credential_file: Path) -> Accepted:
        content_type, body = multipart_related(instances)
        headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
        try:
            headers.update(auth_headers(credential_file))
        except OSError as exc:
            raise _Transient(f"credential unreadable ({type(exc).__name__})") from None
        try:
            response = self._client.post(f"{self.base_url}/dicomweb/studies", content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.info("gateway unreachable (%s); retrying", type(exc).__name__)
            raise _Transient(type(exc).__name__) from None
        if response.status_code in (408, 429) or response.status_code >= 500:
            log.info("gateway answered %d; retrying", response.status_code)
            raise _Transient(f"HTTP {response.status_code}")
        if response.status_code >= 400:
            final = response.status_code not in NOT_ABOUT_THE_STUDY
            what = "study" if final else "request"
            raise DeliveryFailed(
                f"gateway refused the {what}: HTTP {response.status_code} {_code(response)}", final=final
            )
        return Accepted(response.headers.get("location"), response.status_code, _failed(response))


def _failed(response: httpx.Response) -> int:
    """How many instances the STOW-RS response lists in its FailedSOPSequence (0008,1198)."""
    try:
        body = response.json()
    except ValueError:
        return 0
    failed = body.get("00081198", {}).get("Value", []) if isinstance(body, dict) else []
    return len(failed) if isinstance(failed, list) else 0


def _code(response: httpx.Response) -> str:
    """The problem-details ``code`` (a rule name, never a value from the study)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("code", "")) if isinstance(body, dict) else ""
