"""Objects a configuration names as ``"package.module:attribute"``, imported on demand.

``flotilla serve`` and a system file name service classes this way, and a
gateway its routes; each checks what it found, but the import and its errors
are the same: a :class:`~flotilla.errors.ConfigError` naming the entry, so a
bad name stops a process with exit code 2 rather than being restarted.
"""

from __future__ import annotations

import importlib

from flotilla.errors import ConfigError

__all__ = ["import_named"]


def import_named(spec: str, what: str, *, form: str = "module:attribute") -> object:
    """The attribute ``spec`` (``"package.module:attribute"``) names, its module imported.

    ``what`` says what the entry is (``"service"``, ``"routes"``) and ``form``
    how it is written, for the errors.  Raises :class:`ConfigError` when
    ``spec`` is not of that form, its module does not import, or lacks the
    attribute.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{what} {spec!r} is not {form!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a missing module, or one that fails as it is imported
        raise ConfigError(f"cannot import {module_name!r} for {what} {spec!r}: {exc!r}") from None
    if not hasattr(module, attribute):
        raise ConfigError(f"module {module_name!r} has no attribute {attribute!r}")
    return getattr(module, attribute)
