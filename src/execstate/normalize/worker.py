"""The normalizer: one raw event in, at most one immutable event out.

Entry point: `Normalizer.normalize(raw) -> OrderEvent | FillEvent | DeadLetter | None`
(None: a duplicate, counted and dropped). Called by one worker thread only.

Invariants:
- Dedupe by the broker's `event_id` when present AND by the natural key (deals:
  (account, trade_id, exchange_seq); order events: (account, order id, op_type,
  exchange_ts)), so a re-delivery with or without `event_id` is caught; never by `seqno`.
  Memory is bounded (`SeenKeys`).
- Event ids are derived from the natural keys, so a replay produces the same ids.
- A deal whose order event has not arrived is emitted at once (it carries code, side,
  price and quantity); the order is completed when its event arrives.
- Malformed payloads become `DeadLetter`s with the reason (payload kept without
  `person_id`, bounded: `payloads.kept_copy`); nothing raises out of `normalize`.
- Logged here (rare events only; nothing per ordinary event): `duplicate_dropped` (info for a
  re-delivery by the broker's callback, a bare tuple; debug for a recovery, a
  `RawExecEvent`: broker records resubmitted by a reconciliation or a journal replay, which
  are mostly duplicates by design) and `order_failed` (an order report with op_code != "00":
  a reject or a failed cancel / update; warning live, info on a recovery), each with
  account, symbol and order ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from execstate.domain.errors import MalformedEvent
import msgspec

from execstate.domain.events import CORRECTION_STATE, UNASSIGNED, Correction, DeadLetter, FillEvent, OrderEvent, RawExecEvent
from execstate.domain.money import to_price
from execstate.normalize.dedupe import SeenKeys
from execstate.normalize.instruments import InstrumentResolver
from execstate.normalize.intents import IntentRegistry
from execstate.normalize.orders import EventKind, OrderBook, OrderStatus
from execstate.domain.payloads import kept_copy, safe_text, state_name, state_text, to_plain
from execstate.normalize.parse import DEAL_STATES, ORDER_STATES, parse_deal, parse_order
from execstate.telemetry.logging import get_logger
from execstate.telemetry.stats import PipelineStats

log = get_logger("execstate.normalize")
REASON_MAX = 500  # characters of a dead letter's reason


# (op_type, op_code == "00") -> what the report means for the order's state machine
ORDER_KINDS: dict[tuple[str, bool], EventKind] = {
    ("New", True): EventKind.NEW,
    ("New", False): EventKind.NEW_FAILED,
    ("Reject", True): EventKind.NEW_FAILED,
    ("Reject", False): EventKind.NEW_FAILED,
    ("Cancel", True): EventKind.CANCEL,
    ("Cancel", False): EventKind.OP_FAILED,
    ("UpdateQty", True): EventKind.UPDATE_QTY,
    ("UpdateQty", False): EventKind.OP_FAILED,
    ("UpdatePrice", True): EventKind.UPDATE_PRICE,
    ("UpdatePrice", False): EventKind.OP_FAILED,
}


class Normalizer:
    """Turns raw events into OrderEvent / FillEvent; owns dedupe memory and the order book."""

    def __init__(self, intents: IntentRegistry, instruments: InstrumentResolver, stats: PipelineStats, dedupe_capacity: int = 2_000_000) -> None:
        self.intents = intents
        self.instruments = instruments
        self.stats = stats
        self.orders = OrderBook()
        self.seen = SeenKeys(dedupe_capacity)
        self.last_fill_ns: dict[tuple[str, str], int] = {}  # (account, symbol) -> receive time of its last fill

    def normalize(self, raw: RawExecEvent | tuple) -> OrderEvent | FillEvent | DeadLetter | None:
        ts_recv, state, msg = raw
        try:
            if type(msg) is not dict:
                msg = to_plain(msg)  # Shioaji's OrderEventDict is dict-like, not a dict
            name = state_name(state)
            if name in DEAL_STATES:
                return self._deal(name, msg, ts_recv, raw)
            if name in ORDER_STATES:
                return self._order(name, msg, ts_recv, raw)
            if name == CORRECTION_STATE:
                return self._correction(msg, ts_recv, raw)
            raise MalformedEvent(f"state={name[:40]!r}: expected SORDER, SDEAL, FORDER or FDEAL")
        except MalformedEvent as exc:
            return self._dead(exc.reason, state, ts_recv, msg)
        except Exception as exc:  # a payload so odd it broke parsing: park it, keep going
            return self._dead(f"unparseable payload ({type(exc).__name__}: {exc})"[:300], state, ts_recv, msg)

    def _dead(self, reason: str, state: Any, ts_recv: int, msg: Any) -> DeadLetter:
        self.stats.dead_letters += 1
        # bounded and UTF-8-safe: a 1 MB string or a lone surrogate must not reach the table, the log or memory whole
        return DeadLetter(reason=safe_text(reason, REASON_MAX), state=state_text(state), ts_recv=ts_recv, msg=kept_copy(msg))

    def _is_duplicate(self, event_id: str, natural: str) -> bool:
        """`natural` is our event id ("F:..." / "O:..."), built from the natural key; the broker's
        `event_id` is remembered too, prefixed so the two kinds of key never collide."""
        add = self.seen.add
        fresh = add(natural)
        if event_id:
            fresh = add("E:" + event_id) and fresh
        if not fresh:
            self.stats.duplicates += 1
        return not fresh

    def _dropped(self, raw: Any, **ids: Any) -> None:
        """Log a duplicate: info when the broker's callback delivered it again, debug for a recovery."""
        live = type(raw) is tuple
        (log.info if live else log.debug)("duplicate_dropped", source="callback" if live else "recovery", **ids)

    def _deal(self, state: str, msg: Mapping[str, Any], ts_recv: int, raw: Any = ()) -> FillEvent | None:
        d = parse_deal(state, msg)
        fill_id = f"F:{d.account}:{d.trade_id}:{d.exchange_seq}"  # natural key (strings are not GC-tracked)
        if self._is_duplicate(d.event_id, fill_id):
            rec = self.orders.get(d.account, d.trade_id)
            self._dropped(raw, state=state, account=d.account, symbol=rec.symbol if rec is not None else d.full_code or d.code, order_id=d.trade_id,
                          ordno=d.ordno, seqno=d.seqno, exchange_seq=d.exchange_seq, event_id=d.event_id, fill_id=fill_id)
            return None
        inst = self.instruments.resolve(d.security_type, d.code, d.full_code, d.order_cond, d.order_lot)
        rec = self.orders.record(d.account, d.trade_id)
        rec.symbol = inst.symbol
        strategy = rec.strategy or self._attribute(rec, d.trade_id, d.custom_field)
        outcome = self.orders.fill(rec, d.quantity, d.ts_event)
        stats = self.stats
        stats.fills += 1
        self.last_fill_ns[(d.account, inst.symbol)] = ts_recv
        if outcome.notable:
            self._note_fill(outcome, d, inst.symbol)
        return FillEvent(  # positional (field order of FillEvent): keywords cost ~4x here
            fill_id, d.account, d.trade_id, d.seqno, d.ordno, d.exchange_seq,
            strategy, inst.symbol, d.code, inst.kind.value, d.side, d.price, d.quantity, inst.multiplier, inst.is_etf,
            d.order_cond, d.order_lot, d.market_type, d.custom_field, d.ts_event, ts_recv,
        )

    def in_flight(self, now_ns: int, recent_ns: int) -> set[tuple[str, str]]:
        """(account, symbol) pairs that may still have fills in the pipe: an order working on
        them, or a fill booked within `recent_ns`. Call on the worker thread."""
        recent = {key for key, ts in self.last_fill_ns.items() if now_ns - ts < recent_ns}
        return self.orders.in_flight() | recent

    def _note_fill(self, outcome: Any, d: Any, symbol: str) -> None:
        stats = self.stats
        if outcome.status is OrderStatus.UNKNOWN:
            stats.deals_before_order += 1
        if outcome.late:
            stats.late_events += 1
        if not outcome.expected:
            stats.unexpected_transitions += 1
            log.warning("unexpected_transition", report="Fill", status=outcome.status.value, account=d.account, order_id=d.trade_id, symbol=symbol, exchange_seq=d.exchange_seq)
        if outcome.overfill:
            stats.overfills += 1
            log.warning("overfill", account=d.account, order_id=d.trade_id, symbol=symbol, exchange_seq=d.exchange_seq)

    def _correction(self, msg: Mapping[str, Any], ts_recv: int, raw: Any = ()) -> FillEvent | None:
        """A reconciliation correction becomes a synthetic fill (no fees, delta cause "correction")."""
        try:
            c = msgspec.convert(msg, Correction)
            price = to_price(c.price, "price")
        except (msgspec.ValidationError, ValueError) as exc:
            raise MalformedEvent(f"correction: {exc}") from None
        if c.quantity == 0:
            raise MalformedEvent("correction quantity=0: expected a non-zero change")
        if self._is_duplicate("", c.correction_id):
            self._dropped(raw, state=CORRECTION_STATE, account=c.account, symbol=c.symbol, strategy=c.strategy, correction_id=c.correction_id)
            return None
        full_code = c.symbol if c.security_type != "STK" else ""
        inst = self.instruments.resolve(c.security_type, c.code, full_code, c.order_cond, "Common")
        self.stats.corrections += 1
        side = "Buy" if c.quantity > 0 else "Sell"
        return FillEvent(
            c.correction_id, c.account, "", "", "", "", c.strategy, c.symbol, c.code, inst.kind.value, side, price,
            abs(c.quantity), inst.multiplier, inst.is_etf, c.order_cond, "", "", "", c.ts_ns, ts_recv, c.reason,
        )

    def _attribute(self, rec: Any, order_id: str, custom_field: str) -> str:
        strategy = self.intents.resolve(order_id, custom_field)
        if strategy != UNASSIGNED:  # an intent registered later (place_order returned late) still wins
            rec.strategy = strategy
        return strategy

    def _order(self, state: str, msg: Mapping[str, Any], ts_recv: int, raw: Any = ()) -> OrderEvent | None:
        o = parse_order(state, msg)
        order_event_id = f"O:{o.account}:{o.order_id}:{o.op_type}:{o.ts_event}"  # natural key, exchange_ts in us
        if self._is_duplicate(o.event_id, order_event_id):
            rec = self.orders.get(o.account, o.order_id)
            self._dropped(raw, state=state, account=o.account, symbol=rec.symbol if rec is not None else o.full_code or o.code, order_id=o.order_id,
                          ordno=o.ordno, seqno=o.seqno, op_type=o.op_type, op_code=o.op_code, event_id=o.event_id, order_event_id=order_event_id)
            return None
        ok = o.op_code == "00"
        kind = ORDER_KINDS[(o.op_type, ok)]  # op_type is one of the schema's five
        inst = self.instruments.resolve(o.security_type, o.code, o.full_code, o.order_cond, o.order_lot)
        rec = self.orders.record(o.account, o.order_id)
        rec.symbol = inst.symbol
        strategy = rec.strategy or self._attribute(rec, o.order_id, o.custom_field)
        outcome = self.orders.report(rec, kind, o.order_quantity or o.quantity, o.cancel_quantity, o.ts_event)
        stats = self.stats
        if outcome.late:
            stats.late_events += 1
        if not outcome.expected:
            stats.unexpected_transitions += 1
            log.warning("unexpected_transition", report=kind.value, status=outcome.status.value, account=o.account, order_id=o.order_id, symbol=inst.symbol, op_code=o.op_code)
        if not ok:
            stats.order_failures += 1
            live = type(raw) is tuple  # a journal replay or recovered record: reported before, so info
            (log.warning if live else log.info)("order_failed", source="callback" if live else "recovery", account=o.account, strategy=strategy, symbol=inst.symbol, order_id=o.order_id, ordno=o.ordno, seqno=o.seqno,
                        op_type=o.op_type, op_code=o.op_code, op_msg=o.op_msg[:200], status=outcome.status.value)
        stats.orders += 1
        quantity = o.order_quantity or o.quantity
        return OrderEvent(  # positional (field order of OrderEvent)
            order_event_id, o.account, o.order_id, o.seqno, o.ordno, strategy,
            inst.symbol, o.code, inst.kind.value, o.op_type, o.op_code, o.op_msg, ok, o.side, o.price, quantity,
            o.cancel_quantity, o.modified_price, o.order_cond, o.order_lot, o.price_type, o.time_in_force,
            o.custom_field, outcome.status.value, o.ts_event, ts_recv,
        )
