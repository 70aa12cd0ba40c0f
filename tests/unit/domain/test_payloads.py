"""Payload helpers (state names, plain copies, append-only files) and the immutability of events."""

import enum
import math
from decimal import Decimal as D

import msgspec
import pytest
import shioaji as sj
from payloads import EventDictLike, futures_deal, stock_deal

import execstate.domain.events as events_module
from execstate.domain.errors import MalformedEvent
from execstate.domain.events import (
    DeadLetter,
    FillEvent,
    OrderEvent,
    PositionDelta,
    PositionRecord,
    PositionSnapshot,
    RawExecEvent,
)
from execstate.domain.payloads import open_append_only, state_name, to_plain

# --- state_name --------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "expected"), [
    (sj.OrderState.StockOrder, "SORDER"),
    (sj.OrderState.StockDeal, "SDEAL"),
    (sj.OrderState.FuturesOrder, "FORDER"),
    (sj.OrderState.FuturesDeal, "FDEAL"),
    ("StockOrder", "SORDER"),
    ("StockDeal", "SDEAL"),
    ("FuturesOrder", "FORDER"),
    ("FuturesDeal", "FDEAL"),
    ("SDEAL", "SDEAL"),
    ("FORDER", "FORDER"),
    ("Other", "Other"),  # passed on: the normalizer decides what to do with it
], ids=repr)
def test_state_name_accepts_shioaji_enums_names_and_values(state, expected):
    name = state_name(state)
    assert name == expected
    assert type(name) is str


@pytest.mark.parametrize("state", [None, 1, 1.5, b"SDEAL", ["SDEAL"]])
def test_state_name_rejects_non_strings_with_malformed_event(state):
    with pytest.raises(MalformedEvent, match="^state=.*: expected SORDER, SDEAL, FORDER or FDEAL$") as info:
        state_name(state)
    assert info.value.reason.startswith("state=")


def test_state_name_rejects_an_enum_with_a_non_string_value():
    class Odd(enum.Enum):
        X = 3

    with pytest.raises(MalformedEvent, match="Odd.X"):
        state_name(Odd.X)


# --- to_plain ----------------------------------------------------------------------------


class _Color(enum.Enum):
    RED = "red"


class _Level(enum.Enum):
    HIGH = 3


def test_to_plain_copies_a_dict_like_payload_into_builtins():
    # Arrange: a Shioaji-like dict-like object that is not a Mapping
    raw = {"operation": {"op_type": "New"}, "order": {"price": 26.85, "quantity": 1, "tags": ("a", "b")}, "ok": True, "x": None}
    payload = EventDictLike({**raw, "order": EventDictLike(raw["order"])})
    # Act
    plain = to_plain(payload)
    # Assert
    assert plain == {"operation": {"op_type": "New"}, "order": {"price": 26.85, "quantity": 1, "tags": ["a", "b"]}, "ok": True, "x": None}
    assert type(plain) is dict and type(plain["order"]) is dict and type(plain["order"]["tags"]) is list
    assert msgspec.json.decode(msgspec.json.encode(plain)) == plain


def test_to_plain_turns_enums_into_their_values_and_keys_into_strings():
    plain = to_plain({"color": _Color.RED, 1: [_Level.HIGH, (1.5, "x")]})
    assert plain == {"color": "red", "1": [3, [1.5, "x"]]}


def test_to_plain_of_shioaji_fixture_payloads_is_json_ready():
    for payload in (stock_deal(), futures_deal()):
        plain = to_plain(payload)
        assert plain == payload
        assert msgspec.json.decode(msgspec.json.encode(plain)) == plain


def test_to_plain_never_mutates_its_input():
    # Arrange
    inner = {"list": [1, {"deep": (2, 3)}], "enum": _Color.RED}
    payload = {"a": inner, "t": ({"k": "v"},)}
    snapshot = {"a": {"list": [1, {"deep": (2, 3)}], "enum": _Color.RED}, "t": ({"k": "v"},)}
    # Act
    plain = to_plain(payload)
    plain["a"]["list"].append(99)
    plain["t"][0]["k"] = "changed"
    # Assert
    assert payload == snapshot
    assert payload["a"] is inner and plain["a"] is not inner


def test_to_plain_keeps_scalars_as_they_are():
    assert [to_plain(v) for v in ("s", 0, 2.5, False, None)] == ["s", 0, 2.5, False, None]
    assert math.isnan(to_plain(math.nan))


# --- open_append_only --------------------------------------------------------------------


def test_append_after_a_torn_last_line_starts_on_a_fresh_line(tmp_path):
    # Arrange: a crash left half a record
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":')
    # Act
    with open_append_only(path) as fh:
        fh.write(b'{"c":3}\n')
    # Assert
    assert path.read_bytes().split(b"\n") == [b'{"a":1}', b'{"b":', b'{"c":3}', b""]


def test_append_to_a_complete_file_adds_no_blank_line(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"a":1}\n')
    with open_append_only(path) as fh:
        fh.write(b'{"b":2}\n')
    assert path.read_bytes() == b'{"a":1}\n{"b":2}\n'


