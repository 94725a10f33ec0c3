"""``flotilla gateway``: serve the HTTP gateway in this process until SIGTERM or Ctrl-C.

Under ``flotilla run`` its configuration is the system file's ``[gateway]``
table, passed as ``FLOTILLA_GATEWAY`` (JSON); by hand, ``--routes`` names the
routes and the registry etc. come from ``FLOTILLA_*`` as for ``flotilla serve``.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import msgspec
import typer

from flotilla.cli.common import LogLevelOption, configure_logging, fail, fail_with
from flotilla.errors import ConfigError, FlotillaError
from flotilla.runtime.gateway_spec import GatewaySpec
from flotilla.runtime.serve import follow_parent, run_loop
from flotilla.runtime.settings import Settings

__all__ = ["gateway_command"]


def gateway_command(
    routes: Annotated[
        str | None,
        typer.Option(metavar="MODULE:ATTR", help="The routes (default: FLOTILLA_GATEWAY's)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Port (default: FLOTILLA_GATEWAY_PORT, else 8080)."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    log_level: LogLevelOption = "INFO",
) -> None:
    """Serve the HTTP gateway: routes to RPC methods, auth, rate limits, OpenAPI."""
    configure_logging(log_level)
    if os.getcwd() not in sys.path:  # `--routes app:ROUTES` finds ./app.py, as serve does
        sys.path.insert(0, os.getcwd())
    try:
        from flotilla.gateway.process import run_gateway
    except ImportError as exc:
        fail(f"the gateway needs its extra: pip install 'flotilla-mesh[gateway]' ({exc})")
    try:
        spec = _spec(routes, host)
        if port is not None:
            os.environ["FLOTILLA_GATEWAY_PORT"] = str(port)
        parent = follow_parent(os.environ)
        settings = Settings.from_env()
        run_loop(run_gateway(spec, settings, parent=parent))
    except FlotillaError as exc:
        fail_with(exc)
    except OSError as exc:  # the port is taken, ...
        fail(str(exc), 1)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _spec(routes: str | None, host: str | None) -> GatewaySpec:
    text = os.environ.get("FLOTILLA_GATEWAY", "")
    try:
        if text:
            spec = msgspec.json.decode(text, type=GatewaySpec)
        elif routes is None:
            raise ConfigError("name the routes: --routes module:ATTR (or FLOTILLA_GATEWAY)")
        else:
            spec = msgspec.convert({"routes": routes}, GatewaySpec)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"gateway settings are not usable: {exc}") from None
    overrides = {"routes": routes, "host": host}
    return msgspec.structs.replace(spec, **{k: v for k, v in overrides.items() if v is not None})
