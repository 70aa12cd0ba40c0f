"""Scenario "hostile payloads in a live day" of `make chaos` (listed by `chaos.fuzz.scenarios`):
a simulated day delivered through the real bridge callback with rejected and
accepted-but-duplicate hostile payloads interleaved; verdicts in `chaos.fuzz`'s docstring.

Entry points: `hostile_day(seed, orders, share) -> ScenarioResult`, `plan_day(session, rng, share)`.
Invariant: `execstate` is imported inside the functions only (see `chaos.fuzz_checks`).
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos import hostile as h
from chaos.harness import Check, ScenarioResult, check_alerts, check_books
from chaos.fuzz_checks import _BROKEN, _FIELD, KEPT_JSON_MAX, JsonLogs, _settings

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

