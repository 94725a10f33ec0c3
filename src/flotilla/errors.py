"""The one exception tree of Flotilla, and its stable wire codes.

Every error that crosses a process boundary carries a ``code`` (a stable
string, like gRPC's status codes) and is raised on the caller as the same
exception class it was raised as on the callee::

    FlotillaError                    code             retryable  http
    ├── Cancelled                    cancelled            no      499
    ├── InvalidArgument              invalid_argument     no      422
    │   └── ConfigError              invalid_config       no      422
    ├── DeadlineExceeded             deadline_exceeded    no      504
    ├── NotFound                     not_found            no      404
    ├── AlreadyExists                already_exists       no      409
    │   └── AlreadyHandled           already_exists       no      409   (flotilla.events: the inbox)
    ├── PermissionDenied             permission_denied    no      403
    ├── Unauthenticated              unauthenticated      no      401
    ├── ResourceExhausted            resource_exhausted   yes     429
    ├── FailedPrecondition           failed_precondition  no      409
    ├── Aborted                      aborted              yes     409
    ├── Unimplemented                unimplemented        no      501
    ├── Internal                     internal             no      500
    │   └── ProtocolError            protocol_error       no      502
    └── Unavailable                  unavailable          yes     503
        ├── ConnectFailed            unavailable          yes     503
        │   └── HandshakeFailed      unavailable          yes     503
        └── ConnectionCut            unavailable          no      503

``retryable`` says whether the *error itself* allows another attempt even for a
method that is not idempotent: the request surely had no effect (nothing was
sent, or the callee refused it before doing any work).  Whether a failed call is
actually retried is the retry policy's decision, not the error's.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "ConfigError",
    "ConnectFailed",
    "ConnectionCut",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FlotillaError",
    "HandshakeFailed",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ProtocolError",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "error_for_code",
]


class FlotillaError(Exception):
    """Base of every error Flotilla raises or carries across the wire."""

    code: ClassVar[str] = "unknown"
    http_status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False
    onward: bool = False
    """Set on an error that a call made by this process returned.  A handler that
    lets such an error escape may have done work before it: the dispatcher then
    passes it on as not retryable."""
    never_sent: bool = False
    """The call never left this process (no connection, a refused handshake, an
    open breaker, a full local bulkhead): balancing may send it to another
    endpoint at once, with no retry budget spent.  Never carried on the wire."""
    retried: bool = False
    """Retries were already spent on this failure, by the retry layer of the process that
    met it: a caller further up the chain must not retry it again (three layers of
    three tries would be 27 calls).  Carried on the wire, so it climbs the chain."""

    def __init__(
        self,
        message: str = "",
        *,
        details: dict[str, Any] | None = None,
        retryable: bool | None = None,
        never_sent: bool | None = None,
        retried: bool = False,
    ) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.details: dict[str, Any] = details or {}
        if retryable is not None:
            # An instance may know better than its class: a connection lost
            # after the request went out is Unavailable but not surely harmless.
            self.retryable = retryable  # type: ignore[misc]
        if never_sent is not None:
            self.never_sent = never_sent
        if retried:
            self.retried = True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class Cancelled(FlotillaError):
    code = "cancelled"
    http_status = 499


class InvalidArgument(FlotillaError):
    code = "invalid_argument"
    http_status = 422


class ConfigError(InvalidArgument):
    """A system file, URL or option that cannot be used; raised before anything starts."""

    code = "invalid_config"


class DeadlineExceeded(FlotillaError):
    code = "deadline_exceeded"
    http_status = 504


class NotFound(FlotillaError):
    code = "not_found"
    http_status = 404


class AlreadyExists(FlotillaError):
    code = "already_exists"
    http_status = 409


class PermissionDenied(FlotillaError):
    code = "permission_denied"
    http_status = 403


class Unauthenticated(FlotillaError):
    code = "unauthenticated"
    http_status = 401


class ResourceExhausted(FlotillaError):
    code = "resource_exhausted"
    http_status = 429
    retryable = True


class FailedPrecondition(FlotillaError):
    code = "failed_precondition"
    http_status = 409


class Aborted(FlotillaError):
    code = "aborted"
    http_status = 409
    retryable = True


class Unimplemented(FlotillaError):
    code = "unimplemented"
    http_status = 501


class Internal(FlotillaError):
    code = "internal"
    http_status = 500


class ProtocolError(Internal):
    """A peer sent bytes that are not a valid frame; the connection is closed."""

    code = "protocol_error"
    http_status = 502


class Unavailable(FlotillaError):
    code = "unavailable"
    http_status = 503
    retryable = True


class ConnectFailed(Unavailable):
    """No connection to the chosen endpoint could be made: the call never left this process.

    Balancing sends such a call to another endpoint at once (a *requeue*, as
    Finagle calls it), which is always safe and needs no retry budget.  On the
    wire it is plain ``unavailable``.
    """

    never_sent = True


class HandshakeFailed(ConnectFailed):
    """The endpoint refused our handshake, or we refused its: a wrong cluster secret, a
    server with too many connections in their handshake, a peer that is no Flotilla node.

    A fault of that endpoint, like a refused connect: nothing was sent, the call
    goes elsewhere and the endpoint is left out of balancing for a while.
    ``details["reason"]`` holds the peer's code when it sent one
    (``unauthenticated``, ``resource_exhausted``).
    """


class ConnectionCut(Unavailable):
    """Raised by a call handler to have the server cut the call's connection at once, as a
    crash would, instead of answering (fault injection's *abort*).

    Every call in flight on that connection is lost with it, and the caller
    sees what a lost connection gives: ``unavailable``, not retryable (the
    request went out).  A server that does not know it sends it as plain
    ``unavailable``.
    """

    retryable = False


def _all_subclasses(cls: type[FlotillaError]) -> list[type[FlotillaError]]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


# Parents come before their subclasses, so a code shared by a subclass
# (ConnectFailed) rebuilds as the parent (Unavailable) on the other side.
_BY_CODE: dict[str, type[FlotillaError]] = {}
for _cls in _all_subclasses(FlotillaError):
    _BY_CODE.setdefault(_cls.code, _cls)


def error_for_code(
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    retryable: bool | None = None,
    retried: bool = False,
) -> FlotillaError:
    """Rebuild the error a peer sent; an unknown code becomes :class:`Internal`."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return Internal(f"{code}: {message}", details=details, retried=retried)
    return cls(message, details=details, retryable=retryable, retried=retried)
