"""Where a process finds its registry, its cluster secret and its address: the environment.

``flotilla run`` sets these for every process it starts; a container sets them
itself.  With none set, a process uses the embedded mode: a data directory
``./.flotilla`` holding the SQLite registry and a generated secret.

- ``FLOTILLA_DATA_DIR``: the embedded mode's data directory (default ``./.flotilla``);
- ``FLOTILLA_REGISTRY``: registry URL (default ``sqlite:///<data dir>/registry.db``);
- ``FLOTILLA_EVENTS``: event backend URL (default ``sqlite:///<data dir>/events.db``, the
  embedded log; opened only when the process emits or handles events);
- ``FLOTILLA_SECRET``: the cluster secret as text (default: read from ``<data dir>/secret``,
  created there if missing);
- ``FLOTILLA_HOST`` / ``FLOTILLA_PORT``: where the RPC server binds (default
  ``127.0.0.1``, any free port);
- ``FLOTILLA_ADVERTISE``: the host others reach this process at (default: the bound host);
- ``FLOTILLA_DATABASE_URL``: the database of the process's one service with a database
  (given to ``flotilla run``, it is the whole system's instead, shared out per service by
  :mod:`flotilla.runtime.backends`);
  ``FLOTILLA_DATABASE_URL_<SERVICE>`` (name in capitals, ``-`` as ``_``): that service's
  (default: ``<data dir>/<service>.db``; see :mod:`flotilla.data.url`);
- ``FLOTILLA_STRATEGY``, ``FLOTILLA_STRATEGIES`` (a JSON object, called service -> strategy),
  ``FLOTILLA_DEFAULT_TIMEOUT`` (seconds): how this process balances and times its calls
  (``flotilla run`` sets them from the system file);
- ``FLOTILLA_RESILIENCE``: the resilience policies, a
  :class:`~flotilla.resilience.config.PolicyTable` as JSON (``flotilla run`` sets it
  from the ``[resilience]`` section);
- ``FLOTILLA_DELIVERY``: the event consumers' :class:`~flotilla.events.policy.DeliveryPolicy`
  as JSON (``{"ack_wait": 5, "max_deliveries": 3}``); ``FLOTILLA_RELAY``: the outbox
  relays' :class:`~flotilla.data.policy.RelayPolicy` as JSON (``{"lease": 2}``);
- ``FLOTILLA_OPS_PORT``: the ops HTTP port (``/healthz``, ``/readyz``, ``/status``),
  0 for any free one (``flotilla run`` sets 0); unset: no ops port.
  ``FLOTILLA_OPS_HOST``: where it binds (default: ``FLOTILLA_HOST``).

The data directory holds the cluster secret: it is made ``0700`` and the files
Flotilla writes there ``0600``, whatever the umask, since anybody who can
replace ``secret`` can impersonate every process of the system.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import msgspec

from flotilla.balancing import DEFAULT_STRATEGY
from flotilla.calls.deadline import DEFAULT_TIMEOUT
from flotilla.data.policy import RelayPolicy
from flotilla.data.url import DATABASE_ENV, per_service_env
from flotilla.errors import ConfigError
from flotilla.events.policy import DeliveryPolicy
from flotilla.resilience.config import PolicyTable
from flotilla.resolve import default_events_url, default_registry_url
from flotilla.runtime.config import NodeConfig

__all__ = ["Settings", "ensure_data_dir", "load_secret"]

T = TypeVar("T")
_Seconds = Annotated[float, msgspec.Meta(gt=0)]


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """A process's runtime settings, read once at start."""

    data_dir: Path
    registry: str
    secret: bytes
    events: str = "memory://"
    host: str = "127.0.0.1"
    port: int = 0
    advertise: str | None = None
    strategy: str = DEFAULT_STRATEGY
    strategies: dict[str, str] = msgspec.field(default_factory=dict)
    default_timeout: float = DEFAULT_TIMEOUT
    resilience: PolicyTable = msgspec.field(default_factory=PolicyTable)
    ops_port: int | None = None
    ops_host: str | None = None
    database: str | None = None
    databases: dict[str, str] = msgspec.field(default_factory=dict)
    delivery: DeliveryPolicy = msgspec.field(default_factory=DeliveryPolicy)
    relay: RelayPolicy = msgspec.field(default_factory=RelayPolicy)

    def node_config(self, metadata: Mapping[str, str] | None = None) -> NodeConfig:
        """The configuration of a node run with these settings."""
        return NodeConfig(
            registry=self.registry,
            events=self.events,
            secret=self.secret,
            host=self.host,
            port=self.port,
            advertise=self.advertise,
            strategy=self.strategy,
            strategies=self.strategies,
            default_timeout=self.default_timeout,
            metadata=dict(metadata or {}),
            resilience=self.resilience,
            ops_port=self.ops_port,
            ops_host=self.ops_host,
            data_dir=str(self.data_dir),
            database=self.database,
            databases=self.databases,
            delivery=self.delivery,
            relay=self.relay,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the ``FLOTILLA_*`` variables (of ``os.environ`` unless ``env`` is given)."""
        env = os.environ if env is None else env
        data_dir = Path(env.get("FLOTILLA_DATA_DIR") or ".flotilla").absolute()
        registry = env.get("FLOTILLA_REGISTRY") or default_registry_url(data_dir)
        secret_text = env.get("FLOTILLA_SECRET")
        secret = secret_text.encode() if secret_text else load_secret(data_dir)
        return cls(
            data_dir=data_dir,
            registry=registry,
            events=env.get("FLOTILLA_EVENTS") or default_events_url(data_dir),
            secret=secret,
            host=env.get("FLOTILLA_HOST") or "127.0.0.1",
            port=_port(env, "FLOTILLA_PORT") or 0,
            advertise=env.get("FLOTILLA_ADVERTISE") or None,
            strategy=env.get("FLOTILLA_STRATEGY") or DEFAULT_STRATEGY,
            strategies=_json_env(env, "FLOTILLA_STRATEGIES", dict[str, str], {}),
            default_timeout=_json_env(
                env,
                "FLOTILLA_DEFAULT_TIMEOUT",
                Annotated[float, msgspec.Meta(gt=0)],
                DEFAULT_TIMEOUT,
            ),
            resilience=_json_env(env, "FLOTILLA_RESILIENCE", PolicyTable, PolicyTable()),
            ops_port=_port(env, "FLOTILLA_OPS_PORT"),
            ops_host=env.get("FLOTILLA_OPS_HOST") or None,
            database=env.get(DATABASE_ENV) or None,
            databases={
                per_service_env(name.removeprefix(f"{DATABASE_ENV}_")): url
                for name, url in env.items()
                if name.startswith(f"{DATABASE_ENV}_") and url
            },
            delivery=_json_env(env, "FLOTILLA_DELIVERY", DeliveryPolicy, DeliveryPolicy()),
            relay=_json_env(env, "FLOTILLA_RELAY", RelayPolicy, RelayPolicy()),
        )


def _port(env: Mapping[str, str], name: str) -> int | None:
    """The port number in variable ``name`` (None when unset)."""
    text = env.get(name)
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) > 65535:
        raise ConfigError(f"{name}={text!r} is not a port number")
    return int(text)


def _json_env(env: Mapping[str, str], name: str, type_: Any, default: T) -> T:
    """The variable ``name`` decoded as JSON into ``type_``, or ``default`` when unset."""
    text = env.get(name)
    if not text:
        return default
    try:
        return cast(T, msgspec.json.decode(text, type=type_))
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{name}={text!r} is not usable: {exc}") from None
    except ConfigError as exc:  # a value's own check (a policy's threshold, say)
        raise ConfigError(f"{name} is not usable: {exc.message}") from None


def load_secret(data_dir: Path, name: str = "secret") -> bytes:
    """The secret in ``data_dir/name``, created (readable by its owner only) if missing.

    Many processes may start at once: each writes a candidate to a file of its
    own and links it into place, which succeeds for exactly one of them, so all
    read the same complete secret.
    """
    path = data_dir / name
    if not path.exists():
        ensure_data_dir(data_dir)
        candidate = data_dir / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.fchmod(fd, 0o600)  # the mode given to open() is masked by the umask; this is not
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_hex(32))
        try:
            os.link(candidate, path)
        except FileExistsError:
            pass  # another process won the race; use its secret
        finally:
            candidate.unlink()
    text = path.read_text().strip()
    if not text:
        raise ConfigError(f"secret file {path} is empty")
    return text.encode()


def ensure_data_dir(data_dir: Path) -> None:
    """Create ``data_dir`` (and its parents) if missing; make it ``0700`` either way.

    ``mkdir``'s mode is masked by the umask, so the mode is set after; an
    existing directory that others can enter is tightened too (it holds the
    secret).  A directory that is not ours is left alone: ``chmod`` would fail
    and the secret's own mode still protects it.
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = data_dir.stat()
    if info.st_mode & 0o077 and info.st_uid == os.getuid():
        os.chmod(data_dir, 0o700)
