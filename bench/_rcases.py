"""The six cases of the resilience bench, and what they share (see ``resilience.py``).

Each case starts its own replicas, runs its load clients, keeps its raw
results in ``bench.figures`` and adds rows to ``bench.rows``.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from _rcluster import Replicas, policy_json, run_load
from rpc import Children

from flotilla.resilience.policy import BreakerPolicy, BudgetPolicy

REPLICAS = 5
SERVICE_TIME = 0.002  # seconds per bench.work call on a healthy replica
CONCURRENCY = 8  # closed-loop calls in flight


class Row(NamedTuple):
    """One line of the table; ``ok`` None: no target (a comparison) or not measurable."""

    case: str
    figure: str
    value: str
    baseline: str
    ratio: str
    target: str
    ok: bool | None


class Bench:
    """What every case needs: the processes, the phase lengths, the rows so far."""

    def __init__(self, children: Children, workdir: Path, warmup: float, seconds: float) -> None:
        self.children = children
        self.workdir = workdir
        self.warmup = warmup
        self.seconds = seconds
        self.rows: list[Row] = []
        self.figures: dict[str, dict[str, Any]] = {}
        """Each case's raw results, by case letter (what ``--json`` keeps)."""

    def replicas(self, extra: Callable[[int], list[str]] = lambda i: []) -> Replicas:
        return Replicas(self.children, self.workdir, REPLICAS, extra)

    def load(self, replicas: Replicas, *options: str, **kwargs: Any) -> dict[str, Any]:
        """One load client's run; ``warmup`` and ``seconds`` default to the bench's."""
        kwargs.setdefault("warmup", self.warmup)
        kwargs.setdefault("seconds", self.seconds)
        return run_load(self.children, replicas, list(options), **kwargs)

    def row(self, *fields: Any) -> None:
        self.rows.append(Row(*fields))

    def missing(self, case: str, figure: str, what: str) -> None:
        self.row(case, figure, f"n/a: {what}", "", "", "", None)


def missing_layer(*modules: str) -> str | None:
    """What of ``flotilla.resilience.<module>`` this checkout lacks, or None."""
    absent = [m for m in modules if importlib.util.find_spec(f"flotilla.resilience.{m}") is None]
    return f"{', '.join(absent)} not in this checkout" if absent else None


def faults(**fields: Any) -> list[str]:
    return ["--faults", policy_json(**fields)]


def ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.1f} ms"


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.2f} %" if whole else "-"


def success(result: dict[str, Any]) -> float:
    done = result["ok"] + result["failed"]
    return result["ok"] / done if done else 0.0


# -- the cases ------------------------------------------------------------------------------


def case_a(bench: Bench) -> None:
    """One replica 50x slower than the rest: P2C keeps p99 near the healthy one."""
    slow = faults(delay=49 * SERVICE_TIME, delay_fraction=1.0)
    replicas = bench.replicas(lambda i: slow if i == 0 else [])
    try:
        closed = ["--concurrency", str(CONCURRENCY)]
        healthy = bench.load(replicas, *closed, "--strategy", "p2c")
        replicas.arm(0)
        p2c = bench.load(replicas, *closed, "--strategy", "p2c")
        rr = bench.load(replicas, *closed, "--strategy", "round_robin")
    finally:
        replicas.close()
    bench.figures["a"] = {"healthy": healthy, "p2c": p2c, "round_robin": rr}
    base = healthy["p99_us"]
    case = "a. one replica 50x slower"
    for name, result, target in (("P2C", p2c, 1.5), ("round robin", rr, None)):
        ratio = result["p99_us"] / base
        bench.row(
            case,
            f"p99, {name}",
            ms(result["p99_us"]),
            f"all healthy, P2C: {ms(base)}",
            f"{ratio:.2f}x",
            f"<= {target}x" if target else "(comparison)",
            ratio <= target if target else None,
        )


def _killed_run(bench: Bench, *options: str) -> dict[str, Any]:
    """A closed-loop run on fresh replicas, replica 0 SIGKILLed halfway through the window."""
    replicas = bench.replicas()
    try:
        return bench.load(
            replicas,
            "--concurrency",
            str(CONCURRENCY),
            *options,
            action=lambda: replicas.kill(0),
            action_after=bench.seconds / 2,
        )
    finally:
        replicas.close()


