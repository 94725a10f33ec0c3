"""RPC round-trip benchmark: flotilla against a bare uvloop + msgspec baseline, on loopback.

    .venv/bin/python bench/rpc.py                 # 3 s per phase, one run
    .venv/bin/python bench/rpc.py --runs 3        # three runs, prints each and the medians
    .venv/bin/python bench/rpc.py --quick         # 1 s per phase, a smoke test
    .venv/bin/python bench/rpc.py --profile DIR   # profile flotilla client + server, c=1 and 64
    .venv/bin/python bench/rpc.py --python python3.12 --runs 3   # on another interpreter

Every server and every client is its own OS process running uvloop; this
driver only spawns them and collects the one JSON line each client prints, so
it does not compete for the CPU while a phase is measured.  Each phase warms up
(0.5 s) and then measures for ``--seconds``; latency is per call, with
``time.perf_counter_ns`` around the await.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import secrets
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _interpreter
import _loadgen
import _pyspy

HERE = Path(__file__).resolve().parent
CONCURRENCIES = (1, 64)

# Targets (from the performance brief).
TARGET_THROUGHPUT_RATIO = 0.75  # flotilla >= 0.75x raw calls/s at c=64
TARGET_P50_RATIO = 2.0  # flotilla p50 <= 2x raw p50 at c=1
TARGET_IDLE_RSS_BYTES = 40 * 1000 * 1000  # idle server RSS <= 40 MB (10^6 bytes; stricter than MiB)
IDLE_SECONDS = 1.0
QUIET_CPUS = 0.1  # a run starts once other processes use less than this many CPUs...
QUIET_WAIT = 20.0  # ...or after this many seconds of waiting for that
DISTURBED_CPUS = 0.15  # a run during which others used more than this is flagged (and redone)
PROBE_CALLS = 20


def source_state() -> str:
    """The commit the figures belong to, and whether src/ differs from it (read-only git)."""
    repo = HERE.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=repo, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "source: unknown"
    if not head:
        return "source: unknown"
    return f"source: {head}" + (" + uncommitted changes in src/" if dirty else "")


# -- child processes -------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the driver dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Children:
    """Every process this driver started; :meth:`close` ends them all, whatever happened."""

    def __init__(self, workdir: Path, python_flags: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.python_flags = python_flags
        self.procs: list[subprocess.Popen[str]] = []

    def spawn(self, script: str, *args: str, log: str) -> subprocess.Popen[str]:
        stderr = open(self.workdir / log, "w")  # noqa: SIM115  (closed with the process)
        proc = subprocess.Popen(
            [sys.executable, *self.python_flags, str(HERE / script), *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=self.workdir,
            start_new_session=True,  # a Ctrl-C reaches the driver only; it ends the children
            preexec_fn=_die_with_parent,
        )
        stderr.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[str], timeout: float = 5.0) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5.0
        for proc in self.procs:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self.procs.clear()

    def log_tail(self, log: str, lines: int = 20) -> str:
        path = self.workdir / log
        text = path.read_text() if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _read_json_line(
    proc: subprocess.Popen[str], timeout: float, what: str, children: Children, log: str
) -> dict[str, Any]:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise RuntimeError(f"{what}: no answer within {timeout} s\n{children.log_tail(log)}")
    line = proc.stdout.readline()
    if not line:
        proc.wait(5)
        raise RuntimeError(f"{what} exited ({proc.returncode})\n{children.log_tail(log)}")
    return json.loads(line)


def _run_client(
    children: Children,
    script: str,
    args: list[str],
    timeout: float,
    what: str,
    server_pid: int | None = None,
    on_started: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run one client process to its end and return its figures (and the server's, if given).

    ``on_started(pid)`` runs once the client process exists (the profiler attaches there).
    """
    log = f"{what.replace(' ', '_').replace('=', '')}.log"
    if server_pid is not None:
        server_cpu, server_io = _loadgen.cpu_seconds(server_pid), _loadgen.io_counters(server_pid)
    proc = children.spawn(script, *args, log=log)
    if on_started is not None:
        on_started(proc.pid)
    result = _read_json_line(proc, timeout, what, children, log)
    if proc.wait(10) != 0:
        raise RuntimeError(f"{what} exited with {proc.returncode}\n{children.log_tail(log)}")
    if server_pid is not None:
        # Over the client's whole life (warm-up included), per call it made: approximate.
        calls = max(result.get("total_calls", 0), 1)
        io = _loadgen.io_counters(server_pid)
        result["server_cpu_us_per_call"] = (
            (_loadgen.cpu_seconds(server_pid) - server_cpu) / calls * 1e6
        )
        result["server_writes_per_call"] = (io["syscw"] - server_io["syscw"]) / calls
        result["server_reads_per_call"] = (io["syscr"] - server_io["syscr"]) / calls
    if proc.stdout is not None:
        proc.stdout.close()
    if result.get("errors"):
        raise RuntimeError(
            f"{what}: {result['errors']} failed calls, first: {result['first_error']}"
        )
    return result


