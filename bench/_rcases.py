"""Cases a, b and c of the resilience bench: one replica slow, killed, or answering errors.

Each case starts its own replicas, runs its load clients, keeps its raw
results in ``bench.figures`` and adds rows to ``bench.rows`` (see ``resilience.py``).
"""

from __future__ import annotations

import math
from typing import Any

from _rbench import CONCURRENCY, SERVICE_TIME, Bench, faults, missing_layer, ms, pct, success
from _rcluster import Replicas, policy_json

from flotilla.resilience.policy import BreakerPolicy


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
# Long enough to see the traffic leave (the target is 1 s; the breaker trips on
# failures in a row), short enough that an open breaker (open_base less the
# jitter) does not probe again before the end: a call then is a leak.
OBSERVE = BREAKER.open_base * (1 - BREAKER.jitter) - 0.5


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
        # Judged under round robin, which keeps sending a replica its share
        # whatever it answers: what stops the traffic there is the breaker.  P2C
        # steers away from errors by itself (its breaker may never see enough
        # failures to trip) and re-probes now and then by design: shown beside it.
        judged = strategy == "round_robin"
        bench.row(
            case,
            f"{name}: first error -> last call it got",
            f"{'> ' if at_the_end else ''}{left:.3f} s"
            f" ({guarded['calls_after_first_error']} calls after the first error)",
            f"breakers off: it still got {share} of calls",
            "",
            "<= 1 s" if judged else "(comparison)",
            left <= 1.0 if judged else None,
        )
        bench.row(
            case,
            f"{name}: first error -> breaker.opened",
            f"not within {OBSERVE:.0f} s" if math.isnan(opened) else f"{opened:.3f} s",
            f"{guarded['failed']} errors reached the caller",
            "",
            "<= 1 s" if judged else "(comparison)",
            opened <= 1.0 if judged else None,
        )
