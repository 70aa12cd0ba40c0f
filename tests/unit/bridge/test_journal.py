"""Raw-event journal: exact JSONL round trip, and a reader that survives torn or bad lines."""

import json
import math

import pytest
import shioaji as sj
from payloads import EventDictLike, futures_deal, futures_order, stock_deal, stock_order

from execstate.bridge.journal import JournalReader, JournalWriter, encode_line
from execstate.config import parse_settings
from execstate.domain.events import RawExecEvent
from execstate.domain.payloads import without_person_id
from execstate.normalize.instruments import InstrumentResolver
from execstate.normalize.intents import IntentRegistry
from execstate.normalize.worker import Normalizer
from execstate.telemetry.stats import LatencySamples, PipelineStats


def _write(path, raws):
    w = JournalWriter(path)
    for raw in raws:
        w.write(raw)
    w.close()
    return w


def test_round_trip_preserves_ts_state_and_msg_exactly(tmp_path):
    # Arrange
    path = tmp_path / "journal.jsonl"
    raws = [
        (1_779_333_920_123_456_789, sj.OrderState.StockOrder, stock_order()),
        (1_779_333_920_223_456_789, sj.OrderState.StockDeal, stock_deal()),
        (1_779_333_920_323_456_789, sj.OrderState.FuturesOrder, futures_order()),
        (1_779_333_920_423_456_789, sj.OrderState.FuturesDeal, futures_deal()),
    ]

    # Act
    _write(path, raws)
    back = list(JournalReader(path))

    # Assert
    assert [r.ts_ns for r in back] == [r[0] for r in raws]
    assert [r.state for r in back] == ["SORDER", "SDEAL", "FORDER", "FDEAL"]
    assert [r.msg for r in back] == [without_person_id(r[2]) for r in raws]  # all but person_id, exactly
    assert all(isinstance(r, RawExecEvent) for r in back)


def test_floats_come_back_bit_for_bit(tmp_path):
    # Arrange
    path = tmp_path / "journal.jsonl"
    msg = stock_order(price=26.85, exchange_ts=1779333919.92)

    # Act
    _write(path, [(1, "SORDER", msg)])
    (back,) = list(JournalReader(path))

    # Assert
    assert back.msg["order"]["price"] == 26.85
    assert back.msg["status"]["exchange_ts"] == 1779333919.92
    assert repr(back.msg["status"]["exchange_ts"]) == "1779333919.92"
    assert type(back.msg["status"]["modified_price"]) is float
    assert type(back.msg["order"]["quantity"]) is int
    assert back.msg["order"]["account"]["signed"] is True


def test_state_enum_is_written_as_its_value_string(tmp_path):
    # Arrange
    path = tmp_path / "journal.jsonl"

    # Act
    _write(path, [(1, sj.OrderState.StockDeal, stock_deal()), (2, "StockDeal", stock_deal())])

    # Assert
    states = [json.loads(line)["state"] for line in path.read_text().splitlines()]
    assert states == ["SDEAL", "SDEAL"]
    assert sj.OrderState(list(JournalReader(path))[0].state) == sj.OrderState.StockDeal


def test_each_event_is_one_line(tmp_path):
    # Arrange
    path = tmp_path / "journal.jsonl"

    # Act
    w = _write(path, [(i, "SDEAL", stock_deal(exchange_seq=str(i))) for i in range(5)])

    # Assert
    assert w.lines == 5
    assert path.read_bytes().count(b"\n") == 5


def test_dict_like_msg_is_written_as_plain_json(tmp_path):
    # Arrange
    path = tmp_path / "journal.jsonl"
    plain = stock_deal()
    msg = EventDictLike(plain)

    # Act
    _write(path, [(1, sj.OrderState.StockDeal, msg)])

    # Assert
    line = json.loads(path.read_text())
    assert line["msg"] == plain
    assert list(JournalReader(path))[0].msg == plain


def test_nested_dict_like_values_are_written_as_plain_json():
    # Arrange
    order = stock_order()
    msg = {**order, "order": EventDictLike(order["order"])}

    # Act
    line = json.loads(encode_line((1, "SORDER", msg)))

    # Assert
    assert line["msg"] == without_person_id(order)


def test_appending_writer_keeps_earlier_lines(tmp_path):
    # Arrange
    path = tmp_path / "journal.jsonl"
    _write(path, [(1, "SDEAL", stock_deal(exchange_seq="1"))])

    # Act
    _write(path, [(2, "SDEAL", stock_deal(exchange_seq="2"))])

    # Assert
    assert [r.ts_ns for r in JournalReader(path)] == [1, 2]


