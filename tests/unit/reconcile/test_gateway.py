"""BrokerGateway and SlidingWindowLimiter against the real SimBroker rate gate, on a fake clock."""

from __future__ import annotations

import random
import threading
import time

import pytest
import shioaji as sj
from structlog.testing import capture_logs

from execstate.bridge.sim import SimBroker, SimConfig, SimShioaji, generate_session
from execstate.bridge.sim.ratelimit import ACCOUNTING, ORDER as SIM_ORDER, RateGate, ban_error
from execstate.config import RateLimitSettings
from execstate.reconcile.gateway import (
    FREE, ORDER, PORTFOLIO, BrokerCall, BrokerGateway, BrokerQueryError, DeadlineExceeded,
    SlidingWindowLimiter, is_ban_error)

SECRET_ID = "A123456789"


class FakeClock:
    """Thread-safe clock whose `sleep` advances it instead of sleeping.

    A sleep ends at the sleeping thread's last reading + s, and the clock jumps to the latest
    end seen: concurrent sleeps overlap as in real time instead of adding up.
    """

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t
        self.sleeps: list[float] = []
        self._lock = threading.Lock()
        self._seen = threading.local()

    def __call__(self) -> float:
        with self._lock:
            self._seen.t = self.t
            return self.t

    def sleep(self, s: float) -> None:
        with self._lock:
            self.sleeps.append(s)
            self.t = max(self.t, getattr(self._seen, "t", self.t) + max(s, 0.0))


class MaxRng:
    """`uniform` returns the upper bound: backoff delays equal their caps."""

    def uniform(self, a: float, b: float) -> float:
        return b


class RecordingBroker(SimBroker):
    """SimBroker that records (group, clock) of each server call it admits. `uplink_s`: the most
    network delay (uniform, seeded) before a request reaches the broker's rate gate."""

    def __init__(self, *args, uplink_s: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[str, float]] = []
        self._seen_lock = threading.Lock()
        self._uplink_s, self._uplink_rng = uplink_s, random.Random(11)

    def server_call(self, group: str) -> None:
        if self._uplink_s:
            with self._seen_lock:
                delay = self._uplink_rng.uniform(0, self._uplink_s)
            self._sleep(delay)
        now = self.gate._clock()
        super().server_call(group)
        with self._seen_lock:
            self.seen.append((group, now))

    def times(self, group: str) -> list[float]:
        return sorted(t for g, t in self.seen if g == group)


@pytest.fixture(scope="module")
def session():
    return generate_session(SimConfig(seed=1, n_orders=40))


@pytest.fixture()
def clock():
    return FakeClock()


@pytest.fixture()
def broker(session, clock):
    return RecordingBroker(session, clock, sleep=clock.sleep)


def _gateway(broker, clock, **kw) -> BrokerGateway:
    kw.setdefault("rng", random.Random(7))
    return BrokerGateway(broker, RateLimitSettings(), clock=clock, sleep=clock.sleep, **kw)


