"""Duck-typed stand-in for the parts of the sync `shioaji.Shioaji` client that execstate uses.

Entry points: `SimShioaji(session, broker=None, clock=time.monotonic, ack_latency_s=0.002,
fill_latency_s=0.01)` with `login`, `logout`, `stock_account`, `futopt_account`,
`list_accounts`, `subscribe_trade`, `unsubscribe_trade`, `set_order_callback`,
`set_event_callback`, `set_session_down_callback`, `trade_cache_health`, `list_trades`,
`update_status`, `order_deal_records`, `Contracts`, `place_order`, `cancel_order`,
`restore_placed`, the portfolio queries (delegated to `SimBroker`), and the simulation
controls `play(...) -> Playback`, `disconnect()`, `reconnect()`, `drain_orders(timeout)`.

Invariants:
- `play` calls the order callback as `cb(sj.OrderState(state), payload)` from one non-main
  thread ("sim-shioaji-order-cb"), one event at a time, in `session.events` order. Each call
  gets its own copy of the payload. A raising callback is counted in `Playback.errors` and
  delivery goes on (the SDK's callback thread logs and continues [I]).
- While disconnected (or unsubscribed) events are lost, as callbacks are in a real outage.
  Lost events, `session.dropped` events passed during play, deliveries with event_id "" and
  deals whose order event has not arrived make `trade_cache_health` Degraded (SequenceGap,
  UntrackableEventId, PendingReport) until a baseline: `update_status` or `order_deal_records`.
- `list_trades` is the local cache: deduplicated delivered events plus the last baseline;
  no server call, no rate budget. Before `login` the account/trade methods raise
  `sj.AuthError('Not authenticated')`, like 1.7.9.
- Event callback: `cb(resp_code, event_code, info, event)` with Solace codes 0 UP_NOTICE,
  1 DOWN_ERROR, 12 RECONNECTING_NOTICE, 13 RECONNECTED_NOTICE; called on the caller's thread.
- `place_order(contract, order)` takes the real `sj.StockOrder` / `sj.FuturesOrder` and a
  contract (`sj.Stock`, `sj.Future`, `sj.Option`, `sj.BaseContract`, or `api.Contracts...`),
  spends one order-group call (250 per 10 s, then the ban), books the order's reports and
  deals into the broker's truth at once (`placement` has the fill model), and returns a
  `SimTrade` (1.7.9's `Trade` cannot be constructed) with status PendingSubmit. The reports
  reach the order callback later, from the "sim-shioaji-order-cb" thread: the New after
  `ack_latency_s`, each further report `fill_latency_s` after the previous one; they may
  race the return, as in the SDK. `cancel_order(trade)` cancels a resting order.
  `update_status(trade=t)` and `cancel_order(t)` refresh `t.status` in place, as the SDK does.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import shioaji as sj

from execstate.bridge.sim.broker import SimBroker
from execstate.bridge.sim.catalog import taipei_ms
from execstate.bridge.sim.placement import OrderDesk, Outbox, SimContracts, _v
from execstate.bridge.sim.ratelimit import LOGIN, ORDER
from execstate.bridge.sim.records import SimTrade, build_trades, copy_payload, event_ts

UP_NOTICE, DOWN_ERROR, RECONNECTING_NOTICE, RECONNECTED_NOTICE = 0, 1, 12, 13
_R = sj.TradeCacheHealthReasonCode


@dataclass(frozen=True)
class SimTradeCacheHealthReason:
    """Mirror of `shioaji.TradeCacheHealthReason`."""

    event_type: sj.OrderState
    reason: sj.TradeCacheHealthReasonCode


@dataclass(frozen=True)
class SimTradeCacheHealth:
    """Mirror of `shioaji.TradeCacheHealth`."""

    state: sj.TradeCacheHealthState
    reasons: tuple[SimTradeCacheHealthReason, ...]


class Playback:
    """Handle on one `play` run: counters, `join()`, `stop()`."""

    def __init__(self) -> None:
        self.delivered = 0  # callbacks that returned normally
        self.lost = 0  # events lost to a disconnect / unsubscribe
        self.errors = 0  # callbacks that raised
        self.thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.finished = threading.Event()

    def stop(self) -> None:
        """Ask the delivery loop to end after the current event."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the run to end; True if it did."""
        return self.finished.wait(timeout)


