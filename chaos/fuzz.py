"""The normalizer fuzz target and the hostile-payload scenarios of `make chaos`.

Usage: `python -m chaos.fuzz [--budget-s 60] [--engine hypothesis|atheris] [--seed N] [--json]`.
Entry points: `run_fuzz(budget_s, seed=None) -> FuzzReport`, `check_example(recipes, resends, n0, work)`,
`JsonLogs(path)` (structlog as in production, to a file, for a `with` block),
`run_atheris(budget_s)`, `hostile_day(seed, orders)`, `scenarios(fast) -> list[Scenario]`.

The fuzz: Hypothesis draws batches of hostile payloads (`chaos.hostile`) and each batch goes
through the real `Pipeline.process_batch` (journal to a temp file, structlog configured to
write JSON lines to a temp file, so the journal, the log renderers and the dead-letter path
all see the hostile input), for a fixed time budget. Per batch it asserts:
- no exception escapes `process_batch`;
- each payload is accounted for exactly once: one event (order or fill), one duplicate, or one
  dead letter (events and dead letters carry the payload's `ts_recv`; duplicates are the
  rest and equal the duplicate counter);
- the outcome is the oracle's (`hostile.judge`) where it decides: rejected payloads are dead
  letters, accepted ones are events unless the contract's dedupe (event id, natural key) makes
  them duplicates;
- every dead letter has a reason naming a field (one the oracle blames) or the problem, is
  never an internal error for plain JSON input, keeps the payload bounded (a 1 MB string is
  not kept whole) without any `person_id`, and can be recorded (Arrow rows of `dead_letters`);
- the dead-letter counter and `execution_events_total{type="dead_letter"}` (through the
  Prometheus collector) equal the dead letters kept;
- accepted events, their position deltas and the snapshot can be recorded (Arrow rows of their
  tables) and JSON-encoded; books are the signed sum of the accepted fills (a rejected payload
  never touches them);
- a replay of the batch's journal gives every plain-JSON payload the same outcome.
A violation is shrunk by Hypothesis and reported with the minimal batch.

Scenarios: "normalizer fuzz <budget>s" (budget from EXECSTATE_FUZZ_BUDGET_S, else 60 s, 5 s
fast); with atheris installed (the `chaos` extra) and not fast, "normalizer fuzz (atheris)" for
half that budget in a child process; and "hostile payloads in a live day": a simulated day delivered through the real
bridge callback with rejected and accepted-but-duplicate hostile payloads interleaved, then
books against the broker's truth (and again after a journal replay), rows in ClickHouse
(each deal once, each dead letter once with its reason, bounded, without `person_id`), and
the in-process alert rules (none may fire; there is no dead-letter alert).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _extra in (ROOT / "src", ROOT):
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))

from chaos import hostile as h  # noqa: E402
from chaos.harness import Check, Scenario, ScenarioResult, check_alerts, check_books  # noqa: E402

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


# --- the budget loop --------------------------------------------------------------------------

@dataclass
class FuzzReport:
    engine: str
    budget_s: float
    seed: int
    elapsed_s: float = 0.0
    rounds: int = 0
    tally: Tally = field(default_factory=Tally)
    failure: str = ""
    failing_example: str = ""

    @property
    def cases_per_s(self) -> float:
        return self.tally.cases / self.elapsed_s if self.elapsed_s else 0.0

    def facts(self) -> dict[str, Any]:
        t = self.tally
        return {"engine": self.engine, "seed": self.seed, "budget_s": self.budget_s, "elapsed_s": round(self.elapsed_s, 1),
                "examples": t.examples, "cases": t.cases, "cases_per_s": round(self.cases_per_s),
                "accepted": t.accepted, "rejected": t.rejected, "duplicates": t.duplicates, "undecided_by_oracle": t.undecided,
                "exotic": t.exotic, "replayed": t.replayed, "distinct_reasons": len(t.raw_reasons),
                "reason_classes": len(t.reasons), "exceptions": 1 if "escaped" in self.failure else 0,
                "top_reasons": dict(t.reasons.most_common(12)), "failure": self.failure, "failing_example": self.failing_example}


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


def run_fuzz(budget_s: float, seed: int | None = None, *, batch_max: int = 12, round_examples: int = 100) -> FuzzReport:
    """Hypothesis for `budget_s` seconds of wall time (the last example may finish after it)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hyp_seed
    from hypothesis import strategies as st

    seed = random.randrange(1 << 32) if seed is None else seed
    report = FuzzReport("hypothesis", budget_s, seed)
    work = Path(tempfile.mkdtemp(prefix="execstate-fuzz-"))
    counter = [1]
    last: list[Any] = [None]
    failing = [False]
    start = time.monotonic()
    deadline = start + budget_s
    recipes = st.lists(h.hostile_recipes(), min_size=1, max_size=batch_max)
    resends = st.lists(st.integers(0, batch_max - 1), max_size=3)

    @settings(max_examples=round_examples, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.generate, Phase.shrink], print_blob=False, report_multiple_bugs=False)
    @given(recipes, resends)
    def example(batch: list[h.Recipe], again: list[int]) -> None:
        if time.monotonic() > deadline and not failing[0]:
            return  # budget spent: the rest of the round passes through
        last[0] = (batch, again)
        n0 = counter[0]
        counter[0] += len(batch) + 1
        try:
            tally = check_example(batch, again, n0, work)
        except BaseException:
            failing[0] = True  # Hypothesis shrinks now: never skip again
            raise
        report.tally.add(tally)

    try:
        with JsonLogs(work / "fuzz-log.jsonl"):
            while time.monotonic() < deadline:
                hyp_seed(seed + report.rounds)(example)()
                report.rounds += 1
    except Exception as exc:
        report.failure = f"{type(exc).__name__}: {exc}"[:1500]
        if last[0] is not None:
            batch, again = last[0]
            report.failing_example = "; ".join(r.describe() for r in batch) + (f"; redeliver {again}" if again else "")
            report.failing_example += "\n" + _repr_limited(batch)
    finally:
        report.elapsed_s = time.monotonic() - start
        shutil.rmtree(work, ignore_errors=True)
    return report


