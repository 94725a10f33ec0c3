"""Where the resilience policies come from: the ``[resilience]`` section of ``flotilla.toml``.

::

    [resilience]                            # the system level: every call
    panic_threshold = 0.5
    breaker = { failure_rate = 0.5, window = 10 }
    retry = { max_attempts = 3 }

    [resilience.services.catalog]           # calls to catalog, over the system level
    breaker = { failure_rate = 0.3 }        # window stays 10: tables merge field by field
    hedge = { enabled = true, delay = 0.05 }

    [resilience.services.catalog.methods.search]   # one method, over its service
    retry = { max_attempts = 1 }

The sub-tables are the fields of :class:`~flotilla.resilience.policy.Policy`
(``breaker``, ``retry``, ``budget``, ``hedge``, ``bulkhead``, ``faults``,
``panic_threshold``).  A service's policy is the policy of calls *to* that
service (its breakers, the retries of its callers, its bulkhead), so every
process of the system gets the same table.  It lives under ``[resilience]``
rather than in each ``[services.NAME]`` entry because those entries describe
processes to run, while a policy is about calls: all of it in one section
reads as one document, and a service called but not run here stays
expressible should the check of names ever be relaxed.  The levels::

    call   (Request.policy, set for one call: TypedClient.with_policy)
      > method   [resilience.services.S.methods.M]
        > service  [resilience.services.S]
          > system   [resilience]
            > the defaults of Policy()  (a system that configures nothing is protected)

Each level is merged into the one below it once, when the file is read: a
:class:`PolicyTable` holds the finished policy of every configured service
and method, and a lookup per call is two dict reads.  A mistake (an unknown
key, a negative threshold, a window of zero, a service the system does not
run) is a :class:`~flotilla.errors.ConfigError` naming the key, and the file
and line when read from a file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

import msgspec

from flotilla.errors import ConfigError
from flotilla.resilience.policy import Policy

__all__ = ["ErrorAt", "PolicyTable", "policy_table"]

ErrorAt = Callable[[list[str], str], ConfigError]
"""Makes the error for a key path (``["resilience", "breaker", "window"]``) and a reason."""

_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")
_WORD = re.compile(r"[a-z_]+")


class PolicyTable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every configured level, merged: a :class:`~flotilla.resilience.policy.PolicyLookup`.

    Plain data (it travels to each process of ``flotilla run`` as JSON in
    ``FLOTILLA_RESILIENCE``); build it with :func:`policy_table`.
    """

    system: Policy = Policy()
    services: dict[str, Policy] = msgspec.field(default_factory=dict)
    """By called service, merged over ``system``."""
    methods: dict[str, dict[str, Policy]] = msgspec.field(default_factory=dict)
    """By called service, then method, merged over the service's."""

    def __call__(self, service: str, method: str | None = None) -> Policy:
        """The policy in force for ``service`` (and ``method``, if it has one of its own)."""
        if method is not None:
            policy = self.methods.get(service, {}).get(method)
            if policy is not None:
                return policy
        return self.services.get(service, self.system)


def _plain_error(path: list[str], reason: str) -> ConfigError:
    return ConfigError(f"{'.'.join(path)}: {reason}")


def policy_table(
    section: Mapping[str, Any],
    *,
    services: Collection[str] | None = None,
    error: ErrorAt = _plain_error,
) -> PolicyTable:
    """Check and merge a ``[resilience]`` section (as TOML reads it) into a :class:`PolicyTable`.

    ``services``: the services the system runs; a policy for any other is an
    error naming them (None: any name is taken).  ``error`` makes the errors
    (the system file's puts its file and line in them).
    """
    root = ["resilience"]
    section = dict(section)
    by_service = _table(section.pop("services", {}), [*root, "services"], error)
    system, system_raw = _merge({}, section, root, error)
    merged_services: dict[str, Policy] = {}
    merged_methods: dict[str, dict[str, Policy]] = {}
    for name, entry in by_service.items():
        path = [*root, "services", name]
        if services is not None and name not in services:
            known = ", ".join(sorted(services)) or "none"
            raise error(path, f"the system runs no service {name!r} (known: {known})")
        entry = dict(_table(entry, path, error))
        methods = _table(entry.pop("methods", {}), [*path, "methods"], error)
        merged_services[name], service_raw = _merge(system_raw, entry, path, error)
        for method, table in methods.items():
            where = [*path, "methods", method]
            policy, _ = _merge(service_raw, _table(table, where, error), where, error)
            merged_methods.setdefault(name, {})[method] = policy
    return PolicyTable(system=system, services=merged_services, methods=merged_methods)


def _table(value: Any, path: list[str], error: ErrorAt) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise error(path, f"must be a table, not {type(value).__name__}")
    return value


def _merge(
    base: dict[str, Any], overlay: dict[str, Any], path: list[str], error: ErrorAt
) -> tuple[Policy, dict[str, Any]]:
    """``overlay`` over ``base`` field by field, checked as a :class:`Policy`, and the raw merge.

    ``base`` was checked already, so whatever is wrong comes from ``overlay``:
    that is where the error points.
    """
    merged = dict(base)
    for key, value in overlay.items():
        below = merged.get(key)
        if isinstance(value, dict) and isinstance(below, dict):
            merged[key] = {**below, **value}
        else:
            merged[key] = value
    try:
        return msgspec.convert(merged, Policy), merged
    except msgspec.ValidationError as exc:
        reason, _, where = str(exc).partition(" - at `$")
        inner = [part for part in re.split(r"[.\[]", where.rstrip("`")) if part]
        unknown = _UNKNOWN_FIELD.search(reason)
        if unknown:
            inner.append(unknown.group(1))
        raise error(path + inner, reason) from None
    except ConfigError as exc:  # a policy's own check: "breaker: window must be positive..."
        table, _, reason = exc.message.partition(": ")
        raise error(path + _culprit(table, reason, overlay), reason) from None


def _culprit(table: str, reason: str, overlay: dict[str, Any]) -> list[str]:
    """The key of ``overlay`` a policy's check complains about (its sub-table if none is named)."""
    if table not in overlay:  # "resilience: panic_threshold must be ..."
        named = [word for word in _WORD.findall(reason) if word in overlay]
        return named[:1]
    sub = overlay[table]
    named = [word for word in _WORD.findall(reason) if isinstance(sub, dict) and word in sub]
    return [table, named[0]] if named else [table]