def _cpu_sample() -> tuple[float, float]:
    """(CPU-seconds busy system-wide, CPU-seconds used by our reaped children) so far."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    # user + nice + system + steal: what processes (ours included) and the hypervisor took.
    # irq/softirq are left out: loopback traffic puts ours there, unattributed to any process.
    busy = fields[0] + fields[1] + fields[2] + fields[7]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return busy / os.sysconf("SC_CLK_TCK"), children.ru_utime + children.ru_stime


def busy_cpus(seconds: float = 0.5) -> float:
    """How many CPUs something else keeps busy (over ``seconds`` of /proc/stat), 0 to nproc."""
    busy0, _ = _cpu_sample()
    time.sleep(seconds)
    busy1, _ = _cpu_sample()
    return (busy1 - busy0) / seconds


# -- one run --------------------------------------------------------------------------------


def run_once(children: Children, workdir: Path, warmup: float, seconds: float) -> dict[str, Any]:
    # Other people's work on a shared machine shows up as noise: wait (a bounded
    # while) for a quiet moment, and record what was left.
    give_up = time.monotonic() + QUIET_WAIT
    while (before := busy_cpus()) > QUIET_CPUS and time.monotonic() < give_up:
        pass
    results: dict[str, Any] = {"busy_cpus_before": before}
    timeout = warmup + seconds + 30
    busy0, ours0 = _cpu_sample()
    wall0 = time.monotonic()

    # 1. raw baseline
    server = children.spawn("_raw.py", "server", log="raw_server.log")
    port = _read_json_line(server, 10, "raw server", children, "raw_server.log")["port"]
    try:
        time.sleep(IDLE_SECONDS)
        results["raw_rss_idle_kib"] = _loadgen.rss_kib(server.pid)  # for comparison only
        for c in CONCURRENCIES:
            results[f"raw_c{c}"] = _run_client(
                children,
                "_raw.py",
                [
                    "client",
                    "--port",
                    str(port),
                    "--concurrency",
                    str(c),
                    "--warmup",
                    str(warmup),
                    "--seconds",
                    str(seconds),
                ],
                timeout,
                f"raw client c={c}",
                server_pid=server.pid,
            )
    finally:
        children.stop(server)

    # 2. flotilla: a fresh registry file and secret for every run
    common = _flotilla_args(workdir)
    server = children.spawn("_flotilla.py", "server", *common, log="flotilla_server.log")
    pid = _read_json_line(server, 15, "flotilla server", children, "flotilla_server.log")["pid"]
    try:
        _run_client(
            children,
            "_flotilla.py",
            ["probe", *common, "--calls", str(PROBE_CALLS)],
            30,
            "flotilla probe",
        )
        time.sleep(IDLE_SECONDS)
        results["rss_idle_kib"] = _loadgen.rss_kib(pid)
        for c in CONCURRENCIES:
            results[f"flotilla_c{c}"] = _run_client(
                children,
                "_flotilla.py",
                _client_args(common, c, warmup, seconds),
                timeout,
                f"flotilla client c={c}",
                server_pid=pid,
            )
        time.sleep(IDLE_SECONDS)
        results["rss_after_load_kib"] = _loadgen.rss_kib(pid)
    finally:
        children.stop(server)
    busy1, ours1 = _cpu_sample()
    # CPUs kept busy by anything but this bench's processes (the driver's own is negligible).
    results["busy_cpus_other"] = max(busy1 - busy0 - (ours1 - ours0), 0.0) / (
        time.monotonic() - wall0
    )
    return results


# -- reporting -----------------------------------------------------------------------------


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the runs (figure by figure, not the median run)."""
    if len(runs) == 1:
        return runs[0]
    merged: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, dict):
            merged[key] = {
                k: statistics.median(run[key][k] for run in runs)
                for k, v in value.items()
                if isinstance(v, int | float) and not isinstance(v, bool) and k != "pid"
            }
        else:
            merged[key] = statistics.median(run[key] for run in runs)
    return merged


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB ({kib * 1024 / 1e6:.1f} MB)"