def _identity(state: str, msg: dict) -> str:
    return msg["event_id"] or state + json.dumps(msg, sort_keys=True)


class SimShioaji:
    """A logged-in-able fake client over one `SimSession` (see module docstring)."""

    def __init__(self, session: Any, broker: SimBroker | None = None,
                 clock: Callable[[], float] = time.monotonic, *, ack_latency_s: float = 0.002,
                 fill_latency_s: float = 0.01) -> None:
        self.session = session
        self.broker = broker or SimBroker(session, clock)
        self.Contracts = SimContracts()
        self.ack_latency_s, self.fill_latency_s = ack_latency_s, fill_latency_s
        self._desk = OrderDesk(session.config, self.broker.accounts, (o.order_id for o in session.orders))
        self._outbox = Outbox(self._deliver_placed)
        self.placed_events: Counter[str] = Counter()  # placed orders' reports: delivered, lost, errors
        self._lock = threading.RLock()
        self._order_cb: Callable[[Any, Any], None] | None = None
        self._event_cb: Callable[[int, int, str, str], None] | None = None
        self._down_cb: Callable[[], None] | None = None
        self._logged_in = False
        self._subscribed: set[str] = set()
        self._connected = True
        self._cache: dict[str, tuple[str, dict]] = {}
        self._orders_seen: set[str] = set()
        self._pending: dict[str, str] = {}  # trade_id -> deal state awaiting its order event
        self._untrackable: set[str] = set()
        self._gaps: set[str] = set()

    # -- auth and accounts ---------------------------------------------------------------------
    def login(self, api_key: str = "", secret_key: str = "", subscribe_trade: bool = True,
              receive_window: int = 30000, force_refresh: bool = False) -> list[Any]:
        """Log in (login budget; raises during a ban) and return [stock, futopt] accounts."""
        self.broker.server_call(LOGIN)
        accounts = self._accounts()
        with self._lock:
            self._logged_in, self._connected = True, True
            if subscribe_trade:
                self._subscribed |= set(self.broker.accounts)
        self._fire_event(UP_NOTICE, "host 'sim', hostname 'sim:80' IP 127.0.0.1", "Session up")
        return accounts

    def logout(self) -> None:
        """Forget the login; account and trade methods raise AuthError again."""
        with self._lock:
            self._logged_in = False

    def _require_login(self) -> None:
        if not self._logged_in:
            raise sj.AuthError("Not authenticated")

    def _accounts(self) -> list[Any]:
        return [self.broker.stock_account, self.broker.futopt_account]

    @property
    def stock_account(self) -> Any:
        """Default stock account (`sj.Account`)."""
        self._require_login()
        return self.broker.stock_account

    @property
    def futopt_account(self) -> Any:
        """Default futures/options account (`sj.Account`)."""
        self._require_login()
        return self.broker.futopt_account

    def list_accounts(self) -> list[Any]:
        """[stock account, futopt account]."""
        self._require_login()
        return self._accounts()

    def subscribe_trade(self, account: Any, timeout: int | None = 30000) -> bool:
        """Receive order/deal callbacks of `account`."""
        self._require_login()
        with self._lock:
            self._subscribed.add(self.broker.account_key(account))
        return True

    def unsubscribe_trade(self, account: Any, timeout: int | None = 30000) -> bool:
        """Stop order/deal callbacks of `account` (its events are then lost)."""
        self._require_login()
        with self._lock:
            self._subscribed.discard(self.broker.account_key(account))
        return True

    # -- callbacks -----------------------------------------------------------------------------
    def set_order_callback(self, callback: Callable[[Any, Any], None]) -> None:
        """Register cb(stat: sj.OrderState, msg: dict)."""
        self._require_login()
        self._order_cb = callback

    def clear_order_callback(self) -> None:
        """Drop the order callback."""
        self._order_cb = None

    def set_event_callback(self, callback: Callable[[int, int, str, str], None]) -> None:
        """Register cb(resp_code, event_code, info, event) for session events."""
        self._event_cb = callback

    def set_session_down_callback(self, callback: Callable[[], None]) -> None:
        """Register cb() fired on DOWN_ERROR."""
        self._require_login()
        self._down_cb = callback

    def _fire_event(self, code: int, info: str, event: str) -> None:
        if self._event_cb is not None:
            self._event_cb(0, code, info, event)

    def disconnect(self, info: str = "Peer closed socket, fd 42, cannot read") -> None:
        """Session goes down: event code 1, then the session-down callback; events are lost."""
        with self._lock:
            self._connected = False
        self._fire_event(DOWN_ERROR, info, "Session down")
        if self._down_cb is not None:
            self._down_cb()

    def reconnect(self) -> None:
        """Session comes back: event codes 12 then 13."""
        self._fire_event(RECONNECTING_NOTICE, "reconnecting", "Session reconnecting")
        with self._lock:
            self._connected = True
        self._fire_event(RECONNECTED_NOTICE, "host 'sim', hostname 'sim:80' IP 127.0.0.1",
                         "Session reconnected")

    # -- playback ------------------------------------------------------------------------------
    def play(self, pace_per_s: float | None = None, thread: bool = True, wait: bool = True,
             start: int = 0, stop: int | None = None, advance_broker: bool = True) -> Playback:
        """Deliver `session.events[start:stop]` to the order callback.

        `pace_per_s`: events per second of wall time (None: as fast as possible). `thread`:
        deliver from a new thread (as the SDK does); `wait`: join it before returning.
        `advance_broker`: move `broker.as_of` to each event's receive time, and to the whole
        day when the run reaches the end of the session.
        """
        self._require_login()
        pb = Playback()
        end = len(self.session.events) if stop is None else min(stop, len(self.session.events))
        run = lambda: self._run(pb, start, end, pace_per_s, advance_broker)  # noqa: E731
        if not thread:
            run()
            return pb
        pb.thread = threading.Thread(target=run, name="sim-shioaji-order-cb", daemon=True)
        pb.thread.start()
        if wait:
            pb.thread.join()
        return pb

    def _run(self, pb: Playback, start: int, end: int, pace: float | None, advance: bool) -> None:
        events, recv_ns, dropped = self.session.events, self.session.recv_ts_ns, self.session.dropped
        t0, drop_i = time.monotonic(), 0
        try:
            for i in range(start, end):
                if pb._stop.is_set():
                    return
                if pace:
                    delay = t0 + (i - start) / pace - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                while drop_i < len(dropped) and dropped[drop_i][0] <= i:
                    if dropped[drop_i][0] >= start:
                        with self._lock:
                            self._gaps.add(dropped[drop_i][1])
                    drop_i += 1
                state, msg = events[i]
                if advance:
                    self.broker.set_as_of(max(self.broker.as_of or 0.0, recv_ns[i] / 1e9))
                if not self._admit(state, msg):
                    pb.lost += 1
                    continue
                cb = self._order_cb
                if cb is None:
                    continue
                try:
                    cb(sj.OrderState(state), copy_payload(msg))
                    pb.delivered += 1
                except Exception:  # noqa: BLE001 - the SDK's thread survives a bad callback
                    pb.errors += 1
            if end == len(events):
                with self._lock:
                    self._gaps.update(s for pos, s, _ in dropped[drop_i:] if pos >= start)
                if advance:
                    self.broker.set_as_of(None)
        finally:
            pb.finished.set()

    def _admit(self, state: str, msg: dict) -> bool:
        """Update cache and health for one arriving event; False if it is lost."""
        acct = msg["order"]["account"] if "order" in msg else msg
        with self._lock:
            if not self._connected or f'{acct["broker_id"]}-{acct["account_id"]}' not in self._subscribed:
                self._gaps.add(state)
                return False
            self._cache.setdefault(_identity(state, msg), (state, msg))
            if msg["event_id"] == "":
                self._untrackable.add(state)
            if state.endswith("DEAL"):
                if msg["trade_id"] not in self._orders_seen:
                    self._pending[msg["trade_id"]] = state
            else:
                self._orders_seen.add(msg["order"]["id"])
                self._pending.pop(msg["order"]["id"], None)
        return True

    # -- trade cache and health ----------------------------------------------------------------
    def _baseline(self, account: Any) -> None:
        records = self.broker.truth_records(account)
        with self._lock:
            for state, msg in records:
                self._cache.setdefault(_identity(state, msg), (state, msg))
                if not state.endswith("DEAL"):
                    self._orders_seen.add(msg["order"]["id"])
            states = self._states(account)
            self._gaps -= states
            self._untrackable -= states
            self._pending = {t: s for t, s in self._pending.items() if s not in states and t not in self._orders_seen}

    def _states(self, account: Any) -> set[str]:
        if account is None:
            return {"SORDER", "SDEAL", "FORDER", "FDEAL"}
        stock = self.broker.account_key(account) == self.session.config.stock_account.key
        return {"SORDER", "SDEAL"} if stock else {"FORDER", "FDEAL"}

    def trade_cache_health(self, account: Any) -> SimTradeCacheHealth:
        """Healthy, or Degraded with one reason per (event type, cause) still unresolved."""
        self._require_login()
        key, states = self.broker.account_key(account), self._states(account)
        with self._lock:
            found = [(s, _R.NotSubscribed) for s in states if key not in self._subscribed or not self._connected]
            found += [(s, _R.SequenceGap) for s in states & self._gaps]
            found += [(s, _R.UntrackableEventId) for s in states & self._untrackable]
            found += [(s, _R.PendingReport) for s in states & set(self._pending.values())]
        reasons = tuple(SimTradeCacheHealthReason(sj.OrderState(s), r) for s, r in sorted(found, key=lambda x: (x[0], x[1].value)))
        state = sj.TradeCacheHealthState.Degraded if reasons else sj.TradeCacheHealthState.Healthy
        return SimTradeCacheHealth(state, reasons)

    def list_trades(self) -> list[SimTrade]:
        """Trades from the local cache (delivered events + last baseline). Free."""
        self._require_login()
        with self._lock:
            records = list(self._cache.values())
        return build_trades(records, self.broker.accounts)

    def update_status(self, account: Any = None, *, trade: Any = None, timeout: int | None = 30000,
                      cb: Callable | None = None) -> None:
        """Server refresh (order budget); the cache gets a baseline (None: all accounts), and
        `trade` (a `SimTrade`), when given, its current status."""
        self._require_login()
        self.broker.update_status(account, trade=trade, timeout=timeout)
        self._baseline(account)
        if trade is not None:
            self._refresh(trade)
        if cb is not None:
            cb(self.list_trades())

    # -- order entry ---------------------------------------------------------------------------
    def place_order(self, contract: Any, order: Any, timeout: int | None = 30000,
                    cb: Callable[[SimTrade], None] | None = None) -> SimTrade:
        """Place a real `sj.StockOrder` / `sj.FuturesOrder` (see the module docstring).

        Raises the ban error past the order budget, `sj.ShioajiValueError` /
        `sj.ShioajiTypeError` for an order the broker refuses (unknown contract, wrong order
        class or account, quantity <= 0, a limit without price, custom_field over 6 characters).
        """
        self._require_login()
        default = self.broker.stock_account if _v(getattr(contract, "security_type", "")) == "STK" else self.broker.futopt_account
        key = self.broker.account_key(getattr(order, "account", None) or default)
        self.broker.server_call(ORDER)
        placement = self._desk.place(contract, order, key, self._floor_ms(), self.broker.mark_price)
        self.broker.add_placed(placement.records, placement.fills)
        self._send(placement.records)
        if cb is not None:
            cb(placement.trade)
        return placement.trade

    def cancel_order(self, trade: Any, timeout: int | None = 30000,
                     cb: Callable[[Any], None] | None = None) -> Any:
        """Cancel what rests of a placed order (one order-group call); a finished order is
        left as it is. Returns `trade`, its status refreshed."""
        self._require_login()
        self.broker.server_call(ORDER)
        placement = self._desk.cancel(trade.order.id, self._floor_ms())
        if placement is not None:
            self.broker.add_placed(placement.records, placement.fills)
            self._send(placement.records)
        self._refresh(trade)
        if cb is not None:
            cb(trade)
        return trade

    def restore_placed(self, records: Any) -> int:
        """After a restart: take back the reports of orders placed earlier today (e.g. a
        journal's (state, payload) pairs; other records are ignored) into the broker's truth,
        so ids continue after them. Returns how many reports were restored."""
        placement = self._desk.restore(records)
        self.broker.add_placed(placement.records, placement.fills)
        return len(placement.records)

    def drain_orders(self, timeout: float | None = 10.0) -> bool:
        """Wait until every placed order's report has reached the callback; False on timeout."""
        return self._outbox.join(timeout)

    def _send(self, records: tuple[tuple[str, dict], ...]) -> None:
        delays = (self.ack_latency_s + i * self.fill_latency_s for i in range(len(records)))
        self._outbox.send((d, state, copy_payload(msg)) for d, (state, msg) in zip(delays, records))

    def _deliver_placed(self, state: str, msg: dict) -> None:
        """One placed order's report, on the outbox thread: as `play` delivers the day's."""
        if not self._admit(state, msg):
            self.placed_events["lost"] += 1
            return
        cb = self._order_cb
        if cb is None:
            return
        try:
            cb(sj.OrderState(state), copy_payload(msg))
            self.placed_events["delivered"] += 1
        except Exception:  # noqa: BLE001 - the SDK's thread survives a bad callback
            self.placed_events["errors"] += 1

    def _floor_ms(self) -> int:
        """Exchange time of "now" for a placed order: where the day's replay stands (its end
        when fully played), never before 09:00 of the trade date."""
        as_of = self.broker.as_of
        if as_of is None:
            as_of = event_ts(*self.session.records[-1]) if self.session.records else 0.0
        return max(int(as_of * 1000) + 1, taipei_ms(self.session.config.trade_date, 9, 0))

    def _refresh(self, trade: Any) -> None:
        """Give a `SimTrade` the broker's current status of its order, in place."""
        tid = trade.order.id
        records = [(s, m) for s, m in self.broker.truth_records()
                   if (m["trade_id"] if s.endswith("DEAL") else m["order"]["id"]) == tid]
        fresh = build_trades(records, self.broker.accounts)
        if fresh and isinstance(trade, SimTrade):
            object.__setattr__(trade, "status", fresh[0].status)  # frozen mirror; the SDK's Trade is updated in place

    def order_deal_records(self, account: Any = None, timeout: int | None = 30000,
                           cb: Callable | None = None) -> list[tuple[sj.OrderState, dict]]:
        """Complete records of the day (see `SimBroker.order_deal_records`); also a baseline."""
        self._require_login()
        out = self.broker.order_deal_records(account, timeout=timeout, cb=cb)
        self._baseline(account)
        return out

    # -- portfolio (delegated) -----------------------------------------------------------------
    def list_positions(self, account: Any = None, unit: Any = None, timeout: int | None = 30000,
                       cb: Callable | None = None) -> list[Any]:
        """See `SimBroker.list_positions`."""
        self._require_login()
        return self.broker.list_positions(account, unit, timeout, cb)

    def list_profit_loss(self, account: Any = None, begin_date: str = "", end_date: str = "",
                         unit: Any = None, timeout: int | None = 30000, cb: Callable | None = None) -> list[Any]:
        """See `SimBroker.list_profit_loss`."""
        self._require_login()
        return self.broker.list_profit_loss(account, begin_date, end_date, unit, timeout, cb)

    def list_profit_loss_detail(self, account: Any = None, detail_id: int = 0, unit: Any = None,
                                timeout: int | None = 30000, cb: Callable | None = None) -> list[Any]:
        """See `SimBroker.list_profit_loss_detail`."""
        self._require_login()
        return self.broker.list_profit_loss_detail(account, detail_id, unit, timeout, cb)

    def list_settlements(self, account: Any = None, timeout: int | None = 30000,
                         cb: Callable | None = None) -> Any:
        """See `SimBroker.list_settlements`."""
        self._require_login()
        return self.broker.list_settlements(account, timeout, cb)
