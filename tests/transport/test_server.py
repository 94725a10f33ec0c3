"""The RPC server over real loopback sockets, with well-behaved and misbehaving peers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest

from flotilla import codec
from flotilla.errors import (
    ConnectFailed,
    ConnectionCut,
    DeadlineExceeded,
    FlotillaError,
    HandshakeFailed,
    Internal,
    InvalidArgument,
    NotFound,
    ProtocolError,
    ResourceExhausted,
    Unavailable,
)
from flotilla.headers import Headers, Principal
from flotilla.testing import wait_for
from flotilla.transport import client as client_module
from flotilla.transport import server as server_module
from flotilla.transport import server_connection as connection_module
from flotilla.transport.frames import (
    HEADER,
    Call,
    Cancel,
    Challenge,
    Failure,
    Frame,
    FrameReader,
    Hello,
    Reply,
    Welcome,
    encode_frame,
    proof,
)
from flotilla.transport.pool import ConnectionPool
from flotilla.transport.server import Server
from flotilla.transport.writer import WRITE_BUFFER_HIGH

SECRET = b"s" * 32
MAX_FRAME = 64 * 1024
Handler = Callable[[str, msgspec.Raw, Headers], Awaitable[bytes]]


async def echo(method: str, args: msgspec.Raw, headers: Headers) -> bytes:
    """Answers ``{"method": ..., "args": ...}``; ``sleep`` in the args delays the answer."""
    values = codec.decode(args)
    if "sleep" in values:
        await asyncio.sleep(values["sleep"])
    return codec.encode({"method": method, "args": values})


async def settle() -> None:
    # Closed transports release their sockets on a later loop iteration.
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    servers: list[Server] = []

    async def start(handler: Handler = echo, **options: Any) -> Server:
        options.setdefault("secret", SECRET)
        options.setdefault("max_frame", MAX_FRAME)
        server = Server(handler, **options)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.aclose()
    await settle()


@pytest.fixture
async def pools() -> AsyncIterator[Callable[..., ConnectionPool]]:
    made: list[ConnectionPool] = []

    def pool(secret: bytes = SECRET, **options: Any) -> ConnectionPool:
        made.append(ConnectionPool(secret, **options))
        return made[-1]

    yield pool
    for pool_ in made:
        await pool_.aclose()
    await settle()


class RawPeer:
    """A hand-driven client that can send anything at all."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.frames = FrameReader()

    @classmethod
    async def connect(cls, address: str) -> RawPeer:
        host, _, port = address.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer)

    async def read_frame(self) -> Frame:
        size = int.from_bytes(await self.reader.readexactly(HEADER), "big")
        body = await self.reader.readexactly(size)
        (frame,) = self.frames.feed(size.to_bytes(HEADER, "big") + body)
        return frame

    async def handshake(self, secret: bytes = SECRET, challenge: Frame | None = None) -> None:
        """Complete the handshake (reading the Challenge first, unless it was read already)."""
        if challenge is None:
            challenge = await self.read_frame()
        assert isinstance(challenge, Challenge)
        nonce = b"c" * 16
        self.send(encode_frame(Hello(proof(secret, challenge.nonce, b"client"), nonce)))
        welcome = await self.read_frame()
        assert isinstance(welcome, Welcome)
        assert welcome.proof == proof(secret, nonce, b"server")

    def send(self, data: bytes | bytearray) -> None:
        self.writer.write(bytes(data))

    async def closed_by_server(self) -> bool:
        """True once the server closed the connection (EOF or reset) within 2 s."""
        try:
            async with asyncio.timeout(2.0):
                while await self.reader.read(65536):
                    pass
        except ConnectionError:
            pass
        return True

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@pytest.fixture
async def raw_peers() -> AsyncIterator[Callable[[str], Awaitable[RawPeer]]]:
    made: list[RawPeer] = []

    async def connect(address: str) -> RawPeer:
        made.append(await RawPeer.connect(address))
        return made[-1]

    yield connect
    for peer in made:
        await peer.aclose()
    await settle()


def call_frame(call_id: int, method: str = "svc.m", args: Any = None, **kw: Any) -> bytearray:
    payload = msgspec.Raw(codec.encode(args if args is not None else {}))
    return encode_frame(Call(call_id, method, payload, **kw))


async def call(pool: ConnectionPool, address: str, method: str = "svc.m", **args: Any) -> Any:
    connection = await pool.get(address)
    return codec.decode(await connection.call(method, codec.encode(args), Headers()))


def warnings_with(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
        and r.name == "flotilla.transport"
        and text in r.getMessage()
    ]


# -- calls ------------------------------------------------------------------------------


async def test_call_round_trips(start, pools) -> None:
    server = await start()
    result = await call(pools(), server.address, "greeter.hello", name="Ada")
    assert result == {"method": "greeter.hello", "args": {"name": "Ada"}}


async def test_address_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = Server(echo, secret=SECRET).address


async def test_call_carries_the_headers_with_the_deadline_made_absolute_again(start, pools) -> None:
    seen: list[tuple[str, Headers]] = []

    async def record(method: str, args: msgspec.Raw, headers: Headers) -> bytes:
        seen.append((method, headers))
        return codec.encode(None)

    server = await start(record)
    connection = await pools().get(server.address)
    deadline = time.monotonic() + 1.5
    principal = Principal("ada", ("admin",))
    sent = Headers("r1", "front", deadline, "00-abc-01", principal, {"tenant": "acme"})
    await connection.call("a.b", codec.encode({}), sent)
    ((method, headers),) = seen
    assert method == "a.b"
    # Everything but the deadline arrives as it was sent...
    assert headers.replace(deadline=deadline) == sent
    # ...and the deadline travelled as the seconds left, so the handler's
    # absolute one can only be at or before the caller's (plus this loop's jitter).
    assert headers.deadline is not None
    assert abs(headers.deadline - deadline) < 0.5
    assert headers.deadline <= time.monotonic() + 1.5


