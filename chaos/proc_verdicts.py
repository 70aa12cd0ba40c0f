"""Verdicts shared by the process-level chaos scenarios (`chaos.process_kill`, `chaos.process_db`)
on a `chaos.procs.Day`: books against the truth and an uninterrupted run, rows in ClickHouse,
alerts, orphaned children, and the failure record with the service's last words.

Entry points: `compare_books`, `_play_out` (finish the day: books, status, SIGTERM exit code),
`_rows_check`, `_alerts_check`, `_orphan_facts`, `_failed`.
Invariant: `_rows_check` runs only once the service has stopped (it closes the HTTP fixture to
read the chdb data directory directly).
"""

from __future__ import annotations

from chaos.harness import Check, ScenarioResult, check_alerts, check_rows
from chaos.procs import BOOK_FIELDS, FORBIDDEN, Day


def _quantities(rows: list[dict]) -> dict[tuple[str, str, str], int]:
    return {(r["account"], r["strategy"], r["symbol"]): int(r["quantity"]) for r in rows}


def _rows_by_key(rows: list[dict]) -> dict[tuple[str, str, str], tuple[str, ...]]:
    return {(r["account"], r["strategy"], r["symbol"]): tuple(r[f] for f in BOOK_FIELDS) for r in rows}


def compare_books(ours: list[dict], reference: list[dict], limit: int = 3) -> Check:
    """Positions rows identical (every key, and quantity, avg price, realized PnL, fees, taxes)."""
    a, b = _rows_by_key(ours), _rows_by_key(reference)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if not keys:
        return Check(True, f"= uninterrupted run ({len(a)} rows)")
    shown = "; ".join(f"{'/'.join(k)}: {a.get(k)} vs {b.get(k)}" for k in keys[:limit])
    return Check(False, f"{len(keys)} rows differ from the uninterrupted run ({BOOK_FIELDS}): {shown}{' ...' if len(keys) > limit else ''}")


def _both(first: Check, second: Check) -> Check:
    if first.ok is False or second.ok is False:
        return Check(False, "; ".join(c.detail for c in (first, second) if c.ok is False))
    return Check(True, f"{first.detail}; {second.detail}")


def _tail(day: Day, n: int = 1500) -> str:
    texts = list(day.logs) + ([day.proc.stderr_text()] if day.proc is not None else [])
    return texts[-1][-n:] if texts else ""


def _failed(result: ScenarioResult, exc: Exception, day: Day | None) -> None:
    import traceback

    result.error = f"{type(exc).__name__}: {exc}"[:500]
    result.facts["traceback"] = traceback.format_exc()[-2000:]
    if day is not None:
        result.facts["log_tail"] = _tail(day)


def _orphan_facts(day: Day, result: ScenarioResult) -> None:
    """Children of killed incarnations must have exited by themselves (else: killed, and an error)."""
    day.orphans.wait()
    result.facts.update(children_killed=day.orphans.killed, slowest_child_exit_s=round(day.orphans.slowest_exit_s, 1))
    if day.orphans.killed:
        result.error = f"{day.orphans.killed} child processes outlived a SIGKILLed service by {day.orphans.grace_s:g} s"


def _rows_check(day: Day) -> Check:
    """`check_rows` on what reached ClickHouse: once the service has stopped, the fixture is
    closed (it releases the chdb path) and the data directory is read directly."""
    from execstate.record.clickhouse import ClickHouseSink

    assert day.proc is None and day.clickhouse is not None
    day.clickhouse.close()
    sink = ClickHouseSink(f"chdb://{day.work / 'ch'}")
    try:
        return check_rows(sink, len(day.session.fills), min_deltas=len(day.session.fills))
    finally:
        sink.close()


def _play_out(day: Day) -> tuple[list[dict], dict, int]:
    """Let the running incarnation finish the day, then (books, status, exit code of SIGTERM)."""
    day.wait_day_played()
    books, status = day.books(), day.final_status()
    if day.clickhouse is not None:
        day.wait_recorded()
    return books, status, day.terminate()


def _alerts_check(day: Day, status: dict, expected: tuple[str, ...] = ()) -> tuple[Check, set[str]]:
    fired = day.fired() | ({"HALT"} if status["halt"]["halted"] else set())
    fired |= {f"{e['alert']} ({e['cause']})" for e in day.log_events("alert_firing") if e.get("cause")}
    return check_alerts(expected, fired, forbidden=FORBIDDEN), fired
