"""How long the order callback holds Shioaji's thread, vs a bare callback.

Both callbacks feed the same consumer (the real pipeline worker) in the same run:
- bare: `time.time_ns()`, build a tuple, `SimpleQueue.put` (the floor),
- ours: `ShioajiBridge.on_order` (the same, plus the heartbeat store).
A producer thread stands in for Shioaji's thread and times each call with
`perf_counter_ns` (the timer's own cost is in both). Paced at 1k events/s and at
saturation. Target: ours within 1.5x of bare at median and p99.
"""

from __future__ import annotations

import os
import queue
import threading
import time

from common import percentile, print_table, production_logging, synthetic_events, write_results

import shioaji as sj

from execstate.app import Pipeline
from execstate.bridge.shioaji_adapter import ShioajiBridge
from execstate.config import load_settings

N_SATURATED = int(os.environ.get("BENCH_CALLBACKS", "100000"))
N_PACED = int(os.environ.get("BENCH_PACED", "3000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))


class _Api:
    """Stands in for a logged-in session: only stores the callbacks (Shioaji's servers are unreachable)."""

    def set_order_callback(self, cb): self.cb = cb
    def set_event_callback(self, cb): pass
    def set_session_down_callback(self, cb): pass


def bare_callback(q: queue.SimpleQueue):
    put = q.put
    now = time.time_ns

    def on_order(stat, msg):
        put((now(), stat, msg))

    return on_order


def drive(callback, events, pace_per_s: float | None) -> list[int]:
    """Call `callback` from a producer thread; return per-call hold times in ns."""
    holds: list[int] = []
    stat_deal, stat_order = sj.OrderState.StockDeal, sj.OrderState.StockOrder

    def producer() -> None:
        clock = time.perf_counter_ns
        interval = int(1e9 / pace_per_s) if pace_per_s else 0
        next_at = clock()
        append = holds.append
        for state, msg in events:
            if interval:
                next_at += interval
                delay = next_at - clock()
                if delay > 0:
                    time.sleep(delay / 1e9)
            stat = stat_deal if state == "SDEAL" else stat_order
            t0 = clock()
            callback(stat, msg)
            append(clock() - t0)

    thread = threading.Thread(target=producer, name="shioaji-standin")
    thread.start()
    thread.join()
    return holds


def run(kind: str, events, pace) -> list[int]:
    settings = load_settings()
    pipeline = Pipeline(settings).start()
    if kind == "bare":
        cb = bare_callback(pipeline.queue)
    else:
        cb = ShioajiBridge(_Api(), pipeline.queue).attach().on_order
    holds = drive(cb, events, pace)
    pipeline.stop()
    assert pipeline.stats.raw_events == len(events), "events lost"
    return sorted(holds)


def main() -> None:
    rows, result = [], {}
    production_logging("callback_hold")  # as in production: position_adjusted lines rendered at info
    for label, n, pace in (("1k events/s", N_PACED, 1000.0), ("saturation", N_SATURATED, None)):
        events = synthetic_events(n, seed=11)
        med = {"bare": [], "ours": []}
        p99 = {"bare": [], "ours": []}
        for round_no in range(ROUNDS):
            for kind in (("bare", "ours") if round_no % 2 == 0 else ("ours", "bare")):  # alternate who goes first
                holds = run(kind, events, pace)
                med[kind].append(percentile(holds, 50))
                p99[kind].append(percentile(holds, 99))
        m = {k: sorted(v)[len(v) // 2] for k, v in med.items()}
        t = {k: sorted(v)[len(v) // 2] for k, v in p99.items()}
        rows.append([label, f"{m['bare']:,}", f"{m['ours']:,}", f"{m['ours'] / m['bare']:.2f}x", f"{t['bare']:,}", f"{t['ours']:,}", f"{t['ours'] / t['bare']:.2f}x"])
        result[label] = {"median_ns": m, "p99_ns": t, "ratio_median": m["ours"] / m["bare"], "ratio_p99": t["ours"] / t["bare"], "events": n, "rounds": ROUNDS}
    print_table(f"Callback hold time on Shioaji's thread (ns, median over {ROUNDS} rounds; target ratio <= 1.5x)",
                ["pace", "bare med", "ours med", "ratio", "bare p99", "ours p99", "ratio"], rows)
    write_results("callback_hold", result)


if __name__ == "__main__":
    main()
