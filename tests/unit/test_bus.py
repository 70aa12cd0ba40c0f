"""EventBus: ordered fan-out, unknown topics, isolated subscriber errors, iterator subscriptions."""

import queue
import threading

import pytest

from execstate.bus import TOPIC_DELTA, TOPIC_FILL, TOPIC_ORDER, TOPIC_SNAPSHOT, TOPICS, EventBus


def test_subscribers_are_called_in_subscription_order_with_events_in_publish_order():
    # Arrange
    bus = EventBus()
    calls: list[tuple[str, object]] = []
    bus.subscribe(TOPIC_FILL, lambda e: calls.append(("first", e)))
    bus.subscribe(TOPIC_FILL, lambda e: calls.append(("second", e)))
    # Act
    bus.publish(TOPIC_FILL, 1)
    bus.publish(TOPIC_FILL, 2)
    # Assert
    assert calls == [("first", 1), ("second", 1), ("first", 2), ("second", 2)]


def test_events_go_only_to_their_topic():
    bus = EventBus()
    fills, orders = [], []
    bus.subscribe(TOPIC_FILL, fills.append)
    bus.subscribe(TOPIC_ORDER, orders.append)
    bus.publish(TOPIC_ORDER, "o1")
    bus.publish(TOPIC_DELTA, "d1")  # nobody listens: fine
    assert (fills, orders) == ([], ["o1"])


def test_the_same_event_object_is_handed_on():
    bus = EventBus()
    got = []
    bus.subscribe(TOPIC_DELTA, got.append)
    event = object()
    bus.publish(TOPIC_DELTA, event)
    assert got[0] is event


@pytest.mark.parametrize("call", [
    lambda bus: bus.subscribe("fills", print),
    lambda bus: bus.unsubscribe("fills", print),
    lambda bus: bus.iterate("fills"),
])
def test_unknown_topic_raises_value_error_naming_the_topic(call):
    with pytest.raises(ValueError, match="topic='fills': expected one of fill, order, delta, snapshot"):
        call(EventBus())


def test_publishing_to_an_unknown_topic_is_not_silent():
    # publish skips the topic check on the hot path; the lookup still fails loudly, naming the topic
    with pytest.raises(ValueError, match="fills"):
        EventBus().publish("fills", 1)


def test_raising_subscriber_is_counted_reported_and_does_not_stop_the_next():
    # Arrange
    reported: list[tuple[str, BaseException]] = []
    bus = EventBus(on_error=lambda topic, exc: reported.append((topic, exc)))
    after: list[object] = []
    boom = ZeroDivisionError("strategy bug")

    def bad(_event: object) -> None:
        raise boom

    bus.subscribe(TOPIC_FILL, bad)
    bus.subscribe(TOPIC_FILL, after.append)
    # Act
    bus.publish(TOPIC_FILL, "f1")
    bus.publish(TOPIC_FILL, "f2")
    # Assert
    assert after == ["f1", "f2"]
    assert bus.errors == 2
    assert reported == [(TOPIC_FILL, boom), (TOPIC_FILL, boom)]


def test_raising_subscriber_without_on_error_is_still_counted():
    bus = EventBus()
    bus.subscribe(TOPIC_ORDER, lambda e: 1 / 0)
    bus.publish(TOPIC_ORDER, "o")
    assert bus.errors == 1


def test_unsubscribe_stops_delivery_to_that_callback_only():
    bus = EventBus()
    a, b = [], []
    bus.subscribe(TOPIC_FILL, a.append)
    bus.subscribe(TOPIC_FILL, b.append)
    bus.publish(TOPIC_FILL, 1)
    bus.unsubscribe(TOPIC_FILL, a.append)
    bus.publish(TOPIC_FILL, 2)
    assert (a, b) == ([1], [1, 2])


def test_has_subscribers_follows_subscribe_and_unsubscribe():
    bus = EventBus()
    assert not any(bus.has_subscribers(t) for t in TOPICS)
    got = []
    bus.subscribe(TOPIC_SNAPSHOT, got.append)
    assert bus.has_subscribers(TOPIC_SNAPSHOT) and not bus.has_subscribers(TOPIC_FILL)
    bus.unsubscribe(TOPIC_SNAPSHOT, got.append)
    assert not bus.has_subscribers(TOPIC_SNAPSHOT)


def test_iterate_yields_only_events_published_afterwards_until_closed():
    # Arrange
    bus = EventBus()
    bus.publish(TOPIC_FILL, "before")
    sub = bus.iterate(TOPIC_FILL)
    assert bus.has_subscribers(TOPIC_FILL)
    # Act
    bus.publish(TOPIC_FILL, "f1")
    bus.publish(TOPIC_ORDER, "o1")
    bus.publish(TOPIC_FILL, "f2")
    sub.close()
    bus.publish(TOPIC_FILL, "after")
    # Assert
    assert list(sub) == ["f1", "f2"]
    assert not bus.has_subscribers(TOPIC_FILL)
    with pytest.raises(queue.Empty):
        sub.get(timeout=0.01)  # nothing queued after close


def test_iterate_feeds_a_consumer_on_another_thread_and_close_ends_it():
    # Arrange
    bus = EventBus()
    sub = bus.iterate(TOPIC_DELTA)
    got: list[int] = []
    consumer = threading.Thread(target=lambda: got.extend(sub))
    consumer.start()
    # Act
    for i in range(100):
        bus.publish(TOPIC_DELTA, i)
    sub.close()
    consumer.join(timeout=5)
    # Assert
    assert not consumer.is_alive()
    assert got == list(range(100))


def test_subscription_get_times_out_then_returns_next_event():
    bus = EventBus()
    sub = bus.iterate(TOPIC_ORDER)
    with pytest.raises(queue.Empty):
        sub.get(timeout=0.01)
    bus.publish(TOPIC_ORDER, "o1")
    assert sub.get(timeout=1) == "o1"
    sub.close()
    with pytest.raises(StopIteration):
        sub.get(timeout=1)


def test_closing_one_subscription_leaves_another_on_the_same_topic():
    bus = EventBus()
    one, two = bus.iterate(TOPIC_FILL), bus.iterate(TOPIC_FILL)
    one.close()
    bus.publish(TOPIC_FILL, "f")
    assert two.get(timeout=1) == "f"
    assert list(one) == []


def test_iterate_with_a_wrapping_filter_and_drain_then_close_unsubscribes():
    bus = EventBus()
    evens = bus.iterate(TOPIC_FILL, lambda put: (lambda e: put(e) if e % 2 == 0 else None))
    for n in range(5):
        bus.publish(TOPIC_FILL, n)
    assert evens.drain() == [0, 2, 4] and evens.drain() == []
    evens.close()
    bus.publish(TOPIC_FILL, 6)
    assert not bus.has_subscribers(TOPIC_FILL) and list(evens) == []
