"""SimShioaji: login, callback thread delivery, session events, trade cache and its health."""

from __future__ import annotations

import threading
import time

import pytest
import shioaji as sj

from execstate.bridge.sim import SimBroker, SimConfig, SimShioaji, generate_session

R = sj.TradeCacheHealthReasonCode


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def session():
    return generate_session(SimConfig(seed=1))


@pytest.fixture()
def api(session):
    client = SimShioaji(session, clock=FakeClock())
    client.login("key", "secret")
    return client


def _reasons(health) -> set[tuple[str, str]]:
    return {(r.event_type.value, r.reason.value) for r in health.reasons}


def test_account_methods_need_login(session):
    client = SimShioaji(session, clock=FakeClock())

    for call in (lambda: client.stock_account, client.list_accounts, client.list_trades,
                 lambda: client.set_order_callback(print), client.list_positions,
                 lambda: client.trade_cache_health(None)):
        with pytest.raises(sj.AuthError):
            call()


def test_login_returns_real_shioaji_accounts(session):
    client = SimShioaji(session, clock=FakeClock())

    accounts = client.login("key", "secret")

    assert [type(a) for a in accounts] == [sj.Account, sj.Account]
    assert client.stock_account is accounts[0] and client.futopt_account is accounts[1]
    assert (accounts[0].account_type, accounts[0].broker_id, accounts[0].account_id) == (
        sj.AccountType.Stock, "9A95", "1234567")
    assert accounts[1].account_type == sj.AccountType.Future and accounts[1].signed


def test_play_delivers_every_event_from_a_non_main_thread(api, session):
    got, threads = [], set()

    def on_order(stat, msg):
        threads.add(threading.get_ident())
        got.append((stat, msg))

    api.set_order_callback(on_order)
    pb = api.play()

    assert pb.finished.is_set() and pb.delivered == len(session.events) and pb.errors == 0
    assert threading.get_ident() not in threads and len(threads) == 1
    assert all(isinstance(stat, sj.OrderState) for stat, _ in got)
    assert [(stat.value, msg) for stat, msg in got] == session.events
    got[0][1]["event_id"] = "mutated"
    assert session.events[0][1]["event_id"] != "mutated"  # each delivery is a copy


def test_play_without_waiting_returns_a_joinable_handle_and_paces(api, session):
    seen = []
    api.set_order_callback(lambda stat, msg: seen.append(stat))

    start = time.monotonic()
    pb = api.play(pace_per_s=1000, wait=False, stop=40)
    assert pb.join(timeout=5)
    elapsed = time.monotonic() - start

    assert len(seen) == 40 and elapsed >= 0.035


def test_raising_callback_is_counted_and_delivery_goes_on(api, session):
    calls = []

    def flaky(stat, msg):
        calls.append(stat)
        if len(calls) % 2:
            raise RuntimeError("bad handler")

    api.set_order_callback(flaky)
    pb = api.play(stop=10)

    assert len(calls) == 10 and pb.errors == 5 and pb.delivered == 5


def test_disconnect_fires_down_events_and_loses_callbacks_until_baseline(api, session):
    events, downs, got = [], [], []
    api.set_event_callback(lambda *args: events.append(args))
    api.set_session_down_callback(lambda: downs.append(True))
    api.set_order_callback(lambda stat, msg: got.append(stat))

    api.disconnect()
    lost = api.play(stop=20)
    api.reconnect()
    after = api.play(start=20, stop=30)

    assert [e[1] for e in events] == [1, 12, 13] and downs == [True]
    assert all(isinstance(e[0], int) and isinstance(e[2], str) and isinstance(e[3], str) for e in events)
    assert (lost.lost, lost.delivered, after.delivered, len(got)) == (20, 0, 10, 10)
    lost_states = {state for state, _ in session.events[:20]}
    reasons = _reasons(api.trade_cache_health(api.stock_account)) | _reasons(
        api.trade_cache_health(api.futopt_account))
    assert {(state, "SequenceGap") for state in lost_states} <= reasons
    api.update_status()
    for acct in (api.stock_account, api.futopt_account):
        assert api.trade_cache_health(acct).state == sj.TradeCacheHealthState.Healthy


def test_deal_before_order_shows_pending_report_until_the_order_arrives(api, session):
    first_order = {}
    for i, (state, msg) in enumerate(session.events):
        if not state.endswith("DEAL"):
            first_order.setdefault(msg["order"]["id"], i)
    stop = next(i for i, (state, msg) in enumerate(session.events)
                if state.endswith("DEAL") and first_order[msg["trade_id"]] > i)
    state = session.events[stop][0]
    account = api.stock_account if state == "SDEAL" else api.futopt_account
    api.set_order_callback(lambda stat, msg: None)

    api.play(stop=stop + 1)
    pending = _reasons(api.trade_cache_health(account))
    api.play(start=stop + 1, stop=first_order[session.events[stop][1]["trade_id"]] + 1)

    assert (state, "PendingReport") in pending
    assert (state, "PendingReport") not in _reasons(api.trade_cache_health(account))


def test_missing_event_ids_and_dropped_events_degrade_health():
    s = generate_session(SimConfig(seed=5, n_orders=300, drop_rate=0.03))
    client = SimShioaji(s, clock=FakeClock())
    client.login("key", "secret")
    client.set_order_callback(lambda stat, msg: None)

    client.play()
    reasons = _reasons(client.trade_cache_health(client.stock_account)) | _reasons(
        client.trade_cache_health(client.futopt_account))
    client.order_deal_records()

    assert {r for _, r in reasons} >= {"SequenceGap", "UntrackableEventId"}
    assert client.trade_cache_health(client.stock_account).reasons == ()
    assert client.broker.calls["order"] == 1


def test_trade_cache_after_full_play_matches_the_broker(api):
    api.set_order_callback(lambda stat, msg: None)
    assert api.list_trades() == []

    api.play()
    cache = {t.order.id: (t.status.status, t.status.deal_quantity) for t in api.list_trades()}
    truth = {t.order.id: (t.status.status, t.status.deal_quantity) for t in api.broker.list_trades()}

    assert cache == truth
    assert api.broker.calls == {"login": 1}  # playing and list_trades cost no server calls


def test_play_moves_the_broker_clock_of_truth(api, session):
    api.set_order_callback(lambda stat, msg: None)

    api.play(stop=500)
    mid = api.broker.as_of
    positions = api.list_positions(api.futopt_account, unit=sj.Unit.Share)
    api.play(start=500)

    assert mid == session.recv_ts_ns[499] / 1e9
    assert api.broker.as_of is None
    net = {p.code: p.quantity for p in session.initial_positions if p.account == "F002000-7654321"}
    for f in session.fills:
        if f.account == "F002000-7654321" and f.ts <= mid:
            net[f.position_code] = net.get(f.position_code, 0) + f.signed_quantity
    got = {p.code: p.quantity if p.direction == sj.Action.Buy else -p.quantity for p in positions}
    assert got == {code: q for code, q in net.items() if q}


def test_login_is_refused_during_a_ban(session):
    clock = FakeClock()
    broker = SimBroker(session, clock)
    client = SimShioaji(session, broker)
    client.login("key", "secret")
    for _ in range(25):
        client.list_positions()
    with pytest.raises(sj.ServerError):
        client.list_positions()

    clock.t = 59.0
    with pytest.raises(sj.ServerError):
        client.login("key", "secret")
    clock.t = 60.5
    assert client.login("key", "secret")
