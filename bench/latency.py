"""Callback-to-snapshot-visible latency at 1k and 10k events/s, with and without a busy thread.

Ours: a producer thread (standing in for Shioaji's) calls `ShioajiBridge.on_order`; the
pipeline worker books the event and publishes the view; latency = publish time minus the
callback's `time_ns()` stamp, per fill. Baseline in the same run and conditions: the bare
hand-off floor, a consumer that only takes the tuple off the `SimpleQueue` and stamps it.
The busy thread is a CPU-bound pure-Python loop, like a strategy computing signals.
Runtime tuning from config (`runtime.switch_interval_us`, GC settings) is applied, as
`execstate run` does. Target: p99 < 1 ms with the busy thread, < 200 us without.
"""

from __future__ import annotations

import os
import queue
import threading
import time

from callback_hold import _Api
from common import percentile, print_table, production_logging, synthetic_events, write_results

import shioaji as sj

from execstate.app import Pipeline
from execstate.bridge.shioaji_adapter import ShioajiBridge
from execstate.config import load_settings

SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))


def pace(callback, events, rate: float) -> None:
    """Deliver events at `rate`/s from this thread; sleeps release the GIL like Shioaji's I/O waits."""
    interval = 1e9 / rate
    start = time.perf_counter_ns()
    deal, order = sj.OrderState.StockDeal, sj.OrderState.StockOrder
    for i, (state, msg) in enumerate(events):
        due = start + int(i * interval)
        delay = due - time.perf_counter_ns()
        if delay > 0:
            time.sleep(delay / 1e9)
        callback(deal if state == "SDEAL" else order, msg)


class Busy:
    def __init__(self) -> None:
        self.stop = threading.Event()
        self.loops = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        x = 0
        while not self.stop.is_set():
            for i in range(1000):
                x += i * i
            self.loops += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def run_ours(events, rate: float) -> list[int]:
    pipeline = Pipeline(load_settings()).start()
    bridge = ShioajiBridge(_Api(), pipeline.queue).attach()
    producer = threading.Thread(target=pace, args=(bridge.on_order, events, rate))
    producer.start()
    producer.join()
    pipeline.stop()
    assert pipeline.stats.raw_events == len(events)
    return pipeline.stats.latency_ns.values()


def run_floor(events, rate: float) -> list[int]:
    q: queue.SimpleQueue = queue.SimpleQueue()
    lat: list[int] = []

    def consume() -> None:
        get, now = q.get, time.time_ns
        while True:
            item = get()
            if item is None:
                return
            lat.append(now() - item[0])

    consumer = threading.Thread(target=consume)
    consumer.start()
    put, now = q.put, time.time_ns
    producer = threading.Thread(target=pace, args=(lambda s, m: put((now(), s, m)), events, rate))
    producer.start()
    producer.join()
    q.put(None)
    consumer.join()
    return sorted(lat)


def main() -> None:
    rows, result = [], {}
    production_logging("latency")  # as in production: position_adjusted lines rendered at info
    for rate in (1000.0, 10000.0):
        events = synthetic_events(int(rate * SECONDS), seed=int(rate))
        for busy in (False, True):
            label = f"{rate / 1000:.0f}k/s{' + busy thread' if busy else ''}"
            with Busy() if busy else _Null():
                floor = run_floor(events, rate)
                ours = run_ours(events, rate)
            f = [percentile(floor, q) / 1000 for q in (50, 99, 99.9)]
            o = [percentile(ours, q) / 1000 for q in (50, 99, 99.9)]
            target = 1000 if busy else 200
            rows.append([label, *(f"{v:,.0f}" for v in f), *(f"{v:,.0f}" for v in o), f"{o[1]:,.0f} < {target}: {'met' if o[1] < target else 'NOT met'}"])
            result[label] = {"floor_us": dict(zip(("p50", "p99", "p99.9"), f)), "ours_us": dict(zip(("p50", "p99", "p99.9"), o)), "samples": len(ours), "target_p99_us": target}
    print_table(f"Callback to visible (us): hand-off floor vs execstate, {SECONDS:.0f} s per cell",
                ["load", "floor p50", "floor p99", "floor p99.9", "ours p50", "ours p99", "ours p99.9", "p99 target"], rows)
    write_results("latency", result)


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main()
