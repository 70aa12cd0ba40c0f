"""ShioajiBridge: callbacks -> (ts_ns, state, msg) on a queue; heartbeat and connection state."""

import queue
import threading
import time

import pytest
import shioaji as sj
from payloads import EventDictLike, stock_deal

from execstate.bridge.shioaji_adapter import EVENT_CODE_STATE, ConnectionState, ShioajiBridge


class RecordingApi:
    """Stands in for a logged-in `sj.Shioaji` (which cannot be built offline): keeps callbacks."""

    def __init__(self) -> None:
        self.order_cb = None
        self.event_cb = None
        self.session_down_cb = None
        self.calls: list[str] = []

    def set_order_callback(self, cb) -> None:
        self.calls.append("set_order_callback")
        self.order_cb = cb

    def set_event_callback(self, cb) -> None:
        self.calls.append("set_event_callback")
        self.event_cb = cb

    def set_session_down_callback(self, cb) -> None:
        self.calls.append("set_session_down_callback")
        self.session_down_cb = cb


def attached(raw_queue=None):
    api = RecordingApi()
    bridge = ShioajiBridge(api, raw_queue).attach()
    return api, bridge


def test_attach_registers_all_three_callbacks():
    # Arrange
    api = RecordingApi()
    bridge = ShioajiBridge(api)

    # Act
    returned = bridge.attach()

    # Assert
    assert returned is bridge
    assert sorted(api.calls) == ["set_event_callback", "set_order_callback", "set_session_down_callback"]
    assert callable(api.order_cb) and callable(api.event_cb) and callable(api.session_down_cb)


def test_order_callback_puts_a_three_tuple_with_the_very_same_msg_object():
    # Arrange
    api, bridge = attached()
    state = sj.OrderState.StockDeal
    msg = EventDictLike(stock_deal())
    before = time.time_ns()

    # Act
    api.order_cb(state, msg)
    after = time.time_ns()

    # Assert
    item = bridge.queue.get_nowait()
    assert type(item) is tuple and len(item) == 3
    ts_ns, got_state, got_msg = item
    assert type(ts_ns) is int and before <= ts_ns <= after
    assert got_state is state
    assert got_msg is msg
    assert bridge.queue.empty()


def test_order_callback_does_not_inspect_or_copy_the_msg():
    # Arrange: an object that fails on any access
    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"callback touched {name}")

    api, bridge = attached()
    msg = Untouchable()

    # Act
    api.order_cb("SDEAL", msg)

    # Assert
    assert bridge.queue.get_nowait()[2] is msg


def test_order_callback_updates_the_heartbeat_last_callback_time():
    # Arrange
    api, bridge = attached()
    assert bridge.heartbeat().last_callback_ns == 0

    # Act
    api.order_cb(sj.OrderState.StockOrder, {"a": 1})

    # Assert
    ts_ns = bridge.queue.get_nowait()[0]
    assert bridge.heartbeat().last_callback_ns == ts_ns


def test_events_keep_their_arrival_order_on_the_queue():
    # Arrange
    api, bridge = attached()
    msgs = [{"n": i} for i in range(50)]

    # Act
    for m in msgs:
        api.order_cb("SDEAL", m)

    # Assert
    out = [bridge.queue.get_nowait() for _ in msgs]
    assert [item[2] for item in out] == msgs
    assert all(a[0] <= b[0] for a, b in zip(out, out[1:], strict=False))


def test_callback_from_another_thread_reaches_the_queue():
    # Arrange
    api, bridge = attached()
    msgs = [{"n": i} for i in range(1000)]

    def shioaji_thread():
        for m in msgs:
            api.order_cb(sj.OrderState.FuturesDeal, m)

    # Act
    t = threading.Thread(target=shioaji_thread)
    t.start()
    t.join(timeout=10)

    # Assert
    assert not t.is_alive()
    got = [bridge.queue.get(timeout=1)[2] for _ in msgs]
    assert got == msgs
    assert bridge.heartbeat().last_callback_ns > 0


def test_injected_queue_is_the_one_used():
    # Arrange
    q: queue.SimpleQueue = queue.SimpleQueue()
    api, bridge = attached(q)

    # Act
    api.order_cb("SORDER", {})

    # Assert
    assert bridge.queue is q
    assert q.qsize() == 1


def test_heartbeat_queue_depth_reflects_queue_size():
    # Arrange
    api, bridge = attached()
    for i in range(3):
        api.order_cb("SDEAL", {"n": i})

    # Act
    full = bridge.heartbeat().queue_depth
    bridge.queue.get_nowait()
    less = bridge.heartbeat().queue_depth

    # Assert
    assert (full, less) == (3, 2)