def test_append_to_a_new_file_creates_parents_and_adds_no_blank_line(tmp_path):
    path = tmp_path / "state" / "day1" / "journal.jsonl"
    with open_append_only(path) as fh:
        fh.write(b'{"a":1}\n')
    assert path.read_bytes() == b'{"a":1}\n'


def test_append_to_an_empty_existing_file_adds_no_blank_line(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.touch()
    with open_append_only(path) as fh:
        fh.write(b'{"a":1}\n')
    assert path.read_bytes() == b'{"a":1}\n'


def test_reopening_twice_after_a_torn_line_terminates_it_once(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"a":')
    open_append_only(path).close()
    open_append_only(path).close()
    assert path.read_bytes() == b'{"a":\n'


# --- events ------------------------------------------------------------------------------

_TS = 1_779_333_920_000_000_000


def _fill() -> FillEvent:
    return FillEvent(
        event_id="F:9A95-1234567:892f730b:669915", account="9A95-1234567", order_id="892f730b", seqno="361840",
        ordno="Y23CL", exchange_seq="669915", strategy="momo", symbol="2890", code="2890", kind="STK", side="Buy",
        price=D("26.85"), quantity=1000, multiplier=D("1"), is_etf=False, order_cond="Cash", order_lot="Common",
        market_type="", custom_field="MOMO", ts_event=_TS, ts_recv=_TS + 1,
    )


def _order() -> OrderEvent:
    return OrderEvent(
        event_id=f"O:9A95-1234567:892f730b:New:{_TS}", account="9A95-1234567", order_id="892f730b", seqno="361840",
        ordno="Y23CL", strategy="momo", symbol="2890", code="2890", kind="STK", op_type="New", op_code="00", op_msg="",
        ok=True, action="Buy", price=D("26.850"), order_quantity=1000, cancel_quantity=0, modified_price=D("0"),
        order_cond="Cash", order_lot="Common", price_type="LMT", time_in_force="ROD", custom_field="MOMO",
        status="Submitted", ts_event=_TS, ts_recv=_TS + 1,
    )


def _delta() -> PositionDelta:
    return PositionDelta(
        seq=7, cause="reorder", source_id="F:x", account="9A95-1234567", strategy="momo", symbol="2890",
        quantity_before=-1000, quantity_after=0, avg_price=D("0"), realized_pnl_change=D("-1234.5678901234"),
        realized_pnl=D("0.0000000001"), fee=D("38"), tax=D("-40"), fees=D("76"), taxes=D("40"), ts_event=_TS, ts_recv=_TS,
    )


def _record(mark: D | None = D("27012.5")) -> PositionRecord:
    return PositionRecord(
        account="F002000-7654321", strategy="fut_trend", symbol="TXFL6", quantity=-3, avg_price=D("27010.333333"),
        realized_pnl=D("4000"), unrealized_pnl=D("-1000.0000000000"), fees=D("180"), taxes=D("324"),
        mark_price=mark, multiplier=D("200"),
    )


EVENTS = [
    _fill(),
    _order(),
    _delta(),
    _record(),
    _record(None),
    PositionSnapshot(seq=3, ts=_TS, positions=(_record(), _record(None))),
    DeadLetter(reason="price=nan: expected a finite price", state="SDEAL", ts_recv=_TS, msg={"price": None, "list": [1, "a"]}),
]


def test_every_event_struct_is_frozen():
    structs = [c for c in vars(events_module).values() if isinstance(c, type) and issubclass(c, msgspec.Struct) and c is not msgspec.Struct]
    assert {type(e) for e in EVENTS} <= set(structs)
    assert [c.__name__ for c in structs if not c.__struct_config__.frozen] == []


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_event_is_frozen(event):
    field = event.__struct_fields__[0]
    with pytest.raises(AttributeError):
        setattr(event, field, getattr(event, field))


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_event_round_trips_through_json_with_exact_decimals(event):
    decoded = msgspec.json.decode(msgspec.json.encode(event), type=type(event))
    assert decoded == event
    for field in event.__struct_fields__:
        value = getattr(event, field)
        if isinstance(value, D):
            assert str(getattr(decoded, field)) == str(value)  # same digits, not only equal


def test_decimals_are_encoded_as_strings_not_floats():
    text = msgspec.json.encode(_fill())
    assert b'"price":"26.85"' in text


def test_raw_exec_event_is_an_immutable_tuple():
    raw = RawExecEvent(_TS, sj.OrderState.StockDeal, {"price": 26.85})
    with pytest.raises(AttributeError):
        raw.ts_ns = 0  # type: ignore[misc]
    assert raw == (_TS, "SDEAL", {"price": 26.85})


# -- without_person_id -------------------------------------------------------------------------------
from execstate.domain.payloads import without_person_id  # noqa: E402


def test_without_person_id_drops_the_key_at_any_depth_and_leaves_the_input_alone():
    # Arrange
    msg = {"order": {"account": {"person_id": "A123456789", "broker_id": "9A95"}}, "list": [{"person_id": "x"}, 1], "person_id": "y", "k": (1, {"person_id": "z"})}

    # Act
    out = without_person_id(msg)

    # Assert
    assert out == {"order": {"account": {"broker_id": "9A95"}}, "list": [{}, 1], "k": (1, {})}
    assert msg["order"]["account"]["person_id"] == "A123456789" and msg["person_id"] == "y"


def test_without_person_id_returns_the_same_object_when_there_is_none():
    msg = stock_deal()
    assert without_person_id(msg) is msg


# -- kept_copy, safe_text, state_text (what a dead letter keeps) ------------------------------------
# Found by the normalizer fuzz (chaos/fuzz.py): a rejected payload carrying a 1 MB string was
# kept whole in the dead letter (memory, the dead_letters table); a lone surrogate in it (or in
# the state) made the dead letter unrecordable (Arrow / UTF-8) and unloggable; a payload nested
# deeper than the recursion limit was kept as nothing at all.
import json  # noqa: E402

from execstate.domain.payloads import KEPT_TEXT_MAX, KEPT_TOTAL_MAX, kept_copy, safe_text, state_text  # noqa: E402


def test_kept_copy_of_an_ordinary_payload_is_the_plain_copy_without_person_id():
    # Arrange
    from payloads import stock_order

    msg = stock_order()
    msg["order"]["account"]["person_id"] = "A123456789"

    # Act
    kept = kept_copy(EventDictLike(msg))

    # Assert
    assert kept == without_person_id(to_plain(msg))
    assert "A123456789" not in json.dumps(kept)


def test_kept_copy_cuts_a_huge_string_and_says_how_much_is_missing():
    # Act
    kept = kept_copy({**stock_deal(), "code": "x" * 1_000_000})

    # Assert
    assert kept["code"].startswith("x" * KEPT_TEXT_MAX)
    assert kept["code"].endswith(f"...<{1_000_000 - KEPT_TEXT_MAX} more characters>")
    assert kept["trade_id"] == stock_deal()["trade_id"]


def test_kept_copy_is_bounded_however_many_huge_strings_and_members():
    # Arrange
    msg = {f"k{i}": "y" * 100_000 for i in range(1000)}

    # Act
    text = json.dumps(kept_copy(msg))

    # Assert
    assert len(text) < 2 * KEPT_TOTAL_MAX


def test_kept_copy_escapes_lone_surrogates_so_the_copy_encodes_as_utf8():
    # Act
    kept = kept_copy({"code": "23\udc80", "\ud800key": ["\udfff"]})

    # Assert
    json.dumps(kept, ensure_ascii=False).encode("utf-8")
    assert kept == {"code": "23\\udc80", "\\ud800key": ["\\udfff"]}


def test_kept_copy_keeps_a_too_deep_payload_cut_at_a_bounded_depth():
    # Arrange
    deep: object = "bottom"
    for _ in range(5000):
        deep = {"a": deep}

    # Act
    kept = kept_copy({"price": 1.0, "deep": deep})

    # Assert
    assert kept["price"] == 1.0
    assert "nested deeper than" in json.dumps(kept)


def test_kept_copy_never_raises_and_keeps_odd_values_as_text():
    # Arrange
    class Exploding(EventDictLike):
        def items(self):
            raise RuntimeError("boom")

    # Act / Assert
    assert kept_copy(Exploding({})) == "<unreadable Exploding>"
    kept = kept_copy({"n": 10**5000, "b": b"raw", "d": D("1.5"), "t": (1, "x"), 3: 2.5})
    assert kept == {"n": "<int of 16610 bits>", "b": "b'raw'", "d": "1.5", "t": [1, "x"], "3": 2.5}


def test_safe_text_and_state_text_are_bounded_utf8_and_never_raise():
    # Arrange
    class BadState:
        @property
        def value(self):
            raise RuntimeError("boom")

    # Act / Assert
    assert safe_text("S" * 1_000_000, 40) == "S" * 40
    assert safe_text("\ud800SDEAL", 40) == "\\ud800SDEAL"
    assert state_text(sj.OrderState.StockDeal) == "SDEAL"
    assert state_text(BadState()) == "<BadState>"
    assert state_text(None) == "None"


def test_a_person_id_inside_text_is_masked_in_dead_letters_and_the_journal_copy():
    import json

    from execstate.domain.payloads import kept_copy, without_person_id

    as_text = json.dumps({"order": {"account": {"person_id": "A123456789", "broker_id": "9A95"}}})
    twice = json.dumps(as_text)  # JSON text inside JSON text: escaped quotes
    for kept in (kept_copy(as_text), kept_copy(twice), kept_copy({"note": as_text}), without_person_id(as_text)):
        assert "A123456789" not in json.dumps(kept)
        assert "9A95" in json.dumps(kept)  # only the person_id's value is masked
