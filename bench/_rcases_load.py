"""Cases d, e and f of the resilience bench: stalls and hedging, overload and the bulkhead,
a chain's retries.

Each case starts its own replicas, runs its load clients, keeps its raw
results in ``bench.figures`` and adds rows to ``bench.rows`` (see ``resilience.py``).
"""

from __future__ import annotations

from typing import Any

from _rbench import REPLICAS, Bench, faults, missing_layer, ms, pct
from _rcluster import policy_json

from flotilla.resilience.policy import BudgetPolicy


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
    off: dict[str, Any] = {"breaker": {"state": "disabled"}}
    runs: dict[str, dict[str, Any]] = {
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
