"""Order state machine: the TRANSITIONS table and the OrderBook that applies it."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execstate.normalize.orders import BY_QTY, KEEP, TRANSITIONS, EventKind, OrderBook, OrderStatus

ACCT, OID = "9A95-1234567", "892f730b"
S, E = OrderStatus, EventKind
TERMINAL = frozenset({S.FILLED, S.CANCELLED, S.FAILED})
WORKING = frozenset({S.SUBMITTED, S.PART_FILLED, S.UNKNOWN})
STATUSES: list[OrderStatus | None] = [None, *OrderStatus]


def _book_at(status, order_quantity=5000, filled=1000):
    """A book holding one order at `status`, 5000 shares ordered, 1000 filled (0 before any event)."""
    book = OrderBook()
    rec = book.record(ACCT, OID)
    rec.status = status
    if status is not None:
        rec.order_quantity = order_quantity
        rec.filled_quantity = filled
    return book


def _apply(book, kind, quantity=5000, cancel=0, fill=1000):
    if kind is E.FILL:
        return book.on_fill(ACCT, OID, fill)
    return book.on_order_event(ACCT, OID, kind, quantity, cancel)


# ---------------------------------------------------------------------------------------
# Walking the table
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    list(TRANSITIONS),
    ids=[f"{getattr(s, 'value', s)}-{k.value}" for s, k in TRANSITIONS],
)
def test_every_listed_transition_is_expected_and_lands_where_the_table_says(status, kind):
    # Arrange: 5000 ordered, 1000 filled (a partly filled order), nothing cancelled
    book = _book_at(status)
    target = TRANSITIONS[(status, kind)]

    # Act
    outcome = _apply(book, kind)

    # Assert
    if target is KEEP:
        expected = status or S.UNKNOWN
    elif target == BY_QTY:
        # 5000 live; 1000 filled (2000 after a fill), or none filled on a first event
        expected = S.SUBMITTED if status is None and kind is not E.FILL else S.PART_FILLED
    else:
        expected = target
    assert outcome.expected is True
    assert outcome.status is expected
    assert book.get(ACCT, OID).status is expected


_MISSING = [(s, k) for s, k in itertools.product(STATUSES, EventKind) if (s, k) not in TRANSITIONS]


@pytest.mark.parametrize(
    ("status", "kind"),
    _MISSING,
    ids=[f"{getattr(s, 'value', s)}-{k.value}" for s, k in _MISSING],
)
def test_every_unlisted_transition_is_unexpected_and_keeps_the_status(status, kind):
    # Arrange
    book = _book_at(status)

    # Act
    outcome = _apply(book, kind)

    # Assert
    assert outcome.expected is False
    assert outcome.status is (status or S.UNKNOWN)
    assert book.get(ACCT, OID).status is status


def test_no_listed_transition_leads_from_a_final_status_to_a_working_one():
    # Arrange
    finals = [(s, k, t) for (s, k), t in TRANSITIONS.items() if s in TERMINAL]

    # Act
    leaks = [(s, k, t) for s, k, t in finals if t is BY_QTY or t in WORKING]

    # Assert
    assert finals  # the table does list late events on finished orders
    assert leaks == []


def test_cancel_of_a_filled_order_is_not_in_the_table():
    # Assert
    assert (S.FILLED, E.CANCEL) not in TRANSITIONS
    assert (S.FILLED, E.FILL) not in TRANSITIONS  # an overfill is counted, not accepted


# ---------------------------------------------------------------------------------------
# Lifecycles
# ---------------------------------------------------------------------------------------


def test_new_then_partial_then_final_fill_walks_submitted_partfilled_filled():
    # Arrange
    book = OrderBook()

    # Act
    new = book.on_order_event(ACCT, OID, E.NEW, 2000, 0)
    part = book.on_fill(ACCT, OID, 1000)
    full = book.on_fill(ACCT, OID, 1000)

    # Assert
    assert [new.status, part.status, full.status] == [S.SUBMITTED, S.PART_FILLED, S.FILLED]
    assert all(o.expected for o in (new, part, full))
    assert full.overfill is False
    assert book.get(ACCT, OID).filled_quantity == 2000


def test_fill_before_new_is_unknown_and_the_new_completes_it_by_quantity():
    # Arrange
    book = OrderBook()

    # Act
    fill = book.on_fill(ACCT, OID, 1000)
    new = book.on_order_event(ACCT, OID, E.NEW, 2000, 0)

    # Assert
    assert fill.status is S.UNKNOWN and fill.expected
    assert new.status is S.PART_FILLED


def test_all_fills_before_new_complete_as_filled():
    # Arrange
    book = OrderBook()
    book.on_fill(ACCT, OID, 1000)
    book.on_fill(ACCT, OID, 1000)

    # Act
    new = book.on_order_event(ACCT, OID, E.NEW, 2000, 0)

    # Assert
    assert new.status is S.FILLED


def test_late_new_after_filled_keeps_filled():
    # Arrange
    book = OrderBook()
    book.on_order_event(ACCT, OID, E.NEW, 1000, 0)
    book.on_fill(ACCT, OID, 1000)

    # Act
    late = book.on_order_event(ACCT, OID, E.NEW, 1000, 0)

    # Assert
    assert late.status is S.FILLED
    assert late.expected is True


def test_update_qty_down_to_the_filled_quantity_makes_the_order_filled():
    # Arrange: 5 lots ordered, 3 filled
    book = OrderBook()
    book.on_order_event(ACCT, OID, E.NEW, 5000, 0)
    book.on_fill(ACCT, OID, 3000)

    # Act: the broker reports 2 lots cancelled (cumulative)
    out = book.on_order_event(ACCT, OID, E.UPDATE_QTY, 5000, 2000)

    # Assert
    assert out.status is S.FILLED
    assert book.get(ACCT, OID).live_quantity == 3000


def test_update_qty_to_zero_without_fills_is_cancelled():
    # Arrange
    book = OrderBook()
    book.on_order_event(ACCT, OID, E.NEW, 2000, 0)

    # Act
    out = book.on_order_event(ACCT, OID, E.UPDATE_QTY, 2000, 2000)

    # Assert
    assert out.status is S.CANCELLED


def test_cancel_quantity_is_cumulative_and_never_goes_back():
    # Arrange
    book = OrderBook()
    book.on_order_event(ACCT, OID, E.NEW, 5000, 0)
    book.on_order_event(ACCT, OID, E.UPDATE_QTY, 5000, 2000)

    # Act: a stale report with a smaller cancel total
    book.on_order_event(ACCT, OID, E.UPDATE_PRICE, 5000, 1000)

    # Assert
    assert book.get(ACCT, OID).cancel_quantity == 2000


def test_new_failed_is_failed_and_a_later_fill_is_unexpected():
    # Arrange
    book = OrderBook()
    failed = book.on_order_event(ACCT, OID, E.NEW_FAILED, 1000, 0)

    # Act
    fill = book.on_fill(ACCT, OID, 1000)

    # Assert
    assert failed.status is S.FAILED
    assert fill.status is S.FAILED
    assert fill.expected is False


def test_fill_beyond_live_quantity_is_an_overfill():
    # Arrange
    book = OrderBook()
    book.on_order_event(ACCT, OID, E.NEW, 1000, 0)
    book.on_fill(ACCT, OID, 1000)

    # Act
    extra = book.on_fill(ACCT, OID, 1000)

    # Assert
    assert extra.overfill is True
    assert extra.expected is False
    assert extra.status is S.FILLED


def test_fill_after_cancel_of_the_remainder_keeps_cancelled_and_is_not_an_overfill():
    # Arrange
    book = OrderBook()
    book.on_order_event(ACCT, OID, E.NEW, 2000, 0)
    book.on_order_event(ACCT, OID, E.CANCEL, 2000, 2000)

    # Act
    fill = book.on_fill(ACCT, OID, 1000)

    # Assert
    assert fill.status is S.CANCELLED
    assert fill.expected is True
    assert fill.overfill is False


def test_orders_are_kept_apart_by_account_and_id():
    # Arrange
    book = OrderBook()

    # Act
    book.on_order_event("A", OID, E.NEW, 1000, 0)
    book.on_fill("B", OID, 1000)

    # Assert
    assert book.get("A", OID).status is S.SUBMITTED
    assert book.get("B", OID).status is S.UNKNOWN
    assert len(book) == 2


def test_working_counts_submitted_partfilled_and_unknown_orders():
    # Arrange
    book = OrderBook()
    book.on_order_event(ACCT, "o1", E.NEW, 1000, 0)  # Submitted
    book.on_order_event(ACCT, "o2", E.NEW, 2000, 0)
    book.on_fill(ACCT, "o2", 1000)  # PartFilled
    book.on_fill(ACCT, "o3", 1000)  # Unknown
    book.on_order_event(ACCT, "o4", E.NEW, 1000, 0)
    book.on_fill(ACCT, "o4", 1000)  # Filled
    book.on_order_event(ACCT, "o5", E.NEW_FAILED, 1000, 0)  # Failed

    # Act
    working = book.working()

    # Assert
    assert working == 3


# ---------------------------------------------------------------------------------------
# Property: a finished order never works again
# ---------------------------------------------------------------------------------------

_order_events = st.tuples(
    st.sampled_from([k for k in EventKind if k is not E.FILL]),
    st.integers(min_value=0, max_value=5),  # order_quantity (lots)
    st.integers(min_value=0, max_value=5),  # cancel_quantity (lots)
)
_fills = st.tuples(st.just(E.FILL), st.integers(min_value=1, max_value=5), st.just(0))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_order_events, _fills), max_size=25))
def test_finished_order_never_returns_to_a_working_status(events):
    # Arrange
    book = OrderBook()
    finished = False

    for kind, qty, cancel in events:
        # Act
        if kind is E.FILL:
            outcome = book.on_fill(ACCT, OID, qty * 1000)
        else:
            outcome = book.on_order_event(ACCT, OID, kind, qty * 1000, cancel * 1000)
        status = book.get(ACCT, OID).status

        # Assert
        assert outcome.status is (status or S.UNKNOWN)
        if finished:
            assert status in TERMINAL, f"{status} after a final status, events={events}"
        finished = finished or status in TERMINAL
