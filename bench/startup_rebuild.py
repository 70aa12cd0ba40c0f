"""Start-up rebuild time: an account with 500 positions and ~2,000 deals today, every broker
call taking 50 ms, against the floor set by the rate limit and the calls the design makes.

The service starts on a fresh machine (no journal, no snapshot) after the day's trading:
everything comes from the broker. The design's calls: per account `list_positions` (one
round, accounts in parallel) then `order_deal_records` (a second round): 2 rounds x 50 ms.
The rate-limit floor for C portfolio calls is (ceil(C / 25) - 1) x 5 s (0 here). The floor
is the larger of the two. Target: within 1.5x of the floor, and under 10 s.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from common import print_table, write_results

from execstate.bridge.sim import InitialPosition, SimBroker, SimConfig, SimShioaji, generate_session
from execstate.config import load_settings
from execstate.service import Service
from execstate.telemetry.logging import configure_logging

LATENCY_S = 0.05
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))


def session():
    initial = tuple(InitialPosition("9A95-1234567", str(1101 + i), "Cash", 1000 * (1 + i % 3), Decimal("50.5")) for i in range(480))
    return generate_session(SimConfig(seed=7, n_orders=1450, initial_positions=initial))


def run_once(sess, state_dir: Path) -> tuple[float, float, int, int]:
    settings = load_settings().model_copy(update={"state_dir": state_dir})
    broker = SimBroker(sess, latency_s=LATENCY_S)
    api = SimShioaji(sess, broker=broker)
    accounts = api.login("k", "s")
    broker.set_as_of(None)  # after the day's trading: all of today's deals are at the broker
    service = Service(settings, api, accounts, day="2026-11-25")
    t0 = time.perf_counter()
    service.start()
    elapsed = time.perf_counter() - t0
    result = service.startup
    positions = sum(1 for s in service.pipeline.store.view().positions.values() if s.quantity)
    calls = sum(broker.calls.values()) if isinstance(broker.calls, dict) else 0
    service.stop()
    assert result is not None and not result.error and not service.halt.is_halted, result
    return elapsed, result.duration_ms / 1000, positions, calls


def main() -> None:
    configure_logging(json=True, level="error")
    sess = session()
    deals = len(sess.fills)
    accounts = 2
    design_rounds = 2
    portfolio_calls = accounts
    floor = max(design_rounds * LATENCY_S, (math.ceil(portfolio_calls / 25) - 1) * 5.0)
    totals, reconciles = [], []
    positions = calls = 0
    for _ in range(ROUNDS):
        state = Path(tempfile.mkdtemp(prefix="es-bench-", dir="/tmp"))
        try:
            total, rec, positions, calls = run_once(sess, state)
        finally:
            shutil.rmtree(state, ignore_errors=True)
        totals.append(total)
        reconciles.append(rec)
    m_total, m_rec = statistics.median(totals), statistics.median(reconciles)
    print_table(
        f"Start-up rebuild: {positions} positions, {deals:,} deals today, {LATENCY_S * 1000:.0f} ms per broker call, median of {ROUNDS}",
        ["measure", "seconds", "vs floor", "target"],
        [
            ["floor (2 rounds of calls; rate limit does not bind)", f"{floor:.3f}", "1.00x", ""],
            ["broker reconcile (fetch + recover + correct)", f"{m_rec:.3f}", f"{m_rec / floor:.2f}x", "<= 1.5x"],
            ["whole start-up (incl. control endpoint, threads)", f"{m_total:.3f}", f"{m_total / floor:.2f}x", "< 10 s"],
        ],
    )
    print(f"broker calls per start-up: {calls}; target within 1.5x of floor: {'met' if m_total <= 1.5 * floor else 'NOT met'}; under 10 s: {'met' if m_total < 10 else 'NOT met'}")
    write_results("startup_rebuild", {"positions": positions, "deals": deals, "latency_s": LATENCY_S, "floor_s": floor,
                                      "startup_s": totals, "reconcile_s": reconciles, "broker_calls": calls})


if __name__ == "__main__":
    main()
