"""Typed domain errors, mapped to HTTP status (RFC 9457 problem details) in one place.

Messages must never carry patient data: say *what* is wrong (an attribute keyword, a limit),
never a value taken from the study.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, ClassVar


class SightlineError(Exception):
    """Base of every error a Sightline service raises on purpose."""

    status: ClassVar[int] = HTTPStatus.INTERNAL_SERVER_ERROR
    code: ClassVar[str] = "internal"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    @property
    def title(self) -> str:
        return HTTPStatus(self.status).phrase

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        """The RFC 9457 problem-details body for this error."""
        return problem_body(self.status, self.title, self.detail, self.code, instance=instance, **self.extra)


def problem_body(
    status: int, title: str, detail: str, code: str, *, instance: str | None = None, **extra: Any
) -> dict[str, Any]:
    """An RFC 9457 problem-details body; ``code`` is Sightline's stable machine-readable name."""
    body: dict[str, Any] = {
        "type": f"https://sightline.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return body


def error_class(code: str) -> type[SightlineError] | None:
    """The error class whose ``code`` is ``code`` (``None`` when no class has it)."""
    pending: list[type[SightlineError]] = [SightlineError]
    while pending:
        cls = pending.pop()
        if cls.code == code:
            return cls
        pending.extend(cls.__subclasses__())
    return None


class InvalidInput(SightlineError):
    status = HTTPStatus.BAD_REQUEST
    code = "invalid-input"


class UnprocessableInput(SightlineError):
    """Well-formed input that this model or recipe cannot handle (e.g. an unaccepted modality)."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "unprocessable"


class NoModelAccepts(UnprocessableInput):
    """No model enabled for the tenant accepts the study: refused before anything is stored."""

    code = "no-model-accepts"


class PayloadTooLarge(SightlineError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    code = "payload-too-large"


class UnsupportedMediaType(SightlineError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    code = "unsupported-media-type"


class NotFound(SightlineError):
    status = HTTPStatus.NOT_FOUND
    code = "not-found"


class Conflict(SightlineError):
    status = HTTPStatus.CONFLICT
    code = "conflict"


class Unauthorised(SightlineError):
    status = HTTPStatus.UNAUTHORIZED
    code = "unauthorised"


class Forbidden(SightlineError):
    status = HTTPStatus.FORBIDDEN
    code = "forbidden"


class RateLimited(SightlineError):
    status = HTTPStatus.TOO_MANY_REQUESTS
    code = "rate-limited"


class DependencyUnavailable(SightlineError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "dependency-unavailable"


class IntegrityError(SightlineError):
    """An artifact does not match its recorded digest (refuse to serve it)."""

    status = HTTPStatus.INTERNAL_SERVER_ERROR
    code = "integrity"
