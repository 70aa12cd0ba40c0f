"""Strategy API: what a strategy or a risk check in the same process uses.

Usage (the simulated broker; `examples/simple_strategy.py` is the runnable version)::

    import shioaji as sj
    from execstate.api import Execstate
    from execstate.config import parse_settings

    settings = parse_settings({"state_dir": "/tmp/es-demo", "recorder": {"enabled": False},
                               "telemetry": {"metrics_port": 0}})
    with Execstate.simulated(settings) as es:            # a running service on a simulated broker
        fills = es.fills(strategy="mean_rev")             # open streams before placing
        es.on_fill(lambda f: print(f.symbol, f.side, f.quantity), strategy="mean_rev")
        order = sj.StockOrder(action="Buy", price=0, quantity=2, price_type="MKT", time_in_force="IOC")
        trade = es.place("mean_rev", es.api.Contracts.Stocks["2330"], order)
        print(fills.get(timeout=5))                        # a FillEvent, strategy "mean_rev"
        print(es.positions("mean_rev").positions)          # PositionRecords, one consistent view
        print(es.halt)                                     # HaltStatus(halted=False, ...)

With a live service: `Execstate.attach(service)` (`service = Service(settings, api, accounts)`,
started). In tests: `Execstate(pipeline, api=..., halt=...)`.

Entry points: `Execstate` with `on_fill` / `on_order` / `on_delta` (callbacks -> `Listener`),
`fills` / `orders` / `deltas` (iterators -> `EventStream`), `positions(strategy=None, account=
None, symbol=None) -> PositionSnapshot`, `quantity(strategy, symbol)`, `halt` / `is_halted` /
`on_halt(callback)`, `place(strategy, contract, order) -> trade`, `cancel(trade)`, `sync()`,
`close()`; `TradingHalted`.

Events are the pipeline's immutable `FillEvent`, `OrderEvent` and `PositionDelta`
(`contracts/execution.md`); quantities are shares (stocks) or contracts (futures, options).

Invariants:
- Callbacks run on the pipeline worker thread, in order, after the books include their event
  (a callback that reads `positions()` sees its own fill). Keep them short: a slow callback
  delays every later event; use an `EventStream` (its own queue) to work on another thread.
  A raising callback is counted and logged, and never stops the pipeline.
- `positions()` reads one published store view (copy-on-write): all of a batch of fills or
  none of it, never a half-applied one; lock-free, from any thread.
- `place` refuses while HALTed (`TradingHalted`, with the reason) and before the service has
  finished start-up; `cancel` is always allowed (it only reduces risk). Orders go through
  `bridge.orders.OrderAdapter`: tagged with the strategy's `custom_field` and registered as
  intents, so fills are attributed to the strategy that placed them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from execstate.app import Pipeline
from execstate.bridge.orders import OrderAdapter, OrderRateLimited, StrategyTags
from execstate.bus import TOPIC_DELTA, TOPIC_FILL, TOPIC_ORDER, EventBus, Subscription
from execstate.config import Settings
from execstate.domain.events import FillEvent, OrderEvent, PositionDelta, PositionSnapshot
from execstate.normalize.intents import IntentRegistry
from execstate.reconcile.gateway import SlidingWindowLimiter
from execstate.reconcile.halt import HaltState, HaltStatus

__all__ = ["EventStream", "Execstate", "Listener", "OrderRateLimited", "TradingHalted", "order_budget"]


class TradingHalted(RuntimeError):
    """An order was refused because execstate is HALTed (the books cannot be trusted)."""

    def __init__(self, status: HaltStatus) -> None:
        self.status = status
        super().__init__(f"execstate is HALTed ({status.reason}): orders are refused until an operator "
                         f"clears it (`execstate halt-clear`); cancels are still accepted")


def _for_strategy(callback: Callable[[Any], None], strategy: str | None) -> Callable[[Any], None]:
    if strategy is None:
        return callback

    def filtered(event: Any) -> None:
        if event.strategy == strategy:
            callback(event)

    return filtered


class Listener:
    """A callback subscription; `close()` ends it (idempotent)."""

    def __init__(self, bus: EventBus, topic: str, callback: Callable[[Any], None]) -> None:
        self._bus, self._topic, self._callback = bus, topic, callback
        bus.subscribe(topic, callback)

    def close(self) -> None:
        self._bus.unsubscribe(self._topic, self._callback)


EventStream = Subscription  # the iterator `fills()` / `orders()` / `deltas()` return (bus.Subscription)


def order_budget(settings: Settings, clock: Callable[[], float] = time.monotonic) -> Callable[[str], None]:
    """The order adapter's `admit`: at most `rate_limits.order_calls_per_window` place/cancel
    calls in any `order_window_ms` (Shioaji's 250 per 10 s; past it the login is banned for a
    minute). A call over the budget raises `OrderRateLimited` instead of being sent."""
    limits = settings.rate_limits
    limiter = SlidingWindowLimiter(limits.order_calls_per_window, limits.order_window_ms / 1000, clock=clock)

    def admit(call: str) -> None:
        if limiter.try_acquire() is None:
            raise OrderRateLimited(f"{call} refused: {limiter.limit} order calls in the last {limiter.window_s:g} s "
                                   f"(rate_limits.order_calls_per_window={limiter.limit}); retry later")

    return admit


class Execstate:
    """The strategy-facing facade over a pipeline (and, usually, the service running it)."""

    def __init__(self, pipeline: Pipeline, *, api: Any = None, halt: HaltState | None = None,
                 intents: IntentRegistry | None = None, service: Any = None,
                 tags: StrategyTags | None = None) -> None:
        self.pipeline = pipeline
        self.service = service
        self.api = api
        self._halt = halt if halt is not None else HaltState()
        intents = intents if intents is not None else pipeline.intents
        self.tags = tags if tags is not None else StrategyTags(pipeline.settings.strategies.tags)
        self.adapter = OrderAdapter(api, intents.register, self.tags, intents.add_tag, order_budget(pipeline.settings)) if api is not None else None
        self._owns_service = False

    # --- construction -------------------------------------------------------------------
    @classmethod
    def attach(cls, service: Any) -> Execstate:
        """The API of a `Service` (started by its owner; `close()` leaves it running)."""
        return cls(service.pipeline, api=service.api, halt=service.halt, intents=service.intents, service=service)

    @classmethod
    def simulated(cls, settings: Settings, *, seed: int = 1, orders: int = 0, pace_per_s: float | None = None,
                  ack_latency_s: float | None = None, fill_latency_s: float | None = None) -> Execstate:
        """Start an in-process `Service` on the simulated broker and return its API; `close()`
        (or leaving the `with` block) stops the service.

        `orders`: the simulated day's own orders (0: a quiet day, only yesterday's positions
        and what you place), played at `pace_per_s` events per second (None: at once).
        `settings.state_dir` holds the journal, snapshots and control socket (keep its path
        short: a Unix socket path is limited to 107 bytes).
        """
        from execstate.service import Service, simulated_session

        api, accounts, session, resume_at = simulated_session(settings, seed, orders)
        if ack_latency_s is not None:
            api.ack_latency_s = ack_latency_s
        if fill_latency_s is not None:
            api.fill_latency_s = fill_latency_s
        service = Service(settings, api, accounts, day=session.config.trade_date.isoformat())
        for intent in session.intents:  # the generated day's orders, as their adapter registered them
            if service.intents.get(intent.order_id) is None:
                service.intents.register(intent.order_id, intent.strategy_id, intent.symbol, intent.custom_field)
        try:
            service.start()
        except BaseException:
            with contextlib.suppress(Exception):  # release what start-up took (lock, threads)
                service.stop()
            raise
        if orders:
            service.playback = api.play(pace_per_s=pace_per_s, wait=False, start=resume_at)
        es = cls.attach(service)
        es._owns_service = True
        return es

    def close(self) -> None:
        """Stop the service if this object started it (`simulated`); otherwise nothing."""
        if self._owns_service and self.service is not None:
            self._owns_service = False
            self.service.stop()

    def __enter__(self) -> Execstate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- events -------------------------------------------------------------------------
    def on_fill(self, callback: Callable[[FillEvent], None], strategy: str | None = None) -> Listener:
        """Call `callback(fill)` for every fill (of `strategy`, when given)."""
        return Listener(self.pipeline.bus, TOPIC_FILL, _for_strategy(callback, strategy))

    def on_order(self, callback: Callable[[OrderEvent], None], strategy: str | None = None) -> Listener:
        """Call `callback(order_event)` for every order report (New, Cancel, updates, rejects)."""
        return Listener(self.pipeline.bus, TOPIC_ORDER, _for_strategy(callback, strategy))

    def on_delta(self, callback: Callable[[PositionDelta], None], strategy: str | None = None) -> Listener:
        """Call `callback(delta)` for every position change."""
        return Listener(self.pipeline.bus, TOPIC_DELTA, _for_strategy(callback, strategy))

    def fills(self, strategy: str | None = None) -> EventStream:
        """An iterator over fills from now on (of `strategy`, when given)."""
        return self.pipeline.bus.iterate(TOPIC_FILL, lambda put: _for_strategy(put, strategy))

    def orders(self, strategy: str | None = None) -> EventStream:
        """An iterator over order reports from now on."""
        return self.pipeline.bus.iterate(TOPIC_ORDER, lambda put: _for_strategy(put, strategy))

    def deltas(self, strategy: str | None = None) -> EventStream:
        """An iterator over position deltas from now on."""
        return self.pipeline.bus.iterate(TOPIC_DELTA, lambda put: _for_strategy(put, strategy))

    # --- state --------------------------------------------------------------------------
    def positions(self, strategy: str | None = None, *, account: str | None = None,
                  symbol: str | None = None) -> PositionSnapshot:
        """Positions of one consistent store view (`seq`), filtered; unrealized PnL at the
        current marks. Flat positions with realized PnL are kept."""
        snap = self.pipeline.store.snapshot(time.time_ns())
        kept = tuple(p for p in snap.positions
                     if (strategy is None or p.strategy == strategy) and (account is None or p.account == account)
                     and (symbol is None or p.symbol == symbol))
        return PositionSnapshot(seq=snap.seq, ts=snap.ts, positions=kept)

    def quantity(self, strategy: str, symbol: str, account: str | None = None) -> int:
        """Net quantity of `strategy` in `symbol` (shares or contracts), over its accounts."""
        return sum(p.quantity for p in self.positions(strategy, account=account, symbol=symbol).positions)

    @property
    def halt(self) -> HaltStatus:
        """HALT state: `halted`, `reason`, `since_ns`, `cleared_by`."""
        return self._halt.status()

    @property
    def is_halted(self) -> bool:
        return self._halt.is_halted

    def on_halt(self, callback: Callable[[HaltStatus], None]) -> None:
        """Call `callback(status)` on every HALT change (from the thread that changed it)."""
        self._halt.subscribe(callback)

    def sync(self, timeout: float = 30.0) -> None:
        """Return once everything received so far is booked and published."""
        self.pipeline.on_worker(lambda: None, timeout=timeout)

    # --- orders -------------------------------------------------------------------------
    def place(self, strategy: str, contract: Any, order: Any) -> Any:
        """Place `order` (an `sj.StockOrder` / `sj.FuturesOrder`) on `contract` for `strategy`.

        Returns the broker's trade. Raises `TradingHalted` while HALTed, `RuntimeError` when
        there is no broker session or the service is not running yet, `ValueError` for a bad
        tag, `OrderRateLimited` past the order-call budget (`order_budget`), and whatever `place_order` raises (the broker's refusal, its rate-limit ban).
        """
        status = self._halt.status()
        if status.halted:
            raise TradingHalted(status)
        if self.adapter is None:
            raise RuntimeError("no broker session: construct Execstate with api=... (or use attach/simulated) to place orders")
        phase = getattr(self.service, "phase", "running")
        if phase != "running":
            raise RuntimeError(f"execstate is {phase} (start-up replay and reconcile not finished): orders are refused")
        return self.adapter.place(strategy, contract, order)

    def cancel(self, trade: Any) -> Any:
        """Cancel what rests of `trade` (allowed while HALTed)."""
        if self.adapter is None:
            raise RuntimeError("no broker session: construct Execstate with api=... to cancel orders")
        return self.adapter.cancel(trade)
