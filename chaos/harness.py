"""Chaos harness: a scenario injects faults into a simulated day and ends with three verdicts.

Entry points: `Scenario(name, injected, run, fast)`, `ScenarioResult`, `Check`,
`check_books(ours, truth)`, `check_rows(sink, truth_fills)`, `check_alerts(expected, fired)`,
`run_scenarios(scenarios)`, `render_table(results)`, `write_results(results, directory)`.

A scenario's `run()` returns a `ScenarioResult` with:
- `books`: execstate's books against the broker's truth (net quantity per account and symbol,
  and per strategy where attribution is known);
- `rows`: ClickHouse rows against the fills that happened (each deal once, after FINAL);
- `alerts`: alerts and halts against what should have fired (and what must not).
A check that does not apply is `Check.na()`. A scenario passes when every applicable check is
ok; an exception in `run()` is a failure that names the exception, never a crash of the run.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BookKey = tuple[str, str, str]  # (account, strategy, symbol)


@dataclass(frozen=True)
class Check:
    ok: bool | None  # None: not applicable to this scenario
    detail: str = ""

    @classmethod
    def na(cls, detail: str = "n/a") -> Check:
        return cls(None, detail)

    @property
    def mark(self) -> str:
        return "-" if self.ok is None else ("ok" if self.ok else "FAIL")


@dataclass
class ScenarioResult:
    name: str
    injected: str
    books: Check = field(default_factory=Check.na)
    rows: Check = field(default_factory=Check.na)
    alerts: Check = field(default_factory=Check.na)
    error: str = ""
    duration_s: float = 0.0
    facts: dict[str, Any] = field(default_factory=dict)  # counts worth showing (fills, drops, halts ...)

    @property
    def passed(self) -> bool:
        checks = (self.books, self.rows, self.alerts)
        return not self.error and all(c.ok is not False for c in checks) and any(c.ok for c in checks)


@dataclass(frozen=True)
class Scenario:
    name: str
    injected: str
    run: Callable[[], ScenarioResult]
    fast: bool = False  # part of the subset that runs inside `make test`


def _net(books: Mapping[BookKey, int]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for (account, _strategy, symbol), qty in books.items():
        out[(account, symbol)] = out.get((account, symbol), 0) + qty
    return {k: v for k, v in out.items() if v}


def _diff(ours: Mapping[Any, int], truth: Mapping[Any, int], limit: int = 3) -> str:
    keys = sorted(k for k in set(ours) | set(truth) if ours.get(k, 0) != truth.get(k, 0))
    shown = ", ".join(f"{k}: ours {ours.get(k, 0)} broker {truth.get(k, 0)}" for k in keys[:limit])
    return f"{len(keys)} differ ({shown}{' ...' if len(keys) > limit else ''})"


def check_books(ours: Mapping[BookKey, int], truth: Mapping[BookKey, int], *, by_strategy: bool = True) -> Check:
    """Net quantity per (account, symbol) must equal the broker's; with `by_strategy`, also
    per (account, strategy, symbol)."""
    net_ours, net_truth = _net(ours), _net(truth)
    if net_ours != net_truth:
        return Check(False, "net " + _diff(net_ours, net_truth))
    if by_strategy:
        a = {k: v for k, v in ours.items() if v}
        b = {k: v for k, v in truth.items() if v}
        if a != b:
            return Check(False, "by strategy " + _diff(a, b))
    return Check(True, f"{len(net_truth)} positions equal")


def check_rows(sink: Any, truth_fills: int, *, min_deltas: int | None = None) -> Check:
    """Every deal recorded once: trade rows (corrections excluded) after FINAL equal the truth,
    and no event id appears twice."""
    trades = sink.query("SELECT count() FROM fills FINAL WHERE correction = ''")[1][0][0]
    doubled = sink.query("SELECT count() - uniqExact(event_id) FROM fills FINAL")[1][0][0]
    if trades != truth_fills or doubled:
        return Check(False, f"{trades} fill rows for {truth_fills} deals, {doubled} doubled")
    if min_deltas is not None:
        deltas = sink.count("position_deltas")
        if deltas < min_deltas:
            return Check(False, f"{deltas} delta rows < {min_deltas}")
    return Check(True, f"{trades} fills once")


def check_alerts(expected: Iterable[str], fired: Iterable[str], *, forbidden: Iterable[str] = ()) -> Check:
    """Everything in `expected` fired and nothing in `forbidden` did (names: alert names or
    "HALT")."""
    expected, fired, forbidden = set(expected), set(fired), set(forbidden)
    missing, wrong = sorted(expected - fired), sorted(forbidden & fired)
    if missing or wrong:
        return Check(False, f"missing {missing}" * bool(missing) + (" " if missing and wrong else "") + f"unexpected {wrong}" * bool(wrong))
    return Check(True, ", ".join(sorted(expected)) or "none expected, none fired")


def run_scenarios(scenarios: Iterable[Scenario], *, progress: Callable[[str], None] = print) -> list[ScenarioResult]:
    results = []
    for sc in scenarios:
        progress(f"[chaos] {sc.name}: {sc.injected}")
        t0 = time.monotonic()
        try:
            result = sc.run()
        except Exception as exc:  # a scenario that blows up is a failed scenario, not a dead run
            result = ScenarioResult(sc.name, sc.injected, error=f"{type(exc).__name__}: {exc}"[:500])
            result.facts["traceback"] = traceback.format_exc()[-2000:]
        result.duration_s = round(time.monotonic() - t0, 2)
        progress(f"[chaos] {sc.name}: {'pass' if result.passed else 'FAIL'} in {result.duration_s} s")
        results.append(result)
    return results


def render_table(results: list[ScenarioResult]) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="execstate chaos", show_lines=False)
    for col in ("scenario", "injected", "books", "rows", "alerts", "s", "result"):
        table.add_column(col, overflow="fold")
    for r in results:
        table.add_row(r.name, r.injected, f"{r.books.mark} {r.books.detail}", f"{r.rows.mark} {r.rows.detail}",
                      f"{r.alerts.mark} {r.alerts.detail}", f"{r.duration_s:.1f}",
                      "pass" if r.passed else f"FAIL {r.error}".strip())
    console = Console(width=200, record=True)
    with console.capture() as cap:
        console.print(table)
        console.print(f"{sum(r.passed for r in results)}/{len(results)} scenarios passed")
    return cap.get()


def write_results(results: list[ScenarioResult], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "chaos.json"
    payload = {"ts": time.time(), "passed": all(r.passed for r in results),
               "scenarios": [{**asdict(r), "passed": r.passed} for r in results]}
    path.write_text(json.dumps(payload, indent=1, default=str))
    (directory / "chaos.txt").write_text(render_table(results))
    return path
