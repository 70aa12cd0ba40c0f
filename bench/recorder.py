"""Recorder throughput into the embedded ClickHouse, and the delay until a fill is durable.

Ours: a day of fills (`BENCH_FILLS`, default 1M) submitted to the `Recorder` as the pipeline
does (one queue put each), batched, converted to Arrow and inserted through
clickhouse-connect into chdb, until every row is durable. Baseline, same run: a bare
`insert_arrow` of the same rows (the Arrow table built beforehand, untimed) into a fresh
data directory. Target: ours >= 0.7x the baseline's rows/s. Also: p50/p99 of the delay
from `submit` to durable (written to ClickHouse or fsynced in the spool).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from common import percentile, print_table, write_results

from execstate.domain.events import FillEvent
from execstate.record.clickhouse import ClickHouseSink
from execstate.record.process_sink import ProcessSink
from execstate.record.recorder import Recorder
from execstate.record.rows import to_arrow
from execstate.record.spool import Spool
from execstate.telemetry.logging import configure_logging

N = int(os.environ.get("BENCH_FILLS", "1000000"))


def fills(n: int) -> list[FillEvent]:
    prices = [Decimal(100) + Decimal(i) / 20 for i in range(400)]
    base = 1_779_321_600_000_000_000 + 3600 * 10**9
    out = []
    for i in range(n):
        out.append(FillEvent(
            f"F:9A95-1234567:{i // 3:08x}:{i:07d}", "9A95-1234567", f"{i // 3:08x}", "000001", "Y0001", f"{i:07d}",
            ("momo", "meanrev", "unassigned")[i % 3], ("2330", "2317", "2890", "0050")[i % 4], ("2330", "2317", "2890", "0050")[i % 4],
            "STK", "Buy" if i % 2 else "Sell", prices[i % 400], 1000, Decimal(1), False, "Cash", "Common", "", "", base + i * 20_000, base + i * 20_000 + 5_000,
        ))
    return out


def record(sink, spool_dir: Path, events: list, batch_rows: int, rate: float | None = None) -> tuple[float, list[int], dict]:
    """Submit `events` to a Recorder over `sink` (paced at `rate`/s, or as fast as possible),
    wait until every one is durable; return (seconds, sorted submit->durable ns, stats)."""
    sink.ensure_schema()
    recorder = Recorder(sink, Spool(spool_dir, 1 << 32), batch_rows=batch_rows, batch_ms=200).start()
    t0 = time.perf_counter()
    for i, e in enumerate(events):
        if rate is not None:
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        recorder.submit(e)
    assert recorder.flush(timeout_s=600), "flush timed out"
    elapsed = time.perf_counter() - t0
    stats = recorder.stats()
    samples = sorted(recorder.durable_latency_ns.values())
    recorder.stop()
    return elapsed, samples, stats


def main() -> None:
    configure_logging(json=True, level="error")
    events = fills(N)
    root = Path(tempfile.mkdtemp(prefix="es-bench-rec-", dir="/tmp"))
    try:
        table = to_arrow("fills", events)
        sink = ClickHouseSink(f"chdb://{root / 'bare'}")
        sink.ensure_schema()
        client = sink._connected()
        t0 = time.perf_counter()
        for start in range(0, N, 100_000):  # insert in 100k-row blocks, as a careful bare client would
            client.insert_arrow("fills", table.slice(start, 100_000))
        bare = time.perf_counter() - t0
        sink.close()

        ours, lat, stats = record(ClickHouseSink(f"chdb://{root / 'ours'}"), root / "spool", events, batch_rows=100_000)
        _, paced, _ = record(ClickHouseSink(f"chdb://{root / 'paced'}"), root / "spool-paced", events[:30_000], batch_rows=10_000, rate=10_000)
        process_s, _, _ = record(ProcessSink(f"chdb://{root / 'process'}"), root / "spool-process", events, batch_rows=100_000)
        check = ClickHouseSink(f"chdb://{root / 'ours'}")
        stored = check.count("fills")
        check.close()
        assert stored == N, f"{stored} rows stored, {N} submitted"
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ratio = (N / ours) / (N / bare)
    print_table(f"Recording {N:,} fills into embedded ClickHouse (chdb), same run",
                ["path", "seconds", "rows/s", "vs bare"],
                [["bare insert_arrow (Arrow built beforehand)", f"{bare:.2f}", f"{N / bare:,.0f}", "1.00x"],
                 ["Recorder: submit -> batch -> Arrow -> insert", f"{ours:.2f}", f"{N / ours:,.0f}", f"{ratio:.2f}x"],
                 ["Recorder, writer in a child process (default)", f"{process_s:.2f}", f"{N / process_s:,.0f}", f"{bare / process_s:.2f}x"]])
    p50, p99 = percentile(lat, 50) / 1e6, percentile(lat, 99) / 1e6
    q50, q99 = percentile(paced, 50) / 1e6, percentile(paced, 99) / 1e6
    print(f"target >= 0.7x bare: {'met' if ratio >= 0.7 else 'NOT met'}")
    print(f"delay submit -> durable, burst of {N:,} (backlog): p50 {p50:,.1f} ms, p99 {p99:,.1f} ms")
    print(f"delay submit -> durable at 10k fills/s, batch_ms 200: p50 {q50:,.1f} ms, p99 {q99:,.1f} ms ({len(paced):,} samples)")
    write_results("recorder", {"fills": N, "bare_s": bare, "ours_s": ours, "ratio": ratio, "burst_durable_p50_ms": p50, "burst_durable_p99_ms": p99,
                               "paced_durable_p50_ms": q50, "paced_durable_p99_ms": q99, "process_s": process_s, "stats": stats})


if __name__ == "__main__":
    main()
