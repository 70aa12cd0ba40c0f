"""When the monitor reconciles: each trigger, with a fake clock and a recording reconciler."""

from types import SimpleNamespace

from execstate.bridge.shioaji_adapter import ConnectionState, Heartbeat
from execstate.config import parse_settings
from execstate.reconcile.halt import HaltState
from execstate.reconcile.monitor import Monitor
from execstate.reconcile.policy import MismatchTracker

SETTINGS = parse_settings({}).reconcile  # gap 1000 ms, deadline 10 s, poll 5 s


class Recorder:
    """Stands in for the Reconciler (its broker side is tested elsewhere): records each check."""

    def __init__(self):
        self.accounts = ["S-1", "F-1"]
        self.tracker = MismatchTracker(2)
        self.calls = []

    def check(self, accounts=None, symbols=None, reason=""):
        self.calls.append((reason, accounts, symbols))
        return SimpleNamespace(reason=reason)


class World:
    def __init__(self):
        self.t = 1000.0  # monotonic seconds
        self.wall = 1_000_000_000_000  # ns
        self.connection = ConnectionState.UP
        self.connection_since = 0  # ns, stamped by the bridge at each connection state change
        self.last_callback = self.wall
        self.working = 0
        self.gaps = set()
        self.halt = HaltState()
        self.rec = Recorder()
        self.monitor = Monitor(self.rec, SETTINGS, self.heartbeat, lambda: self.working, lambda a: a in self.gaps, self.halt,
                               clock=lambda: self.t, wall_ns=lambda: self.wall)

    def heartbeat(self):
        return Heartbeat(self.last_callback, self.connection, self.connection_since, 0)

    def advance(self, seconds):
        self.t += seconds
        self.wall += int(seconds * 1e9)

    def reasons(self):
        return [c[0].split(" ")[0] for c in self.rec.calls]


def test_quiet_market_only_polls_at_the_interval():
    w = World()
    w.advance(4.9)
    assert w.monitor.run_once() is None
    w.advance(0.2)
    w.monitor.run_once()
    assert w.reasons() == ["poll"]


def test_callback_gap_while_orders_work_reconciles_once_per_gap():
    w = World()
    w.working = 3
    w.advance(1.2)
    w.monitor.run_once()
    w.advance(0.5)
    w.monitor.run_once()  # same gap: not again
    assert w.reasons() == ["callback"]
    w.last_callback = w.wall  # a callback arrives
    w.advance(1.5)
    w.monitor.run_once()
    assert w.reasons() == ["callback", "callback"]


def test_silence_without_working_orders_is_normal():
    w = World()
    w.working = 0
    w.advance(3)
    assert w.monitor.run_once() is None


def test_reconnect_triggers_a_full_reconcile():
    w = World()
    w.connection = ConnectionState.RECONNECTING
    assert w.monitor.run_once() is None
    w.advance(2)
    w.connection = ConnectionState.UP
    w.monitor.run_once()
    assert w.reasons() == ["reconnect"]
    assert not w.halt.is_halted


def test_outage_between_two_evaluations_still_triggers_a_reconnect_reconcile():
    # Arrange: the monitor has looked once; the session then drops and comes back before its next look
    w = World()
    w.monitor.run_once()
    w.advance(0.25)

    # Act: DOWN then UP again (the bridge stamps a new connection_since_ns), state UP at both looks
    w.connection_since = 7
    w.monitor.run_once()
    w.advance(0.25)
    w.monitor.run_once()

    # Assert: one reconnect reconcile, not repeated
    assert w.reasons() == ["reconnect"]


def test_connection_down_past_the_deadline_halts():
    w = World()
    w.connection = ConnectionState.DOWN
    w.monitor.run_once()
    w.advance(10.5)
    w.monitor.run_once()
    assert w.halt.is_halted and "down" in w.halt.status().reason


def test_sequence_gap_reported_by_the_broker_reconciles_that_account():
    w = World()
    w.gaps = {"F-1"}
    w.monitor.run_once()
    assert w.rec.calls == [("sequence gap", ["F-1"], None)]


def test_pending_mismatch_gets_its_second_look_after_a_second():
    from execstate.reconcile.diff import Discrepancy

    w = World()
    w.rec.tracker.observe([Discrepancy("S-1", "2330", 1000, 0)], in_flight={("S-1", "2330")})
    w.advance(1.1)
    w.monitor.run_once()
    assert w.rec.calls == [("confirm", ["S-1"], ["2330"])]


def test_operator_request_runs_first_and_returns_its_result():
    w = World()
    w.working = 3
    w.advance(2)  # a gap is pending too
    result = w.monitor.request(["S-1"], ["2330"], reason="operator", wait_s=1)
    assert result.reason == "operator"
    assert w.rec.calls[0] == ("operator", ["S-1"], ["2330"])
