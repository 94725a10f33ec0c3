"""One route's handler: an HTTP request in, one RPC call, its answer out.

The steps, each of which may end the request with an error answer::

    authenticate (401 no/bad token, 403 missing role)
      -> rate limit by client (429 + Retry-After)
      -> read the body (413 over the limit, 400 not JSON)
      -> arguments from path, query, headers, body, principal (422)
      -> call the method with the request id, traceparent, principal, deadline
         (its errors: 404, 409, 422, 503, 504 ... as errors.py maps them)
      -> the result as JSON with the route's status

The rate limit comes after authentication so that a user is limited as a
user wherever they connect from; before the body is read, so that a limited
client costs no more than its headers.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from flotilla.context import Context, Invoker
from flotilla.errors import FlotillaError, Internal, ResourceExhausted
from flotilla.gateway.auth import Tokens, authorize
from flotilla.gateway.binding import NO_BODY, Binding
from flotilla.gateway.body import read_json
from flotilla.gateway.observe import ROUTE_KEY, request_id_of
from flotilla.gateway.problems import error_response
from flotilla.gateway.ratelimit import Limiter, retry_after_header
from flotilla.gateway.routes import RateLimit
from flotilla.headers import Headers, Principal

__all__ = ["Edge", "RouteHandler"]

log = logging.getLogger("flotilla.gateway")

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_JSON = "application/json"


@dataclass(frozen=True, kw_only=True)
class Edge:
    """What every route handler of one gateway shares."""

    invoker: Invoker
    tokens: Tokens | None
    limiter: Limiter
    rate_limit: RateLimit | None
    max_body: int
    trusted_proxies: Sequence[str] = ()


def _has_body(request: Request) -> bool:
    """Whether the request says a body follows (HTTP/1.1: a length or chunks; RFC 9112 6.3)."""
    headers = request.headers
    return "content-length" in headers or "transfer-encoding" in headers


def _none(name: str) -> list[str]:
    return []


class RouteHandler:
    """The Starlette endpoint of one :class:`Binding` (see the module docstring)."""

    def __init__(self, binding: Binding, edge: Edge) -> None:
        self.binding = binding
        self.edge = edge
        self.route = binding.route
        self.limit = binding.route.rate_limit or edge.rate_limit

    async def __call__(self, request: Request) -> Response:
        request.scope[ROUTE_KEY] = self.route.name
        request_id = request_id_of(request.scope)
        try:
            return await self._answer(request, request_id)
        except ResourceExhausted as exc:
            wait = exc.details.get("retry_after", 1.0)
            return error_response(exc, request_id, {"Retry-After": retry_after_header(wait)})
        except FlotillaError as exc:
            return error_response(exc, request_id)
        except Exception:
            # A fault of the gateway itself: logged with its traceback, never shown.
            log.exception("request %s on %s failed", request_id, self.route.name)
            return error_response(Internal(), request_id)

    async def _answer(self, request: Request, request_id: str) -> Response:
        principal = self._principal(request)
        authorize(self.route.auth, principal)
        await self._limit(request, principal)
        body = NO_BODY
        if self.route.body is not False and _has_body(request):
            body = await read_json(request, self.edge.max_body)
        args = self.binding.arguments(
            request.path_params,
            (lambda name: request.query_params.getlist(name)) if self.route.query_args else _none,
            request.headers,
            body,
            principal.subject if principal else None,
        )
        result = await self.edge.invoker.invoke(
            self.route.target, args, context=self._context(request, request_id, principal)
        )
        if self.binding.is_token_route:
            result = self._token(result)
        return Response(msgspec.json.encode(result), self.route.status, media_type=_JSON)

    def _principal(self, request: Request) -> Principal | None:
        authorization = request.headers.get("authorization")
        if authorization is None or self.edge.tokens is None:
            return None
        return self.edge.tokens.from_header(authorization)

    async def _limit(self, request: Request, principal: Principal | None) -> None:
        if self.limit is None:
            return
        key = f"sub:{principal.subject}" if principal else f"ip:{self._client_address(request)}"
        if self.route.rate_limit is not None:
            # A limit of the route's own is counted apart: one bucket shared
            # with other limits would hold the smallest burst of them all.
            key = f"{key}@{self.route.name}"
        wait = await self.edge.limiter.acquire(key, self.limit)
        if wait > 0:
            raise ResourceExhausted(
                f"too many requests; try again in {wait:.1f} s", details={"retry_after": wait}
            )

    def _client_address(self, request: Request) -> str:
        """The client's address: the peer's, unless the peer is a trusted proxy.

        Each proxy appends the address it was called from to ``X-Forwarded-For``,
        so the client is the rightmost hop that is not a trusted proxy: what is
        left of it was written by the client and cannot be believed.
        """
        client = request.scope.get("client")
        peer: str = client[0] if client else "unknown"
        trusted = self.edge.trusted_proxies
        if peer not in trusted:
            return peer
        forwarded = ",".join(request.headers.getlist("x-forwarded-for")).split(",")
        hops = [hop.strip() for hop in forwarded if hop.strip()]
        for hop in reversed(hops):
            if hop not in trusted:
                return hop
        return hops[0] if hops else peer

    def _context(self, request: Request, request_id: str, principal: Principal | None) -> Context:
        trace = request.headers.get("traceparent", "")
        timeout = self.route.timeout
        headers = Headers(
            request_id=request_id,
            trace=trace if _TRACEPARENT.match(trace) else "",
            principal=principal,
            deadline=None if timeout is None else time.monotonic() + timeout,
        )
        return Context(self.edge.invoker, headers, service="gateway")

    def _token(self, claims: Any) -> dict[str, Any]:
        """The token answer for the claims a login method returned."""
        tokens = self.edge.tokens
        assert tokens is not None  # checked when the gateway was made
        problem = ""
        roles = claims.get("roles") or [] if isinstance(claims, dict) else []
        if not (isinstance(claims, dict) and isinstance(claims.get("sub"), str | int)):
            problem = f"{self.route.target} returned no 'sub' claim to sign"
        elif not (isinstance(roles, list) and all(isinstance(role, str) for role in roles)):
            problem = f"{self.route.target} returned 'roles' that are not a list of names"
        if problem:
            # The client sees only "internal error": the reason goes to the log.
            log.error("%s: %s", self.route.name, problem)
            raise Internal(problem)
        extra = {k: v for k, v in claims.items() if k not in ("sub", "roles")}
        token = tokens.issue(str(claims["sub"]), tuple(roles), extra)
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": int(tokens.settings.ttl),
        }
