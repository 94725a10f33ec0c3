"""Bearer tokens: JWTs issued and verified by the gateway alone, with PyJWT.

The signing key lives in the gateway process and nowhere else: a login route
(:class:`~flotilla.gateway.routes.TokenRoute`) calls a method that checks the
credentials and returns claims, and the gateway signs them.  Services never
see a token, only the verified :class:`~flotilla.headers.Principal` in the
call's headers.

Verification accepts only the configured algorithm (HS256 by default), so a
token with ``alg: none`` or another algorithm is refused, as is one that is
expired, not yet valid, forged (a bad signature), without ``sub`` or ``exp``,
or for another audience or issuer.  Each refusal is ``Unauthenticated``
(401) saying why; a valid token without the route's role is
``PermissionDenied`` (403).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from flotilla.errors import ConfigError, PermissionDenied, Unauthenticated
from flotilla.headers import Principal

__all__ = ["MIN_SECRET_BYTES", "TokenSettings", "Tokens", "authorize"]

MIN_SECRET_BYTES = 32
"""RFC 7518 asks an HS256 key to be at least as long as the hash (32 bytes)."""
_HMAC = ("HS256", "HS384", "HS512")


@dataclass(frozen=True, kw_only=True)
class TokenSettings:
    """How tokens are signed and checked (data: see :class:`Tokens` for the mechanism)."""

    secret: str
    algorithm: str = "HS256"
    audience: str | None = None
    issuer: str | None = None
    ttl: float = 3600.0
    """Seconds an issued token is valid."""
    leeway: float = 0.0
    """Seconds of clock difference tolerated on ``exp`` and ``nbf``."""
    roles_claim: str = "roles"

    def __post_init__(self) -> None:
        if self.algorithm not in _HMAC:
            raise ConfigError(
                f"token algorithm must be one of {list(_HMAC)}, not {self.algorithm!r}"
            )
        if len(self.secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"the token secret must be at least {MIN_SECRET_BYTES} bytes long")
        if not self.ttl > 0:
            raise ConfigError("the token ttl must be a positive number of seconds")


class Tokens:
    """Issues and verifies the gateway's tokens under :class:`TokenSettings`."""

    def __init__(self, settings: TokenSettings, *, now: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._now = now

    def issue(
        self, subject: str, roles: tuple[str, ...] = (), extra: Mapping[str, Any] | None = None
    ) -> str:
        """A signed token for ``subject`` with ``roles``, valid for the configured ttl."""
        settings = self.settings
        now = int(self._now())
        claims: dict[str, Any] = {**(extra or {}), "sub": subject, "iat": now}
        claims["exp"] = now + int(settings.ttl)
        claims[settings.roles_claim] = list(roles)
        if settings.audience is not None:
            claims["aud"] = settings.audience
        if settings.issuer is not None:
            claims["iss"] = settings.issuer
        return jwt.encode(claims, settings.secret, algorithm=settings.algorithm)

    def verify(self, token: str) -> Principal:
        """The principal a valid token names; :class:`Unauthenticated` saying why otherwise."""
        settings = self.settings
        try:
            claims = jwt.decode(
                token,
                settings.secret,
                algorithms=[settings.algorithm],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired") from None
        except jwt.InvalidAlgorithmError:
            raise Unauthenticated(f"the token is not signed with {settings.algorithm}") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"the token is not valid: {exc}") from None
        roles = claims.get(settings.roles_claim, [])
        if not (isinstance(roles, list) and all(isinstance(role, str) for role in roles)):
            raise Unauthenticated(f"the token's {settings.roles_claim!r} is not a list of names")
        return Principal(subject=str(claims["sub"]), roles=tuple(roles))

    def from_header(self, authorization: str | None) -> Principal | None:
        """The principal of an ``Authorization: Bearer ...`` header (None when absent)."""
        if authorization is None:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
        return self.verify(token.strip())


def authorize(auth: str | None, principal: Principal | None) -> None:
    """Let the request through a route's ``auth``, or raise 401/403."""
    if auth is None:
        return
    if principal is None:
        raise Unauthenticated("this route needs a bearer token (Authorization: Bearer ...)")
    if auth != "user" and auth not in principal.roles:
        raise PermissionDenied(f"this route needs the role {auth!r}")
