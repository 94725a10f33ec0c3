"""Events end to end: emit through the outbox, handle with the inbox, against bare JetStream.

    .venv/bin/python bench/events.py                      # every case this machine can run
    .venv/bin/python bench/events.py --quick              # 1 s windows, a smoke test
    .venv/bin/python bench/events.py --backend embedded   # one backend (embedded, jetstream, bare)
    .venv/bin/python bench/events.py --profile DIR        # py-spy on each case's two processes

Each case is a producer process and a consumer process (uvloop in both); this
driver only starts them, hands them a common start time, and reads the one
JSON line each prints.  Cases:

* ``outbox/inbox``: the producer's transactions insert a row and ``tx.emit``
  (the node's relay publishes); the consumer's handler inserts a row in
  ``self.db.transaction(ctx)`` (the inbox).  Service databases: SQLite files;
  ``outbox/inbox, PG``: a PostgreSQL schema per process (when ``--postgres``
  answers).  ``--split`` adds the outbox alone and the inbox alone.
* ``ctx.emit``: ``node.emit`` publishes at once, the handler writes nothing:
  the framework's own cost, without the two transactions.
* ``bare nats-py``: ``js.publish`` (awaits the PubAck) and a pull consumer that
  fetches 64 at a time and acks each: the baseline every ratio is taken to.

Two phases per case (see ``_evload``): the rate, closed loop with at most
``--in-flight`` events emitted and not yet handled (handled events/s inside
the window); and the latency, open loop at ``--rate`` events/s, from emit
(the outbox: the transaction committed; otherwise the publish called) to the
end of the handler, p50 and p99.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import _pyspy
from rpc import Children, _die_with_parent, _read_json_line, busy_cpus, source_state

HERE = Path(__file__).resolve().parent
NATS = os.environ.get("FLOTILLA_TEST_NATS_URL", "nats://127.0.0.1:4222")
POSTGRES = os.environ.get("FLOTILLA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1/test")

TARGET_RATIO = 0.7  # JetStream outbox/inbox >= 0.7x the bare JetStream rate
TARGET_P50_MS = 5.0  # embedded outbox/inbox p50 emit-to-handle <= 5 ms
QUIET_CPUS = 0.2  # a case starts once other processes use less than this many CPUs...
QUIET_WAIT = 10.0  # ...or after this many seconds of waiting for that


@dataclass
class Case:
    name: str
    script: str
    args: list[str]
    backend: str  # embedded, jetstream or bare (what --backend selects)
    postgres: str | None = None  # service databases in PostgreSQL schemas, else SQLite files
    figures: dict[str, Any] = field(default_factory=dict)


class Launcher(Children):
    """rpc.py's children, with stdin open (the start time goes there) and a pipe passed on."""

    def start(self, script: str, args: list[str], log: str, fd: int) -> subprocess.Popen[str]:
        stderr = open(self.workdir / log, "w")  # noqa: SIM115  (closed with the process)
        proc = subprocess.Popen(
            [sys.executable, str(HERE / script), *args, "--credit-fd", str(fd)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=self.workdir,
            pass_fds=(fd,) if fd >= 0 else (),
            start_new_session=True,  # a Ctrl-C reaches the driver only; it ends the children
            preexec_fn=_die_with_parent,
        )
        stderr.close()
        self.procs.append(proc)
        return proc


def jetstream_available() -> str | None:
    """Why the flotilla JetStream cases cannot run here, or None."""
    try:
        import flotilla.events.jetstream  # noqa: F401
    except ImportError as exc:
        return f"flotilla.events.jetstream is not importable here ({exc})"
    return None


def cases(args: argparse.Namespace, workdir: Path) -> list[Case]:
    run = secrets.token_hex(4)
    embedded = f"sqlite:///{workdir / 'events.db'}"
    found = [
        Case("bare nats-py JetStream", "_events_bare.py",
             ["--nats", args.nats, "--stream", f"FLOTILLA_BENCH_{run}",
              "--subject", f"flotilla_bench_{run}.item"], "bare"),
    ]  # fmt: skip
    paths = [("ctx.emit", "plain", "plain"), ("outbox/inbox", "outbox", "inbox")]
    if args.split:
        paths[1:1] = [("outbox, plain handler", "outbox", "plain"),
                      ("ctx.emit, inbox handler", "plain", "inbox")]  # fmt: skip
    # The flotilla cases' streams, named apart from any system's (dropped at the end).
    jetstream = f"{args.nats}?prefix={args.stream_prefix}"
    for backend, url in (("jetstream", jetstream), ("embedded", embedded)):
        for name, emit, handle in paths:
            found.append(Case(f"{backend} {name}", "_events_flotilla.py",
                              ["--events", url, "--emit", emit, "--handle", handle],
                              backend))  # fmt: skip
        if args.postgres:
            found.append(Case(f"{backend} outbox/inbox, PG", "_events_flotilla.py",
                              ["--events", url, "--emit", "outbox", "--handle", "inbox"],
                              backend, postgres=args.postgres))  # fmt: skip
    return [case for case in found if args.backend in ("all", case.backend)]


async def _drop_streams(url: str, prefix: str) -> None:
    import nats
    import nats.js.errors

    client = await nats.connect(url)
    try:
        js = client.jetstream()
        for stream in (prefix, f"{prefix}_DLQ"):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(stream)
    finally:
        await client.close()


async def _postgres(url: str, statements: list[str]) -> None:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


def postgres_problem(url: str) -> str | None:
    """Why PostgreSQL at ``url`` cannot hold the bench's schemas, or None."""
    try:
        asyncio.run(_postgres(url, ["SELECT 1"]))
    except Exception as exc:  # a server that is not there: the case is skipped, saying so
        return f"PostgreSQL at {url} does not answer ({exc!r})"
    return None


@contextlib.contextmanager
def fresh_databases(case: Case, workdir: Path) -> Iterator[dict[str, list[str]]]:
    """Databases no earlier phase used (its unsent outbox rows would be published into
    this one): the arguments of each role."""
    folder = Path(tempfile.mkdtemp(prefix="data-", dir=workdir))
    if case.postgres is None:
        yield {role: ["--data", str(folder)] for role in ("producer", "consumer")}
        return
    schemas = {role: f"flotilla_bench_{secrets.token_hex(4)}_{role}"
               for role in ("producer", "consumer")}  # fmt: skip
    asyncio.run(_postgres(case.postgres, [f"CREATE SCHEMA {s}" for s in schemas.values()]))
    try:
        yield {role: ["--data", str(folder), "--database", case.postgres, "--schema", schema]
               for role, schema in schemas.items()}  # fmt: skip
    finally:
        asyncio.run(_postgres(case.postgres,
                              [f"DROP SCHEMA {s} CASCADE" for s in schemas.values()]))  # fmt: skip


def run_phase(
    launcher: Launcher,
    case: Case,
    mode: str,
    args: argparse.Namespace,
    phase: int,
    seconds: float | None = None,
) -> dict[str, Any]:
    """One producer and one consumer, one phase (a window of ``seconds``, by default
    ``--seconds``); their two result lines."""
    seconds = args.seconds if seconds is None else seconds
    plan = ["--mode", mode, "--warmup", str(args.warmup), "--seconds", str(seconds),
            "--in-flight", str(args.in_flight), "--producers", str(args.producers),
            "--rate", str(args.rate)]  # fmt: skip
    if case.backend != "bare":  # (the bare case has a fresh stream instead)
        plan += ["--group", f"bench_{phase}_{secrets.token_hex(3)}"]
    with fresh_databases(case, launcher.workdir) as databases:
        return _run_children(launcher, case, mode, args, seconds, plan, databases)


def _run_children(
    launcher: Launcher,
    case: Case,
    mode: str,
    args: argparse.Namespace,
    seconds: float,
    plan: list[str],
    databases: dict[str, list[str]],
) -> dict[str, Any]:
    read_end, write_end = os.pipe() if mode == "rate" else (-1, -1)
    tag = _tag(case, mode)
    procs: dict[str, tuple[subprocess.Popen[str], str, int]] = {}
    try:
        for role, fd in (("consumer", write_end), ("producer", read_end)):
            log = f"{tag}_{role}.log"
            extra = databases[role] if case.backend != "bare" else []
            proc = launcher.start(case.script, [role, *case.args, *plan, *extra], log, fd)
            ready = _read_json_line(proc, 30, f"{case.name} {role}", launcher, log)
            procs[role] = (proc, log, ready["pid"])
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)  # the children hold their ends; EOF and EPIPE work as they should
    profilers = _profile(args, tag, procs) if mode == "rate" else []
    start = time.monotonic_ns() + 200_000_000  # both children read it well before
    for proc, *_ in procs.values():
        assert proc.stdin is not None
        proc.stdin.write(f"{start}\n")
        proc.stdin.flush()
    timeout = args.warmup + seconds + 30
    results = {}
    for role, (proc, log, _pid) in procs.items():
        what = f"{case.name} {role} ({mode})"
        results[role] = _read_json_line(proc, timeout, what, launcher, log)
        launcher.stop(proc)
    for profiler in profilers:
        profiler.wait()
    return results