def _repr_limited(batch: list[h.Recipe], limit: int = 4000) -> str:
    text = h.srepr([(r.state, r.mutations) for r in batch], limit)
    return text if len(text) <= limit else text[:limit] + "..."


# --- atheris (optional second engine) ---------------------------------------------------------

def run_atheris(budget_s: float, stats_path: Path | None = None) -> int:
    """libFuzzer (atheris) driving the same Hypothesis test through `fuzz_one_input`, with
    coverage of `execstate`'s code guiding it. Runs in this process until `budget_s` or the
    first violation (atheris then exits the process, the failing input under a temp directory).
    Call before anything imports `execstate` (its modules are instrumented as they load)."""
    import atheris  # the `chaos` extra: pip install -e '.[chaos]'

    if "execstate" in sys.modules:
        raise RuntimeError("run_atheris: execstate is already imported, so it cannot be instrumented")
    with atheris.instrument_imports(include=["execstate"]):
        import execstate.app  # noqa: F401  (and, through it, the normalizer, journal, payload helpers)
        import execstate.record.rows  # noqa: F401
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    work = Path(tempfile.mkdtemp(prefix="execstate-atheris-"))
    tally = Tally()
    counter = [1]
    started = time.monotonic()

    @settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(h.hostile_recipes(), min_size=1, max_size=12), st.lists(st.integers(0, 11), max_size=3))
    def example(batch: list[h.Recipe], again: list[int]) -> None:
        n0 = counter[0]
        counter[0] += len(batch) + 1
        tally.add(check_example(batch, again, n0, work))
        if stats_path is not None and tally.examples % 50 == 0:
            _write_stats(stats_path, tally, time.monotonic() - started)

    logs = JsonLogs(work / "fuzz-log.jsonl").__enter__()
    import atexit

    atexit.register(lambda: (_write_stats(stats_path, tally, time.monotonic() - started) if stats_path else None, logs.__exit__()))
    artifacts = Path(tempfile.mkdtemp(prefix="execstate-atheris-crashes-"))
    atheris.Setup([sys.argv[0], f"-max_total_time={max(1, int(budget_s))}", "-rss_limit_mb=4096", "-timeout=60", "-max_len=4096",
                   f"-artifact_prefix={artifacts}/"], example.hypothesis.fuzz_one_input)
    atheris.Fuzz()
    return 0


