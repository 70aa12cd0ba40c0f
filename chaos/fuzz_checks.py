"""The normalizer fuzz's oracle checks on one example (one batch of hostile payloads), for
`chaos.fuzz` (the budget loop, atheris) and `chaos.fuzz_day`; the assertions are listed in
`chaos.fuzz`'s docstring.

Entry points: `check_example(recipes, resends, n0, work, replay=True) -> Tally` (raises
`Violation`), `JsonLogs(path)` (structlog as in production, to a file, for a `with` block),
`reason_class(reason)`, `Tally`.
Invariant: nothing here imports `execstate` at module level (`run_atheris` must import it
first, under instrumentation); `chaos` must be importable (`chaos.fuzz` puts the repo root
and `src` on `sys.path`).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos import hostile as h

DEFAULT_BUDGET_S = 60.0
FAST_BUDGET_S = 5.0
KEPT_JSON_MAX = 256 * 1024  # a dead letter's payload, as recorded, must stay under this
REASON_MAX = 500
_FIELD = re.compile(r"^(?P<field>state|<payload>|correction|journal line \d+|[A-Za-z_][\w]*(?:\.[\w]+)*)(?:=|: | quantity)")
_BROKEN = ("internal error", "unparseable payload")
TAGS = {"MOMO": "momo", "MREV": "meanrev", "FTRD": "fut_trend"}


def _settings(state_dir: Path | None = None, **extra: Any) -> Any:
    from execstate.config import parse_settings

    raw: dict[str, Any] = {"strategies": {"tags": TAGS},
                           "runtime": {"gc_freeze_after_start": False, "switch_interval_us": 0, "gc_gen0_threshold": 0}}
    if state_dir is not None:
        raw["state_dir"] = str(state_dir)
    raw.update(extra)
    return parse_settings(raw)


# --- one example ------------------------------------------------------------------------------

@dataclass
class Tally:
    examples: int = 0
    cases: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    undecided: int = 0  # cases the oracle left to the implementation (EITHER)
    exotic: int = 0
    replayed: int = 0
    reasons: Counter = field(default_factory=Counter)  # reason class -> count
    raw_reasons: set = field(default_factory=set)

    def add(self, other: Tally) -> None:
        for name in ("examples", "cases", "accepted", "rejected", "duplicates", "undecided", "exotic", "replayed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.reasons.update(other.reasons)
        self.raw_reasons |= other.raw_reasons


class Violation(AssertionError):
    """A broken promise of the pipeline on hostile input."""


def _ensure(ok: bool, what: str) -> None:
    if not ok:
        raise Violation(what)


def reason_class(reason: str) -> str:
    """A reason without its value: `price=nan: expected float >= 0.0` -> `price: expected float >= 0.0`."""
    m = _FIELD.match(reason)
    head = m.group("field") if m else reason[:20]
    tail = reason.split(": ", 1)[1] if ": " in reason else ""
    tail = re.sub(r"'[^']*'|\d+(\.\d+)?(e[+-]?\d+)?", "#", tail)[:70]
    return f"{head}: {tail}"


def _plain_keys(state: Any, msg: Any) -> tuple[str, ...] | None:
    """The dedupe keys the contract names for a payload the normalizer accepted: the natural
    key and the broker's event id (None when it cannot be read)."""
    try:
        name = getattr(state, "value", state)
        name = {"StockOrder": "SORDER", "StockDeal": "SDEAL", "FuturesOrder": "FORDER", "FuturesDeal": "FDEAL"}.get(name, name)
        if not isinstance(msg, dict) and hasattr(msg, "items"):
            msg = dict(msg.items())
        if name in ("SDEAL", "FDEAL"):
            natural = f"F:{msg['broker_id']}-{msg['account_id']}:{msg['trade_id']}:{msg['exchange_seq']}"
        else:
            o, s = msg["order"], msg["status"]
            ts_us = round(s["exchange_ts"] * 1_000_000)
            natural = f"O:{o['account']['broker_id']}-{o['account']['account_id']}:{o['id']}:{msg['operation']['op_type']}:{ts_us}"
        event_id = msg.get("event_id", "")
    except Exception:
        return None
    return (natural, f"E:{event_id}") if event_id else (natural,)


