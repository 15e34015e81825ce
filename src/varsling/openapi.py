"""The OpenAPI document, with the error answers the API really gives.

FastAPI documents a 422 with its own `{"detail": [...]}` shape and no other
error; every error here is `{"error": {"code", "message"}}` (errors.py,
app.install_error_handlers). The document says so for every operation.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

ERROR_SCHEMA: dict[str, Any] = {
    "title": "ErrorOut",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "A stable code, e.g. not_found"},
                "message": {"type": "string", "description": "What went wrong, in plain words"},
            },
        }
    },
}
_ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}

# Every operation may answer these.
_ANY_OPERATION = {
    "400": "malformed_json or bad_request: the body could not be read",
    "404": "not_found: nothing there, or nothing the caller may see",
    "409": "a conflict with the state of things; the code says which",
    "413": "payload_too_large: the body is over the limit",
    "422": "invalid_input: a value is missing or means nothing",
    "429": "too many attempts or submissions; see Retry-After",
    "500": "internal_error or integrity_error; nothing was saved",
}
# And these when they need a session.
_SECURED = {
    "401": "unauthenticated: no session, or it ended",
    "403": "forbidden: the session's roles or keys do not allow it",
}


def with_error_responses(document: dict[str, Any]) -> dict[str, Any]:
    """Declare the error shape on every API operation (in place; returns the document)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorOut"] = ERROR_SCHEMA
    for path, operations in document.get("paths", {}).items():
        if not path.startswith("/api/"):
            continue
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            declared = dict(_ANY_OPERATION)
            if operation.get("security"):
                declared.update(_SECURED)
            for status, description in declared.items():
                responses.setdefault(status, {"description": description})
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400:
                    response["content"] = {"application/json": {"schema": _ERROR_REF}}
                    if not response.get("description"):
                        response["description"] = declared.get(status, "An error")
    # FastAPI's own validation error shapes are never answered.
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document


def install_openapi(app: FastAPI) -> None:
    """Generate the document once, with the error answers declared."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            # FastAPI's own generation (it caches the document); then the errors.
            app.openapi_schema = with_error_responses(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
