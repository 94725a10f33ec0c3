"""Backends chosen by URL: one resolver for every pluggable family, and the URL helpers they share.

A family (the registry now; events and data later) declares its schemes as
``"module.path:factory"`` strings::

    REGISTRIES = BackendFamily(
        "registry",
        {"memory": "flotilla.registry.memory:MemoryRegistry.from_url",
         "nats": "flotilla.registry.nats_kv:NatsKvRegistry.from_url"},
        extras={"nats": "nats"},
    )
    registry = REGISTRIES.open("nats://localhost:4222", clock=clock)

A factory is imported on the first use of its scheme, so a backend that needs
an optional package costs nothing until its URL is used, and a missing
package is a :class:`~flotilla.errors.ConfigError` that says which extra to
install.  A factory is called with the whole URL (shorthand expanded) and the
family's keyword options.

SQLite URLs follow SQLAlchemy's form: ``sqlite:///abs/path.db`` (three
slashes, then an absolute path) and ``sqlite://relative/path.db``.  A bare
path ending in ``.db`` is shorthand for the latter.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from flotilla.errors import ConfigError

__all__ = [
    "BackendFamily",
    "anchor_sqlite",
    "default_events_url",
    "default_registry_url",
    "expand_shorthand",
    "mask_url",
    "sqlite_path",
    "sqlite_url",
]

T = TypeVar("T")

_SQLITE_SUFFIX = ".db"
_DISTRIBUTION = "flotilla-mesh"  # what pip knows us as ("flotilla" is another project)


class BackendFamily(Generic[T]):
    """The backends of one kind (``"registry"``, ``"events"``...), named by URL scheme."""

    def __init__(
        self, kind: str, backends: Mapping[str, str], *, extras: Mapping[str, str] | None = None
    ) -> None:
        for scheme, target in backends.items():
            if target.count(":") != 1:
                raise ValueError(f"{kind} backend {scheme!r}: {target!r} is not 'module:factory'")
        self.kind = kind
        self._backends = dict(backends)
        self._extras = dict(extras or {})
        self._loaded: dict[str, Callable[..., T]] = {}

    @property
    def schemes(self) -> list[str]:
        return list(self._backends)

    def open(self, url: str, /, **options: Any) -> T:
        """A new backend for ``url``: its scheme's factory called as ``factory(url, **options)``."""
        scheme = self.check(url)
        return self.factory(scheme)(expand_shorthand(url), **options)

    def check(self, url: str) -> str:
        """The scheme of ``url``; :class:`ConfigError` if not one of this family's.

        Nothing is imported or opened: a backend's extra need not be installed.
        """
        scheme, separator, _ = expand_shorthand(url).partition("://")
        if not separator or scheme not in self._backends:
            known = ", ".join(f"{name}://" for name in self._backends)
            shorthand = " (or a path ending in .db)" if "sqlite" in self._backends else ""
            raise ConfigError(f"unknown {self.kind} URL {url!r}; known schemes: {known}{shorthand}")
        return scheme

    def factory(self, scheme: str) -> Callable[..., T]:
        """The factory of ``scheme``, imported on first use."""
        loaded = self._loaded.get(scheme)
        if loaded is None:
            loaded = self._loaded[scheme] = self._import(scheme)
        return loaded

    def _import(self, scheme: str) -> Callable[..., T]:
        module_name, _, attribute = self._backends[scheme].partition(":")
        try:
            found: Any = importlib.import_module(module_name)
        except ImportError as exc:
            if (exc.name or "").split(".")[0] == "flotilla":
                # Our own module is absent (a backend of a later release): no extra brings it.
                raise ConfigError(
                    f"the {scheme}:// {self.kind} backend is not part of this installation"
                    f" of Flotilla ({exc})"
                ) from None
            extra = self._extras.get(scheme)
            hint = f"; install it with: pip install '{_DISTRIBUTION}[{extra}]'" if extra else ""
            raise ConfigError(
                f"the {scheme}:// {self.kind} backend cannot be loaded ({exc}){hint}"
            ) from None
        try:
            for part in attribute.split("."):
                found = getattr(found, part)
        except AttributeError:
            raise ConfigError(
                f"the {scheme}:// {self.kind} backend names {self._backends[scheme]!r},"
                " which does not exist"
            ) from None
        return cast(Callable[..., T], found)


def expand_shorthand(url: str) -> str:
    """``path/x.db`` -> ``sqlite://path/x.db``; any other string unchanged."""
    if "://" not in url and url.endswith(_SQLITE_SUFFIX):
        return f"sqlite://{url}"
    return url


def sqlite_url(path: str | Path) -> str:
    """``sqlite:///<absolute path>`` for ``path`` (made absolute from the working directory)."""
    # "sqlite:///" + "a/b" with the path's own leading slash stripped: "//x" is a
    # path of its own to POSIX, so never let one through.
    return "sqlite:///" + str(Path(path).expanduser().absolute()).lstrip("/")


def sqlite_path(url: str) -> Path:
    """The file a ``sqlite://`` URL (or ``.db`` shorthand) names, as given (maybe relative)."""
    scheme, separator, rest = expand_shorthand(url).partition("://")
    if scheme != "sqlite" or not separator:
        raise ConfigError(f"{url!r} is not a sqlite:// URL")
    if not rest:
        raise ConfigError("sqlite:// needs a file, as in 'sqlite:///var/lib/app/registry.db'")
    return Path(rest).expanduser()


def anchor_sqlite(url: str, directory: str | Path) -> str:
    """A SQLite URL whose relative path is taken from ``directory``; other URLs unchanged.

    A system file's ``registry = "state/registry.db"`` means next to the
    system file, not wherever the command happened to start.
    """
    expanded = expand_shorthand(url)
    if not expanded.startswith("sqlite://") or expanded == "sqlite://":
        return url
    return sqlite_url(Path(directory) / sqlite_path(expanded))


def default_registry_url(data_dir: str | Path) -> str:
    """The registry a system uses when none is named: ``registry.db`` in its data directory."""
    return sqlite_url(Path(data_dir) / "registry.db")


def default_events_url(data_dir: str | Path) -> str:
    """The event log a system uses when none is named: ``events.db`` in its data directory."""
    return sqlite_url(Path(data_dir) / "events.db")


_USERINFO = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@?#]*)(?P<password>:[^@/?#]*)?@"
)
_SECRET_QUERY = re.compile(r"(?i)([?&](?:password|pass|token|secret|key)=)[^&#]*")
_TOKEN_SCHEMES = ("nats://", "tls://", "redis://", "rediss://")
"""Schemes whose userinfo without a password is itself a secret (a token)."""


def mask_url(url: str) -> str:
    """``url`` safe to log and show: a password, a token in the userinfo and secret
    query values (``password``, ``token``, ``secret``, ...) are ``***``.

    Works on text, so a URL that does not parse is still masked.
    """

    def userinfo(match: re.Match[str]) -> str:
        scheme, user = match["scheme"], match["user"]
        if match["password"] is not None:
            return f"{scheme}{user}:***@"
        return f"{scheme}***@" if scheme.lower() in _TOKEN_SCHEMES else match.group(0)

    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(userinfo, url, count=1))