def case_b(bench: Bench) -> None:
    """One replica SIGKILLed mid-run: what share of calls still succeeds."""
    case = "b. one replica killed"
    base = _killed_run(bench, "--policy", policy_json(retry={"max_attempts": 1}))
    bench.figures["b"] = {"no_retries": base}
    baseline = f"no retries: {success(base):.3%} ({base['failed']} failed)"
    lacking = missing_layer("retry", "budget")
    if lacking is not None:
        bench.missing(case, "success with retries", lacking)
        bench.row(case, "success, no retries", f"{success(base):.3%}", "", "", "", None)
        return
    got = bench.figures["b"]["retries"] = _killed_run(bench)
    bench.row(
        case,
        "success with retries",
        f"{success(got):.3%} ({got['failed']} of {got['ok'] + got['failed']} failed)",
        baseline,
        "",
        ">= 99.900 %",
        success(got) >= 0.999,
    )


def _share(replicas: Replicas, index: int) -> tuple[int, int]:
    """(calls replica ``index`` received, calls all live replicas received) so far."""
    stats = replicas.stats()
    mine = stats[index]
    assert mine is not None
    total = sum(s["calls"].get("bench.work", 0) for s in stats if s is not None)
    return mine["calls"].get("bench.work", 0), total


BREAKER = BreakerPolicy()  # the defaults: what a caller that configures nothing gets
# Long enough after the first error for a steady-state breaker to trip (its
# window must be mostly failures), short enough that an open one (open_base
# less the jitter) does not probe again before the end: a call then is a leak.
OBSERVE = BREAKER.window * (1 - BREAKER.failure_rate) + 2.0


def _broken_run(bench: Bench, strategy: str) -> tuple[float, bool, float, dict[str, Any], str]:
    """Replica 0 answers errors once the caller has run a breaker window's worth of healthy
    calls (as a long-lived caller has); then the same, breakers off.  Returns (first error ->
    last call it got, whether it still got calls at the end, first error -> breaker.opened or
    NaN, the guarded run, the share of calls it got with the breakers off)."""
    broken = faults(error="internal", error_fraction=1.0)
    replicas = bench.replicas(lambda i: broken if i == 0 else [])
    closed = ["--concurrency", str(CONCURRENCY), "--strategy", strategy]
    try:
        guarded = bench.load(
            replicas,
            *closed,
            warmup=BREAKER.window,
            seconds=OBSERVE,
            action=lambda: replicas.arm(0),
        )
        stats = replicas.stats()[0]
        bad0, total0 = _share(replicas, 0)
        bench.load(replicas, *closed, "--policy", policy_json(breaker={"state": "disabled"}))
        bad1, total1 = _share(replicas, 0)
    finally:
        replicas.close()
    assert stats is not None
    first_error = stats["first_call_armed_at"]
    if first_error is None:
        raise RuntimeError("case c: no call reached the broken replica after its faults began")
    last_call = stats["last_call_at"]["bench.work"]
    at_the_end = last_call > guarded["window_at"] + OBSERVE - 0.25
    opened_at = guarded["signals"]["first_at_by_endpoint"].get("breaker.opened", {})
    (endpoint,) = replicas.instances(0)
    opened = opened_at.get(endpoint, math.nan) - first_error
    share = pct(bad1 - bad0, total1 - total0)
    guarded["calls_after_first_error"] = stats["calls_armed"]
    return last_call - first_error, at_the_end, opened, guarded, share


def case_c(bench: Bench) -> None:
    """One replica starts answering errors mid-run: how soon its traffic stops."""
    case = "c. one replica answers errors"
    for strategy in ("p2c", "round_robin"):
        left, at_the_end, opened, guarded, share = _broken_run(bench, strategy)
        bench.figures.setdefault("c", {})[strategy] = {
            "first_error_to_last_call_s": left,
            "still_called_at_the_end": at_the_end,
            "first_error_to_breaker_opened_s": opened,
            "share_breakers_off": share,
            "run": guarded,
        }
        name = "P2C" if strategy == "p2c" else "round robin"
        bench.row(
            case,
            f"{name}: first error -> last call it got",
            f"{'> ' if at_the_end else ''}{left:.3f} s"
            f" ({guarded['calls_after_first_error']} calls after the first error)",
            f"breakers off: it still got {share} of calls",
            "",
            "<= 1 s",
            left <= 1.0,
        )
        bench.row(
            case,
            f"{name}: first error -> breaker.opened",
            f"not within {OBSERVE:.0f} s" if math.isnan(opened) else f"{opened:.3f} s",
            f"{guarded['failed']} errors reached the caller",
            "",
            "(comparison)",
            None,
        )


