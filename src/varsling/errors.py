"""Domain errors, each with the status code and code the API answers with."""

from __future__ import annotations

from typing import Any


def error_body(code: str, message: str) -> dict[str, Any]:
    """The one shape of every API error."""
    return {"error": {"code": code, "message": message}}


class VarslingError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