def test_connection_is_unknown_before_attach_and_up_after():
    # Arrange
    bridge = ShioajiBridge(RecordingApi())
    before = bridge.heartbeat().connection

    # Act
    bridge.attach()

    # Assert
    assert before is ConnectionState.UNKNOWN
    assert bridge.heartbeat().connection is ConnectionState.UP


@pytest.mark.parametrize(("event_code", "state"), [
    (1, ConnectionState.DOWN),
    (2, ConnectionState.DOWN),
    (12, ConnectionState.RECONNECTING),
])
def test_session_event_code_changes_connection_state(event_code, state):
    # Arrange
    api, bridge = attached()

    # Act
    api.event_cb(0, event_code, "info", "event")

    # Assert
    assert bridge.heartbeat().connection is state
    assert EVENT_CODE_STATE[event_code] is state


def test_reconnect_sequence_goes_down_reconnecting_up():
    # Arrange
    api, bridge = attached()
    seen = []

    # Act
    for code in (1, 12, 13, 12, 0):
        api.event_cb(0, code, "", "")
        seen.append(bridge.heartbeat().connection)

    # Assert
    S = ConnectionState
    assert seen == [S.DOWN, S.RECONNECTING, S.UP, S.RECONNECTING, S.UP]
    assert [e.event_code for e in bridge.connection_events] == [1, 12, 13, 12, 0]


def test_connection_since_changes_only_when_the_state_changes():
    # Arrange
    api, bridge = attached()
    api.event_cb(0, 12, "", "")
    since_reconnecting = bridge.heartbeat().connection_since_ns

    # Act
    time.sleep(0.001)
    api.event_cb(0, 12, "", "")  # the same state again
    same = bridge.heartbeat().connection_since_ns
    time.sleep(0.001)
    api.event_cb(0, 13, "", "")
    changed = bridge.heartbeat().connection_since_ns

    # Assert
    assert same == since_reconnecting
    assert changed > since_reconnecting


def test_unknown_event_code_is_recorded_but_keeps_the_state():
    # Arrange
    api, bridge = attached()

    # Act
    api.event_cb(0, 16, "Subscribe or Unsubscribe ok", "SUBSCRIPTION_OK")

    # Assert
    assert bridge.heartbeat().connection is ConnectionState.UP
    ev = bridge.connection_events[-1]
    assert (ev.event_code, ev.info, ev.event) == (16, "Subscribe or Unsubscribe ok", "SUBSCRIPTION_OK")


def test_session_down_callback_marks_the_connection_down():
    # Arrange
    api, bridge = attached()

    # Act
    api.session_down_cb()

    # Assert
    hb = bridge.heartbeat()
    assert hb.connection is ConnectionState.DOWN
    assert bridge.connection_events[-1].event == "SessionDown"


def test_connection_event_log_is_bounded():
    # Arrange
    api, bridge = attached()

    # Act
    for _ in range(1500):
        api.event_cb(0, 16, "", "")

    # Assert
    assert len(bridge.connection_events) == 1000


# -- log lines ------------------------------------------------------------------------------------
from structlog.testing import capture_logs  # noqa: E402


def test_order_callback_logs_nothing():
    api, _bridge = attached()
    with capture_logs() as logs:
        api.order_cb(sj.OrderState.StockDeal, stock_deal())
    assert logs == []


def test_connection_notice_is_logged_at_info_and_trouble_as_a_warning():
    # Arrange
    api, _bridge = attached()

    # Act
    with capture_logs() as logs:
        api.event_cb(0, 12, "Reconnecting", "Session reconnecting")
        api.event_cb(0, 13, "Reconnected", "Session reconnected")
        api.event_cb(500, 16, "host unreachable", "Subscribe failed")

    # Assert
    assert [(e["event"], e["log_level"], e["event_code"], e["connection"]) for e in logs] == [
        ("broker_event", "warning", 12, "reconnecting"), ("broker_event", "info", 13, "up"), ("broker_event", "warning", 16, "up")]
    assert logs[2]["resp_code"] == 500 and logs[2]["info"] == "host unreachable" and logs[2]["detail"] == "Subscribe failed"


def test_session_down_is_logged_as_an_error():
    api, _bridge = attached()
    with capture_logs() as logs:
        api.session_down_cb()
    assert [(e["event"], e["log_level"]) for e in logs] == [("session_down", "error")]
