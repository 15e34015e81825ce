"""Domain errors, each with the status code and code the API answers with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Self


def error_body(code: str, message: str) -> dict[str, Any]:
    """The one shape of every API error."""
    return {"error": {"code": code, "message": message}}


@dataclass(frozen=True)
class RefusalEvent:
    """The audit event of a refused action on a case.

    The request's transaction rolls back with the refusal, so the error handler
    appends this event in a transaction of its own (app.install_error_handlers).
    """

    actor: str
    action: str
    case_id: str | None
    details: dict[str, Any] = field(default_factory=dict)


class VarslingError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # Which refusal this is, for pages that explain it in the reader's language.
        self.reason = reason
        self.refusal: RefusalEvent | None = None
        # More top-level fields of the answer beside "error" (never content by default).
        self.body_extra: dict[str, Any] = {}

    def audited(
        self,
        *,
        actor: str,
        action: str,
        case_id: str | None,
        details: dict[str, Any] | None = None,
    ) -> Self:
        """This refusal, to be written to the audit trail when it is answered."""
        self.refusal = RefusalEvent(actor, action, case_id, details or {})
        return self

    @property
    def headers(self) -> dict[str, str]:
        """Extra response headers the answer carries (none by default)."""
        return {}


class InvalidInput(VarslingError):
    status_code = 422
    code = "invalid_input"


class NotFound(VarslingError):
    status_code = 404
    code = "not_found"


class Unauthenticated(VarslingError):
    status_code = 401
    code = "unauthenticated"


class Forbidden(VarslingError):
    status_code = 403
    code = "forbidden"


class Conflict(VarslingError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(VarslingError):
    status_code = 413
    code = "payload_too_large"


class TooManyAttempts(VarslingError):
    """Login attempts must wait; `retry_after` says how many seconds."""

    status_code = 429
    code = "too_many_attempts"

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        self.retry_after = max(1, retry_after)
        super().__init__(message or f"Too many attempts; try again in {self.retry_after} seconds.")

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class SubmissionsBusy(VarslingError):
    """Too many anonymous reports this minute, installation-wide; try again later."""

    status_code = 429
    code = "submissions_busy"
    what = "reports"

    def __init__(self, retry_after: int) -> None:
        self.retry_after = max(1, retry_after)
        super().__init__(
            f"The service is receiving unusually many {self.what} right now, so nothing was "
            f"stored. Send it again in {self.retry_after} seconds."
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class UploadsBusy(SubmissionsBusy):
    """Too many anonymous file uploads this minute, installation-wide."""

    code = "uploads_busy"
    what = "files"
