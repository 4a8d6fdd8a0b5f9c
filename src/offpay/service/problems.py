"""Refusals over HTTP: an :class:`~offpay.errors.OffpayError` becomes a 4xx answer whose body
is an RFC 9457 problem (``application/problem+json``), and the client turns it back into the
same typed error (:func:`offpay.errors.error_from_code`), so a caller catches the same class
in-process and across the network.

The problem's ``type`` is ``about:blank`` (RFC 9457 §4.2.1): the HTTP status and its
``title`` carry the generic meaning, and the extension member ``code`` names the refusal
exactly — the stable dotted code callers already branch on. ``detail`` is the message for a
person; ``message`` repeats it for clients written before the problem format.
"""

from __future__ import annotations

import http
import json
from typing import Any

from pydantic import BaseModel, Field

from offpay.errors import OffpayError, error_from_code

# Codes a client may retry with the same bytes: the request did not complete for a reason
# that is not the request's fault. Answers with these codes are never kept as the first answer.
RETRYABLE = frozenset({"service.busy", "service.conflict", "network.cut", "watchdog.halted"})


PROBLEM_JSON = "application/problem+json"
BLANK = "about:blank"


class Problem(BaseModel):
    """Why a request was refused: an RFC 9457 problem with the refusal's stable code."""

    type: str = Field(
        default=BLANK, description="about:blank: the status and `code` say what happened."
    )
    title: str = Field(description="The HTTP status phrase, e.g. Conflict.")
    status: int = Field(ge=400, le=599, description="The HTTP status of this answer.")
    detail: str = Field(description="What went wrong, for a person.")
    code: str = Field(description="Stable, dotted, lower case; never reused for another meaning.")
    message: str = Field(description="The same as `detail`, for clients older than RFC 9457.")


# (status, description) per code prefix; the first match wins.
_STATUS: tuple[tuple[str, int], ...] = (
    ("http.too_large", 413),
    ("http.unsupported_media_type", 415),
    ("http.idempotency_key_reused", 422),
    ("http.not_found", 404),
    ("http.method_not_allowed", 405),
    ("http", 400),
    ("auth", 401),
    ("crypto.revoked", 403),
    ("device.blocked", 403),
    ("crypto", 401),
    ("wire.malformed", 400),
    ("money", 400),
    ("wire.wrong_receiver", 400),
    ("not_found", 404),
    ("network.unknown_party", 404),
    ("wire.replay", 409),
    ("service.conflict", 409),
    ("service.busy", 503),
    ("watchdog.halted", 503),  # the party's books disagree: no money moves until cleared
    ("network", 502),
)

STATUS_TEXT = {
    400: "The request is malformed: not a signed message of this kind, or a bad header.",
    401: "The sender is not authenticated: a certificate chain or signature that does not verify.",
    403: "The sender is revoked or blocked.",
    404: "No such party, route, account or device.",
    405: "This route does not take that method.",
    409: "A replayed message, or a concurrent request that conflicted; retry the same bytes.",
    413: "The body is larger than a message may be.",
    415: "The body must be application/cbor.",
    422: "Refused for a business reason named by the code (limits, funds, state), or an "
    "idempotency key reused for another request.",
    502: "A party this service needed could not be reached; retry the same bytes later.",
    503: "The service is busy, or its watchdog halted money moves (watchdog.halted); retry "
    "the same bytes later.",
}


def status_for(code: str) -> int:
    for prefix, status in _STATUS:
        if code == prefix or code.startswith(prefix + "."):
            return status
    return 422


def problem_body(code: str, message: str, status: int | None = None) -> bytes:
    """The RFC 9457 body of a refusal; ``status`` defaults to the code's."""
    status = status_for(code) if status is None else status
    problem = Problem(
        title=http.HTTPStatus(status).phrase,
        status=status,
        detail=message,
        code=code,
        message=message,
    )
    return problem.model_dump_json().encode()


def problem_of(error: OffpayError) -> tuple[int, bytes]:
    return status_for(error.code), problem_body(error.code, error.message)


def error_of(status: int, body: bytes) -> OffpayError:
    """The typed error a refusal stands for; an answer without a problem body (a proxy's error
    page, say) is a network failure."""
    try:
        data = json.loads(body)
        code, message = data["code"], data.get("detail", data.get("message"))
    except (ValueError, TypeError, KeyError, AttributeError):
        return OffpayError(f"unexpected HTTP {status} answer", code="network.bad_answer")
    if not isinstance(code, str) or not isinstance(message, str):
        return OffpayError(f"unexpected HTTP {status} answer", code="network.bad_answer")
    return error_from_code(code, message)


def problem_responses_in_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI documents a response model as ``application/json``; a refusal is served as
    ``application/problem+json``, so every 4xx and 5xx response says so."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if status[:1] in "45" and "application/json" in content:
                    content[PROBLEM_JSON] = content.pop("application/json")
    return schema