def disturbed(r: dict[str, Any]) -> bool:
    """Whether other processes competed for the CPUs enough to skew the figures."""
    return bool(max(r["busy_cpus_before"], r["busy_cpus_other"]) > DISTURBED_CPUS)


def report(r: dict[str, Any], title: str) -> None:
    print(f"\n{title}")
    print(
        f"  other load on the machine: {r['busy_cpus_before']:.2f} CPUs busy just before, "
        f"{r['busy_cpus_other']:.2f} CPUs on average during the run (outside the bench)"
    )
    if disturbed(r):
        print("  WARNING: other processes competed for the CPUs; these figures are disturbed")
    print(f"  {'':<16}{'calls/s':>10}{'p50 µs':>10}{'p99 µs':>10}{'mean µs':>10}")
    for kind in ("raw", "flotilla"):
        for c in CONCURRENCIES:
            row = r[f"{kind}_c{c}"]
            print(
                f"  {kind + f' c={c}':<16}{row['calls_per_s']:>10,.0f}{row['p50_us']:>10.0f}"
                f"{row['p99_us']:>10.0f}{row['mean_us']:>10.0f}"
            )
    print("  flotilla / raw:")
    for c in CONCURRENCIES:
        f, w = r[f"flotilla_c{c}"], r[f"raw_c{c}"]
        print(
            f"    c={c:<3} throughput {f['calls_per_s'] / w['calls_per_s']:.2f}x"
            f"   p50 {f['p50_us'] / w['p50_us']:.2f}x   p99 {f['p99_us'] / w['p99_us']:.2f}x"
        )
    print(
        f"  flotilla server RSS: idle {_mib(r['rss_idle_kib'])} after {PROBE_CALLS} calls + "
        f"{IDLE_SECONDS:.0f} s idle; {_mib(r['rss_after_load_kib'])} after the load phases"
    )
    print(
        f"  raw server RSS (idle, before its calls), for comparison: {_mib(r['raw_rss_idle_kib'])}"
    )

    print("  where the time goes (CPU µs per call; syscalls per call; client CPU use):")
    for kind in ("raw", "flotilla"):
        for c in CONCURRENCIES:
            row = r[f"{kind}_c{c}"]
            print(
                f"    {kind + f' c={c}':<14} client {row['cpu_us_per_call']:5.1f} µs"
                f"  server {row['server_cpu_us_per_call']:5.1f} µs"
                f"   writes: client {row['writes_per_call']:.2f} server"
                f" {row['server_writes_per_call']:.2f}"
                f"   client busy {row['cpu_busy']:.0%}"
            )

    ratio = r["flotilla_c64"]["calls_per_s"] / r["raw_c64"]["calls_per_s"]
    p50_ratio = r["flotilla_c1"]["p50_us"] / r["raw_c1"]["p50_us"]
    rss_bytes = r["rss_idle_kib"] * 1024
    checks = [
        (
            f"throughput c=64 >= {TARGET_THROUGHPUT_RATIO:.2f}x raw",
            f"{ratio:.2f}x",
            ratio >= TARGET_THROUGHPUT_RATIO,
        ),
        (
            f"p50 c=1 <= {TARGET_P50_RATIO:.1f}x raw",
            f"{p50_ratio:.2f}x",
            p50_ratio <= TARGET_P50_RATIO,
        ),
        (
            "idle server RSS <= 40 MB",
            f"{rss_bytes / 1e6:.1f} MB",
            rss_bytes <= TARGET_IDLE_RSS_BYTES,
        ),
    ]
    print("  targets:")
    for name, value, ok in checks:
        print(f"    {name:<32}{value:>12}   {'PASS' if ok else 'MISS'}")


