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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from starlette.types import Receive, Scope, Send

from flotilla.context import Context, Invoker
from flotilla.errors import FlotillaError, Internal, ResourceExhausted
from flotilla.gateway.answer import send_json
from flotilla.gateway.auth import Tokens, authorize
from flotilla.gateway.binding import NO_BODY, Binding
from flotilla.gateway.body import read_json
from flotilla.gateway.observe import ROUTE_KEY, request_id_of
from flotilla.gateway.problems import error_answer
from flotilla.gateway.ratelimit import Limiter, retry_after_header
from flotilla.gateway.routes import RateLimit
from flotilla.headers import Headers, Principal

__all__ = ["Edge", "RouteHandler"]

log = logging.getLogger("flotilla.gateway")

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_NO_HEADERS: Mapping[str, str] = {}
_CALLER = "gateway"
"""The caller the gateway's calls name."""


@dataclass(frozen=True, kw_only=True)
class Edge:
    """What every route handler of one gateway shares."""

    invoker: Invoker
    tokens: Tokens | None
    limiter: Limiter
    rate_limit: RateLimit | None
    max_body: int
    trusted_proxies: Sequence[str] = ()


def _header_map(raw: Sequence[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """The request's headers by (lower-case) name; of a repeated one, the first, as Starlette."""
    headers: dict[bytes, bytes] = {}
    for name, value in raw:
        if name not in headers:
            headers[name] = value
    return headers


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _none(name: str) -> list[str]:
    return []


class RouteHandler:
    """The ASGI app of one :class:`Binding` (see the module docstring).

    Raw ASGI rather than a Starlette endpoint: a request and a response object
    per call cost more than the rest of the gateway's own work.  The scope
    holds the route's ``path_params`` (put there by the router that chose it)
    and the request id :class:`~flotilla.gateway.observe.Observe` gave it.
    """

    def __init__(self, binding: Binding, edge: Edge) -> None:
        self.binding = binding
        self.edge = edge
        self.route = binding.route
        self.name = binding.route.name
        self.limit = binding.route.rate_limit or edge.rate_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[ROUTE_KEY] = self.name
        request_id = request_id_of(scope)
        headers: Sequence[tuple[bytes, bytes]] = ()
        try:
            status, body = await self._answer(scope, receive, request_id)
        except ResourceExhausted as exc:
            status, body = error_answer(exc, request_id)
            wait = exc.details.get("retry_after", 1.0)
            headers = ((b"retry-after", retry_after_header(wait).encode()),)
        except FlotillaError as exc:
            status, body = error_answer(exc, request_id)
        except Exception:
            # A fault of the gateway itself: logged with its traceback, never shown.
            log.exception("request %s on %s failed", request_id, self.name)
            status, body = error_answer(Internal(), request_id)
        await send_json(send, status, body, headers)

    async def _answer(self, scope: Scope, receive: Receive, request_id: str) -> tuple[int, bytes]:
        route = self.route
        headers = _header_map(scope["headers"])
        principal = self._principal(headers.get(b"authorization"))
        authorize(route.auth, principal)
        if self.limit is not None:
            await self._limit(scope, principal, self.limit)
        body = NO_BODY
        # Read even when the route takes no body: one that is not JSON is a 400 on every
        # route (the binding then ignores it).
        if b"content-length" in headers or b"transfer-encoding" in headers:
            declared = _text(headers.get(b"content-length"))
            body = await read_json(receive, declared, self.edge.max_body)
        args = self.binding.arguments(
            scope["path_params"],
            self._query(scope) if route.query_args else _none,
            {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()}
            if route.headers
            else _NO_HEADERS,
            body,
            principal.subject if principal else None,
        )
        context = self._context(headers.get(b"traceparent"), request_id, principal)
        result = await self.edge.invoker.invoke(route.target, args, context=context)
        if self.binding.is_token_route:
            result = self._token(result)
        return route.status, msgspec.json.encode(result)

    @staticmethod
    def _query(scope: Scope) -> Any:
        """``query(name)``: every value of a query parameter, parsed as Starlette parses it."""
        pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)

        def values(name: str) -> list[str]:
            return [value for key, value in pairs if key == name]

        return values

    def _principal(self, authorization: bytes | None) -> Principal | None:
        if authorization is None or self.edge.tokens is None:
            return None
        return self.edge.tokens.from_header(authorization.decode("latin-1"))

    async def _limit(self, scope: Scope, principal: Principal | None, limit: RateLimit) -> None:
        key = f"sub:{principal.subject}" if principal else f"ip:{self._client_address(scope)}"
        if self.route.rate_limit is not None:
            # A limit of the route's own is counted apart: one bucket shared
            # with other limits would hold the smallest burst of them all.
            key = f"{key}@{self.name}"
        wait = await self.edge.limiter.acquire(key, limit)
        if wait > 0:
            raise ResourceExhausted(
                f"too many requests; try again in {wait:.1f} s", details={"retry_after": wait}
            )

    def _client_address(self, scope: Scope) -> str:
        """The client's address: the peer's, unless the peer is a trusted proxy.

        Each proxy appends the address it was called from to ``X-Forwarded-For``,
        so the client is the rightmost hop that is not a trusted proxy: what is
        left of it was written by the client and cannot be believed.
        """
        client = scope.get("client")
        peer: str = client[0] if client else "unknown"
        trusted = self.edge.trusted_proxies
        if peer not in trusted:
            return peer
        values = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"]
        hops = [hop.strip() for hop in ",".join(values).split(",") if hop.strip()]
        for hop in reversed(hops):
            if hop not in trusted:
                return hop
        return hops[0] if hops else peer

    def _context(
        self, traceparent: bytes | None, request_id: str, principal: Principal | None
    ) -> Context:
        trace = _text(traceparent) or ""
        timeout = self.route.timeout
        headers = Headers(
            request_id=request_id,
            caller=_CALLER,  # as the context would make it for the onward call: made once
            trace=trace if trace and _TRACEPARENT.match(trace) else "",
            principal=principal,
            deadline=None if timeout is None else time.monotonic() + timeout,
        )
        return Context(self.edge.invoker, headers, service=_CALLER)

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