def _write_stats(path: Path, tally: Tally, elapsed: float) -> None:
    data = {"examples": tally.examples, "cases": tally.cases, "accepted": tally.accepted, "rejected": tally.rejected,
            "duplicates": tally.duplicates, "distinct_reasons": len(tally.raw_reasons), "elapsed_s": round(elapsed, 1)}
    path.write_text(json.dumps(data))


# --- hostile payloads in a live day -----------------------------------------------------------

ACCEPTED_EXTRAS: tuple[tuple[str, Any], ...] = (  # unknown fields on a real payload: accepted (or a duplicate of it)
    ("extra_field", "x"), ("huge_extra", h.Big(h.BIG)), ("deep_extra", h.Deep(50)), ("surrogate_extra", "ab\udfff"),
    ("nan_extra", float("nan")), ("person_id", h.PERSON_ID), ("nested", {"person_id": h.PERSON_ID, "list": [1, None, "\ud800"]}),
)


@dataclass
class DayPlan:
    items: list[tuple[Any, Any, str]]  # (state, msg, kind): kind "real" | "reject" | "accept"
    rejects: int
    accepts: int
    families: Counter


def plan_day(session: Any, rng: random.Random, share: float = 0.12) -> DayPlan:
    """The session's delivered events with hostile payloads interleaved: mutations of the
    event about to arrive that the contract rejects, and copies of it with unknown fields
    (accepted, or duplicates of the real one)."""
    import shioaji as sj

    items: list[tuple[Any, Any, str]] = []
    rejects = accepts = 0
    families: Counter = Counter()
    for state, msg in session.events:
        if rng.random() < share:
            if rng.random() < 0.75:
                recipe, bstate, bmsg, _ = h.day_recipe(rng, state, msg)
                items.append((bstate, bmsg, "reject"))
                families.update(m[0] if m[0] != "set" else "set:" + str(m[1][-1]) for m in recipe.mutations)
                rejects += 1
            else:
                key, value = ACCEPTED_EXTRAS[rng.randrange(len(ACCEPTED_EXTRAS))]
                items.append((sj.OrderState(state), {**msg, key: h.materialize(value)}, "accept"))
                families["accepted extra " + key] += 1
                accepts += 1
        items.append((sj.OrderState(state), msg, "real"))
    return DayPlan(items, rejects, accepts, families)


class _CallbackOnly:
    """The three registrations the bridge makes; the test delivers through the order callback."""

    order_cb: Any = None

    def set_order_callback(self, cb: Any) -> None:
        self.order_cb = cb

    def set_event_callback(self, cb: Any) -> None:
        pass

    def set_session_down_callback(self, cb: Any) -> None:
        pass


