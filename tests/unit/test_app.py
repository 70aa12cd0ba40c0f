"""The pipeline worker: ordering of journal, books and fan-out; robustness of the loop."""

import threading
import time

from payloads import stock_deal, stock_order

from execstate.app import Pipeline, positions_as_dicts, write_snapshot_file
from execstate.bridge.journal import JournalReader
from execstate.bus import TOPIC_DELTA, TOPIC_FILL, TOPIC_ORDER
from execstate.config import parse_settings
from execstate.positions.snapshots import Snapshotter

SETTINGS = parse_settings({"strategies": {"tags": {"MOMO": "momo"}}, "runtime": {"gc_freeze_after_start": False, "switch_interval_us": 0}})


def _raw(state, msg, ts=1):
    return (ts, state, msg)


def test_subscriber_sees_books_that_include_its_fill():
    pipeline = Pipeline(SETTINGS)
    seen = []
    pipeline.bus.subscribe(TOPIC_FILL, lambda fill: seen.append(pipeline.store.view().positions))
    pipeline.process_batch([_raw("SDEAL", stock_deal(quantity=2, custom_field="MOMO"))])
    (positions,) = seen
    assert [s.quantity for s in positions.values()] == [2000]


def test_raising_subscriber_is_counted_and_pipeline_continues():
    pipeline = Pipeline(SETTINGS)
    got = []
    pipeline.bus.subscribe(TOPIC_DELTA, lambda d: 1 / 0)
    pipeline.bus.subscribe(TOPIC_DELTA, got.append)
    pipeline.process_batch([_raw("SDEAL", stock_deal(exchange_seq="1", event_id="e1")), _raw("SDEAL", stock_deal(exchange_seq="2", event_id="e2"))])
    assert pipeline.stats.subscriber_errors == 2
    assert len(got) == 2


def test_bug_on_one_event_parks_it_and_books_the_next(monkeypatch):
    pipeline = Pipeline(SETTINGS)
    real = pipeline.store.apply_fill
    calls = {"n": 0}

    def flaky(fill):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return real(fill)

    monkeypatch.setattr(pipeline.store, "apply_fill", flaky)
    pipeline.process_batch([_raw("SDEAL", stock_deal(exchange_seq="1", event_id="e1")), _raw("SDEAL", stock_deal(exchange_seq="2", event_id="e2"))])
    assert [d.reason for d in pipeline.dead_letters] == ["internal error: RuntimeError('boom')"]
    assert [p.quantity for p in pipeline.snapshot().positions] == [1000]


def test_malformed_payload_is_dead_lettered_with_reason_and_next_event_applies():
    pipeline = Pipeline(SETTINGS)
    pipeline.process_batch([_raw("SDEAL", stock_deal(price=float("nan"))), _raw("SDEAL", stock_deal(exchange_seq="9", event_id="e9"))])
    assert pipeline.stats.dead_letters == 1
    assert "price" in pipeline.dead_letters[0].reason and "nan" in pipeline.dead_letters[0].reason
    assert [p.quantity for p in pipeline.snapshot().positions] == [1000]


def test_worker_thread_drains_everything_queued_before_stop(tmp_path):
    pipeline = Pipeline(SETTINGS, journal_path=tmp_path / "j.jsonl").start()
    orders = []
    pipeline.bus.subscribe(TOPIC_ORDER, orders.append)

    def producer():
        for i in range(500):
            pipeline.queue.put((time.time_ns(), "SDEAL", stock_deal(exchange_seq=str(i), trade_id=f"{i:08x}", event_id=f"e{i}")))
        pipeline.queue.put((time.time_ns(), "SORDER", stock_order()))

    thread = threading.Thread(target=producer)
    thread.start()
    thread.join()
    pipeline.stop()
    assert pipeline.stats.fills == 500 and len(orders) == 1
    assert len(list(JournalReader(tmp_path / "j.jsonl"))) == 501
    assert len(pipeline.stats.latency_ns) == 500