async def test_the_deadline_travels_as_the_seconds_left(start, raw_peers) -> None:
    # Hosts' monotonic clocks share no origin: an absolute deadline on the wire
    # would be meaningless to the callee.
    seen: list[Headers] = []

    async def record(method: str, args: msgspec.Raw, headers: Headers) -> bytes:
        seen.append(headers)
        return codec.encode(None)

    server = await start(record)
    peer = await raw_peers(server.address)
    await peer.handshake()
    sent_at = time.monotonic()
    peer.send(call_frame(1, headers=Headers(deadline=2.0)))
    assert isinstance(await peer.read_frame(), Reply)
    (headers,) = seen
    assert headers.deadline is not None
    assert sent_at + 1.0 < headers.deadline <= time.monotonic() + 2.0


async def test_call_without_deadline_or_meta(start, pools) -> None:
    seen: list[Headers] = []

    async def record(method: str, args: msgspec.Raw, headers: Headers) -> bytes:
        seen.append(headers)
        return codec.encode(None)

    server = await start(record)
    connection = await pools().get(server.address)
    await connection.call("a.b", codec.encode({}), Headers())
    assert seen == [Headers()]


@pytest.mark.parametrize("error", [NotFound, InvalidArgument, Unavailable, Internal])
async def test_handler_errors_arrive_as_the_same_class(
    start, pools, error: type[FlotillaError]
) -> None:
    async def fail(method: str, args: msgspec.Raw, headers: Headers) -> bytes:
        raise error("it went wrong", details={"field": "id"})

    server = await start(fail)
    with pytest.raises(error) as caught:
        await call(pools(), server.address)
    assert type(caught.value) is error
    assert caught.value.message == "it went wrong"
    assert caught.value.details == {"field": "id"}


@pytest.mark.parametrize(
    ("make", "retryable"),
    [
        (lambda: Unavailable("lost after sending", retryable=False), False),
        (lambda: Unavailable("refused"), True),
        (lambda: ResourceExhausted("full"), True),
        (lambda: Internal("odd but harmless", retryable=True), True),
    ],
    ids=["unavailable-not-retryable", "unavailable", "resource-exhausted", "internal-retryable"],
)
async def test_retryable_crosses_the_wire(
    start, pools, make: Callable[[], FlotillaError], retryable: bool
) -> None:
    # The error's own verdict, not its class's default, reaches the caller.
    async def fail(method: str, args: msgspec.Raw, headers: Headers) -> bytes:
        raise make()

    server = await start(fail)
    with pytest.raises(FlotillaError) as caught:
        await call(pools(), server.address)
    assert type(caught.value) is type(make())
    assert caught.value.retryable is retryable


async def test_error_with_unencodable_details_arrives_without_them(
    start, pools, caplog: pytest.LogCaptureFixture
) -> None:
    async def fail(method: str, args: msgspec.Raw, headers: Headers) -> bytes:
        raise NotFound("no such thing", details={"o": object()})

    server = await start(fail)
    connection = await pools().get(server.address)
    began = time.monotonic()
    with pytest.raises(NotFound, match="no such thing") as caught:
        await connection.call("svc.m", codec.encode({}), Headers(deadline=began + 10.0))
    assert time.monotonic() - began < 5.0  # answered, not left to run into the deadline
    assert caught.value.details == {}
    assert warnings_with(caplog, "cannot be encoded")
    assert server._inflight == 0
    server.handler = echo  # the connection serves on
    assert codec.decode(await connection.call("svc.m", codec.encode({"n": 1}), Headers()))[
        "args"
    ] == {"n": 1}


async def test_plain_exception_becomes_internal_and_is_logged(
    start, pools, caplog: pytest.LogCaptureFixture
) -> None:
    async def crash(method: str, args: msgspec.Raw, headers: Headers) -> bytes:
        raise ZeroDivisionError("secret detail")

    server = await start(crash)
    pool = pools()
    with pytest.raises(Internal) as caught:
        await call(pool, server.address)
    assert "secret detail" not in caught.value.message  # internals stay inside
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)
    # The connection survives a failed call.
    server.handler = echo
    assert (await call(pool, server.address, x=1))["args"] == {"x": 1}


async def test_many_concurrent_calls_on_one_connection_are_matched_by_id(start, pools) -> None:
    server = await start()
    pool = pools()
    rng = random.Random(7)

    async def one(i: int) -> None:
        pause = rng.random() / 50
        result = await call(pool, server.address, f"svc.m{i}", i=i, sleep=pause)
        assert result == {"method": f"svc.m{i}", "args": {"i": i, "sleep": pause}}

    async with asyncio.TaskGroup() as group:
        for i in range(200):
            group.create_task(one(i))
    assert len(server._connections) == 1


async def test_a_handler_that_raises_connection_cut_has_its_connection_aborted(
    start, pools
) -> None:
    # Fault injection's abort: the caller sees what a crash gives, for this
    # call and every other call in flight on the connection; the server serves on.
    async def handler(method: str, args: msgspec.Raw, headers: Headers) -> bytes:
        if method == "svc.cut":
            raise ConnectionCut("fault injected")
        return await echo(method, args, headers)

    server = await start(handler)
    pool = pools()
    waiting = asyncio.ensure_future(call(pool, server.address, "svc.slow", sleep=10))
    await wait_for(lambda: server._inflight == 1)
    with pytest.raises(Unavailable, match="lost") as cut:
        await call(pool, server.address, "svc.cut")
    assert not cut.value.retryable
    with pytest.raises(Unavailable, match="lost"):
        await waiting
    assert await call(pools(), server.address, "svc.ok") == {"method": "svc.ok", "args": {}}


# -- authentication ------------------------------------------------------------------------