def hostile_day(seed: int = 11, orders: int = 150, share: float = 0.12) -> ScenarioResult:
    from execstate.app import Pipeline
    from execstate.bridge.shioaji_adapter import ShioajiBridge
    from execstate.bridge.sim import SimConfig, generate_session
    from execstate.jobs import replay_journal_into
    from execstate.normalize.intents import IntentRegistry
    from execstate.reconcile.halt import HaltState
    from execstate.record.clickhouse import ClickHouseSink
    from execstate.record.recorder import Recorder
    from execstate.record.spool import Spool
    from execstate.telemetry.alerts import AlertEvaluator, InputsReader, rules_for
    from execstate.telemetry.metrics import MetricSources

    name = "hostile payloads in a live day"
    session = generate_session(SimConfig(seed=seed, n_orders=orders, person_id=h.PERSON_ID))
    plan = plan_day(session, random.Random(seed))
    injected = (f"{plan.rejects} rejected + {plan.accepts} accepted-or-duplicate hostile payloads among "
                f"{len(session.events)} callbacks (seed {seed})")
    result = ScenarioResult(name, injected)
    work = Path(tempfile.mkdtemp(prefix="execstate-hostile-day-"))
    dsn = f"chdb://{work / 'clickhouse'}"
    settings = _settings(work)
    intents = IntentRegistry(dict(settings.strategies.tags))
    for i in session.intents:
        intents.register(i.order_id, i.strategy_id, i.symbol, i.custom_field)
    journal = work / "journal" / "day.jsonl"
    pipeline = Pipeline(settings, intents=intents, journal_path=journal)
    sink = ClickHouseSink(dsn)
    sink.ensure_schema()
    recorder = Recorder(sink, Spool(work / "spool", 1 << 30), batch_rows=5000, batch_ms=50).start()
    pipeline.attach_recorder(recorder.submit)
    api = _CallbackOnly()
    bridge = ShioajiBridge(api, pipeline.queue).attach()
    halt = HaltState()
    sources = MetricSources(stats=pipeline.stats, latency=pipeline.latency_ms, heartbeat=bridge.heartbeat,
                            recorder_stats=recorder.stats, halt=halt.status)
    reader = InputsReader(settings.alerts, sources, time.time())
    evaluator = AlertEvaluator(rules_for(settings.alerts), halt=halt.enter)
    fired: set[str] = set()

    def evaluate() -> None:
        now = time.time()
        evaluator.evaluate(reader.read(now), now)
        fired.update(name for name, count in evaluator.firing_by_name().items() if count)
        if halt.is_halted:
            fired.add("HALT")

    logs = JsonLogs(work / "log.jsonl")
    with logs:
        pipeline.start()
        try:
            delivered = 0
            for state, msg, _ in plan.items:  # Shioaji's thread: the callback only stamps and queues
                api.order_cb(state, msg)
                delivered += 1
                if delivered % 500 == 0:
                    evaluate()
        finally:
            pipeline.stop()
        evaluate()
        recorder_ok = recorder.stop(timeout_s=120)
        rec = recorder.stats()
        evaluate()

        ours = {(p.account, p.strategy, p.symbol): p.quantity for p in pipeline.snapshot().positions}
        truth = session.expected_quantities(include_initial=False)
        books = check_books(ours, truth)
        deads = list(pipeline.dead_letters)
        stats = pipeline.stats
        problems = []
        if stats.dead_letters != plan.rejects or len(deads) != plan.rejects:
            problems.append(f"{plan.rejects} rejected payloads, counter {stats.dead_letters}, kept {len(deads)}")
        if stats.fills != len(session.fills):
            problems.append(f"{stats.fills} fills booked for {len(session.fills)} deals")
        bad_reasons = [d.reason for d in deads if not _FIELD.match(d.reason) or d.reason.startswith(_BROKEN)]
        if bad_reasons:
            problems.append(f"reasons naming no field: {bad_reasons[:3]}")
        # a restart replays the journal: same books, same rejections
        replay = Pipeline(settings, intents=intents)
        with_replay = replay_journal_into(replay, journal)
        replay_ours = {(p.account, p.strategy, p.symbol): p.quantity for p in replay.snapshot().positions}
        replay_books = check_books(replay_ours, truth)
        if not replay_books.ok:
            problems.append(f"after a journal replay: {replay_books.detail}")
        if replay.stats.dead_letters != plan.rejects or replay.bad_journal_lines:
            problems.append(f"journal replay: {replay.stats.dead_letters} dead letters, {replay.bad_journal_lines} bad lines")
        result.books = Check(False, f"{books.detail}; " + "; ".join(problems)) if problems or not books.ok else \
            Check(True, f"{books.detail}, also after a journal replay of {with_replay} lines; {plan.rejects} rejected, none booked")

    # rows: every deal once, every dead letter once with its reason, bounded, no person_id
    try:
        query = ClickHouseSink(dsn)
        try:
            result.rows = _day_rows(query, len(session.fills), deads, rec, recorder_ok)
        finally:
            query.close()
    except Exception as exc:
        result.rows = Check(False, f"{type(exc).__name__}: {exc}"[:300])
    rules = {r.name for r in rules_for(settings.alerts)}
    result.alerts = check_alerts([], fired, forbidden=rules | {"HALT"})
    if result.alerts.ok:
        result.alerts = Check(True, f"none fired ({len(rules)} in-process rules; alerts.yml has no dead-letter alert)")
    result.facts = {"callbacks": len(plan.items), "real_events": len(session.events), "fills": len(session.fills),
                    "rejected": plan.rejects, "accepted_or_duplicate_hostile": plan.accepts,
                    "dead_letters": len(deads), "duplicates": stats.duplicates, "distinct_reasons": len({d.reason for d in deads}),
                    "mutations": dict(plan.families.most_common(15)), "recorder": {k: rec.get(k) for k in ("rows_written", "parked_rows", "rejected", "spool_rows")}}
    shutil.rmtree(work, ignore_errors=True)
    return result