# -- profiling -----------------------------------------------------------------------------


def profile(
    children: Children, workdir: Path, out: Path, kind: str, warmup: float, seconds: float
) -> None:
    """Profile the flotilla client and server at each concurrency, a fresh server for each."""
    out.mkdir(parents=True, exist_ok=True)
    py_spy = _pyspy.install() if kind == "py-spy" else None
    for concurrency in CONCURRENCIES:
        if py_spy is not None:
            _profile_sampled(children, workdir, out, py_spy, concurrency, warmup, seconds)
        else:
            _profile_traced(children, workdir, out, kind, concurrency, warmup, seconds)


def _flotilla_args(workdir: Path) -> list[str]:
    """A fresh registry file and secret: what a flotilla server and its clients share."""
    registry_dir = Path(tempfile.mkdtemp(prefix="registry-", dir=workdir))
    return [
        "--registry",
        f"sqlite:///{registry_dir / 'registry.db'}",
        "--secret",
        secrets.token_hex(32),
    ]


def _client_args(common: list[str], concurrency: int, warmup: float, seconds: float) -> list[str]:
    return [
        "client",
        *common,
        "--concurrency",
        str(concurrency),
        "--warmup",
        str(warmup),
        "--seconds",
        str(seconds),
    ]


def _profile_traced(
    children: Children,
    workdir: Path,
    out: Path,
    kind: str,
    concurrency: int,
    warmup: float,
    seconds: float,
) -> None:
    """cProfile or pyinstrument inside both processes (they slow small functions down)."""
    suffix = "prof" if kind == "cprofile" else "txt"
    common = _flotilla_args(workdir)
    server_profile = out / f"server-c{concurrency}.{suffix}"
    client_profile = out / f"client-c{concurrency}.{suffix}"
    server = children.spawn(
        "_flotilla.py",
        "server",
        *common,
        "--profile",
        str(server_profile),
        "--profiler",
        kind,
        log="flotilla_server.log",
    )
    _read_json_line(server, 15, "flotilla server", children, "flotilla_server.log")
    try:
        result = _run_client(
            children,
            "_flotilla.py",
            [
                *_client_args(common, concurrency, warmup, seconds),
                "--profile",
                str(client_profile),
                "--profiler",
                kind,
            ],
            warmup + seconds + 60,
            f"flotilla client c={concurrency} (profiled)",
        )
    finally:
        children.stop(server, timeout=30)  # SIGTERM: the server writes its profile, then drains
    print(
        f"\nprofiled flotilla c={concurrency}: {result['calls_per_s']:,.0f} calls/s, "
        f"p50 {result['p50_us']:.0f} µs (under the profiler: slower than real)"
    )
    print(f"profiles: {client_profile}  {server_profile}")
    if kind == "cprofile":
        import pstats

        for name, path in (("client", client_profile), ("server", server_profile)):
            print(f"\n===== {name} c={concurrency}: top 25 by own time =====")
            pstats.Stats(str(path)).strip_dirs().sort_stats("tottime").print_stats(25)