async def test_wrong_secret_refused_and_server_keeps_serving(
    start, pools, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start()
    with pytest.raises(HandshakeFailed) as caught:
        await pools(b"wrong" * 8).get(server.address)
    # The server said why before hanging up: a fault of this endpoint, never sent.
    assert caught.value.details == {"reason": "unauthenticated"}
    assert caught.value.never_sent
    assert caught.value.message == (
        f"{server.address} refused our handshake: unauthenticated (wrong cluster secret?)"
    )
    await wait_for(lambda: bool(warnings_with(caplog, "does not know the cluster secret")))
    assert (await call(pools(), server.address, ok=True))["args"] == {"ok": True}


async def test_a_refused_peer_is_told_why_in_a_failure_for_call_zero(start, raw_peers) -> None:
    server = await start()
    peer = await raw_peers(server.address)
    challenge = await peer.read_frame()
    assert isinstance(challenge, Challenge)
    peer.send(encode_frame(Hello(proof(b"wrong" * 8, challenge.nonce, b"client"), b"c" * 16)))
    refusal = await peer.read_frame()
    assert isinstance(refusal, Failure)
    assert (refusal.id, refusal.code) == (0, "unauthenticated")
    assert await peer.closed_by_server()


async def test_the_pool_logs_one_line_per_streak_of_refusals(
    start, pools, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start()
    pool = pools(b"wrong" * 8)
    for _ in range(5):
        with pytest.raises(HandshakeFailed):
            await pool.get(server.address)
    assert warnings_with(caplog, "refused our handshake") == [
        f"{server.address} refused our handshake: unauthenticated (wrong cluster secret?)"
    ]
    # The streak ends when a handshake succeeds; the next refusal is news again.
    pool.secret = SECRET
    connection = await pool.get(server.address)
    connection.close()
    await wait_for(lambda: pool.connected(server.address) is None)
    pool.secret = b"wrong" * 8
    with pytest.raises(HandshakeFailed):
        await pool.get(server.address)
    assert len(warnings_with(caplog, "refused our handshake")) == 2


async def test_a_close_during_the_handshake_is_a_handshake_failure(pools) -> None:
    async with SilentServer(handshake=False, hang_up=True) as address:
        with pytest.raises(
            HandshakeFailed, match="closed the connection during the handshake"
        ) as caught:
            await pools().get(address)
    assert caught.value.details == {"reason": "closed"}


async def test_client_refuses_a_server_that_does_not_know_the_secret(pools) -> None:
    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(encode_frame(Challenge(b"n" * 16)))
        await reader.read(1024)  # the Hello
        writer.write(encode_frame(Welcome(b"\x00" * 32)))
        await reader.read(1024)  # until the client hangs up
        writer.close()

    fake = await asyncio.start_server(impostor, "127.0.0.1", 0)
    try:
        port = fake.sockets[0].getsockname()[1]
        with pytest.raises(HandshakeFailed, match="does not know the cluster secret") as caught:
            await pools().get(f"127.0.0.1:{port}")
        assert caught.value.details == {"reason": "unauthenticated"}
    finally:
        fake.close()
        await fake.wait_closed()
        await settle()


async def test_client_answers_only_one_challenge(pools, caplog: pytest.LogCaptureFixture) -> None:
    # A peer that challenges again wants a proof for a nonce of its choosing:
    # the client answers the first Challenge only and hangs up on the second.
    received: asyncio.Future[list[Frame]] = asyncio.get_running_loop().create_future()

    async def greedy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = RawPeer(reader, writer)
        frames: list[Frame] = []
        try:
            peer.send(encode_frame(Challenge(b"1" * 16)))
            frames.append(await peer.read_frame())
            peer.send(encode_frame(Challenge(b"2" * 16)))
            while True:  # until the client hangs up
                frames.append(await peer.read_frame())
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            received.set_result(frames)

    fake = await asyncio.start_server(greedy, "127.0.0.1", 0)
    try:
        port = fake.sockets[0].getsockname()[1]
        with pytest.raises(HandshakeFailed, match="unexpected Challenge frame"):
            await pools(connect_timeout=1.0).get(f"127.0.0.1:{port}")
        async with asyncio.timeout(2.0):
            frames = await received
    finally:
        fake.close()
        await fake.wait_closed()
        await settle()
    (hello,) = frames
    assert isinstance(hello, Hello)
    assert hello.proof == proof(SECRET, b"1" * 16, b"client")
    assert warnings_with(caplog, "unexpected Challenge frame")


async def test_silent_peer_is_dropped_after_the_handshake_timeout(
    start, raw_peers, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(connection_module, "HANDSHAKE_TIMEOUT", 0.05)
    server = await start()
    peer = await raw_peers(server.address)
    assert isinstance(await peer.read_frame(), Challenge)
    assert await peer.closed_by_server()
    assert warnings_with(caplog, "no handshake")


async def test_call_before_handshake_closes_the_connection(
    start, raw_peers, caplog: pytest.LogCaptureFixture
) -> None:
    handled: list[Call] = []

    async def record(method: str, args: msgspec.Raw, headers: Headers) -> bytes:
        handled.append(call)
        return codec.encode(None)

    server = await start(record)
    peer = await raw_peers(server.address)
    assert isinstance(await peer.read_frame(), Challenge)
    peer.send(call_frame(1))
    assert await peer.closed_by_server()
    assert warnings_with(caplog, "Call frame before the handshake")
    assert handled == []


async def test_cancel_before_handshake_closes_the_connection(
    start, raw_peers, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start()
    peer = await raw_peers(server.address)
    assert isinstance(await peer.read_frame(), Challenge)
    peer.send(encode_frame(Cancel(1)))
    assert await peer.closed_by_server()
    assert warnings_with(caplog, "Cancel frame before the handshake")


async def test_a_full_handshake_table_evicts_its_oldest_peer(
    start,
    pools,
    raw_peers,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(server_module, "MAX_HANDSHAKES", 2)
    server = await start()
    waiting = [await raw_peers(server.address) for _ in range(2)]
    for peer in waiting:
        assert isinstance(await peer.read_frame(), Challenge)
    newcomer = await raw_peers(server.address)
    challenge = await newcomer.read_frame()
    assert isinstance(challenge, Challenge)  # admitted...
    refusal = await waiting[0].read_frame()  # ...in place of the oldest, who is told why
    assert isinstance(refusal, Failure)
    assert (refusal.id, refusal.code) == (0, "resource_exhausted")
    assert await waiting[0].closed_by_server()
    assert warnings_with(caplog, "evicted: the server has too many connections in their handshake")
    await newcomer.handshake(challenge=challenge)
    assert len(server._handshakes) == 1
    await waiting[1].aclose()
    await wait_for(lambda: len(server._handshakes) == 0)
    assert (await call(pools(), server.address, ok=True))["args"] == {"ok": True}


class LoopbackServer:
    """A scripted peer on a free loopback port: ``async with`` gives its address, and
    leaving cancels the tasks it tracks for its connections, then closes it."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        await settle()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError  # each peer scripts its own


class DelayingProxy(LoopbackServer):
    """Forwards a client's bytes to ``target`` once ``release`` is set: its handshake stalls."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.release = asyncio.Event()
        self.connected = asyncio.Event()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, _, port = self.target.rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        self.connected.set()

        async def pipe(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, gate: bool
        ) -> None:
            try:
                while data := await source.read(65536):
                    if gate:
                        await self.release.wait()
                    sink.write(data)
            except ConnectionError:
                pass
            finally:
                sink.close()

        tasks = [
            asyncio.ensure_future(pipe(reader, up_writer, gate=True)),
            asyncio.ensure_future(pipe(up_reader, writer, gate=False)),
        ]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_client_evicted_from_a_full_server_gets_resource_exhausted(
    start, pools, raw_peers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "MAX_HANDSHAKES", 2)
    server = await start()
    proxy = DelayingProxy(server.address)
    async with proxy as proxy_address:
        pool = pools()
        connecting = asyncio.ensure_future(pool.get(proxy_address))
        await proxy.connected.wait()
        await wait_for(lambda: len(server._handshakes) == 1)  # the pool's, stalled in the proxy
        for _ in range(2):  # newer peers fill the table and push the pool's out
            assert isinstance(await (await raw_peers(server.address)).read_frame(), Challenge)
        with pytest.raises(HandshakeFailed) as caught:
            await connecting
        proxy.release.set()
    assert caught.value.details == {"reason": "resource_exhausted"}
    assert "refused our handshake: resource_exhausted" in caught.value.message


async def test_big_frame_before_handshake_refused(
    start, raw_peers, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start()
    peer = await raw_peers(server.address)
    await peer.read_frame()
    peer.send((4096).to_bytes(HEADER, "big"))  # over the handshake's limit, under MAX_FRAME
    assert await peer.closed_by_server()
    assert warnings_with(caplog, "exceeds the limit")


async def test_second_hello_closes_the_connection(
    start, raw_peers, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start()
    peer = await raw_peers(server.address)
    await peer.handshake()
    peer.send(encode_frame(Hello(b"p" * 32, b"n" * 16)))
    assert await peer.closed_by_server()
    assert warnings_with(caplog, "unexpected Hello frame")


# -- misbehaving peers -----------------------------------------------------------------------


def garbage() -> bytes:
    return (3).to_bytes(HEADER, "big") + b"\xc1\xc1\xc1"


def oversized() -> bytes:
    return (MAX_FRAME + 1).to_bytes(HEADER, "big")  # no body: refused on the header alone


@pytest.mark.parametrize(
    ("payload", "eof", "logged"),
    [
        (garbage(), False, "malformed frame"),
        (oversized(), False, "exceeds the limit"),
        (bytes(call_frame(9, args={"x": "y" * 100}))[:-10], True, "closed inside a frame"),
        (bytes(encode_frame(Reply(1, msgspec.Raw(codec.encode(1))))), False, "unexpected Reply"),
    ],
    ids=["garbage", "oversized", "truncated", "wrong-direction"],
)
async def test_bad_frame_closes_only_that_connection(
    start,
    pools,
    raw_peers,
    caplog: pytest.LogCaptureFixture,
    payload: bytes,
    eof: bool,
    logged: str,
) -> None:
    server = await start()
    good_pool = pools()
    before = await good_pool.get(server.address)

    bad = await raw_peers(server.address)
    await bad.handshake()
    bad.send(payload)
    if eof:
        bad.writer.write_eof()
    assert await bad.closed_by_server()
    await wait_for(lambda: bool(warnings_with(caplog, logged)))

    # The connection opened before is the same one, and still works.
    assert await good_pool.get(server.address) is before
    assert codec.decode(await before.call("svc.m", codec.encode({"n": 1}), Headers()))["args"] == {
        "n": 1
    }
    # New connections are accepted.
    assert (await call(pools(), server.address, n=2))["args"] == {"n": 2}


async def test_oversized_frame_refused_before_its_body_arrives(start, raw_peers) -> None:
    server = await start()
    peer = await raw_peers(server.address)
    await peer.handshake()
    peer.send(oversized())  # the 64 KiB body is never sent: the server must not wait for it
    assert await peer.closed_by_server()


async def test_call_and_cancel_in_one_chunk_leave_nothing_in_flight(
    start, raw_peers, caplog: pytest.LogCaptureFixture
) -> None:
    # A caller that gives up at once sends Cancel right behind its Call; the two
    # may arrive in one read.  The call must not stay counted as in flight, or
    # every drain would wait out its whole timeout.
    server = await start()
    peer = await raw_peers(server.address)
    await peer.handshake()
    peer.send(call_frame(1, args={"sleep": 10}) + encode_frame(Cancel(1)))
    peer.send(call_frame(2))
    assert isinstance(await peer.read_frame(), Reply)  # both frames were processed
    await server.drain(timeout=5.0)  # ends at once unless the cancelled call leaked
    assert not [r for r in caplog.records if "drain timed out" in r.getMessage()]


async def test_reused_call_id_does_not_leak_the_call(
    start, raw_peers, caplog: pytest.LogCaptureFixture
) -> None:
    # A peer that reuses the id of a call still running is misbehaving; whatever
    # the server makes of it (answer both, refuse, close), both calls must be
    # accounted for once they end.
    server = await start()
    peer = await raw_peers(server.address)
    await peer.handshake()
    peer.send(call_frame(1, args={"sleep": 0.02}))
    peer.send(call_frame(1, args={"sleep": 0.05}))
    await asyncio.sleep(0.2)  # let the server read both (it may also refuse them: still fine)
    await server.drain(timeout=5.0)  # ends when the calls do; the bound is for a busy machine
    assert not [r for r in caplog.records if "drain timed out" in r.getMessage()]
    assert server._inflight == 0


async def test_an_id_reused_after_its_cancel_keeps_the_new_call_in_flight(start, raw_peers) -> None:
    # Once a call is cancelled its id is free again, but its task may not have
    # unwound yet (here: the Cancel and the new Call arrive in one read).  The
    # old task's end must not take the new call out of the table: the new call
    # must still count as in flight (a drain waits for it) and still be
    # cancellable.
    sleeper = Sleeper()
    server = await start(sleeper)
    peer = await raw_peers(server.address)
    await peer.handshake()
    peer.send(call_frame(1, args={"sleep": 10}))
    await sleeper.started.wait()
    peer.send(encode_frame(Cancel(1)) + call_frame(1, args={"sleep": 10}))
    await wait_for(lambda: sleeper.outcomes == ["cancelled"])
    await wait_for(lambda: len(sleeper.deadlines) == 2)
    assert server._inflight == 1  # the second call is running
    peer.send(encode_frame(Cancel(1)))
    await wait_for(lambda: sleeper.outcomes == ["cancelled", "cancelled"], timeout=2.0)
    assert server._inflight == 0


async def test_cancel_frame_cancels_the_running_handler(start, pools) -> None:
    started = asyncio.Event()
    outcome: list[str] = []

    async def slow(method: str, args: msgspec.Raw, headers: Headers) -> bytes:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        outcome.append("finished")
        return codec.encode(None)

    server = await start(slow)
    connection = await pools().get(server.address)
    waiting = asyncio.ensure_future(connection.call("svc.m", codec.encode({}), Headers()))
    await started.wait()
    waiting.cancel()  # the client sends Cancel(id) as it stops waiting
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await wait_for(lambda: outcome == ["cancelled"], timeout=2.0)
    await wait_for(lambda: server._inflight == 0, timeout=2.0)
    assert connection.open  # cancelling a call does not cost the connection


async def test_cancel_for_an_unknown_id_is_ignored(start, raw_peers) -> None:
    server = await start()
    peer = await raw_peers(server.address)
    await peer.handshake()
    peer.send(encode_frame(Cancel(42)))
    peer.send(call_frame(1, args={"k": 1}))
    reply = await peer.read_frame()
    assert isinstance(reply, Reply)
    assert reply.id == 1


# -- deadlines --------------------------------------------------------------------------------


class Sleeper:
    """A handler that sleeps for ``args["sleep"]`` and records how each call ended."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.outcomes: list[str] = []
        self.deadlines: list[float | None] = []

    async def __call__(self, method: str, args: msgspec.Raw, headers: Headers) -> bytes:
        self.deadlines.append(headers.deadline)
        self.started.set()
        try:
            await asyncio.sleep(codec.decode(args).get("sleep", 0))
        except asyncio.CancelledError:
            self.outcomes.append("cancelled")
            raise
        self.outcomes.append("finished")
        return codec.encode("slept")


async def test_handler_running_past_the_deadline_is_cancelled_and_the_caller_told(
    start, pools
) -> None:
    sleeper = Sleeper()
    server = await start(sleeper)
    connection = await pools().get(server.address)
    began = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"svc\.m"):
        await connection.call("svc.m", codec.encode({"sleep": 10}), Headers(deadline=began + 0.05))
    assert time.monotonic() - began < 5.0  # told promptly, not when the handler would end
    await wait_for(lambda: sleeper.outcomes == ["cancelled"], timeout=2.0)
    await wait_for(lambda: server._inflight == 0, timeout=2.0)
    assert connection.pending == {}
    assert connection.open  # a missed deadline does not cost the connection
    assert codec.decode(await connection.call("svc.m", codec.encode({}), Headers())) == "slept"


async def test_server_cancels_a_call_past_its_deadline_by_itself(start, raw_peers) -> None:
    # A peer that never sends Cancel: the server's own sweep stops the work
    # and answers deadline_exceeded.
    sleeper = Sleeper()
    server = await start(sleeper)
    peer = await raw_peers(server.address)
    await peer.handshake()
    began = time.monotonic()
    peer.send(call_frame(1, "svc.slow", args={"sleep": 10}, headers=Headers(deadline=0.03)))
    async with asyncio.timeout(2.0):
        failure = await peer.read_frame()
    assert isinstance(failure, Failure)
    assert failure.id == 1
    assert failure.code == DeadlineExceeded.code
    assert failure.message == "svc.slow ran past its deadline"
    assert time.monotonic() - began >= 0.03
    await wait_for(lambda: sleeper.outcomes == ["cancelled"], timeout=2.0)
    await wait_for(lambda: server._inflight == 0, timeout=2.0)
    # The connection serves on; a call within its deadline is answered normally.
    peer.send(call_frame(2, args={"sleep": 0}, headers=Headers(deadline=5.0)))
    reply = await peer.read_frame()
    assert isinstance(reply, Reply)
    assert reply.id == 2


@pytest.mark.parametrize("seconds_left", [0.0, -0.005])
async def test_call_whose_deadline_passed_never_runs_the_handler(
    start, raw_peers, seconds_left: float
) -> None:
    sleeper = Sleeper()
    server = await start(sleeper)
    peer = await raw_peers(server.address)
    await peer.handshake()
    peer.send(call_frame(1, "svc.late", headers=Headers(deadline=seconds_left)))
    failure = await peer.read_frame()
    assert isinstance(failure, Failure)
    assert failure.id == 1
    assert failure.code == DeadlineExceeded.code
    assert "before it started" in failure.message
    assert sleeper.deadlines == []  # the handler never ran
    assert server._inflight == 0
    peer.send(call_frame(2))  # and the connection serves on
    reply = await peer.read_frame()
    assert isinstance(reply, Reply)
    assert sleeper.deadlines == [None]


async def test_client_refuses_a_deadline_that_already_passed(start, pools) -> None:
    sleeper = Sleeper()
    server = await start(sleeper)
    connection = await pools().get(server.address)
    passed = time.monotonic() - 0.001
    with pytest.raises(DeadlineExceeded, match=r"before calling svc\.m"):
        await connection.call("svc.m", codec.encode({}), Headers(deadline=passed))
    assert connection.pending == {}
    await asyncio.sleep(0.02)
    assert sleeper.deadlines == []  # nothing was sent


async def test_only_calls_past_their_deadline_fail(start, pools) -> None:
    sleeper = Sleeper()
    server = await start(sleeper)
    connection = await pools().get(server.address)
    now = time.monotonic()
    patient = asyncio.ensure_future(
        connection.call("svc.m", codec.encode({"sleep": 0.15}), Headers())
    )
    later = asyncio.ensure_future(
        connection.call("svc.m", codec.encode({"sleep": 0.15}), Headers(deadline=now + 5.0))
    )
    hasty = asyncio.ensure_future(
        connection.call("svc.hasty", codec.encode({"sleep": 10}), Headers(deadline=now + 0.03))
    )
    # Told by its own sweep ("did not answer in time") or by the callee's
    # ("ran past its deadline"), whichever runs first.
    with pytest.raises(DeadlineExceeded, match=r"svc\.hasty"):
        await hasty
    assert not patient.done()
    assert not later.done()
    assert codec.decode(await patient) == "slept"
    assert codec.decode(await later) == "slept"
    assert sorted(sleeper.outcomes) == ["cancelled", "finished", "finished"]
    assert connection.pending == {}


class SilentServer(LoopbackServer):
    """Completes the handshake, then records every frame and answers none."""

    def __init__(
        self,
        handshake: bool = True,
        hang_up: bool = False,
        reading: asyncio.Event | None = None,
        after_challenge: bytes = b"",
    ) -> None:
        super().__init__()
        self.handshake = handshake
        self.hang_up = hang_up
        # When given, calls are read only once it is set (a server that stopped reading).
        self.reading = reading
        # Sent right after the Challenge, instead of waiting for the Hello.
        self.after_challenge = after_challenge
        self.frames: list[Frame] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = RawPeer(reader, writer)
        try:
            if not self.handshake:
                if not self.hang_up:
                    await reader.read()  # say nothing, until the client hangs up
                return
            nonce = b"n" * 16
            peer.send(encode_frame(Challenge(nonce)))
            if self.after_challenge:
                peer.send(self.after_challenge)
                await reader.read()
                return
            hello = await peer.read_frame()
            assert isinstance(hello, Hello)
            peer.send(encode_frame(Welcome(proof(SECRET, hello.nonce, b"server"))))
            if self.reading is not None:
                await self.reading.wait()
            while True:
                self.frames.append(await peer.read_frame())
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_expired_call_is_cancelled_at_the_callee(pools) -> None:
    silent = SilentServer()
    async with silent as address:
        connection = await pools().get(address)
        began = time.monotonic()
        with pytest.raises(DeadlineExceeded, match=r"svc\.m did not answer in time"):
            await connection.call("svc.m", codec.encode({}), Headers(deadline=began + 0.03))
        assert 0.03 <= time.monotonic() - began < 5.0  # at its deadline, not hanging on
        assert connection.pending == {}
        await wait_for(lambda: len(silent.frames) == 2)
        await asyncio.sleep(0.02)  # and no more than one Cancel
        sent, cancel = silent.frames
        assert isinstance(sent, Call)
        assert cancel == Cancel(sent.id)  # the callee stops working for nobody
        assert connection.open


async def test_connect_is_bounded_by_the_deadline(pools) -> None:
    async with SilentServer(handshake=False) as address:
        pool = pools(connect_timeout=30.0)
        began = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="while connecting"):
            await pool.get(address, deadline=began + 0.05)
        assert time.monotonic() - began < 5.0  # the deadline's bound, not the connect timeout
        assert pool.connected(address) is None


async def test_connected_is_the_open_connection_or_none(start, pools) -> None:
    server = await start()
    pool = pools()
    assert pool.connected(server.address) is None  # never connects by itself
    connection = await pool.get(server.address)
    assert pool.connected(server.address) is connection
    await server.aclose()
    await wait_for(lambda: pool.connected(server.address) is None)
    assert not connection.open


# -- coalesced writes -------------------------------------------------------------------------


class CountingTransport:
    """Stands in front of a real transport and counts the writes made through it."""

    def __init__(self, transport: Any, writes: list[bytes]) -> None:
        self._transport = transport
        self.writes = writes

    def write(self, data: bytes | bytearray) -> None:
        self.writes.append(bytes(data))
        self._transport.write(data)

    def is_closing(self) -> bool:
        return bool(self._transport.is_closing())

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        self._transport.set_write_buffer_limits(high, low)


async def test_replies_to_one_read_leave_in_few_writes(
    start, raw_peers, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[bytes] = []

    class CountingWriter(connection_module.FrameWriter):
        def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
            super().__init__(CountingTransport(transport, writes), loop)

    monkeypatch.setattr(connection_module, "FrameWriter", CountingWriter)
    server = await start()
    peer = await raw_peers(server.address)
    await peer.handshake()
    writes.clear()  # the Welcome
    n = 20
    peer.send(b"".join(bytes(call_frame(i, args={"i": i})) for i in range(1, n + 1)))
    replies = [await peer.read_frame() for _ in range(n)]
    assert sorted(r.id for r in replies if isinstance(r, Reply)) == list(range(1, n + 1))
    # A write per frame would be 20; batches of at most FLUSH_FRAMES make 2
    # (a few more where handlers start eagerly and the first replies go alone).
    assert len(writes) <= 4, [len(w) for w in writes]


async def test_calls_started_together_leave_in_few_writes(start, pools) -> None:
    server = await start()
    connection = await pools().get(server.address)
    assert connection.writer is not None
    writes: list[bytes] = []
    connection.writer.transport = CountingTransport(connection.writer.transport, writes)
    n = 20
    results = await asyncio.gather(
        *(connection.call("svc.m", codec.encode({"i": i}), Headers()) for i in range(n))
    )
    assert [codec.decode(r)["args"]["i"] for r in results] == list(range(n))
    assert len(writes) <= 4, [len(w) for w in writes]


async def test_a_lone_call_is_written_at_once(start, pools) -> None:
    server = await start()
    connection = await pools().get(server.address)
    assert connection.writer is not None
    writes: list[bytes] = []
    connection.writer.transport = CountingTransport(connection.writer.transport, writes)
    task = asyncio.ensure_future(connection.call("svc.m", codec.encode({}), Headers()))
    await asyncio.sleep(0)  # the task runs up to its wait for the reply
    assert len(writes) == 1  # sent while the task ran, not at some later flush
    await task


# -- connection loss and draining -----------------------------------------------------------


async def test_lost_connection_fails_calls_in_flight_and_tells_the_pool(start, pools) -> None:
    started = asyncio.Event()

    async def hang(method: str, args: msgspec.Raw, headers: Headers) -> bytes:
        started.set()
        await asyncio.sleep(10)
        return codec.encode(None)

    server = await start(hang)
    address = server.address
    lost: list[str] = []
    pool = pools(on_lost=lost.append)
    connection = await pool.get(address)
    calls = [
        asyncio.ensure_future(connection.call("svc.m", codec.encode({}), Headers()))
        for _ in range(3)
    ]
    await started.wait()
    await server.aclose()
    for task in calls:
        with pytest.raises(Unavailable) as caught:
            await task
        assert caught.value.retryable is False  # the calls may have run
    await wait_for(lambda: lost == [address])
    assert not connection.open
    with pytest.raises(ConnectFailed):
        await connection.call("svc.m", codec.encode({}), Headers())


async def test_address_stays_readable_while_draining(start) -> None:
    # What the node logs and what it registered must not turn into an IndexError
    # once the listening socket is closed.
    server = await start()
    address = server.address
    await server.drain(timeout=0.1)
    assert server.address == address


async def test_drain_finishes_in_flight_calls_and_refuses_new_ones(start, pools) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def held(method: str, args: msgspec.Raw, headers: Headers) -> bytes:
        if codec.decode(args).get("hold"):
            started.set()
            await release.wait()
        return codec.encode("done")

    server = await start(held)
    address = server.address
    connection = await pools().get(address)
    first = asyncio.ensure_future(connection.call("svc.m", codec.encode({"hold": True}), Headers()))
    await started.wait()
    draining = asyncio.create_task(server.drain(timeout=5.0))
    await wait_for(lambda: server.draining)

    with pytest.raises(Unavailable, match="draining") as caught:
        await connection.call("svc.m", codec.encode({}), Headers())
    assert caught.value.retryable is True  # refused before any work
    with pytest.raises(ConnectFailed):
        await pools(connect_timeout=1.0).get(address)  # no longer accepting
    assert not draining.done()

    release.set()
    assert codec.decode(await first) == "done"
    async with asyncio.timeout(2.0):
        await draining


async def test_drain_timeout_is_logged_and_close_cancels(
    start, pools, caplog: pytest.LogCaptureFixture
) -> None:
    started = asyncio.Event()

    async def hang(method: str, args: msgspec.Raw, headers: Headers) -> bytes:
        started.set()
        await asyncio.sleep(10)
        return codec.encode(None)

    server = await start(hang)
    connection = await pools().get(server.address)
    pending = asyncio.ensure_future(connection.call("svc.m", codec.encode({}), Headers()))
    await started.wait()
    await server.drain(timeout=0.05)
    assert [r for r in caplog.records if "drain timed out" in r.getMessage()]
    await server.aclose()
    with pytest.raises(Unavailable):
        await pending
    await wait_for(lambda: server._inflight == 0)


async def test_aclose_waits_for_cancelled_handlers_to_unwind(start, pools) -> None:
    started = asyncio.Event()
    cleaned: list[str] = []

    async def held(method: str, args: msgspec.Raw, headers: Headers) -> bytes:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.02)  # a clean-up that takes a moment
            cleaned.append("finally")
        return codec.encode(None)

    server = await start(held)
    connection = await pools().get(server.address)
    pending = asyncio.ensure_future(connection.call("svc.m", codec.encode({}), Headers()))
    await started.wait()
    await server.aclose()
    assert cleaned == ["finally"]  # done before aclose returned
    with pytest.raises(Unavailable):
        await pending


# -- peers that attack: none may starve the others ------------------------------------------


@pytest.fixture
async def loop_errors() -> list[dict[str, Any]]:
    """What reached the event loop's exception handler (nothing should)."""
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
    return errors


async def test_idle_half_open_sockets_cannot_starve_real_clients(start, pools, raw_peers) -> None:
    server = await start()
    for _ in range(200):  # connect, and never say a word
        await raw_peers(server.address)
    await wait_for(lambda: len(server._handshakes) == server_module.MAX_HANDSHAKES)

    async def real_client(n: int) -> Any:
        return (await call(pools(), server.address, n=n))["args"]

    results = await asyncio.gather(*(real_client(n) for n in range(40)))
    assert results == [{"n": n} for n in range(40)]


async def test_garbage_connections_cost_a_bounded_number_of_log_lines(
    start, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start()

    async def garbage_peer() -> None:
        peer = await RawPeer.connect(server.address)
        try:
            peer.send(garbage())
            assert await peer.closed_by_server()
        finally:
            await peer.aclose()

    for _ in range(10):
        await asyncio.gather(*(garbage_peer() for _ in range(50)))
    await wait_for(lambda: len(server._connections) == 0)
    await server.aclose()  # says what it still has counted
    lines = [r.getMessage() for r in caplog.records if r.name == "flotilla.transport"]
    assert len(lines) == 2, lines
    assert "malformed frame" in lines[0]
    assert lines[1] == ("closed 499 connections in their handshake in the last 10 s: 499 malformed")


def deeply_nested_frame(depth: int = 1000) -> bytes:
    """A Failure frame whose details nest ``depth`` arrays deep (about 1 KB)."""
    body = b"\x95\x05\x00\xa1x\xa1y" + b"\x81\xa1k" + b"\x91" * depth + b"\xc0"
    return len(body).to_bytes(HEADER, "big") + body


@pytest.mark.parametrize("handshake", [False, True], ids=["before-handshake", "after-handshake"])
@pytest.mark.usefixtures("default_recursion_limit")
async def test_a_deeply_nested_frame_closes_only_that_connection(
    start,
    pools,
    raw_peers,
    caplog: pytest.LogCaptureFixture,
    loop_errors: list[dict[str, Any]],
    handshake: bool,
) -> None:
    server = await start()
    good = await pools().get(server.address)
    bad = await raw_peers(server.address)
    if handshake:
        await bad.handshake()
    bad.send(deeply_nested_frame())
    assert await bad.closed_by_server()
    await wait_for(lambda: bool(warnings_with(caplog, "nested too deep")))
    assert len(warnings_with(caplog, "nested too deep")) == 1
    assert loop_errors == []
    assert codec.decode(await good.call("svc.m", codec.encode({"n": 1}), Headers()))["args"] == {
        "n": 1
    }


async def test_an_unexpected_error_in_the_server_closes_only_that_connection(
    start,
    pools,
    raw_peers,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    loop_errors: list[dict[str, Any]],
) -> None:
    server = await start()
    good = await pools().get(server.address)
    bad = await raw_peers(server.address)
    await bad.handshake()

    def broken(self: Any, frame: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(connection_module.ServerConnection, "_start_call", broken)
    bad.send(call_frame(1))
    assert await bad.closed_by_server()
    assert warnings_with(caplog, "unexpected RuntimeError: a bug")
    assert loop_errors == []
    monkeypatch.undo()
    assert codec.decode(await good.call("svc.m", codec.encode({"n": 1}), Headers()))["args"] == {
        "n": 1
    }


@pytest.mark.usefixtures("default_recursion_limit")
async def test_a_deeply_nested_frame_from_the_server_fails_the_handshake(
    pools, loop_errors: list[dict[str, Any]]
) -> None:
    async with SilentServer(after_challenge=deeply_nested_frame()) as address:
        with pytest.raises(HandshakeFailed, match="nested too deep") as caught:
            await pools().get(address)
        # (Checked inside: stopping the fake server cancels its stream tasks,
        # which asyncio's streams themselves report to the loop.)
        assert loop_errors == []
    assert caught.value.details == {"reason": ProtocolError.code}


async def test_an_unexpected_error_in_the_client_closes_the_connection_with_one_line(
    start,
    pools,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    loop_errors: list[dict[str, Any]],
) -> None:
    server = await start()
    connection = await pools().get(server.address)

    def broken(self: Any, frame: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(client_module.Connection, "_handle", broken)
    with pytest.raises(Unavailable, match="lost"):
        await connection.call("svc.m", codec.encode({}), Headers())
    assert warnings_with(caplog, "unexpected RuntimeError: a bug")
    assert loop_errors == []


# -- bounded memory per connection -----------------------------------------------------------


async def test_calls_beyond_the_limit_per_connection_are_refused_at_once(start, raw_peers) -> None:
    release = asyncio.Event()

    async def held(method: str, args: msgspec.Raw, headers: Headers) -> bytes:
        await release.wait()
        return codec.encode("done")

    server = await start(held, max_calls_per_connection=2)
    peer = await raw_peers(server.address)
    await peer.handshake()
    peer.send(b"".join(bytes(call_frame(i)) for i in (1, 2, 3)))
    refusal = await peer.read_frame()
    assert isinstance(refusal, Failure)
    assert (refusal.id, refusal.code, refusal.retryable) == (3, "resource_exhausted", True)
    release.set()
    replies = [await peer.read_frame() for _ in range(2)]
    assert sorted(r.id for r in replies if isinstance(r, Reply)) == [1, 2]
    # The connection stayed open, and a call fits again.
    peer.send(call_frame(4))
    reply = await peer.read_frame()
    assert isinstance(reply, Reply)
    assert reply.id == 4


async def test_a_limit_below_one_call_is_refused() -> None:
    with pytest.raises(ValueError, match="max_calls_per_connection"):
        Server(echo, secret=SECRET, max_calls_per_connection=0)


async def test_a_peer_that_never_reads_its_replies_holds_bounded_memory(
    start, pools, raw_peers
) -> None:
    reply_size = 1024 * 1024
    started: list[int] = []

    async def big(method: str, args: msgspec.Raw, headers: Headers) -> bytes:
        started.append(len(started))
        return codec.encode(b"x" * reply_size)

    server = await start(big)
    good = await pools().get(server.address)
    greedy = await raw_peers(server.address)
    await greedy.handshake()
    n = 64  # 64 MiB of replies, were they all made
    greedy.send(b"".join(bytes(call_frame(i)) for i in range(1, n + 1)))
    (connection,) = [c for c in server._connections if c.peer.endswith(greedy_port(greedy))]
    assert connection.writer is not None
    await wait_for(lambda: connection.writer is not None and connection.writer.paused)
    # Others are served meanwhile (a small reply is a few bytes, not a MiB).
    assert codec.decode(await good.call("svc.m", codec.encode({}), Headers())) == b"x" * reply_size
    # The calls waiting behind the stalled replies were not run: their replies
    # do not exist, and what does is about the high-water mark.
    assert len(started) < n
    assert connection.writer.buffered <= WRITE_BUFFER_HIGH + 2 * reply_size


def greedy_port(peer: RawPeer) -> str:
    return f":{peer.writer.get_extra_info('sockname')[1]}"


async def test_the_client_fails_new_calls_while_the_server_reads_nothing(pools) -> None:
    reading = asyncio.Event()
    async with SilentServer(reading=reading) as address:
        connection = await pools().get(address)
        assert connection.writer is not None
        big = codec.encode({"blob": b"x" * 1024 * 1024})
        calls: list[asyncio.Task[Any]] = []
        while not connection.writer.paused:
            assert len(calls) < 200, "the write side never paused"
            calls.append(asyncio.ensure_future(connection.call("svc.m", big, Headers())))
            await asyncio.sleep(0)
        in_flight = len(connection.pending)
        with pytest.raises(ResourceExhausted) as caught:
            await connection.call("svc.m", codec.encode({}), Headers())
        assert caught.value.never_sent
        assert len(connection.pending) == in_flight  # nothing queued behind the stall
        reading.set()  # the server reads again: so may we
        await wait_for(lambda: connection.writer is not None and not connection.writer.paused)
        for task in calls:
            task.cancel()
        await asyncio.gather(*calls, return_exceptions=True)


async def test_each_call_lost_with_its_connection_gets_an_error_of_its_own(start, pools) -> None:
    # A caller marks the error it gets (onward, retryable): one shared object
    # would carry one call's marks into every other.
    async def hang(method: str, args: msgspec.Raw, headers: Headers) -> bytes:
        await asyncio.Event().wait()
        raise AssertionError("never answered")

    server = await start(hang)
    connection = await pools().get(server.address)
    calls = [connection.call("a.b", codec.encode({}), Headers()) for _ in range(2)]
    await server.aclose()
    errors = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(error, Unavailable) for error in errors)
    assert errors[0] is not errors[1]
