"""Order-adapter hook: every order a strategy places is attributed at placement, not guessed.

Entry points: `OrderAdapter(api, register_intent, tag_for_strategy, register_tag=None,
admit=None)` with `.place(strategy, contract, order) -> trade` and `.cancel(trade)`;
`OrderRateLimited`; `StrategyTags(configured)`
(strategy -> `custom_field` tag, configured or derived); `validate_tag(tag, strategy)`;
`intent_symbol(contract, order)`.

What `place` does, in this order:
0. Asks `admit(call)` for a slot of the order-call budget (Shioaji: 250 order calls per 10 s,
   past which the login is banned for a minute, cancels included). `admit` raises
   `OrderRateLimited` when the budget is spent: the call is refused here, never sent to be
   banned. `cancel` asks too.
1. Tags the order: a copy of `order` with `custom_field` = the strategy's tag (Shioaji's
   orders are immutable). The tag must be 1 to 6 characters (Shioaji's memo limit), else
   `ValueError` naming the field, the value and the strategy. An order that already carries a
   different `custom_field` is refused the same way (it would be attributed to someone else).
2. Registers tag -> strategy (`register_tag`) BEFORE `api.place_order`, so a report that races
   the return (Shioaji may call the order callback before `place_order` returns) is attributed
   by its tag.
3. Calls `api.place_order(contract, order)`; nothing else is registered if it raises.
4. Registers the intent `(trade.order.id, strategy, symbol, custom_field)` as soon as it returns.

Futures and options: Shioaji 1.7.9 carries `custom_field` on stock order and deal reports
only (FuturesOrder/FuturesDeal payloads have none, reference §2), so step 2 cannot help them.
Their attribution is the intent of step 4, registered microseconds after the return; the
normalizer resolves the order id at every report and keeps the first non-"unassigned" answer,
so every report processed after the registration is attributed. A futures deal processed
before it (a fill faster than the return) would be booked "unassigned": on the simulated
broker reports arrive milliseconds after the return (`ack_latency_s`, `fill_latency_s`); on a
live account a deal within microseconds of the order's acceptance is unlikely but possible.

Invariants: this module never imports `normalize` (data flows bridge -> normalize): the
registry's methods are injected by the composition root (`execstate.api`). A failure to
record the intent after the broker accepted the order is logged and counted
(`intent_failures`), and the trade is still returned: the order is live, and the strategy
needs its handle to cancel it. Thread-safe: strategies may place from several threads.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from execstate.domain.instruments import stock_symbol
from execstate.telemetry.logging import get_logger

log = get_logger("execstate.orders")

CUSTOM_FIELD_MAX = 6  # Shioaji's custom_field (memo) limit


def _v(value: Any) -> str:
    return "" if value is None else str(getattr(value, "value", value))


def validate_tag(tag: Any, strategy: str) -> str:
    """`tag` if it can be a Shioaji `custom_field` (a str of 1 to 6 characters), else ValueError."""
    if not isinstance(tag, str) or not 0 < len(tag) <= CUSTOM_FIELD_MAX:
        raise ValueError(f"custom_field={tag!r}: expected 1 to {CUSTOM_FIELD_MAX} characters "
                         f"(Shioaji's custom_field limit) as the tag of strategy {strategy!r}")
    return tag


def intent_symbol(contract: Any, order: Any) -> str:
    """The books' symbol of an order: stock code (+ ":cond" unless Cash), or the futures /
    options full code (Shioaji's contract code, e.g. TXFL6; for a continuous alias such as
    TXFR1, its `target_code`)."""
    code = str(contract.code)
    if _v(getattr(contract, "security_type", "")) == "STK":
        return stock_symbol(code, _v(getattr(order, "order_cond", None)) or "Cash")
    return str(getattr(contract, "target_code", "") or code)


class StrategyTags:
    """Strategy id -> `custom_field` tag: the configured tag (settings `strategies.tags`), else
    one derived from the id (letters and digits, upper case, at most 6: "mean_rev" -> "MEANRE",
    with a digit replacing the end on a clash). Derived tags are stable for a given
    configuration and order of first use; configure tags to make them stable across restarts."""

    def __init__(self, configured: Mapping[str, str] | None = None) -> None:
        self._lock = threading.Lock()
        self._by_tag: dict[str, str] = dict(configured or {})
        self._by_strategy: dict[str, str] = {}
        for tag, strategy in self._by_tag.items():
            self._by_strategy.setdefault(strategy, tag)

    def __call__(self, strategy: str) -> str:
        return self.tag_for(strategy)

    def tag_for(self, strategy: str) -> str:
        if not strategy:
            raise ValueError(f"strategy={strategy!r}: expected a non-empty strategy id")
        with self._lock:
            tag = self._by_strategy.get(strategy)
            if tag is None:
                tag = self._derive(strategy)
                self._by_tag[tag] = strategy
                self._by_strategy[strategy] = tag
            return tag

    def _derive(self, strategy: str) -> str:
        base = re.sub(r"[^A-Za-z0-9]", "", strategy).upper()[:CUSTOM_FIELD_MAX] or "S"
        if base not in self._by_tag:
            return base
        for n in range(1, 10**CUSTOM_FIELD_MAX):
            suffix = str(n)
            tag = base[: CUSTOM_FIELD_MAX - len(suffix)] + suffix
            if tag not in self._by_tag:
                return tag
        raise ValueError(f"strategy={strategy!r}: no free custom_field tag")  # pragma: no cover


def with_custom_field(order: Any, tag: str) -> Any:
    """A copy of a Shioaji order with `custom_field=tag` (the SDK's orders cannot be changed)."""
    if hasattr(order, "dict"):
        fields = dict(order.dict())
        fields["custom_field"] = tag
        return type(order)(**fields)
    import copy

    tagged = copy.copy(order)
    tagged.custom_field = tag
    return tagged


class OrderRateLimited(RuntimeError):
    """The order-call budget (`rate_limits.order_calls_per_window`) is spent: retry later."""


class OrderAdapter:
    """Places orders for strategies and records who placed them (see the module docstring)."""

    def __init__(self, api: Any, register_intent: Callable[[str, str, str, str], Any],
                 tag_for_strategy: Callable[[str], str],
                 register_tag: Callable[[str, str], Any] | None = None,
                 admit: Callable[[str], None] | None = None) -> None:
        self.api = api
        self._admit = admit
        self._register_intent = register_intent
        self._tag_for = tag_for_strategy
        self._register_tag = register_tag
        self.placed = 0
        self.intent_failures = 0
        self._count_lock = threading.Lock()  # strategies may place from several threads

    def tag(self, strategy: str) -> str:
        """The validated `custom_field` tag of `strategy`."""
        return validate_tag(self._tag_for(strategy), strategy)

    def place(self, strategy: str, contract: Any, order: Any) -> Any:
        """Place `order` on `contract` for `strategy`; returns the broker's trade."""
        tag = self.tag(strategy)
        current = getattr(order, "custom_field", None)
        if current not in (None, "", tag):
            raise ValueError(f"order.custom_field={current!r}: strategy {strategy!r} places with tag {tag!r}; "
                             f"leave custom_field empty (the adapter sets it)")
        tagged = order if current == tag else with_custom_field(order, tag)
        symbol = intent_symbol(contract, tagged)  # before the call: once the order is live, nothing may raise
        if self._admit is not None:
            self._admit("place_order")
        if self._register_tag is not None:
            self._register_tag(tag, strategy)  # before the call: a report may race the return
        trade = self.api.place_order(contract, tagged)
        with self._count_lock:
            self.placed += 1
        order_id = str(trade.order.id)
        try:
            self._register_intent(order_id, strategy, symbol, tag)
        except Exception as exc:  # the order is live: keep its handle, say loudly what is missing
            with self._count_lock:
                self.intent_failures += 1
            log.error("intent_not_recorded", order_id=order_id, strategy=strategy, symbol=symbol, custom_field=tag, error=repr(exc)[:300])
        return trade

    def cancel(self, trade: Any) -> Any:
        """Cancel what rests of `trade` (no attribution needed: the order is already known)."""
        if self._admit is not None:
            self._admit("cancel_order")
        return self.api.cancel_order(trade)