def case_d(bench: Bench, rate: float) -> None:
    """Every replica stalls 1 % of its calls for 1 s: hedging against none."""
    case = "d. 1 % of calls stall 1 s"
    stall = faults(delay=1.0, delay_fraction=0.01)
    replicas = bench.replicas(lambda i: [*stall, "--armed"])
    lacking = missing_layer("hedge")
    try:
        plain = bench.load(replicas, "--rate", str(rate))
        hedged = None
        if lacking is None:
            hedge = policy_json(hedge={"enabled": True})
            hedged = bench.load(replicas, "--rate", str(rate), "--policy", hedge)
    finally:
        replicas.close()
    bench.figures["d"] = {"rate": rate, "plain": plain, "hedged": hedged}
    for figure, key in (("p99", "p99_us"), ("p99.9", "p999_us")):
        baseline = f"no hedging: {ms(plain[key])}"
        if hedged is None:
            bench.row(case, f"{figure} hedged", f"n/a: {lacking}", baseline, "", "", None)
            continue
        ratio = hedged[key] / plain[key]
        bench.row(
            case,
            f"{figure} hedged",
            ms(hedged[key]),
            baseline,
            f"{ratio:.2f}x",
            "<= 0.5x",
            ratio <= 0.5,
        )


NO_BULKHEAD = {"bulkhead": {"max_concurrent": 1_000_000, "max_queue": 1_000_000}}


