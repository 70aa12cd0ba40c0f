"""Shared helpers for benchmarks: synthetic Shioaji payloads, percentiles, tables, results.

Every benchmark compares against a baseline measured in the same process and run, and
reports medians, tails and ratios rather than single times (machines here are shared).
"""

from __future__ import annotations

import json
import os
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "src"))

STOCKS = ["2330", "2317", "2454", "2890", "2881", "2882", "2303", "1301", "2002", "0050", "00878", "2412"]
TAGS = ["MOMO", "MREV", ""]
ACCOUNT = {"account_type": "S", "person_id": "", "broker_id": "9A95", "account_id": "1234567", "signed": True, "username": ""}


def _stock_order(oid: str, code: str, side: str, price: float, lots: int, tag: str, ts: float, n: int) -> dict:
    return {
        "event_id": f"evt-o{n}",
        "operation": {"op_type": "New", "op_code": "00", "op_msg": ""},
        "order": {"id": oid, "seqno": f"{n % 1000000:06d}", "ordno": f"Y{n % 100000:05d}"[:5], "account": dict(ACCOUNT),
                  "action": side, "price": price, "quantity": lots, "time_in_force": "ROD", "order_type": "ROD",
                  "price_type": "LMT", "order_cond": "Cash", "order_lot": "Common", "custom_field": tag},
        "status": {"id": oid, "exchange_ts": ts, "modified_price": 0.0, "cancel_quantity": 0, "order_quantity": lots, "web_id": "137"},
        "contract": {"exchange": "TSE", "code": code, "security_type": "STK", "symbol": "", "name": "", "currency": "TWD"},
    }


def _stock_deal(oid: str, code: str, side: str, price: float, lots: int, tag: str, ts: float, n: int, k: int) -> dict:
    return {
        "event_id": f"evt-d{n}-{k}", "trade_id": oid, "seqno": f"{n % 1000000:06d}", "ordno": f"Y{n % 100000:05d}"[:5],
        "exchange_seq": f"{n:07d}{k}", "broker_id": "9A95", "account_id": "1234567", "action": side, "code": code,
        "order_cond": "Cash", "order_lot": "Common", "price": price, "quantity": lots, "web_id": "137",
        "custom_field": tag, "ts": ts,
    }


def synthetic_events(n_events: int, seed: int = 7, deals_per_order: int = 2, symbols: list[str] | None = None) -> list[tuple[str, dict]]:
    """A stream of stock order (New) and deal events: each order then its partial fills."""
    rnd = random.Random(seed)
    codes = symbols or STOCKS
    prices = {code: 100.0 + 10 * i for i, code in enumerate(codes)}
    events: list[tuple[str, dict]] = []
    ts = 1_779_321_600.0 + 3600  # 2026-05-21 09:00 Taipei
    n = 0
    while len(events) < n_events:
        n += 1
        code = rnd.choice(codes)
        side = rnd.choice(("Buy", "Sell"))
        lots = deals_per_order * rnd.randint(1, 3)
        tag = rnd.choice(TAGS)
        oid = f"{rnd.getrandbits(32):08x}"
        price = round(prices[code] + 0.05 * rnd.randint(-40, 40), 2)
        ts += 0.001
        events.append(("SORDER", _stock_order(oid, code, side, price, lots, tag, ts, n)))
        for k in range(deals_per_order):
            ts += 0.001
            events.append(("SDEAL", _stock_deal(oid, code, side, price, lots // deals_per_order, tag, ts, n, k)))
    return events[:n_events]


def production_logging(name: str) -> Path:
    """Log as `execstate run` does in production (JSON lines at info, `position_adjusted` lines
    included), to a temporary file rather than stderr; returns the file's path."""
    import tempfile

    from execstate.telemetry.logging import configure_logging

    path = Path(tempfile.mkdtemp(prefix="execstate-bench-log-")) / f"{name}.jsonl"
    configure_logging(json=True, level="info", file=path, console_level="warning")
    return path


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    idx = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[idx]


def median(values: list[float]) -> float:
    return percentile(sorted(values), 50)


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))


def write_results(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    meta = {"python": sys.version.split()[0], "machine": platform.machine(), "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path.write_text(json.dumps({"meta": meta, **data}, indent=2, default=str))
    print(f"results written to {path.relative_to(ROOT)}")
    return path