def test_flush_makes_written_lines_readable_before_close(tmp_path):
    # Arrange
    path = tmp_path / "journal.jsonl"
    w = JournalWriter(path)
    w.write((1, "SDEAL", stock_deal()))

    # Act
    w.flush()
    back = list(JournalReader(path))

    # Assert
    assert [r.ts_ns for r in back] == [1]
    w.close()


def test_torn_last_line_is_reported_with_its_number_and_skipped(tmp_path):
    # Arrange
    path = tmp_path / "journal.jsonl"
    _write(path, [(1, "SDEAL", stock_deal(exchange_seq="1")), (2, "SDEAL", stock_deal(exchange_seq="2"))])
    with path.open("ab") as fh:
        fh.write(b'{"ts_ns": 3, "state": "SDEAL", "msg": {"trade_')

    # Act
    reader = JournalReader(path)
    back = list(reader)

    # Assert
    assert [r.ts_ns for r in back] == [1, 2]
    assert [n for n, _ in reader.bad_lines] == [3]
    assert "torn" in reader.bad_lines[0][1]


def test_torn_last_line_that_happens_to_be_valid_json_is_still_torn(tmp_path):
    # Arrange: the crash cut the line right before its newline
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"ts_ns": 1, "state": "SDEAL", "msg": {}}')

    # Act
    reader = JournalReader(path)
    back = list(reader)

    # Assert
    assert back == []
    assert reader.bad_lines[0][0] == 1


@pytest.mark.parametrize("garbage", [
    b"not json at all",
    b'{"ts_ns": "one", "state": "SDEAL", "msg": {}}',
    b'{"state": "SDEAL", "msg": {}}',
    b"[1, 2, 3]",
])
def test_garbage_middle_line_is_reported_and_reading_continues(tmp_path, garbage):
    # Arrange
    path = tmp_path / "journal.jsonl"
    good = encode_line((1, "SDEAL", stock_deal(exchange_seq="1")))
    path.write_bytes(good + garbage + b"\n" + encode_line((3, "SDEAL", stock_deal(exchange_seq="3"))))

    # Act
    reader = JournalReader(path)
    back = list(reader)

    # Assert
    assert [r.ts_ns for r in back] == [1, 3]
    assert [n for n, _ in reader.bad_lines] == [2]
    assert "not a journal line" in reader.bad_lines[0][1]


def test_blank_lines_are_ignored(tmp_path):
    # Arrange
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b"\n" + encode_line((1, "SDEAL", {})) + b"\n\n")

    # Act
    reader = JournalReader(path)
    back = list(reader)

    # Assert
    assert [r.ts_ns for r in back] == [1]
    assert reader.bad_lines == []


def test_replayed_journal_normalizes_to_the_same_events(tmp_path):
    # Arrange
    def normalizer():
        s = parse_settings({})
        return Normalizer(IntentRegistry(), InstrumentResolver(s), PipelineStats(latency_ns=LatencySamples(8)))

    raws = [
        (10, sj.OrderState.StockOrder, stock_order(quantity=2)),
        (11, sj.OrderState.StockDeal, stock_deal(exchange_seq="1")),
        (12, sj.OrderState.StockDeal, stock_deal(exchange_seq="2", event_id="")),
        (13, sj.OrderState.FuturesDeal, futures_deal()),
    ]
    live = normalizer()
    live_events = [live.normalize(r) for r in raws]
    path = tmp_path / "journal.jsonl"
    _write(path, raws)

    # Act
    replay = normalizer()
    replayed = [replay.normalize(r) for r in JournalReader(path)]

    # Assert
    assert replayed == live_events
    assert all(e is not None and type(e).__name__ != "DeadLetter" for e in replayed)


def test_event_written_after_a_crash_left_a_torn_line_is_replayed(tmp_path):
    # Arrange: the previous process died mid-line
    path = tmp_path / "journal.jsonl"
    path.write_bytes(encode_line((1, "SDEAL", stock_deal(exchange_seq="1"))) + b'{"ts_ns": 2, "sta')

    # Act: restart and journal the next event
    _write(path, [(3, "SDEAL", stock_deal(exchange_seq="3"))])
    back = list(JournalReader(path))

    # Assert
    assert [r.ts_ns for r in back] == [1, 3]