def _day_rows(sink: Any, truth_fills: int, deads: list[Any], rec: dict, recorder_ok: bool) -> Check:
    from execstate.record.rows import dead_letter_id

    from chaos.harness import check_rows

    fills = check_rows(sink, truth_fills)
    if not fills.ok:
        return fills
    if not recorder_ok or rec.get("parked_rows") or rec.get("rejected") or rec.get("spool_rows"):
        return Check(False, f"recorder: stopped cleanly {recorder_ok}, parked {rec.get('parked_rows')}, rejected {rec.get('rejected')}, spooled {rec.get('spool_rows')}")
    rows = sink.query("SELECT letter_id, reason, length(msg), position(msg, 'person_id') + position(msg, %s) FROM dead_letters FINAL"
                      % ("'" + h.PERSON_ID + "'"))[1]
    want = Counter(dead_letter_id(d) for d in deads)
    got = Counter(r[0] for r in rows)
    if got != want:
        return Check(False, f"{len(rows)} dead-letter rows for {len(deads)} dead letters ({sum((want - got).values())} missing, {sum((got - want).values())} extra)")
    if Counter(r[1] for r in rows) != Counter(d.reason for d in deads):
        return Check(False, "dead-letter rows do not carry the dead letters' reasons")
    if any(not r[1] for r in rows):
        return Check(False, "a dead-letter row without a reason")
    longest = max((r[2] for r in rows), default=0)
    if longest > KEPT_JSON_MAX:
        return Check(False, f"a dead-letter row keeps {longest} bytes of payload")
    if any(r[3] for r in rows):
        return Check(False, "a dead-letter row keeps a person_id")
    return Check(True, f"{fills.detail}; {len(rows)} dead letters once each with reasons, longest payload {longest} B, no person_id")


# --- scenarios --------------------------------------------------------------------------------

