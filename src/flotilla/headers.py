"""The headers of a call: one immutable value from the caller's context to the callee's.

Everything a call carries besides its arguments travels in one :class:`Headers`
value: the request id that ties a chain's log lines together, the calling
service, the deadline, the trace context, the authenticated principal and free
metadata.  The context, the client pipeline's call, the frame on the wire and
the callee's context all hold the same kind of value, so adding a header means
adding one field here.

Headers are never changed in place: :meth:`Headers.replace` and
:meth:`Headers.with_meta` return new values.  A middleware that adds metadata
to an onward call therefore cannot change the context it came from.

On the wire the deadline travels as the seconds left (hosts' clocks disagree);
in a process it is absolute, on ``time.monotonic()``.  :meth:`Headers.to_wire`
and :meth:`Headers.from_wire` convert.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec

__all__ = ["Headers", "Principal"]


class Principal(msgspec.Struct, frozen=True, array_like=True):
    """Who a call acts for, as established at the edge (the gateway's verified token)."""

    subject: str
    """The user or client id (a JWT's ``sub``)."""
    roles: tuple[str, ...] = ()


class Headers(msgspec.Struct, frozen=True, array_like=True):
    """What travels with a call besides its arguments (see the module docstring)."""

    request_id: str = ""
    """Shared by every call of one chain; '' until the client pipeline assigns one."""
    caller: str = ""
    """The calling service ('' from outside any service)."""
    deadline: float | None = None
    """Absolute, on ``time.monotonic()`` (on the wire: seconds left); None means none yet."""
    trace: str = ""
    """The W3C ``traceparent`` of the caller's span ('' when not traced)."""
    principal: Principal | None = None
    meta: Mapping[str, str] = msgspec.field(default_factory=dict)
    """Free metadata that travels along a chain of calls (read-only: see :meth:`with_meta`)."""

    def replace(self, **changes: Any) -> Headers:
        """A copy with ``changes`` applied."""
        return msgspec.structs.replace(self, **changes)

    def with_meta(self, **items: str) -> Headers:
        """A copy whose metadata also holds ``items`` (the original is left as it was)."""
        return msgspec.structs.replace(self, meta={**self.meta, **items})

    def remaining(self, now: float | None = None) -> float | None:
        """Seconds left before the deadline (negative once passed), or None."""
        if self.deadline is None:
            return None
        return self.deadline - (time.monotonic() if now is None else now)

    def to_wire(self, now: float) -> Headers:
        """The headers as they travel: the deadline as the seconds left at ``now``."""
        if self.deadline is None:
            return self
        return msgspec.structs.replace(self, deadline=self.deadline - now)

    def from_wire(self, now: float) -> Headers:
        """Headers received at ``now``: the seconds left made absolute again."""
        if self.deadline is None:
            return self
        return msgspec.structs.replace(self, deadline=now + self.deadline)