def _overload_runs(
    bench: Bench, pool: list[str], server: dict[str, Any], runs: list[tuple[float, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Open-loop runs on one set of replicas (``server``: their policy), each at its rate with
    its client policy (the server's, updated by the run's own)."""
    replicas = bench.replicas(lambda i: [*pool, "--policy", policy_json(**server)])
    try:
        return [
            bench.load(replicas, "--rate", str(rate), "--policy", policy_json(**server, **client))
            for rate, client in runs
        ]
    finally:
        replicas.close()


def case_e(bench: Bench, workers: int, service_time: float) -> None:
    """Open-loop arrivals at twice the capacity: shed the excess, keep the admitted fast."""
    case = "e. offered load 2x capacity"
    capacity = REPLICAS * workers / service_time
    pool = ["--workers", str(workers), "--service-time", str(service_time)]
    unloaded, overloaded = _overload_runs(
        bench, pool, NO_BULKHEAD, [(capacity / 4, {}), (capacity * 2, {})]
    )
    base = unloaded["p99_us"]
    bench.figures["e"] = {"capacity": capacity, "unloaded": unloaded, "no_bulkhead": overloaded}
    bench.row(
        case,
        "admitted p99, no bulkhead",
        ms(overloaded["p99_us"]),
        f"unloaded ({capacity / 4:.0f}/s): {ms(base)}",
        f"{overloaded['p99_us'] / base:.1f}x",
        "(comparison)",
        None,
    )
    lacking = missing_layer("bulkhead")
    if lacking is not None:
        bench.missing(case, "admitted p99, bulkhead", lacking)
        return
    # The bulkhead admits as many calls as the replica has workers, and queues
    # as many again: an admitted call waits at most one service time.
    bulkhead = {"bulkhead": {"max_concurrent": workers, "max_queue": workers}}
    off = {"breaker": {"state": "disabled"}}
    runs = {
        "bulkhead": {},
        "bulkhead, breakers off": off,
        "bulkhead alone: breakers, retries off": {**off, "retry": {"max_attempts": 1}},
    }
    results = _overload_runs(bench, pool, bulkhead, [(capacity * 2, c) for c in runs.values()])
    for name, result in zip(runs, results, strict=True):
        bench.figures["e"][name] = result
        _admitted_rows(bench, case, name, result, base, capacity)


def _admitted_rows(
    bench: Bench, case: str, name: str, result: dict[str, Any], base: float, capacity: float
) -> None:
    offered = result["ok"] + result["failed"]
    failures = ", ".join(f"{n} {code}" for code, n in sorted(result["failures"].items()))
    bench.row(
        case,
        f"calls admitted, {name}",
        f"{pct(result['ok'], offered)} of {offered / bench.seconds:.0f}/s",
        f"capacity {capacity:.0f}/s; failed: {failures or 'none'}",
        "",
        "(comparison)",
        None,
    )
    if result["p99_us"] is None:
        bench.row(case, f"admitted p99, {name}", "no call admitted", "", "", "<= 3x", False)
        return
    ratio = result["p99_us"] / base
    bench.row(
        case,
        f"admitted p99, {name}",
        ms(result["p99_us"]),
        f"unloaded: {ms(base)}",
        f"{ratio:.1f}x",
        "<= 3x",
        ratio <= 3.0,
    )


HOPS = ("front", "middle", "leaf")


def _chain_run(
    bench: Bench, policy: str, seconds: float
) -> tuple[int, dict[str, float], dict[str, Any]]:
    """Closed-loop calls to ``front.work`` while every leaf fails; ``policy`` on every node.

    The window opens after a retry budget's window of warm-up, so each node's
    budget is in its steady state (a fresh one may spend its whole
    ``min_per_second * window`` at once), and lasts ``seconds``: a budget
    window, in which the retries allowed ``min_per_second * window`` come
    back when those they allowed age out, usually in bursts.  Returns
    (requests started in the window, attempts per request at each hop, the
    client's result).
    """
    chain = ["--chain", *faults(error="unavailable", error_fraction=1.0)]
    chain += ["--faults-service", "leaf", "--armed", "--policy", policy]
    replicas = bench.replicas(lambda i: chain)
    before: dict[str, int] = {}

    def count() -> None:
        before.update({hop: replicas.calls(f"{hop}.work") for hop in HOPS})

    options = ["--concurrency", "4", "--target", "front.work", "--policy", policy]
    try:
        result = bench.load(
            replicas, *options, warmup=BudgetPolicy().window, seconds=seconds, action=count
        )
        after = {hop: replicas.calls(f"{hop}.work") for hop in HOPS}
    finally:
        replicas.close()
    requests = result["ok"] + result["failed"]
    return requests, {hop: (after[hop] - before[hop]) / requests for hop in HOPS}, result


def case_f(bench: Bench) -> None:
    """A chain front -> middle -> leaf whose leaf always fails: attempts per request."""
    case = "f. chain, failing leaf"
    lacking = missing_layer("retry", "budget")
    if lacking is not None:
        bench.missing(case, "leaf attempts / request", lacking)
        return
    # Breakers off, so that every request travels the whole chain: the figure is
    # what retries alone cost.  With the defaults, the breakers open over the
    # failing hops and most requests fail at once in the caller (a comparison).
    runs = {
        "retries, breakers off": policy_json(breaker={"state": "disabled"}),
        "defaults": policy_json(),
    }
    for name, policy in runs.items():
        judged = name != "defaults"
        seconds = BudgetPolicy().window if judged else bench.seconds
        requests, hops, result = _chain_run(bench, policy, seconds)
        bench.figures.setdefault("f", {})[name] = {
            "requests": requests,
            "hops": hops,
            "run": result,
        }
        bench.row(
            case,
            f"leaf attempts / request, {name}",
            f"{hops['leaf']:.2f}",
            f"{requests} requests; each: front {hops['front']:.2f}, middle {hops['middle']:.2f}",
            f"{hops['leaf']:.2f}x",
            "<= 1.2x" if judged else "(comparison)",
            hops["leaf"] <= 1.2 if judged else None,
        )
        if judged:
            # Each middle replica is a caller of leaf with a budget of its own:
            # retries <= ratio * its requests + min_per_second.
            budget, rate = BudgetPolicy(), requests / seconds
            bound = 1 + budget.ratio + budget.min_per_second * REPLICAS / rate
            bench.figures["f"]["budget_bound"] = bound
            bench.row(
                case,
                "what the retry budgets allow at this rate",
                f"{bound:.2f}",
                f"{rate:.0f} requests/s over {REPLICAS} middle replicas",
                "",
                "(comparison)",
                None,
            )
