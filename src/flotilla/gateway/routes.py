"""Routes as data: which HTTP request calls which RPC method, and how its parts become arguments.

::

    ROUTES = [
        Route("GET", "/api/orders/{id}", "orders.get", path={"id": "order_id"},
              auth="user", principal_arg="user_id"),
        Route("POST", "/api/orders", "orders.create", status=202, auth="user",
              headers={"Idempotency-Key": "idempotency_key"}, principal_arg="user_id"),
        Route("GET", "/api/products", "catalog.list", query=["category", "limit", "cursor"]),
        TokenRoute("POST", "/api/auth/token", "users.authenticate"),
    ]

Where each argument of the method comes from:

* ``path``: each ``{name}`` of the path template is the argument of the same
  name, unless ``path`` maps it to another (``{"id": "order_id"}``);
* ``query``: query parameters, by name; ``{"q": "text"}`` maps one to another
  argument.  Path and query values are text: they are converted to the type
  the method's JSON Schema gives (integer, number, boolean; a list for an
  array parameter, from a repeated parameter);
* ``headers``: request headers, by header name (optional: absent means absent);
* ``body``: ``None`` (the default) spreads a JSON object body over the
  arguments (each key one argument); a name passes the whole body as that
  one argument; ``False`` takes no body;
* ``principal_arg``: the verified token's subject (the user id), so that a
  method can check ownership without trusting the client.

Arguments set by the path, the query, the headers or the principal cannot
also come from the body: a body naming one of them is refused (422), so a
client cannot pass itself off as another user through the body.

``auth``: ``None`` (anyone), ``"user"`` (any valid token) or a role name (a
valid token whose ``roles`` hold it, else 403).  ``timeout``: the call's
deadline in seconds (default: the method's own timeout).  ``rate_limit``:
this route's bucket instead of the gateway's default one.

A route is checked on its own when made (a bad method, a path that is not a
template, a mapping to a placeholder that does not exist), and against the
method tables of the services when the gateway starts
(:mod:`flotilla.gateway.binding`).

:class:`TokenRoute` is how a login becomes a token while the signing key
stays in the gateway alone: the route's method (``users.authenticate``, say)
checks the credentials and returns the claims (``{"sub": "42", "roles":
[...]}``), or raises ``Unauthenticated``; the gateway signs them and answers
``{"access_token", "token_type": "bearer", "expires_in"}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from flotilla.errors import ConfigError

__all__ = ["HTTP_METHODS", "RateLimit", "Route", "TokenRoute"]

HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TARGET = re.compile(r"^[A-Za-z][\w-]*\.[A-Za-z_]\w*$")


@dataclass(frozen=True, kw_only=True)
class RateLimit:
    """A token bucket: ``rate`` requests a second on average, bursts of up to ``burst``."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if not (self.rate > 0 and self.burst >= 1):
            raise ConfigError(f"a rate limit needs rate > 0 and burst >= 1, not {self}")


@dataclass(frozen=True)
class Route:
    """One HTTP route mapped onto one RPC method (see the module docstring).

    ``template`` is the URL path with ``{placeholders}``; ``path`` maps a
    placeholder to an argument of another name.
    """

    method: str
    template: str
    target: str
    """``"service.method"``."""
    status: int = 200
    auth: str | None = None
    path: Mapping[str, str] = field(default_factory=dict, kw_only=True)
    query: Sequence[str] | Mapping[str, str] = field(default=(), kw_only=True)
    headers: Mapping[str, str] = field(default_factory=dict, kw_only=True)
    body: str | bool | None = field(default=None, kw_only=True)
    principal_arg: str | None = field(default=None, kw_only=True)
    timeout: float | None = field(default=None, kw_only=True)
    rate_limit: RateLimit | None = field(default=None, kw_only=True)
    summary: str = field(default="", kw_only=True)
    """One line for the OpenAPI document (default: the target)."""

    def __post_init__(self) -> None:
        # Normalised once, so the rest of the gateway reads one shape.
        object.__setattr__(self, "method", self.method.upper())
        query = self.query
        object.__setattr__(
            self, "query", dict(query) if isinstance(query, Mapping) else {q: q for q in query}
        )
        object.__setattr__(self, "path", dict(self.path))
        object.__setattr__(self, "headers", dict(self.headers))
        self._check()

    @property
    def name(self) -> str:
        """``"GET /api/orders/{id}"``: how errors, metrics and logs name the route."""
        return f"{self.method} {self.template}"

    @property
    def placeholders(self) -> list[str]:
        """The ``{names}`` of the path template, in order."""
        return _PLACEHOLDER.findall(self.template)

    @property
    def query_args(self) -> Mapping[str, str]:
        """Query parameter -> argument."""
        assert isinstance(self.query, Mapping)
        return self.query

    def path_arg(self, placeholder: str) -> str:
        """The argument a path placeholder fills."""
        return self.path.get(placeholder, placeholder)

    def bound_args(self) -> dict[str, str]:
        """Every argument the route sets from outside the body -> where it comes from."""
        bound = {self.path_arg(p): f"path {{{p}}}" for p in self.placeholders}
        bound.update({arg: f"query {q!r}" for q, arg in self.query_args.items()})
        bound.update({arg: f"header {h!r}" for h, arg in self.headers.items()})
        if self.principal_arg:
            bound[self.principal_arg] = "the token's subject"
        return bound

    def _check(self) -> None:
        def bad(reason: str) -> ConfigError:
            return ConfigError(f"route {self.name} -> {self.target}: {reason}")

        if self.method not in HTTP_METHODS:
            raise bad(f"method must be one of {sorted(HTTP_METHODS)}")
        if not self.template.startswith("/") or "{}" in self.template:
            raise bad("the path must start with '/' and name each {placeholder}")
        if not _TARGET.match(self.target):
            raise bad("the target must be 'service.method'")
        if not 200 <= self.status < 300:
            raise bad(f"status {self.status} is not a success status (2xx)")
        if self.timeout is not None and not self.timeout > 0:
            raise bad("timeout must be positive (seconds)")
        if self.auth == "":
            raise bad("auth must be None, 'user' or a role name")
        if self.principal_arg and self.auth is None:
            raise bad(f"principal_arg {self.principal_arg!r} needs auth (a route with no token)")
        stray = set(self.path) - set(self.placeholders)
        if stray:
            raise bad(f"path maps {sorted(stray)}, which the path template does not name")
        sources = [self.path_arg(p) for p in self.placeholders]
        sources += [*self.query_args.values(), *self.headers.values()]
        sources += [self.principal_arg] if self.principal_arg else []
        if isinstance(self.body, str):
            sources.append(self.body)
        repeated = sorted({arg for arg in sources if sources.count(arg) > 1})
        if repeated:
            raise bad(f"argument(s) {repeated} set from two places")


class TokenRoute(Route):
    """A login route: its method returns claims, the gateway answers a signed token.

    Takes the options of :class:`Route` but ``auth`` and ``principal_arg``
    (whoever logs in has no token yet).
    """

    def __post_init__(self) -> None:
        if self.auth is not None or self.principal_arg is not None:
            raise ConfigError(f"token route {self.name}: a login route takes no token")
        if not self.summary:
            object.__setattr__(self, "summary", "Exchange credentials for a bearer token")
        super().__post_init__()
