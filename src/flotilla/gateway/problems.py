"""The gateway's own errors (in the one tree of :mod:`flotilla.errors`) and the error body.

Every error answer has the same body, whatever failed::

    {"error": {"code": "not_found", "message": "no order 7"}}

with the status of the error's class (:attr:`FlotillaError.http_status`):
a callee's ``InvalidArgument`` is 422, ``NotFound`` 404, ``DeadlineExceeded``
504, and so on.  The HTTP-only refusals below never travel between services::

    FlotillaError
    ├── InvalidArgument
    │   ├── BadRequest          bad_request          400  (not JSON, a bad header)
    │   └── BodyTooLarge        body_too_large       413
    ├── NotFound
    │   └── NoRoute             not_found            404  (no route has this path)
    └── MethodNotAllowed        method_not_allowed   405

A server-side error (any 5xx: ``internal``, ``unavailable``,
``deadline_exceeded``...) never shows its message, which names the system's
insides (an instance's address, a file, a broker's complaint): the body says
only what kind of failure it was and the request id, and the message goes to
the gateway's log under that id.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import msgspec
from starlette.responses import Response

from flotilla.errors import FlotillaError, Internal, InvalidArgument, NotFound

__all__ = [
    "BadRequest",
    "BodyTooLarge",
    "MethodNotAllowed",
    "NoRoute",
    "error_answer",
    "error_body",
    "error_response",
]

log = logging.getLogger("flotilla.gateway")


class BadRequest(InvalidArgument):
    code = "bad_request"
    http_status = 400


class BodyTooLarge(InvalidArgument):
    code = "body_too_large"
    http_status = 413


class NoRoute(NotFound):
    pass


class MethodNotAllowed(FlotillaError):
    code = "method_not_allowed"
    http_status = 405


def _hidden(error: FlotillaError) -> bool:
    return isinstance(error, Internal) or error.http_status >= 500


def error_body(error: FlotillaError, request_id: str) -> dict[str, dict[str, str]]:
    """``{"error": {"code", "message"}}`` for ``error``; a server-side one says no more."""
    if _hidden(error):
        kind = error.code.replace("_", " ")
        message = f"{kind} error (request id {request_id})"
        return {"error": {"code": error.code, "message": message}}
    return {"error": {"code": error.code, "message": error.message}}


def error_answer(error: FlotillaError, request_id: str) -> tuple[int, bytes]:
    """The status and JSON body for ``error`` (a hidden message is logged under ``request_id``)."""
    if _hidden(error):
        # INFO, not WARNING: an outage answers many requests alike, and the
        # failure itself is logged where it happened.
        log.info("request %s answered %s: %s", request_id, error.code, error.message)
    return error.http_status, msgspec.json.encode(error_body(error, request_id))


def error_response(
    error: FlotillaError, request_id: str, headers: Mapping[str, str] | None = None
) -> Response:
    """:func:`error_answer` as a Starlette response (for the routes Starlette serves)."""
    status, body = error_answer(error, request_id)
    return Response(
        body, status_code=status, headers=dict(headers or {}), media_type="application/json"
    )
