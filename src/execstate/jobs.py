"""Short jobs composed from the pipeline: the demo and journal replays.

Entry points: `run_demo(settings, seed, orders, pace) -> DemoResult`,
`replay_journal(path, settings, intents)`, `replay_journal_into(pipeline, path)`,
`intents_file_for(journal)`.
Like `app` and `service`, a composition module: it wires stages, it holds no logic of its own.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any
from dataclasses import dataclass
from pathlib import Path

from execstate.app import Pipeline, open_recorder, write_snapshot_file
from execstate.bridge.journal import JournalReader
from execstate.bridge.shioaji_adapter import ShioajiBridge
from execstate.config import Settings
from execstate.domain.events import DeadLetter, PositionSnapshot
from execstate.normalize.intents import IntentRegistry


def replay_journal_into(pipeline: Pipeline, path: Path, chunk: int = 4096) -> int:
    """Feed a journal through `pipeline` synchronously (worker not started, journal not open).

    Unreadable lines become dead letters with their line number. Returns the events replayed.
    """
    reader = JournalReader(path)
    batch: list = []
    count = 0
    for raw in reader:
        batch.append(raw)
        if len(batch) >= chunk:
            pipeline.process_batch(batch)
            count += len(batch)
            batch = []
    if batch:
        pipeline.process_batch(batch)
        count += len(batch)
    for number, reason in reader.bad_lines:
        pipeline.stats.dead_letters += 1
        pipeline.park(DeadLetter(reason=f"journal line {number}: {reason}", state="", ts_recv=0, msg=None))
    pipeline.bad_journal_lines = len(reader.bad_lines)
    return count


def replay_journal(path: Path, settings: Settings, intents: IntentRegistry | None = None, record: bool = False) -> Pipeline:
    """Feed a journal through a fresh pipeline, synchronously, and return the pipeline.

    With `record`, every event also goes to the configured database (rows already there stay
    once: ids are deterministic); when the database cannot be opened, `pipeline.record_error`
    says why and nothing is recorded (a replay never spools behind a running service's back).
    """
    pipeline = Pipeline(settings, intents=intents)
    recorder = _recorder_for_replay(settings, pipeline) if record else None
    replay_journal_into(pipeline, path)
    if recorder is not None:
        recorder.submit(pipeline.snapshot())
        if not recorder.stop(timeout_s=120):
            pipeline.record_error = f"not every row reached the database: {recorder.stats().get('last_error')}"
        pipeline.recorded = recorder.stats()
    return pipeline


def _recorder_for_replay(settings: Settings, pipeline: Pipeline) -> Any:
    from execstate.record.clickhouse import SinkError

    try:
        recorder, _ = open_recorder(settings, spool_dir=Path(tempfile.mkdtemp(prefix="execstate-replay-spool-")), in_process=True, require_database=True)
    except SinkError as exc:
        pipeline.record_error = str(exc)
        return None
    if recorder is not None:
        recorder.start()
        pipeline.attach_recorder(recorder.submit)
    return recorder


@dataclass
class DemoResult:
    pipeline: Pipeline
    snapshot: PositionSnapshot
    events: int
    elapsed_s: float
    journal_path: Path
    mismatches: dict[tuple[str, str, str], tuple[int, int]]  # key -> (ours, broker)
    recorded: dict[str, int] | None = None  # rows per table in ClickHouse after the run
    record_error: str = ""

    @property
    def matches_broker(self) -> bool:
        return not self.mismatches


def intents_file_for(journal: Path) -> Path:
    """Where the intents registered during a journaled session are kept (beside the journal)."""
    return journal.with_name(journal.stem + ".intents.jsonl")


def run_demo(settings: Settings, seed: int = 1, orders: int = 600, pace: float | None = 5000.0) -> DemoResult:
    """A simulated Shioaji day through the real bridge and the whole pipeline."""
    from execstate.bridge.sim import SimConfig, SimShioaji, generate_session

    session = generate_session(SimConfig(seed=seed, n_orders=orders))
    api = SimShioaji(session)
    api.login("sim-api-key", "sim-secret-key")
    journal = Path(settings.state_dir) / "journal" / f"demo-seed{seed}.jsonl"
    journal.unlink(missing_ok=True)
    intents_path = intents_file_for(journal)
    intents_path.unlink(missing_ok=True)
    intents = IntentRegistry(dict(settings.strategies.tags), path=intents_path)
    for intent in session.intents:  # what the order adapter registers at placement
        intents.register(intent.order_id, intent.strategy_id, intent.symbol, intent.custom_field)
    snapshot_path = Path(settings.state_dir) / "snapshots" / "latest.json"
    pipeline = Pipeline(settings, intents=intents, journal_path=journal, snapshot_path=snapshot_path)
    recorder, sink = open_recorder(settings)
    if recorder is not None:
        pipeline.attach_recorder(recorder.submit)
        recorder.start()
    ShioajiBridge(api, pipeline.queue).attach()
    started = time.perf_counter()
    pipeline.start()
    api.play(pace_per_s=pace)
    pipeline.stop()
    elapsed = time.perf_counter() - started
    for fill in session.fills:  # mark to the day's last trade
        pipeline.store.set_mark(fill.symbol, fill.price)
    snapshot = pipeline.snapshot()
    write_snapshot_file(snapshot, snapshot_path)
    recorded, record_error = None, ""
    if recorder is not None:
        recorder.submit(snapshot)  # marked to the last trade
        from execstate.record.parquet import ParquetSnapshotWriter

        ParquetSnapshotWriter(Path(settings.state_dir) / "parquet").write(snapshot)
        if not recorder.stop(timeout_s=120):
            record_error = f"rows left in the spool: {recorder.stats().get('last_error')}"
        recorded, error = count_rows(settings)
        record_error = record_error or error
    ours = {(p.account, p.strategy, p.symbol): p.quantity for p in snapshot.positions}
    broker = session.expected_quantities()
    mismatches = {k: (ours.get(k, 0), broker.get(k, 0)) for k in set(ours) | set(broker) if ours.get(k, 0) != broker.get(k, 0)}
    return DemoResult(pipeline, snapshot, len(session.events), elapsed, journal, mismatches, recorded, record_error)


def count_rows(settings: Settings) -> tuple[dict[str, int] | None, str]:
    """Rows per recorded table (after FINAL), or (None, why not)."""
    from execstate.record.clickhouse import ClickHouseSink, SinkError
    from execstate.record.tables import TABLES

    sink = ClickHouseSink(settings.clickhouse_dsn())
    try:
        return {table: sink.count(table) for table in TABLES}, ""
    except SinkError as exc:
        return None, str(exc)
    finally:
        sink.close()