def _profile_sampled(
    children: Children,
    workdir: Path,
    out: Path,
    py_spy: str,
    concurrency: int,
    warmup: float,
    seconds: float,
) -> None:
    """py-spy attached from outside to both processes for the measured window."""
    common = _flotilla_args(workdir)
    server = children.spawn("_flotilla.py", "server", *common, log="flotilla_server.log")
    server_pid = _read_json_line(server, 15, "flotilla server", children, "flotilla_server.log")[
        "pid"
    ]
    outputs = {
        "client": out / f"client-c{concurrency}.txt",
        "server": out / f"server-c{concurrency}.txt",
    }
    recorders: list[subprocess.Popen[bytes]] = []

    def attach(client_pid: int) -> None:
        # The client needs a moment to start and connect; attach within its warm-up
        # and record whole seconds of its measured window.
        time.sleep(warmup)
        for name, pid in (("client", client_pid), ("server", server_pid)):
            recorders.append(_pyspy.attach(py_spy, pid, outputs[name], seconds - 0.5))

    try:
        result = _run_client(
            children,
            "_flotilla.py",
            _client_args(common, concurrency, warmup, seconds),
            warmup + seconds + 60,
            f"flotilla client c={concurrency} (sampled)",
            server_pid=server_pid,
            on_started=attach,
        )
    finally:
        for recorder in recorders:
            _, errors = recorder.communicate(timeout=60)
            if recorder.returncode != 0:
                print(f"py-spy failed: {errors.decode(errors='replace')}", file=sys.stderr)
        children.stop(server)
    print(
        f"\nsampled flotilla c={concurrency}: {result['calls_per_s']:,.0f} calls/s, "
        f"p50 {result['p50_us']:.0f} µs, CPU per call: client {result['cpu_us_per_call']:.1f} µs, "
        f"server {result['server_cpu_us_per_call']:.1f} µs"
    )
    print(_pyspy.summary(outputs["client"], result["cpu_us_per_call"]))
    print(_pyspy.summary(outputs["server"], result["server_cpu_us_per_call"]))


# -- main ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per phase (3)")
    parser.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds per phase (0.5)")
    parser.add_argument("--quick", action="store_true", help="1 s phases, 0.3 s warm-up")
    parser.add_argument("--runs", type=int, default=1, help="repeat and report medians (1)")
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="run again a run that other processes disturbed, at most this many times (2)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="instead: profile the flotilla client and server at c=1 and c=64 into DIR",
    )
    parser.add_argument(
        "--profiler", choices=("cprofile", "pyinstrument", "py-spy"), default="cprofile"
    )
    parser.add_argument(
        "-O",
        "--optimize",
        action="store_true",
        help="run the child processes with python -O (asserts off)",
    )
    parser.add_argument(
        "--python",
        default=None,
        metavar="INTERPRETER",
        help="run the bench and its children on this Python (e.g. python3.12), "
        "in a side environment under bench/.venvs/ built on first use",
    )
    args = parser.parse_args()
    if args.python is not None:
        try:
            venv = _interpreter.environment(args.python)
        except _interpreter.InterpreterError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if not _interpreter.running_in(venv):
            python = str(venv / "bin" / "python")
            os.execv(python, [python, str(Path(__file__).resolve()), *sys.argv[1:]])
    if args.quick:
        args.seconds, args.warmup = 1.0, 0.3

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # even when started with SIGINT ignored (nohup, &)
    workdir = Path(tempfile.mkdtemp(prefix="flotilla-bench-"))
    python_flags = ("-O",) if args.optimize else ()
    children = Children(workdir, python_flags)
    try:
        if args.profile is not None:
            profile(
                children, workdir, args.profile.resolve(), args.profiler, args.warmup, args.seconds
            )
            return 0
        import msgspec
        import uvloop

        source = source_state()
        print(
            f"flotilla RPC bench: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
            f"uvloop {uvloop.__version__}, msgspec {msgspec.__version__}; "
            f"{args.warmup:g} s warm-up + {args.seconds:g} s per phase, {args.runs} run(s); "
            f"children: python {' '.join(python_flags) or '(no -O)'}; {source}"
        )
        runs = []
        for index in range(args.runs):
            for attempt in range(args.retries + 1):
                result = run_once(children, workdir, args.warmup, args.seconds)
                if not disturbed(result) or attempt == args.retries:
                    break
                print(
                    f"run {index + 1}: other processes used {result['busy_cpus_other']:.2f} CPUs;"
                    " running it again",
                    flush=True,
                )
            runs.append(result)
            if args.runs > 1:
                report(runs[-1], f"run {index + 1} of {args.runs}")
        report(_median(runs), "median of runs" if args.runs > 1 else "results")
        if args.json is not None:
            arguments = {k: str(v) for k, v in vars(args).items()}
            args.json.write_text(
                json.dumps({"args": arguments, "source": source, "runs": runs}, indent=2)
            )
        return 0  # PASS/MISS is printed; the exit status says whether the bench itself ran
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        children.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