def _max_in_window(times: list[float], window_s: float) -> int:
    """Most calls in any half-open window (t - window_s, t], as the broker counts."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


# -- limiter ------------------------------------------------------------------------------------
def test_limiter_admits_limit_then_waits_a_window(clock):
    lim = SlidingWindowLimiter(3, 1.0, clock, clock.sleep, margin_s=0.1)
    starts = [lim.acquire().start for _ in range(7)]
    assert starts == pytest.approx([1000, 1000, 1000, 1001.1, 1001.1, 1001.1, 1002.2])
    assert lim.used() == 1


def test_limiter_try_acquire_returns_none_when_full(clock):
    lim = SlidingWindowLimiter(2, 1.0, clock, clock.sleep)
    assert lim.try_acquire() and lim.try_acquire()
    assert lim.try_acquire() is None
    assert clock.sleeps == []


def test_held_slot_counts_from_its_release(clock):
    lim = SlidingWindowLimiter(1, 1.0, clock, clock.sleep, margin_s=0.0)
    slot = lim.acquire(hold=True)
    clock.sleep(5.0)  # the call takes 5 s
    assert lim.try_acquire() is None
    slot.release()
    assert lim.try_acquire() is None
    assert lim.acquire().start == pytest.approx(1006.0)


def test_cancelled_slot_is_given_back(clock):
    lim = SlidingWindowLimiter(1, 1.0, clock, clock.sleep)
    lim.acquire(hold=True).cancel()
    assert lim.try_acquire() is not None


def test_limiter_raises_instead_of_waiting_past_deadline(clock):
    lim = SlidingWindowLimiter(1, 5.0, clock, clock.sleep)
    lim.acquire()
    with pytest.raises(DeadlineExceeded) as info:
        lim.acquire(deadline=clock() + 1.0)
    assert info.value.ready_at == pytest.approx(1005.05)
    assert clock.sleeps == []


def test_limiter_holds_under_real_threads():
    lim = SlidingWindowLimiter(5, 0.2, margin_s=0.01)
    starts: list[float] = []
    guard = threading.Lock()

    def worker() -> None:
        for _ in range(4):
            t = lim.acquire().start
            with guard:
                starts.append(t)

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(starts) == 20
    assert _max_in_window(starts, 0.2) <= 5


def test_limiter_rejects_bad_limits():
    with pytest.raises(ValueError, match="limit=0"):
        SlidingWindowLimiter(0, 1.0)


# -- budgets ------------------------------------------------------------------------------------
def test_200_sequential_position_queries_never_trip_the_ban(broker, clock):
    gw = _gateway(broker, clock)
    t0 = clock()
    for _ in range(200):
        gw.list_positions()
    assert broker.gate.bans == 0 and broker.gate.rejected[ACCOUNTING] == 0
    assert clock() - t0 == pytest.approx((200 / 25 - 1) * 5.05)
    assert _max_in_window(broker.times(ACCOUNTING), 5.0) == 25
    stats = gw.stats()
    assert stats.calls[PORTFOLIO] == 200 and stats.bans == 0 and stats.retries == 0
    assert stats.budget_wait_s == pytest.approx(7 * 5.05)


def test_parallel_map_never_exceeds_25_in_any_window(session, clock):
    broker = RecordingBroker(session, clock, sleep=clock.sleep, latency_s=0.3)
    stock, fut = broker.stock_account, broker.futopt_account
    calls = [BrokerCall("list_positions", (stock if i % 2 else fut,)) for i in range(100)]
    with _gateway(broker, clock, max_workers=8) as gw:
        results = gw.map(calls)
    assert broker.gate.bans == 0 and gw.stats().bans == 0
    times = broker.times(ACCOUNTING)
    assert len(times) == 100
    assert _max_in_window(times, 5.0) <= 25
    assert _max_in_window(times, 5.05) <= 25  # the safety margin held too
    kinds = [type(r[0]).__name__ for r in results]
    assert kinds == ["SimFuturePosition" if i % 2 == 0 else "SimStockPosition" for i in range(100)]


def test_parallel_map_with_real_threads_and_network_jitter_never_trips_the_ban(session):
    # real clock, limits scaled down 25x; requests take 0-30 ms to reach the broker's gate, far
    # more than the 5 ms margin, so only holding each slot until the reply keeps this safe
    broker = RecordingBroker(session, time.monotonic, uplink_s=0.03)
    broker.gate = RateGate(time.monotonic, {ACCOUNTING: (5, 0.2), SIM_ORDER: (10, 0.4)}, ban_s=0.5)
    settings = RateLimitSettings(portfolio_queries_per_window=5, portfolio_window_ms=200,
                                 order_calls_per_window=10, order_window_ms=400)
    calls = [BrokerCall("list_positions" if i % 3 else "update_status") for i in range(45)]
    with BrokerGateway(broker, settings, max_workers=6, margin_s=0.005, ban_s=0.5, ban_jitter_s=0.0) as gw:
        gw.map(calls)
    assert broker.gate.bans == 0 and gw.stats().bans == 0
    assert _max_in_window(broker.times(ACCOUNTING), 0.2) <= 5
    assert _max_in_window(broker.times(SIM_ORDER), 0.4) <= 10


def test_list_trades_uses_no_budget(broker, clock):
    gw = _gateway(broker, clock)
    for _ in range(25):
        gw.list_positions()
    t0 = clock()
    for _ in range(100):
        gw.list_trades()
    assert clock() == t0
    assert gw.stats().calls[FREE] == 100 and gw.stats().in_window[PORTFOLIO] == 25


def test_order_group_has_its_own_budget(broker, clock):
    gw = _gateway(broker, clock)
    for _ in range(25):
        gw.list_positions()
    t0 = clock()
    for i in range(250):
        (gw.update_status if i % 2 else gw.order_deal_records)()
    assert clock() == t0
    gw.update_status()
    assert clock() - t0 == pytest.approx(10.05)
    assert broker.gate.bans == 0 and gw.stats().calls[ORDER] == 251


def test_gateway_works_over_the_sim_client_facade(session, clock):
    api = SimShioaji(session, RecordingBroker(session, clock, sleep=clock.sleep), clock)
    api.login()
    gw = _gateway(api, clock)
    gw.update_status()
    assert gw.list_positions(api.broker.stock_account, sj.Unit.Share)
    assert len(gw.list_trades()) > 0


# -- retries ------------------------------------------------------------------------------------
def test_transient_errors_are_retried_with_growing_backoff(broker, clock):
    gw = _gateway(broker, clock, rng=MaxRng())
    broker.fail_next(3, sj.ServerError("StatusCode: 500, Detail: internal"))
    assert gw.list_positions() is not None
    assert clock.sleeps == [0.5, 1.0, 2.0]
    stats = gw.stats()
    assert (stats.retries, stats.errors, stats.bans, stats.calls[PORTFOLIO]) == (3, 3, 0, 4)


def test_backoff_is_full_jitter_and_capped(broker, clock):
    settings = RateLimitSettings(backoff_initial_ms=500, backoff_max_ms=1500)
    gw = BrokerGateway(broker, settings, clock=clock, sleep=clock.sleep, rng=random.Random(3), max_attempts=6)
    broker.fail_next(5, TimeoutError("read timed out"))
    gw.list_positions()
    caps = [0.5, 1.0, 1.5, 1.5, 1.5]
    assert len(clock.sleeps) == 5 and all(0 <= d <= c for d, c in zip(clock.sleeps, caps))
    assert len(set(clock.sleeps)) == 5  # jittered, not fixed


def test_connection_errors_are_retried(broker, clock):
    gw = _gateway(broker, clock)
    broker.fail_next(1, ConnectionError("reset"))
    assert gw.list_settlements() is not None
    assert gw.stats().retries == 1


def test_exhausted_retries_name_method_and_attempts(broker, clock):
    gw = _gateway(broker, clock)
    broker.fail_next(10, sj.ServerError("StatusCode: 500, Detail: internal"))
    with pytest.raises(BrokerQueryError) as info:
        gw.list_profit_loss()
    err = info.value
    assert (err.method, err.attempts) == ("list_profit_loss", 5)
    assert isinstance(err.last_error, sj.ServerError)
    assert "list_profit_loss" in str(err) and "5 attempts" in str(err)


def test_argument_errors_are_not_retried(broker, clock):
    gw = _gateway(broker, clock)
    bad = sj.Account(account_type=sj.AccountType.Stock, person_id="", broker_id="0000",
                     account_id="0000000", signed=True, username="")
    with pytest.raises(BrokerQueryError) as info:
        gw.list_positions(bad)
    assert info.value.attempts == 1 and isinstance(info.value.last_error, sj.AccountNotProvideError)


def test_other_exceptions_propagate_unchanged(broker, clock):
    gw = _gateway(broker, clock)
    with pytest.raises(AttributeError):
        gw.call(PORTFOLIO, "no_such_method")
    with pytest.raises(ValueError, match="group='market'"):
        gw.call("market", "list_positions")


# -- bans ---------------------------------------------------------------------------------------
def test_ban_reply_waits_out_the_ban_then_succeeds(broker, clock):
    gw = _gateway(broker, clock)
    broker.fail_next(1, ban_error())
    t0 = clock()
    assert gw.list_positions() is not None
    assert broker.times(ACCOUNTING)[-1] - t0 >= 60.0
    stats = gw.stats()
    assert (stats.bans, stats.retries, stats.calls[PORTFOLIO]) == (1, 1, 2)
    assert 60.0 <= stats.ban_wait_s <= 62.0 and stats.backoff_s == 0


def test_real_ban_is_not_hammered(session, clock):
    broker = RecordingBroker(session, clock, sleep=clock.sleep, extend_ban_on_retry=True)
    for _ in range(25):
        broker.list_positions()
    with pytest.raises(sj.ServerError):
        broker.list_positions()  # the 26th direct call starts a real ban
    ban_end = broker.banned_until
    gw = _gateway(broker, clock)
    gw.update_status()  # another group: its first call meets the ban, then it waits it out
    assert broker.gate.rejected[SIM_ORDER] == 1
    assert broker.times(SIM_ORDER)[-1] >= ban_end
    assert gw.stats().bans == 1


def test_ban_is_global_across_threads_and_groups(broker, clock):
    gw = _gateway(broker, clock)
    broker.fail_next(1, ban_error())
    with pytest.raises(DeadlineExceeded) as info:
        gw.list_positions(deadline=clock() + 10.0)  # ban seen; waiting it out would cross the deadline
    assert info.value.waiting_for == "broker ban to end" and is_ban_error(info.value.last_error)
    ban_until = gw.stats().ban_until
    assert ban_until is not None and ban_until - clock() >= 60.0
    done: list[object] = []
    th = threading.Thread(target=lambda: done.append(gw.order_deal_records()))
    th.start()
    th.join(5.0)
    assert done and broker.times(SIM_ORDER) == [pytest.approx(ban_until)]
    assert gw.list_trades() is not None  # local cache: never blocked


def test_is_ban_error_matches_message_or_503():
    assert is_ban_error(ban_error())
    assert is_ban_error(sj.ServerError("StatusCode: 503, Detail: Service Unavailable"))
    assert is_ban_error(sj.ShioajiError("操作異常，請1分鐘後再重新登入"))
    assert not is_ban_error(sj.ServerError("StatusCode: 500, Detail: internal"))


# -- deadlines ----------------------------------------------------------------------------------
def test_deadline_that_budget_wait_would_cross_raises_at_once(broker, clock):
    gw = _gateway(broker, clock)
    for _ in range(25):
        gw.list_positions()
    t0 = clock()
    with pytest.raises(DeadlineExceeded) as info:
        gw.list_positions(deadline=t0 + 1.0)
    assert clock() == t0 and info.value.attempts == 0 and info.value.method == "list_positions"
    assert len(broker.times(ACCOUNTING)) == 25
    assert gw.list_positions(deadline=t0 + 6.0) is not None  # a later deadline waits


def test_deadline_that_backoff_would_cross_raises(broker, clock):
    gw = _gateway(broker, clock, rng=MaxRng())
    broker.fail_next(1, sj.ServerError("StatusCode: 500, Detail: internal"))
    with pytest.raises(DeadlineExceeded) as info:
        gw.list_positions(deadline=clock() + 0.1)
    assert info.value.attempts == 1 and info.value.waiting_for == "retry backoff"
    assert clock.sleeps == []


def test_map_raises_first_error_in_input_order(broker, clock):
    bad = sj.Account(account_type=sj.AccountType.Stock, person_id="", broker_id="0000",
                     account_id="0000000", signed=True, username="")
    with _gateway(broker, clock, max_workers=2) as gw:
        out = gw.map([("list_positions",), ("list_positions", (bad,))], return_exceptions=True)
        assert isinstance(out[1], BrokerQueryError) and isinstance(out[0], list)
        with pytest.raises(BrokerQueryError):
            gw.map([("list_settlements",), ("list_positions", (bad,)), ("list_settlements",)])


# -- secrets ------------------------------------------------------------------------------------
def test_arguments_never_reach_logs_or_errors(broker, clock):
    acct = sj.Account(account_type=sj.AccountType.Stock, person_id=SECRET_ID,
                      broker_id=broker.stock_account.broker_id, account_id=broker.stock_account.account_id,
                      signed=True, username="")
    gw = _gateway(broker, clock)
    broker.fail_next(10, sj.ServerError("StatusCode: 500, Detail: internal"))
    with capture_logs() as logs, pytest.raises(BrokerQueryError) as info:
        gw.list_positions(acct)
    assert logs and SECRET_ID not in repr(logs) and SECRET_ID not in str(info.value)

