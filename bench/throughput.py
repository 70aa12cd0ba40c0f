"""Sustained end-to-end throughput on one core, zero events lost, vs NautilusTrader.

Ours: raw Shioaji payloads queued as the callback would queue them, then the pipeline
worker journals, normalizes, books and publishes them (one thread, process pinned to one
core). Peer: NautilusTrader 1.221's `Position.apply` on the same fills (pre-built
`OrderFilled` events, only `apply` timed). Target: >= 200k events/s and >= 2x the peer.

The cost of the `position_adjusted` log lines (`telemetry.log_adjustments`) is measured in
the same rounds: end to end with them (logging configured as in production: JSON lines at
info, here to a temporary file; the writer thread's draining is inside the timed region) vs
without; the ratio is printed and written.
"""

from __future__ import annotations

import gc
import os
import queue
import sys
import tempfile
import time
from pathlib import Path

from common import median, print_table, production_logging, synthetic_events, write_results

from execstate.app import Pipeline
from execstate.config import Settings, load_settings

N_EVENTS = int(os.environ.get("BENCH_EVENTS", "300000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def settings_with(log_adjustments: bool) -> Settings:
    settings = load_settings()
    return settings.model_copy(update={"telemetry": settings.telemetry.model_copy(update={"log_adjustments": log_adjustments})})


def run_ours(events: list[tuple[str, dict]], journal_dir: Path | None, log_adjustments: bool = False) -> tuple[float, Pipeline]:
    settings = settings_with(log_adjustments)
    q: queue.SimpleQueue = queue.SimpleQueue()
    journal = journal_dir / f"bench-{time.time_ns()}.jsonl" if journal_dir else None
    pipeline = Pipeline(settings, raw_queue=q, journal_path=journal)
    ts = time.time_ns()
    for state, msg in events:
        q.put((ts, state, msg))
    gc.collect()
    start = time.perf_counter()
    pipeline.start()
    pipeline.stop(timeout=600)
    elapsed = time.perf_counter() - start
    if journal:
        journal.unlink()
    return elapsed, pipeline


def expected_quantities(events: list[tuple[str, dict]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for state, msg in events:
        if state == "SDEAL":
            signed = msg["quantity"] * 1000 * (1 if msg["action"] == "Buy" else -1)
            out[msg["code"]] = out.get(msg["code"], 0) + signed
    return out


def nautilus_fills(events: list[tuple[str, dict]]):
    from nautilus_trader.core.uuid import UUID4
    from nautilus_trader.model.enums import LiquiditySide, OrderSide, OrderType
    from nautilus_trader.model.events import OrderFilled
    from nautilus_trader.model.identifiers import AccountId, ClientOrderId, PositionId, StrategyId, TradeId, TraderId, VenueOrderId
    from nautilus_trader.model.objects import Currency, Money, Price, Quantity
    from nautilus_trader.test_kit.providers import TestInstrumentProvider

    twd = Currency.from_str("USD")
    instruments = {}
    fills = []
    trader, account = TraderId("TRADER-001"), AccountId("SIM-001")
    for state, msg in events:
        if state != "SDEAL":
            continue
        code = msg["code"]
        if code not in instruments:
            instruments[code] = TestInstrumentProvider.equity(symbol=f"S{code}", venue="XTAI")
        inst = instruments[code]
        strategy = StrategyId(f"S-{msg['custom_field'] or 'NONE'}")
        fills.append((inst, OrderFilled(
            trader, strategy, inst.id, ClientOrderId(f"O-{msg['trade_id']}"), VenueOrderId(msg["trade_id"]), account,
            TradeId(msg["exchange_seq"]), PositionId(f"P-{strategy}-{code}"), OrderSide.BUY if msg["action"] == "Buy" else OrderSide.SELL,
            OrderType.LIMIT, Quantity.from_int(msg["quantity"] * 1000), Price(msg["price"], 2), twd, Money(0, twd),
            LiquiditySide.TAKER, UUID4(), 0, 0,
        )))
    return fills


def run_nautilus(fills) -> tuple[float, int]:
    from nautilus_trader.model.position import Position

    positions: dict = {}
    gc.collect()
    start = time.perf_counter()
    for inst, fill in fills:
        key = (fill.strategy_id, inst.id)
        pos = positions.get(key)
        if pos is None or pos.is_closed:
            positions[key] = Position(inst, fill)
        else:
            pos.apply(fill)
    elapsed = time.perf_counter() - start
    return elapsed, len(fills)


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    events = synthetic_events(N_EVENTS)
    expected = expected_quantities(events)
    n_fills = sum(1 for s, _ in events if s == "SDEAL")
    try:
        fills = nautilus_fills(events)
    except ImportError:
        fills = None
        print("nautilus-trader not installed: peer skipped (pip install '.[bench]')")
    ours_j, ours_nj, ours_logs, peer = [], [], [], []
    tmp = Path(tempfile.mkdtemp(prefix="execstate-bench-"))
    log_file = production_logging("throughput")
    for round_no in range(ROUNDS):
        pair = ((False, ours_j), (True, ours_logs))
        for logs, rates in pair if round_no % 2 == 0 else pair[::-1]:  # alternate which goes first
            elapsed, pipeline = run_ours(events, tmp, log_adjustments=logs)
            books: dict[str, int] = {}
            for key, state in pipeline.store.view().positions.items():
                code = key.symbol.split(":")[0]
                books[code] = books.get(code, 0) + state.quantity
            lost = pipeline.stats.raw_events != len(events) or books != {k: v for k, v in expected.items()} or pipeline.stats.fills != n_fills
            if lost:
                sys.exit(f"events lost or books wrong: {pipeline.stats.counts()}")
            if logs and (pipeline.adjustments is None or pipeline.adjustments.lines != pipeline.stats.deltas):
                sys.exit(f"adjustment lines missing: {pipeline.adjustments and pipeline.adjustments.lines} of {pipeline.stats.deltas}")
            rates.append(len(events) / elapsed)
        elapsed, _ = run_ours(events, None)
        ours_nj.append(len(events) / elapsed)
        if fills is not None:
            elapsed, count = run_nautilus(fills)
            peer.append(count / elapsed)
    m_j, m_nj, m_logs = median(ours_j), median(ours_nj), median(ours_logs)
    m_fill_rate = m_j * n_fills / len(events)
    log_ratio = m_logs / m_j
    rows = [
        ["execstate end to end (journal + normalize + book)", f"{m_j:,.0f}", f"{m_fill_rate:,.0f}", f"{1e9 / m_j:,.0f}"],
        ["  with adjustment logs (a JSON line per delta)", f"{m_logs:,.0f}", f"{m_logs * n_fills / len(events):,.0f}", f"{1e9 / m_logs:,.0f}"],
        ["execstate without journal", f"{m_nj:,.0f}", f"{m_nj * n_fills / len(events):,.0f}", f"{1e9 / m_nj:,.0f}"],
    ]
    log_file.unlink(missing_ok=True)
    result = {"events": len(events), "fills": n_fills, "rounds": ROUNDS, "ours_events_per_s": ours_j, "ours_no_journal_events_per_s": ours_nj,
              "ours_with_adjustment_logs_events_per_s": ours_logs, "ratio_with_adjustment_logs": log_ratio, "target_events_per_s": 200_000}
    if peer:
        m_p = median(peer)
        rows.append(["NautilusTrader Position.apply (fills only)", "-", f"{m_p:,.0f}", f"{1e9 / m_p:,.0f}"])
        result |= {"nautilus_fills_per_s": peer, "ratio_fill_rate_vs_nautilus": m_fill_rate / m_p}
    print_table(f"Throughput, one core, {len(events):,} events ({n_fills:,} fills), median of {ROUNDS} rounds, zero lost",
                ["path", "events/s", "fills/s", "ns/event"], rows)
    print(f"adjustment logs: {log_ratio:.3f}x the throughput without them ({(1 / m_logs - 1 / m_j) * 1e9:,.0f} ns more per event)")
    if peer:
        print(f"ratio (our fills/s end to end / Nautilus apply fills/s): {result['ratio_fill_rate_vs_nautilus']:.2f}x (target >= 2x); events/s target >= 200,000: {'met' if m_j >= 200_000 else 'NOT met'}")
    write_results("throughput", result)


if __name__ == "__main__":
    main()
