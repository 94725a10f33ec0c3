"""The resilience policies: what each layer decides, apart from how it applies it.

Each policy is a frozen value with defaults chosen so that a system that
configures nothing is protected; an invalid value is a
:class:`~flotilla.errors.ConfigError` when the policy is made (at start).
Policies are set at the system, service, method and call level by
:mod:`flotilla.resilience.config` (the ``[resilience]`` section of
``flotilla.toml``); the mechanisms read them and never keep a copy of their own.
"""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec

from flotilla.errors import ConfigError, error_for_code

__all__ = [
    "BreakerPolicy",
    "BudgetPolicy",
    "BulkheadPolicy",
    "FaultPolicy",
    "HedgePolicy",
    "Policy",
    "PolicyLookup",
    "RetryPolicy",
    "uniform",
]


def _require(ok: bool, policy: str, reason: str) -> None:
    if not ok:
        raise ConfigError(f"{policy}: {reason}")


def _fraction(value: float, policy: str, name: str) -> None:
    _require(0.0 <= value <= 1.0, policy, f"{name} must be between 0 and 1, not {value}")


def _positive(value: float, policy: str, name: str) -> None:
    _require(value > 0, policy, f"{name} must be positive, not {value}")


BreakerMode = Literal["auto", "forced_open", "disabled", "metrics_only"]
"""How a breaker's policy lets it work; distinct from the state of its machine (open, closed...)."""


class BreakerPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When a breaker trips, how long it stays open, how it probes (``resilience/breaker.py``)."""

    state: BreakerMode = "auto"
    """``forced_open`` refuses every call; ``disabled`` admits every call and records nothing;
    ``metrics_only`` records and signals but never refuses."""
    window: float = 10.0
    """Seconds of calls the failure and slow-call rates are taken over."""
    min_calls: int = 5
    """Calls the window must hold before a rate can trip the breaker."""
    failure_rate: float = 0.5
    """Trip when at least this fraction of the window's calls failed (timeouts count)."""
    slow_call_rate: float = 1.0
    """Trip when at least this fraction of the window's calls were slow (1.0 with no
    ``slow_call_seconds``: off)."""
    slow_call_seconds: float | None = None
    """A call slower than this is slow; None: no call is."""
    consecutive_failures: int | None = 5
    """Trip after this many failures in a row, whatever the window holds; None: never."""
    half_open_probes: int = 3
    """Calls admitted while half-open; all must succeed to close, one failure reopens."""
    open_base: float = 5.0
    """Seconds open after the first trip; doubled at each trip in a row."""
    open_max: float = 60.0
    """Cap of the open time, however many trips in a row."""
    jitter: float = 0.2
    """The open time is spread by up to this fraction either way."""
    per_method: bool = False
    """One breaker per endpoint and method rather than per endpoint."""

    def __post_init__(self) -> None:
        name = "breaker"
        _positive(self.window, name, "window")
        _require(self.min_calls >= 1, name, f"min_calls must be at least 1, not {self.min_calls}")
        _fraction(self.failure_rate, name, "failure_rate")
        _fraction(self.slow_call_rate, name, "slow_call_rate")
        if self.slow_call_seconds is not None:
            _positive(self.slow_call_seconds, name, "slow_call_seconds")
        if self.consecutive_failures is not None:
            _require(
                self.consecutive_failures >= 1,
                name,
                f"consecutive_failures must be at least 1, not {self.consecutive_failures}",
            )
        _require(self.half_open_probes >= 1, name, "half_open_probes must be at least 1")
        _positive(self.open_base, name, "open_base")
        _require(self.open_max >= self.open_base, name, "open_max must be at least open_base")
        _fraction(self.jitter, name, "jitter")


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Whether and when to try a call again (see ``resilience/retry.py``).

    Only calls to idempotent methods, or failures whose error is ``retryable``,
    are tried again; never past the deadline.
    """

    max_attempts: int = 3
    """Attempts in all, the first included (1: no retries)."""
    backoff_base: float = 0.025
    """Seconds; the n-th retry waits a uniform random time in [0, min(max, base * 2**n))."""
    backoff_max: float = 1.0

    def __post_init__(self) -> None:
        name = "retry"
        _require(self.max_attempts >= 1, name, "max_attempts must be at least 1")
        _positive(self.backoff_base, name, "backoff_base")
        _require(self.backoff_max >= self.backoff_base, name, "backoff_max must be >= backoff_base")


class BudgetPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How many retries and hedges a caller may add to its requests (see ``resilience/budget.py``).

    Over ``window`` seconds, retries may add at most ``ratio`` of the requests
    plus ``min_per_second`` per second (so a quiet caller may still retry).
    The defaults are half of Finagle's and Linkerd's (20 % + 10/s): when a
    service fails outright, its callers add at most a tenth to its load, and a
    busy chain of calls stays within about 1.1x attempts per request however
    deep it is (a retried failure is not retried again upstream).
    """

    ratio: float = 0.1
    min_per_second: float = 5.0
    window: float = 10.0

    def __post_init__(self) -> None:
        name = "budget"
        _require(self.ratio >= 0, name, f"ratio must not be negative, not {self.ratio}")
        _require(self.min_per_second >= 0, name, "min_per_second must not be negative")
        _positive(self.window, name, "window")


class HedgePolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Whether to send a second attempt when the first is slow (idempotent methods only)."""

    enabled: bool = False
    delay: float | None = None
    """Seconds before the hedge; None: the method's observed ``percentile`` latency."""
    percentile: float = 0.95
    max_hedges: int = 1

    def __post_init__(self) -> None:
        name = "hedge"
        if self.delay is not None:
            _positive(self.delay, name, "delay")
        _require(0 < self.percentile < 1, name, "percentile must be between 0 and 1")
        _require(self.max_hedges >= 1, name, "max_hedges must be at least 1")


class BulkheadPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How many calls of a method a callee runs at once, and how many may wait."""

    max_concurrent: int = 256
    max_queue: int = 512
    """Calls that may wait for a slot; beyond it a call is refused at once."""
    adaptive: Literal["vegas", "gradient2"] | None = None
    """Adjust the concurrency limit from observed latency (``max_concurrent`` is then the cap)."""
    per_endpoint: int | None = None
    """The caller's side: calls one caller may have in flight to one endpoint of the
    service at once; beyond it the call goes to another endpoint. None: no cap."""

    def __post_init__(self) -> None:
        name = "bulkhead"
        _require(self.max_concurrent >= 1, name, "max_concurrent must be at least 1")
        _require(self.max_queue >= 0, name, "max_queue must not be negative")
        if self.per_endpoint is not None:
            _require(self.per_endpoint >= 1, name, "per_endpoint must be at least 1")


class FaultPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Faults to inject on purpose, to test the rest (off unless configured)."""

    delay: float = 0.0
    """Seconds added to a delayed call."""
    delay_fraction: float = 0.0
    error: str = "unavailable"
    """The error code a failed call gets."""
    error_fraction: float = 0.0
    abort_fraction: float = 0.0
    """Calls whose connection is cut mid-call (the caller sees the connection lost, and so
    do the other calls in flight on that connection)."""

    @property
    def injects(self) -> bool:
        """Whether any fault is switched on."""
        return bool(self.delay_fraction or self.error_fraction or self.abort_fraction)

    def __post_init__(self) -> None:
        name = "faults"
        _require(self.delay >= 0, name, f"delay must not be negative, not {self.delay}")
        _fraction(self.delay_fraction, name, "delay_fraction")
        _fraction(self.error_fraction, name, "error_fraction")
        _fraction(self.abort_fraction, name, "abort_fraction")
        # An unknown code would reach callers as "internal": refuse it at start.
        _require(
            error_for_code(self.error, "").code == self.error,
            name,
            f"error {self.error!r} is not an error code (see flotilla.errors)",
        )


class Policy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every resilience policy for one scope (a system, a service, a method or a call)."""

    breaker: BreakerPolicy = BreakerPolicy()
    retry: RetryPolicy = RetryPolicy()
    budget: BudgetPolicy = BudgetPolicy()
    hedge: HedgePolicy = HedgePolicy()
    bulkhead: BulkheadPolicy = BulkheadPolicy()
    faults: FaultPolicy = FaultPolicy()
    panic_threshold: float = 0.5
    """When more than this fraction of a service's endpoints are ejected or unhealthy,
    balance over all of them rather than pile onto the few left (Envoy's panic mode)."""

    def __post_init__(self) -> None:
        _fraction(self.panic_threshold, "resilience", "panic_threshold")


class PolicyLookup(Protocol):
    """The policy in force for a service, or one of its methods (``method=None``: the service's).

    Layers call it per call, so an implementation answers from a dict, never by
    merging levels on the spot.  A request's own ``policy`` (set for one call)
    takes precedence over what this returns.
    """

    def __call__(self, service: str, method: str | None = None) -> Policy: ...


def uniform(policy: Policy | None = None) -> PolicyLookup:
    """A lookup that answers ``policy`` (the defaults if None) for every service and method."""
    chosen = policy or Policy()

    def lookup(service: str, method: str | None = None) -> Policy:
        return chosen

    return lookup
