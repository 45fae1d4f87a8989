"""Every error answer has one shape, ``{"error": {"code", "message", "details"?}}``; this module maps domain
exceptions, request validation and HTTP errors onto it."""

from __future__ import annotations

import email.message
import logging
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.schemas import ErrorDetail, ErrorResponse
from app.api.security import API_KEY_HEADER, authenticate_header
from app.errors import (
    AuditUnavailable,
    AuthenticationRequired,
    DecisionNotFound,
    DuplicateDecision,
    FeedbackConflict,
    IdempotencyKeyReused,
    InvalidFeedback,
    InvalidInput,
    KommunrouterError,
    PermissionDenied,
    ServiceUnavailable,
)

logger = logging.getLogger(__name__)

# Most specific first: the first class an error is an instance of decides its status.
_STATUS_BY_ERROR: tuple[tuple[type[KommunrouterError], int], ...] = (
    (InvalidInput, 422),
    (InvalidFeedback, 422),
    (AuthenticationRequired, 401),
    (PermissionDenied, 403),
    (DecisionNotFound, 404),
    (DuplicateDecision, 409),
    (FeedbackConflict, 409),
    (IdempotencyKeyReused, 409),
    (AuditUnavailable, 503),
    (ServiceUnavailable, 503),
)
_CODE_BY_HTTP_STATUS = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
}

# Documented on every route, so the OpenAPI schema describes the answers clients (and schemathesis) can get.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "Invalid JSON or a body that is not UTF-8"),
        (401, f"No valid API key in the {API_KEY_HEADER} header"),
        (403, "The API key lacks the scope this endpoint needs"),
        (408, "The body did not arrive in full within the configured time"),
        (413, "The body is larger than the configured limit"),
        (415, "The body is not JSON"),
        (422, "The JSON does not fit the schema, or the text breaks a rule (empty, too long, control characters)"),
        (500, "An unexpected error (the request id is in the logs)"),
        (503, "The service cannot answer now (the audit log is unavailable, or shutting down)"),
    )
}


def error_response(
    status_code: int,
    code: str,
    message: str,
    *,
    details: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A JSON error answer in the service's one error shape."""
    body = ErrorResponse(
        error=ErrorDetail(code=code, message=message, details=None if details is None else list(map(dict, details)))
    )
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status_code, headers=headers)


def body_too_large_message(max_body_bytes: int) -> str:
    return f"the body is larger than {max_body_bytes} bytes (KOMMUNROUTER_MAX_BODY_BYTES)"


def status_of(error: KommunrouterError) -> int:
    """The HTTP status of a domain error (500 for errors no client can cause)."""
    return next((status for cls, status in _STATUS_BY_ERROR if isinstance(error, cls)), 500)


def error_detail(error: KommunrouterError) -> ErrorDetail:
    """The error object of a domain error (also used for a bad item of a batch)."""
    return ErrorDetail(code=error.code, message=error.message)


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def validation_details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Location, message and type of each finding; never the input (it may hold the report text)."""
    return [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": error.get("msg", ""),
            "type": error.get("type", ""),
        }
        for error in errors
    ]


def validation_message(details: Sequence[Mapping[str, Any]]) -> str:
    """One line that names the first findings."""
    parts = [f"{'.'.join(detail['loc']) or 'body'}: {detail['msg']}" for detail in details[:3]]
    more = f" (and {len(details) - 3} more)" if len(details) > 3 else ""
    return "; ".join(parts) + more


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KommunrouterError)
    status_code = status_of(exc)
    if status_code >= 500:
        logger.error("request failed: %s: %s", exc.code, exc.message)
    headers = authenticate_header() if status_code == 401 else None
    return error_response(status_code, exc.code, exc.message, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(error.get("type") == "json_invalid" for error in errors):
        position = errors[0].get("ctx", {}).get("error", "")
        return error_response(400, "invalid_json", f"the body is not valid JSON ({position})")
    if not _is_json(request.headers.get("content-type")) and any(
        tuple(error.get("loc", ())) == ("body",) for error in errors
    ):
        return error_response(
            415, "unsupported_media_type", "send the body as JSON, with the header Content-Type: application/json"
        )
    details = validation_details(errors)
    return error_response(422, "validation_error", validation_message(details), details=details)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
        # FastAPI turns a body that does not decode into a plain 400; say what was wrong with it.
        return error_response(400, "invalid_utf8", "the body is not valid UTF-8")
    if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
        return error_response(400, "json_too_deep", "the JSON body is nested too deep")
    code = _CODE_BY_HTTP_STATUS.get(exc.status_code, f"http_{exc.status_code}")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


def unexpected_error_response(exc: BaseException) -> JSONResponse:
    """Log an error no handler expected and answer 500.

    Logs the type and the frames, not the message: messages of some errors (a response that fails
    validation, say) quote the data, and the report text must never reach the logs.
    """
    frames = "".join(traceback.format_tb(exc.__traceback__))
    logger.error("unexpected error %s", type(exc).__name__, extra={"traceback": frames})
    return error_response(500, "internal_error", "an unexpected error occurred; the request id is in the logs")


async def _unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    return unexpected_error_response(exc)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error answer the service's one shape."""
    app.add_exception_handler(KommunrouterError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
