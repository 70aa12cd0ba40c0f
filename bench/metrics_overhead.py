"""What the metrics cost the hot path: the pipeline with its latency histogram vs the same
pipeline with a no-op histogram, same events, same run, alternating, median of rounds.
(Every other metric is read at scrape time, off the hot path.) Target: a few percent."""

from __future__ import annotations

import os
import statistics
import time

from common import print_table, production_logging, synthetic_events, write_results

from execstate.app import Pipeline
from execstate.config import load_settings

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))


class _NoHistogram:
    def observe(self, value: float) -> None:
        pass


def run(raws: list, with_metrics: bool) -> float:
    pipeline = Pipeline(load_settings())
    if not with_metrics:
        pipeline.latency_ms = _NoHistogram()
    t0 = time.perf_counter()
    for i in range(0, len(raws), 4096):
        pipeline.process_batch(raws[i:i + 4096])
    return (time.perf_counter() - t0) / len(raws) * 1e9


def main() -> None:
    production_logging("metrics_overhead")  # as in production: position_adjusted lines rendered at info
    raws = [(time.time_ns(), s, m) for s, m in synthetic_events(90_000)]
    res: dict[bool, list[float]] = {True: [], False: []}
    for r in range(ROUNDS):
        for with_metrics in ((True, False) if r % 2 == 0 else (False, True)):
            res[with_metrics].append(run(raws, with_metrics))
    on, off = statistics.median(res[True]), statistics.median(res[False])
    overhead = 100 * (on - off) / off
    print_table(f"Hot-path cost of metrics (ns/event, median of {ROUNDS})", ["pipeline", "ns/event", "overhead"],
                [["without metric updates", f"{off:,.0f}", ""], ["with the latency histogram", f"{on:,.0f}", f"{overhead:+.1f}%"]])
    write_results("metrics_overhead", {"ns_per_event_with": res[True], "ns_per_event_without": res[False], "overhead_pct": overhead})


if __name__ == "__main__":
    main()