def _walk_keys(value: Any, depth: int = 0) -> Any:
    if depth > 64:
        return
    if type(value) is dict:
        for k, v in value.items():
            yield k
            yield from _walk_keys(v, depth + 1)
    elif type(value) is list:
        for v in value:
            yield from _walk_keys(v, depth + 1)


def _check_dead(dead: Any, verdict: h.Verdict, original_is_object: bool) -> None:
    from execstate.record.rows import dead_letter_json

    reason = dead.reason
    _ensure(type(reason) is str and reason.strip() != "", f"dead letter without a reason: {reason!r}")
    _ensure(len(reason) <= REASON_MAX, f"reason of {len(reason)} characters: {reason[:80]!r}...")
    _ensure(not h.has_surrogate(reason), f"reason with a lone surrogate: {reason[:80]!r}")
    m = _FIELD.match(reason)
    _ensure(m is not None or (verdict.exotic and reason.startswith(_BROKEN)), f"reason names no field: {reason[:200]!r}")
    if not verdict.exotic:
        _ensure(not reason.startswith(_BROKEN), f"plain JSON input broke the normalizer: {reason[:200]!r} ({'; '.join(verdict.why)})")
        if verdict.fields and m is not None:
            named = m.group("field")
            blamed = verdict.fields | {f.rsplit(".", 1)[0] for f in verdict.fields if "." in f}
            # a lone surrogate is refused in any text the parser reads, also in fields the oracle's
            # spec does not list (e.g. order.account.account_type): such a reason is right as well
            surrogate = reason.endswith("expected text without lone surrogates")
            _ensure(named in blamed or surrogate, f"reason {reason[:160]!r} names {named!r}, the oracle blames {sorted(verdict.fields)}")
    _ensure(type(dead.state) is str and len(dead.state) <= 40 and not h.has_surrogate(dead.state), f"dead letter state {dead.state[:60]!r}")
    text = dead_letter_json(dead.msg)
    _ensure(len(text) <= KEPT_JSON_MAX, f"dead letter keeps {len(text)} characters of payload (bounded copy expected)")
    _ensure("person_id" not in set(_walk_keys(dead.msg)), "dead letter keeps a person_id member")
    if original_is_object:  # (a payload that is a JSON text is kept as text: nothing reads inside strings)
        _ensure(h.PERSON_ID not in text, "dead letter keeps a person_id value")
    if original_is_object and not verdict.exotic:
        _ensure(isinstance(dead.msg, dict), f"dead letter lost the payload: {str(dead.msg)[:120]!r}")


def _outcomes(pipeline: Any, events: list[Any], n: int) -> tuple[dict[int, str], dict[int, Any]]:
    """Per ts_recv (1..n): "event" | "dead" | "duplicate", and the dead letters by ts_recv."""
    seen: Counter = Counter()
    out: dict[int, str] = {}
    deads: dict[int, Any] = {}
    for ev in events:
        seen[ev.ts_recv] += 1
        out[ev.ts_recv] = "event"
    for dead in pipeline.dead_letters:
        seen[dead.ts_recv] += 1
        out[dead.ts_recv] = "dead"
        deads[dead.ts_recv] = dead
    twice = [ts for ts, c in seen.items() if c > 1]
    _ensure(not twice, f"payloads accounted for more than once (ts_recv {twice[:5]})")
    stray = [ts for ts in seen if not 1 <= ts <= n]
    _ensure(not stray, f"events or dead letters for payloads never sent (ts_recv {stray[:5]})")
    for ts in range(1, n + 1):
        out.setdefault(ts, "duplicate")
    return out, deads


def _small_stats() -> Any:
    """PipelineStats with a 1k-sample latency ring: the default (1M samples, 8 MB zeroed per
    pipeline) would cost more than the batch itself, and the fuzz never reads it."""
    from execstate.telemetry.stats import LatencySamples, PipelineStats

    return PipelineStats(latency_ns=LatencySamples(1024))


