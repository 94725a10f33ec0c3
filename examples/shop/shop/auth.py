"""Who may do what: the principal the gateway verified, as the services read it.

The gateway turns a verified token into ``ctx.principal`` (subject = user id,
roles); calls made onward carry it.  A call without one comes from inside the
system with no user behind it, and is refused where a user is needed: the
cluster secret, not this module, is what keeps outsiders from calling at all.
"""

from __future__ import annotations

from flotilla import Context, PermissionDenied, Unauthenticated
from flotilla.headers import Principal

ADMIN = "admin"
"""The role of shop staff: creates products, adds stock, ships, reads any order."""


def require_user(ctx: Context) -> Principal:
    """The caller's principal; ``Unauthenticated`` when the call acts for nobody."""
    principal = ctx.principal
    if principal is None or not principal.subject:
        raise Unauthenticated("this method needs a signed-in user")
    return principal


def is_admin(principal: Principal) -> bool:
    return ADMIN in principal.roles


def require_admin(ctx: Context) -> Principal:
    """The caller's principal, who must hold the admin role (else ``PermissionDenied``)."""
    principal = require_user(ctx)
    if not is_admin(principal):
        raise PermissionDenied("this method is for the shop's admins")
    return principal