def test_nan_price_survives_the_round_trip(tmp_path):
    # Arrange
    path = tmp_path / "journal.jsonl"

    # Act
    _write(path, [(1, "SDEAL", stock_deal(price=math.nan))])
    (back,) = list(JournalReader(path))

    # Assert
    assert isinstance(back.msg["price"], float) and math.isnan(back.msg["price"])


# -- person_id ----------------------------------------------------------------------------------
PERSON_ID = "Q987654321"


def _with_person(msg, person_id=PERSON_ID):
    return {**msg, "order": {**msg["order"], "account": {**msg["order"]["account"], "person_id": person_id}}}


@pytest.mark.parametrize("person_id", [PERSON_ID, "", 'we"ird\\id', "台北"])
def test_person_id_is_never_written_and_the_rest_is_kept(tmp_path, person_id):
    # Arrange
    path = tmp_path / "journal.jsonl"
    msg = _with_person(stock_order(), person_id)

    # Act
    _write(path, [(1, "SORDER", msg), (2, sj.OrderState.FuturesOrder, _with_person(futures_order(), person_id))])

    # Assert
    text = path.read_text(encoding="utf-8")
    assert "person_id" not in text and (not person_id or person_id not in text)
    back = list(JournalReader(path))
    assert back[0].msg == without_person_id(msg)
    assert back[0].msg["order"]["account"]["broker_id"] == msg["order"]["account"]["broker_id"]
    assert msg["order"]["account"]["person_id"] == person_id  # the caller's payload is not touched


def test_person_id_is_dropped_at_any_depth_and_on_the_slow_path(tmp_path):
    # Arrange: nested accounts, a non-string person_id, a NaN (slow path), a dict-like payload
    path = tmp_path / "journal.jsonl"
    nested = {"a": [{"account": {"person_id": PERSON_ID, "x": 1}}, {"person_id": PERSON_ID}], "person_id": PERSON_ID}
    odd = {"account": {"person_id": 12345678, "broker_id": "9A95"}}
    nan = {**_with_person(stock_order()), "price": math.nan}
    dict_like = EventDictLike(_with_person(stock_order()))

    # Act
    _write(path, [(1, "SORDER", nested), (2, "SORDER", odd), (3, "SORDER", nan), (4, sj.OrderState.StockOrder, dict_like)])

    # Assert
    text = path.read_text()
    assert "person_id" not in text and PERSON_ID not in text and "12345678" not in text
    back = [r.msg for r in JournalReader(path)]
    assert back[0] == {"a": [{"account": {"x": 1}}, {}]}
    assert back[1] == {"account": {"broker_id": "9A95"}}
    assert math.isnan(back[2]["price"])


def test_a_quoted_person_id_inside_a_string_value_is_kept(tmp_path):
    # Arrange: only members named person_id go, never text that looks like one
    path = tmp_path / "journal.jsonl"
    msg = {"operation": {"op_msg": 'see "person_id":"x", here'}, "order": {"account": {"person_id": PERSON_ID, "broker_id": "9A95"}}}

    # Act
    _write(path, [(1, "SORDER", msg)])

    # Assert
    (back,) = JournalReader(path)
    assert back.msg == {"operation": {"op_msg": 'see "person_id":"x", here'}, "order": {"account": {"broker_id": "9A95"}}}


def test_journal_without_person_id_replays_to_the_same_books(tmp_path):
    # Arrange
    path = tmp_path / "journal.jsonl"
    raws = [(1, "SORDER", _with_person(stock_order(quantity=2))), (2, "SDEAL", stock_deal(quantity=2))]
    settings = parse_settings({})

    def books(events):
        stats = PipelineStats()
        n = Normalizer(IntentRegistry({}), InstrumentResolver(settings), stats)
        return [n.normalize(r) for r in events]

    # Act
    _write(path, raws)
    replayed = books(list(JournalReader(path)))
    live = books(raws)

    # Assert
    assert replayed == live


def test_lone_surrogate_is_written_as_an_escape_and_read_back_as_it_was(tmp_path):
    # Arrange: found by the normalizer fuzz: encode_line raised UnicodeEncodeError, so the
    # pipeline parked the event as an internal error (and a replay could not reproduce it)
    path = tmp_path / "journal.jsonl"
    msg = {**stock_deal(), "code": "23\udc80", "extra": "\ud800"}

    # Act
    _write(path, [(1, "SDEAL", msg)])
    reader = JournalReader(path)
    back = list(reader)

    # Assert
    path.read_bytes().decode("utf-8")  # the line is UTF-8
    assert reader.bad_lines == []
    assert back[0].msg == msg and back[0].state == "SDEAL"