def _run_pipeline(raws: list[tuple], journal: Path | None) -> tuple[Any, list[Any]]:
    from execstate import app
    from execstate.bus import TOPIC_DELTA, TOPIC_FILL, TOPIC_ORDER

    real, app.PipelineStats = app.PipelineStats, _small_stats  # type: ignore[assignment]
    try:
        pipeline = app.Pipeline(_SETTINGS, journal_path=journal)
    finally:
        app.PipelineStats = real  # type: ignore[assignment]
    events: list[Any] = []
    pipeline.bus.subscribe(TOPIC_FILL, events.append)
    pipeline.bus.subscribe(TOPIC_ORDER, events.append)
    pipeline.deltas = []  # type: ignore[attr-defined]
    pipeline.bus.subscribe(TOPIC_DELTA, pipeline.deltas.append)  # type: ignore[attr-defined]
    try:
        pipeline.process_batch(raws)
    except BaseException as exc:  # the promise under test: nothing escapes
        raise Violation(f"exception escaped process_batch: {type(exc).__name__}: {str(exc)[:300]}") from exc
    finally:
        pipeline.stop()
    return pipeline, events


_SETTINGS: Any = None


def check_example(recipes: list[h.Recipe], resends: list[int], n0: int, work: Path, *, replay: bool = True) -> Tally:
    """Build, process and check one batch (see the module docstring). `n0`: first identifier number."""
    import msgspec

    from execstate.bridge.journal import JournalReader
    from execstate.domain.events import FillEvent
    from execstate.record.rows import to_arrow
    from execstate.telemetry.metrics import MetricSources, registry_for

    global _SETTINGS
    if _SETTINGS is None:
        _SETTINGS = _settings()
    tally = Tally(examples=1)
    cases: list[tuple[Any, Any, h.Verdict]] = []
    for i, r in enumerate(recipes):
        state, msg = r.build(n0 + i)
        cases.append((state, msg, h.judge(state, msg)))
    for j in resends:  # the broker delivering an earlier payload again, as is or with a new field
        state, msg, verdict = cases[j % len(cases)]
        if verdict.exotic:
            continue
        again = {**msg, "redelivered": True} if type(msg) is dict else msg
        cases.append((state, again, h.judge(state, again)))
    raws = [(i + 1, state, msg) for i, (state, msg, _) in enumerate(cases)]
    journal = work / "journal.jsonl"
    journal.unlink(missing_ok=True)
    pipeline, events = _run_pipeline(raws, journal)
    n = len(raws)
    tally.cases = n
    outcome, deads = _outcomes(pipeline, events, n)
    stats = pipeline.stats
    counted = Counter(outcome.values())
    _ensure(stats.duplicates == counted["duplicate"], f"duplicate counter {stats.duplicates} != {counted['duplicate']} payloads without event or dead letter (silently lost?)")
    _ensure(stats.dead_letters == len(pipeline.dead_letters) == counted["dead"], f"dead-letter counter {stats.dead_letters}, kept {len(pipeline.dead_letters)}, rejected payloads {counted['dead']}")
    _ensure(stats.fills + stats.orders == counted["event"], f"fill+order counters {stats.fills + stats.orders} != {counted['event']} events")
    metric = registry_for(MetricSources(stats=stats)).get_sample_value("execution_events_total", {"type": "dead_letter"})
    _ensure(metric == counted["dead"], f'execution_events_total{{type="dead_letter"}} = {metric}, {counted["dead"]} rejected')

    seen_keys: set[str] = set()
    for i, (state, msg, verdict) in enumerate(cases):
        got = outcome[i + 1]
        where = f"payload {i + 1} ({recipes[i].describe() if i < len(recipes) else 'redelivery'})"
        keys = _plain_keys(state, msg) if got != "dead" else None
        if verdict.outcome == h.REJECT:
            _ensure(got == "dead", f"{where}: expected a dead letter ({'; '.join(verdict.why)}), got {got}")
        elif verdict.outcome == h.ACCEPT:
            keys = _plain_keys(state, msg)
            dup = keys is not None and any(k in seen_keys for k in keys)
            want = "duplicate" if dup else "event"
            _ensure(got == want, f"{where}: expected {want} (accepted by the contract), got {got}"
                    + (f": {deads[i + 1].reason[:200]!r}" if got == "dead" else ""))
        if got in ("event", "duplicate") and keys is not None:
            seen_keys.update(keys)
        if got == "dead":
            _check_dead(deads[i + 1], verdict, isinstance(msg, dict) or (hasattr(msg, "items") and not isinstance(msg, (str, bytes))))
            tally.rejected += 1
            tally.reasons[reason_class(deads[i + 1].reason)] += 1
            tally.raw_reasons.add(deads[i + 1].reason)
        elif got == "event":
            tally.accepted += 1
        else:
            tally.duplicates += 1
        tally.undecided += verdict.outcome == h.EITHER
        tally.exotic += verdict.exotic

    # recordable and encodable
    try:
        if pipeline.dead_letters:
            to_arrow("dead_letters", list(pipeline.dead_letters))
    except Exception as exc:
        raise Violation(f"dead letters cannot be recorded: {type(exc).__name__}: {str(exc)[:200]}") from exc
    fills = [e for e in events if type(e) is FillEvent]
    orders = [e for e in events if type(e) is not FillEvent]
    snapshot = pipeline.snapshot()
    for table, rows in (("fills", fills), ("orders", orders), ("position_deltas", pipeline.deltas), ("position_snapshots", [snapshot])):
        try:
            if rows:
                to_arrow(table, rows)
            msgspec.json.encode(rows)
        except Exception as exc:
            raise Violation(f"accepted {table} cannot be recorded or encoded: {type(exc).__name__}: {str(exc)[:200]}") from exc
    # books: exactly the accepted fills
    want: Counter = Counter()
    for f in fills:
        want[(f.account, f.strategy, f.symbol)] += f.quantity if f.side == "Buy" else -f.quantity
    books = {k: s.quantity for k, s in pipeline.store.publish().positions.items()}
    _ensure({k: v for k, v in books.items() if v} == {k: v for k, v in want.items() if v}, f"books {books} != accepted fills {dict(want)}")
    try:
        msgspec.json.encode(snapshot)
    except Exception as exc:
        raise Violation(f"snapshot cannot be encoded: {type(exc).__name__}: {exc}") from exc

    # replay the journal: plain JSON payloads get the same outcome
    if replay and not any(v.exotic and outcome[i + 1] != "dead" for i, (_, _, v) in enumerate(cases)):
        reader = JournalReader(journal)
        replayed = list(reader)
        _ensure(not reader.bad_lines, f"journal lines unreadable: {reader.bad_lines[:3]}")
        again, again_events = _run_pipeline(replayed, None)
        again_outcome, _ = _outcomes(again, again_events, n)
        for i, (_, _, v) in enumerate(cases):
            if v.exotic:
                continue
            _ensure(again_outcome[i + 1] == outcome[i + 1], f"payload {i + 1}: live {outcome[i + 1]}, journal replay {again_outcome[i + 1]}")
            tally.replayed += 1
    return tally



class JsonLogs:
    """structlog writing JSON lines (info and up) to a temp file for the run, then what was before."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> JsonLogs:
        import structlog

        from execstate.telemetry.logging import configure_logging

        self._was = structlog.is_configured()
        self._old = structlog.get_config()
        self._fh = self.path.open("w", encoding="utf-8")  # strict UTF-8: a lone surrogate in a log line would raise
        configure_logging(json=True, level="info", stream=self._fh)
        return self

    def __exit__(self, *exc: Any) -> None:
        import structlog

        if self._was:
            structlog.configure(**self._old)
        else:
            structlog.reset_defaults()
        self._fh.close()
