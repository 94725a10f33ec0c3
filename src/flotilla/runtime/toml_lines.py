"""Where a key is written in a TOML text, and errors that point there.

TOML parsers keep no positions, so the line of a key is found by scanning the
text for its table and the key: it is the line of the key when the key is
written on a line of its own, else that of its table.  :func:`check` converts
a parsed value to a type and reports a failure as a
:class:`~flotilla.errors.ConfigError` at that line (``file:line: key: reason``).
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from flotilla.errors import ConfigError

__all__ = ["check", "error_at", "find_line", "syntax_error"]

T = TypeVar("T")

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_AT_END = re.compile(r"\s*\(at end of document\)$")
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")


def check(value: Any, type_: type[T], text: str, source: str, path: list[str]) -> T:
    """``msgspec.convert(value, type_)``, with a failure reported at its file line."""
    try:
        return msgspec.convert(value, type_)
    except ConfigError as exc:  # a policy's own check (flotilla.events.policy...)
        raise error_at(text, source, path, exc.message) from None
    except msgspec.ValidationError as exc:
        reason, _, where = str(exc).partition(" - at `$")
        inner = [part for part in re.split(r"[.\[]", where.rstrip("`")) if part and part != "...]"]
        unknown = _UNKNOWN_FIELD.search(reason)
        if unknown:
            inner.append(unknown.group(1))  # point at the offending key, not its table
        raise error_at(text, source, path + inner, reason) from None


def error_at(text: str, source: str, path: list[str], reason: str) -> ConfigError:
    """The error ``source:line: path: reason``, at the line defining ``path`` in ``text``."""
    where = ".".join(path)
    line = find_line(text.splitlines(), path)
    return ConfigError(
        f"{source}:{line}: {where}: {reason}" if where else f"{source}:{line}: {reason}"
    )


def syntax_error(message: str, text: str, source: str) -> ConfigError:
    """A ``tomllib`` syntax error ``message`` as ``source:line: reason (column n)``."""
    position = _TOML_POSITION.search(message)
    if position:
        reason = _TOML_POSITION.sub("", message)
        return ConfigError(f"{source}:{position.group(1)}: {reason} (column {position.group(2)})")
    line = max(1, len(text.splitlines()))
    return ConfigError(f"{source}:{line}: {_TOML_AT_END.sub('', message)} (at end of file)")


def find_line(lines: list[str], path: list[str]) -> int:
    """The 1-based line defining ``path``: its key, else the nearest enclosing table, else 1."""
    for depth in range(len(path), -1, -1):
        span = _table_span(lines, path[:depth])
        if span is None:
            # ``[services.x]`` defines ``services`` too, without a header of its own.
            below = _first_header_under(lines, path[:depth])
            if below is not None:
                return below
            continue
        start, end = span
        # Longest dotted key first: ``greeter.replicas = 2`` inside ``[services]``.
        for stop in range(len(path), depth, -1):
            found = _key_line(lines, start, end, path[depth:stop])
            if found is not None:
                return found
        return start if depth else 1
    return 1  # not reached: the root table always exists


def _table_span(lines: list[str], keys: list[str]) -> tuple[int, int] | None:
    """``(header line, end)`` of table ``[keys]`` (1-based header; 0 for the root), or None."""
    start = 0 if not keys else None
    for number, line in enumerate(lines, 1):
        header = _header_keys(line)
        if header is None:
            continue
        if start is not None:
            return start, number - 1
        if header == keys:
            start = number
    return None if start is None else (start, len(lines))


def _first_header_under(lines: list[str], keys: list[str]) -> int | None:
    for number, line in enumerate(lines, 1):
        header = _header_keys(line)
        if header is not None and header[: len(keys)] == keys:
            return number
    return None


def _header_keys(line: str) -> list[str] | None:
    match = re.match(r"^\s*\[\[?\s*(.+?)\s*\]\]?\s*(#.*)?$", line)
    if match is None:
        return None
    parts = re.findall(r"\"[^\"]*\"|'[^']*'|[^.\s]+", match.group(1))
    return [part.strip("\"'") for part in parts]


def _key_line(lines: list[str], start: int, end: int, keys: list[str]) -> int | None:
    def one(key: str) -> str:
        escaped = re.escape(key)
        return f"(?:{escaped}|\"{escaped}\"|'{escaped}')"

    pattern = re.compile(r"^\s*" + r"\s*\.\s*".join(one(key) for key in keys) + r"\s*=")
    for number in range(start + 1, end + 1):
        if pattern.match(lines[number - 1]):
            return number
    return None
