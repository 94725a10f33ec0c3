"""The server fixtures' own behaviour: found, skipped, or failed under CI."""

from __future__ import annotations

import socket

import pytest
from tests.servers import NATS, Server, require, unique_name


def closed_port() -> int:
    """A port nothing listens on (bound then released: the kernel will not reuse it at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def dead_server(port: int) -> Server:
    return Server(
        name="Nothing",
        env="FLOTILLA_TEST_NOTHING_URL",
        default_url=f"nothing://127.0.0.1:{port}",
        default_port=port,
        start="start-nothing --now",
    )


def test_a_listening_server_gives_its_url(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        monkeypatch.setenv(NATS.env, f"nats://127.0.0.1:{port}")
        assert require(NATS) == f"nats://127.0.0.1:{port}"


def test_a_missing_server_skips_naming_it_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"Nothing is not answering.*start-nothing"):
        require(dead_server(closed_port()))


def test_a_missing_server_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"CI needs every server: Nothing"):
        require(dead_server(closed_port()))


def test_the_environment_overrides_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    server = dead_server(1)
    monkeypatch.setenv(server.env, "nothing://elsewhere:7")
    assert server.url == "nothing://elsewhere:7"
    monkeypatch.delenv(server.env)
    assert server.url == "nothing://127.0.0.1:1"


def test_unique_names_differ_and_keep_their_prefix() -> None:
    names = {unique_name("FLT") for _ in range(100)}
    assert len(names) == 100
    assert all(name.startswith("FLT_") for name in names)