def atheris_scenario(budget_s: float) -> ScenarioResult:
    """The atheris engine in a child process (it instruments `execstate` as it loads, and exits
    the process at the end or at the first violation)."""
    import subprocess

    name = f"normalizer fuzz (atheris) {budget_s:g}s"
    stats = Path(tempfile.mkdtemp(prefix="execstate-atheris-stats-")) / "stats.json"
    cmd = [sys.executable, "-m", "chaos.fuzz", "--engine", "atheris", "--budget-s", str(budget_s), "--stats", str(stats)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=budget_s + 300)
    counts = json.loads(stats.read_text()) if stats.exists() else {}
    shutil.rmtree(stats.parent, ignore_errors=True)
    result = ScenarioResult(name, f"libFuzzer-guided Hypothesis inputs: {counts.get('cases', 0)} hostile payloads "
                                  f"in {counts.get('examples', 0)} batches")
    result.facts = {**counts, "exit_code": proc.returncode}
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith(("#", "INFO:"))][-12:]
        result.books = Check(False, f"exit {proc.returncode}: " + " | ".join(tail)[-800:])
        result.facts["stderr_tail"] = "\n".join(tail)
    else:
        result.books = Check(True, f"{counts.get('cases', 0)} payloads: {counts.get('accepted', 0)} accepted, "
                                   f"{counts.get('rejected', 0)} rejected ({counts.get('distinct_reasons', 0)} distinct reasons), "
                                   f"{counts.get('duplicates', 0)} duplicates, exceptions 0")
    result.rows = Check.na("checked per batch inside the fuzz (recordable dead letters and events)")
    result.alerts = Check.na("no alerts in a bare pipeline")
    return result


def _atheris_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("atheris") is not None


def _budget(fast: bool) -> float:
    env = os.environ.get("EXECSTATE_FUZZ_BUDGET_S")
    if env:
        return float(env)
    return FAST_BUDGET_S if fast else DEFAULT_BUDGET_S


def fuzz_scenario(budget_s: float, seed: int | None = None) -> ScenarioResult:
    report = run_fuzz(budget_s, seed)
    t = report.tally
    name = f"normalizer fuzz {budget_s:g}s"
    result = ScenarioResult(name, f"Hypothesis: {t.cases} hostile payloads in {t.examples} batches (seed {report.seed})")
    facts = report.facts()
    result.facts = facts
    if report.failure:
        detail = f"{report.failure[:300]} | minimal batch: {report.failing_example[:600]}"
        result.books = Check(False, detail)
        result.error = report.failure.splitlines()[0][:300]
    else:
        result.books = Check(True, f"{t.cases} payloads ({facts['cases_per_s']}/s): {t.accepted} accepted, {t.rejected} rejected "
                                   f"({len(t.raw_reasons)} distinct reasons), {t.duplicates} duplicates, exceptions 0; "
                                   f"books = accepted fills; {t.replayed} replayed identically")
    result.rows = Check(not report.failure, "every dead letter, event, delta and snapshot converts to its table's Arrow rows; "
                                            "dead letters bounded, no person_id") \
        if t.examples else Check.na("no example ran")
    result.alerts = Check.na("no alerts in a bare pipeline; dead-letter counter = metric = rejects checked per batch")
    return result


def scenarios(fast: bool) -> list[Scenario]:
    budget = _budget(fast)
    orders = 120 if fast else 400
    found = [
        Scenario("hostile payloads in a live day", "rejected and accepted hostile payloads interleaved into a simulated day",
                 lambda: hostile_day(orders=orders), fast=True),
        Scenario(f"normalizer fuzz {budget:g}s", "Hypothesis-generated hostile payloads through Pipeline.process_batch",
                 lambda: fuzz_scenario(budget), fast=True),
    ]
    if not fast and _atheris_available():  # the optional second engine (the `chaos` extra), half the budget
        found.append(Scenario(f"normalizer fuzz (atheris) {budget / 2:g}s", "libFuzzer-guided hostile payloads",
                              lambda: atheris_scenario(budget / 2)))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S)
    parser.add_argument("--engine", choices=("hypothesis", "atheris"), default="hypothesis")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--stats", type=Path, default=None, help="atheris: write running counts to this file")
    args = parser.parse_args(argv)
    if args.budget_s <= 0:
        parser.error(f"--budget-s={args.budget_s}: expected a positive number of seconds")
    if args.engine == "atheris":
        return run_atheris(args.budget_s, args.stats)
    report = run_fuzz(args.budget_s, args.seed)
    facts = report.facts()
    if args.json:
        print(json.dumps(facts, indent=1, default=str))
    else:
        for k, v in facts.items():
            print(f"{k}: {v}")
    return 1 if report.failure else 0


if __name__ == "__main__":
    sys.exit(main())