def test_journal_replay_gives_the_same_books(tmp_path):
    live = Pipeline(SETTINGS, journal_path=tmp_path / "j.jsonl")
    events = [
        _raw("SDEAL", stock_deal(exchange_seq="1", event_id="e1", action="Buy", price=100.5, custom_field="MOMO"), 5),
        _raw("SORDER", stock_order(custom_field="MOMO"), 6),
        _raw("SDEAL", stock_deal(exchange_seq="2", event_id="e2", action="Sell", price=101.0, quantity=3, custom_field="MOMO", ts=1779333990.5), 7),
    ]
    live.process_batch(events)
    live.journal.close()
    from execstate.jobs import replay_journal

    replayed = replay_journal(tmp_path / "j.jsonl", SETTINGS)
    assert replayed.bad_journal_lines == 0
    assert positions_as_dicts(replayed.snapshot()) == positions_as_dicts(live.snapshot())


def test_snapshotter_writes_latest_books_on_stop(tmp_path):
    pipeline = Pipeline(SETTINGS)
    pipeline.process_batch([_raw("SDEAL", stock_deal())])
    path = tmp_path / "snap.json"
    snapper = Snapshotter(pipeline.store, interval_ms=10_000, sink=lambda s: write_snapshot_file(s, path))
    snapper.start()
    snapper.stop()
    text = path.read_text()
    assert '"quantity":1000' in text and snapper.taken == 1


def test_started_pipeline_writes_periodic_snapshots_and_publishes_them(tmp_path):
    from execstate.bus import TOPIC_SNAPSHOT

    settings = parse_settings({"snapshot_interval_ms": 20, "runtime": {"gc_freeze_after_start": False, "switch_interval_us": 0}})
    path = tmp_path / "snapshots" / "latest.json"
    pipeline = Pipeline(settings, snapshot_path=path)
    snaps = []
    pipeline.bus.subscribe(TOPIC_SNAPSHOT, snaps.append)
    pipeline.start()
    pipeline.queue.put((time.time_ns(), "SDEAL", stock_deal(event_id="s1")))
    deadline = time.monotonic() + 5
    while not any(s.positions for s in snaps) and time.monotonic() < deadline:
        time.sleep(0.01)
    pipeline.stop()
    assert any(s.positions and s.positions[0].quantity == 1000 for s in snaps)
    assert '"quantity":1000' in path.read_text()
    assert snaps[-1].seq == pipeline.store.view().seq  # the last one is taken at stop


def test_replay_dead_letters_a_nan_price_with_the_same_reason_as_live(tmp_path):
    from execstate.jobs import replay_journal

    live = Pipeline(SETTINGS, journal_path=tmp_path / "j.jsonl")
    live.process_batch([_raw("SDEAL", stock_deal(event_id="n1", price=float("nan"))), _raw("SDEAL", stock_deal(event_id="i1", exchange_seq="5", price=float("inf")))])
    live.journal.close()
    replayed = replay_journal(tmp_path / "j.jsonl", SETTINGS)
    assert replayed.bad_journal_lines == 0
    assert [d.reason for d in replayed.dead_letters] == [d.reason for d in live.dead_letters]
    assert "price=nan" in live.dead_letters[0].reason and "price=inf" in live.dead_letters[1].reason


def test_dead_letter_of_an_internal_error_keeps_the_payload_without_person_id(monkeypatch):
    # Arrange
    from payloads import stock_order

    pipeline = Pipeline(SETTINGS)
    msg = stock_order()
    msg["order"]["account"]["person_id"] = "A123456789"
    monkeypatch.setattr(pipeline.normalizer, "normalize", lambda raw: 1 / 0)

    # Act
    pipeline.process_batch([_raw("SORDER", msg)])

    # Assert
    (dead,) = pipeline.dead_letters
    assert dead.msg["order"]["account"]["broker_id"] == "9A95"
    assert "A123456789" not in repr(dead) and "person_id" not in repr(dead.msg)


def test_events_submitted_from_inside_the_service_are_marked_as_recoveries():
    # Arrange: a resubmitted broker record that duplicates a callback's
    from structlog.testing import capture_logs

    pipeline = Pipeline(SETTINGS)
    pipeline.process_batch([_raw("SDEAL", stock_deal())])

    # Act
    with capture_logs() as logs:
        pipeline.submit("SDEAL", stock_deal())

    # Assert
    (line,) = [e for e in logs if e["event"] == "duplicate_dropped"]
    assert (line["source"], line["log_level"]) == ("recovery", "debug")