def _tag(case: Case, mode: str) -> str:
    """The case and phase in a file name."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in f"{case.name}_{mode}")


def _profile(
    args: argparse.Namespace, tag: str, procs: dict[str, tuple[subprocess.Popen[str], str, int]]
) -> list[subprocess.Popen[bytes]]:
    if args.profile is None:
        return []
    args.profile.mkdir(parents=True, exist_ok=True)
    py_spy = _pyspy.install()
    seconds = args.warmup + args.seconds
    return [
        _pyspy.attach(py_spy, pid, args.profile / f"{tag}_{role}.txt", seconds)
        for role, (_proc, _log, pid) in procs.items()
    ]


def _print_profiles(
    case: Case, rate: dict[str, Any], seconds: float, args: argparse.Namespace
) -> None:
    events = max(rate["consumer"]["handled"], 1)
    tag = _tag(case, "rate")
    for role in ("producer", "consumer"):
        cpu_us_per_event = rate[role]["cpu"] * seconds / events * 1e6
        print(f"\n{case.name}, {role}:")
        print(_pyspy.summary(args.profile / f"{tag}_{role}.txt", cpu_us_per_event))


def measure(launcher: Launcher, case: Case, args: argparse.Namespace) -> None:
    give_up = time.monotonic() + args.quiet_wait
    while (before := busy_cpus()) > QUIET_CPUS and time.monotonic() < give_up:
        pass
    rate, seconds = rate_phase(launcher, case, args)
    if args.profile is not None:
        _print_profiles(case, rate, seconds, args)
    latency = run_phase(launcher, case, "latency", args, 2)
    emitted = {int(n): at for n, at in latency["producer"]["emit_ns"].items()}
    handled = {int(n): at for n, at in latency["consumer"]["handled_ns"].items()}
    window_start = min(emitted.values(), default=0) + args.warmup * 1e9
    delays = sorted(
        (handled[n] - at) / 1e6 for n, at in emitted.items() if at >= window_start and n in handled
    )
    counted = sum(1 for at in emitted.values() if at >= window_start)
    case.figures = {
        "events_per_s": rate["consumer"]["handled"] / seconds,
        "window_s": seconds,
        "cpu_us_per_event": (rate["producer"]["cpu"] + rate["consumer"]["cpu"])
        * seconds
        / max(rate["consumer"]["handled"], 1)
        * 1e6,
        "producer_cpu": rate["producer"]["cpu"],
        "consumer_cpu": rate["consumer"]["cpu"],
        "p50_ms": statistics.median(delays) if delays else float("nan"),
        "p99_ms": delays[min(len(delays) - 1, int(len(delays) * 0.99))] if delays else float("nan"),
        "latency_events": counted,
        "latency_lost": counted - len(delays),
        "busy_cpus_before": before,
    }


def rate_phase(
    launcher: Launcher, case: Case, args: argparse.Namespace
) -> tuple[dict[str, Any], float]:
    """The rate phase, its window doubled (up to ``--max-seconds``) until the consumer
    handles at least ``--min-events`` in it: on a busy machine a short window may see
    few or none, and a rate from a handful of events says little."""
    seconds = args.seconds
    while True:
        rate = run_phase(launcher, case, "rate", args, 1, seconds)
        if rate["consumer"]["handled"] >= args.min_events or seconds * 2 > args.max_seconds:
            return rate, seconds
        seconds *= 2


def report(done: list[Case], skipped: dict[str, str], args: argparse.Namespace) -> None:
    by_name = {case.name: case.figures for case in done}
    bare = by_name.get("bare nats-py JetStream")
    print(f"\nevents end to end ({source_state()}; {os.cpu_count()} CPUs; windows of"
          f" {args.seconds} s after {args.warmup} s warm-up; rate: closed loop,"
          f" {args.in_flight} in flight, {args.producers} producer tasks; latency: open loop"
          f" at {args.rate:.0f}/s; keyless events; service databases: SQLite files)")  # fmt: skip
    print(f"  {'case':<30}{'events/s':>10}{'x bare':>8}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'CPU µs/ev':>10}{'prod CPU':>10}{'cons CPU':>10}{'others':>8}")  # fmt: skip
    for case in done:
        f = case.figures
        ratio = f"{f['events_per_s'] / bare['events_per_s']:.2f}x" if _handled(bare) else "-"
        lost = f"  ({f['latency_lost']} of {f['latency_events']} not handled)" if f[
            "latency_lost"] else ""  # fmt: skip
        print(f"  {case.name:<30}{f['events_per_s']:>10,.0f}{ratio:>8}{f['p50_ms']:>9.2f}"
              f"{f['p99_ms']:>9.2f}{f['cpu_us_per_event']:>10,.0f}{f['producer_cpu']:>10.2f}"
              f"{f['consumer_cpu']:>10.2f}{f['busy_cpus_before']:>8.2f}{lost}")  # fmt: skip
    print(
        "  (events/s: rate phase; p50/p99: latency phase; CPU µs/ev: producer + consumer"
        " process CPU per handled event at saturation, the broker's own not counted;"
        " prod/cons CPU: cores each kept busy; others: CPUs other processes used just before)"
    )
    for name, why in skipped.items():
        print(f"  {name:<30}skipped: {why}")
    for name, figures in by_name.items():
        if not _handled(figures):
            print(f"  {name:<30}no events handled in the window ({figures['window_s']} s)")
        elif figures["window_s"] != args.seconds:
            print(f"  {name:<30}rate window grown to {figures['window_s']} s (--min-events)")
    _where_the_cost_is(by_name)
    _targets(by_name, bare)


def _where_the_cost_is(by_name: dict[str, dict[str, Any]]) -> None:
    pairs = [("jetstream ctx.emit", "bare nats-py JetStream", "the framework on JetStream")]
    for backend in ("jetstream", "embedded"):
        plain = f"{backend} ctx.emit"
        pairs += [
            (f"{backend} outbox, plain handler", plain, "the outbox and its relay"),
            (f"{backend} ctx.emit, inbox handler", plain, "the inbox transaction"),
            (f"{backend} outbox/inbox", plain, "the outbox/inbox transactions"),
        ]
    lines = []
    for slower, faster, what in pairs:
        if _handled(by_name.get(slower)) and _handled(by_name.get(faster)):
            s, f = by_name[slower]["events_per_s"], by_name[faster]["events_per_s"]
            lines.append(f"    {slower} / {faster}: {s / f:.2f}x  ({what}: "
                         f"{1e6 / s - 1e6 / f:+.0f} µs per event)")  # fmt: skip
    if lines:
        print("  where the cost is (rate ratios; extra time per event at saturation):")
        print("\n".join(lines))


def _handled(figures: dict[str, Any] | None) -> TypeGuard[dict[str, Any]]:
    """Whether a case handled any event in its rate window (a ratio needs a rate)."""
    return figures is not None and figures["events_per_s"] > 0


def _targets(by_name: dict[str, dict[str, Any]], bare: dict[str, Any] | None) -> None:
    print("  targets:")
    jetstream = by_name.get("jetstream outbox/inbox")
    if _handled(jetstream) and _handled(bare):
        ratio = jetstream["events_per_s"] / bare["events_per_s"]
        verdict = "PASS" if ratio >= TARGET_RATIO else "MISS"
        print(f"    jetstream outbox/inbox >= {TARGET_RATIO}x bare rate: {ratio:.2f}x   {verdict}")
    else:
        print(f"    jetstream outbox/inbox >= {TARGET_RATIO}x bare rate: not measured")
    embedded = by_name.get("embedded outbox/inbox")
    if embedded:
        p50 = embedded["p50_ms"]
        verdict = "PASS" if p50 <= TARGET_P50_MS else "MISS"
        print(f"    embedded outbox/inbox p50 <= {TARGET_P50_MS} ms: {p50:.2f} ms   {verdict}")
    else:
        print(f"    embedded outbox/inbox p50 <= {TARGET_P50_MS} ms: not measured")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("all", "embedded", "jetstream", "bare"),
                        default="all")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=3.0, help="measured window per phase")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="1 s windows, 0.5 s warm-up")
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--producers", type=int, default=64)
    parser.add_argument("--rate", type=float, default=100.0, help="events/s, latency phase")
    parser.add_argument("--nats", default=NATS)
    parser.add_argument("--postgres", default=POSTGRES,
                        help="also JetStream + PostgreSQL service databases; '': not")  # fmt: skip
    parser.add_argument("--split", action="store_true",
                        help="also the outbox alone and the inbox alone")  # fmt: skip
    parser.add_argument("--profile", type=Path, default=None, help="py-spy profiles here")
    parser.add_argument("--quiet-wait", type=float, default=QUIET_WAIT,
                        help="seconds to wait for a quiet machine before a case")  # fmt: skip
    parser.add_argument("--min-events", type=int, default=0,
                        help="double a rate window until it handles this many events")  # fmt: skip
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="the longest rate window --min-events may grow to")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warmup = 1.0, 0.5
    args.stream_prefix = f"FLOTILLA_BENCH_{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory(prefix="flotilla-ebench-") as tmp:
        workdir = Path(tmp)
        launcher = Launcher(workdir)
        skipped: dict[str, str] = {}
        done = []
        why_not = jetstream_available()
        no_postgres = postgres_problem(args.postgres) if args.postgres else None
        try:
            for case in cases(args, workdir):
                if case.backend == "jetstream" and why_not:
                    skipped[case.name] = why_not
                    continue
                if case.postgres and no_postgres:
                    skipped[case.name] = no_postgres
                    continue
                measure(launcher, case, args)
                done.append(case)
        finally:
            launcher.close()
            if any(case.backend == "jetstream" for case in done):
                asyncio.run(_drop_streams(args.nats, args.stream_prefix))
    report(done, skipped, args)
    if args.json is not None:
        args.json.write_text(json.dumps({case.name: case.figures for case in done}, indent=2))


if __name__ == "__main__":
    main()
