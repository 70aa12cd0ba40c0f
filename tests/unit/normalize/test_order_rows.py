"""OrderBook.rows(): immutable copies of the day's orders, for readers on other threads."""

import msgspec
import pytest

from execstate.normalize.orders import EventKind, OrderBook, OrderRow, OrderStatus


def test_rows_list_orders_in_the_order_first_seen_with_their_quantities():
    book = OrderBook()
    book.on_order_event("S1", "b", EventKind.NEW, 3000, 0, ts=10)
    book.on_fill("S2", "a", 2, ts=11)  # a deal before its order
    book.on_order_event("S1", "b", EventKind.CANCEL, 3000, 1000, ts=12)
    book.record("S1", "b").strategy = "momo"
    book.record("S1", "b").symbol = "2330"

    rows = book.rows()

    assert rows == [
        OrderRow("S1", "b", OrderStatus.CANCELLED, "momo", "2330", 3000, 1000, 0, 2000, 12),
        OrderRow("S2", "a", OrderStatus.UNKNOWN, "unassigned", "", None, 0, 2, None, 11),
    ]


def test_a_row_is_a_copy_that_later_events_do_not_change():
    book = OrderBook()
    book.on_order_event("S1", "o", EventKind.NEW, 2, 0, ts=1)
    before = book.rows()[0]

    book.on_fill("S1", "o", 2, ts=2)

    assert before.status is OrderStatus.SUBMITTED and before.filled_quantity == 0
    assert book.rows()[0].status is OrderStatus.FILLED
    with pytest.raises(AttributeError):
        before.status = OrderStatus.FILLED  # frozen


def test_rows_encode_to_json_with_status_values():
    book = OrderBook()
    book.on_order_event("S1", "o", EventKind.NEW_FAILED, 2, 0, ts=1)

    assert msgspec.json.decode(msgspec.json.encode(book.rows()))[0]["status"] == "Failed"