def test_internal_error_dead_letter_is_counted_like_every_rejection():
    # Arrange: found by the normalizer fuzz: a payload the journal cannot write (nested deeper
    # than the recursion limit) was parked but not counted, so the dead-letter metric lagged
    from execstate.telemetry.metrics import MetricSources, registry_for

    pipeline = Pipeline(SETTINGS)
    pipeline.journal = type("Refusing", (), {"write": lambda self, raw: 1 / 0, "flush": lambda self: None, "lines": 0})()

    # Act
    pipeline.process_batch([_raw("SDEAL", {**stock_deal(), "junk": "y" * 1_000_000})])

    # Assert
    (dead,) = pipeline.dead_letters
    assert dead.reason == "internal error: ZeroDivisionError('division by zero')"
    assert pipeline.stats.dead_letters == 1
    assert registry_for(MetricSources(stats=pipeline.stats)).get_sample_value("execution_events_total", {"type": "dead_letter"}) == 1
    assert len(dead.msg["junk"]) < 1100


def test_payload_nested_too_deep_for_the_journal_is_a_counted_dead_letter(tmp_path):
    # Arrange
    deep: object = "bottom"
    for _ in range(5000):
        deep = {"a": deep}
    pipeline = Pipeline(SETTINGS, journal_path=tmp_path / "j.jsonl")

    # Act
    pipeline.process_batch([_raw("SDEAL", {**stock_deal(), "deep": deep}), _raw("SDEAL", stock_deal(exchange_seq="2", event_id="e2"), ts=2)])

    # Assert
    (dead,) = pipeline.dead_letters
    assert "RecursionError" in dead.reason and dead.msg["trade_id"] == stock_deal()["trade_id"]
    assert pipeline.stats.dead_letters == 1 and pipeline.stats.fills == 1


def test_resubmitted_broker_records_are_journaled_only_when_they_are_news(tmp_path):
    # Arrange: one deal seen live, then a reconciliation resubmits it and one the callback lost
    pipeline = Pipeline(SETTINGS, journal_path=tmp_path / "j.jsonl")
    seen = stock_deal(exchange_seq="1", trade_id="aa", event_id="e1")
    lost = stock_deal(exchange_seq="2", trade_id="bb", event_id="e2")
    pipeline.process_batch([(time.time_ns(), "SDEAL", seen)])

    # Act: three polls resubmit both records; the callback also delivers `seen` twice more
    for _ in range(3):
        pipeline.submit("SDEAL", dict(seen))
        pipeline.submit("SDEAL", dict(lost))
    pipeline.process_batch([(time.time_ns(), "SDEAL", seen), (time.time_ns(), "SDEAL", seen)])
    pipeline.journal.flush()

    # Assert: the recovered deal is journaled once; callback deliveries always are
    lines = [raw.msg["exchange_seq"] for raw in JournalReader(tmp_path / "j.jsonl")]
    assert lines == ["1", "2", "1", "1"]
    assert pipeline.stats.fills == 2
    pipeline.journal.close()


def test_largest_deal_the_normalizer_accepts_can_be_recorded():
    # Arrange: found by the normalizer fuzz: an accepted deal whose fee and tax overflowed the
    # Decimal(18, 4) columns of position_deltas, so the books had a change the database never got
    from execstate.record.rows import to_arrow

    pipeline = Pipeline(SETTINGS)
    deltas, fills = [], []
    pipeline.bus.subscribe(TOPIC_DELTA, deltas.append)
    pipeline.bus.subscribe(TOPIC_FILL, fills.append)
    buy = stock_deal(price=1e6, quantity=1_000_000, exchange_seq="1", event_id="b")
    sell = stock_deal(price=1e6, quantity=1_000_000, exchange_seq="2", event_id="s", action="Sell", ts=1779333921.0)

    # Act
    pipeline.process_batch([_raw("SDEAL", buy), _raw("SDEAL", sell, ts=2)])

    # Assert
    assert len(fills) == 2
    to_arrow("fills", fills)
    to_arrow("position_deltas", deltas)
    to_arrow("position_snapshots", [pipeline.snapshot()])
