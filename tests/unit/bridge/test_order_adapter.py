"""OrderAdapter: tag before the call, intent right after it, clear refusals; and what that
buys attribution when a report races the return."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import shioaji as sj
from structlog.testing import capture_logs

from execstate.app import Pipeline
from execstate.bridge.orders import OrderAdapter, StrategyTags, intent_symbol, validate_tag, with_custom_field
from execstate.bridge.sim import SimConfig, SimShioaji, generate_session
from execstate.config import parse_settings
from execstate.normalize.intents import IntentRegistry

SETTINGS = parse_settings({"runtime": {"gc_freeze_after_start": False, "switch_interval_us": 0}})


class FakeApi:
    """Records what the registry knew when `place_order` was called; returns a Trade-like."""

    def __init__(self, registry: IntentRegistry, fail: Exception | None = None) -> None:
        self.registry, self.fail = registry, fail
        self.calls: list[tuple] = []

    def place_order(self, contract, order):
        self.calls.append((contract, order, self.registry.resolve("", order.custom_field), self.registry.get("t0000001")))
        if self.fail is not None:
            raise self.fail
        return SimpleNamespace(order=SimpleNamespace(id="t0000001", custom_field=order.custom_field))

    def cancel_order(self, trade):
        self.calls.append(("cancel", trade))
        return trade


def _adapter(registry, api=None, tags=None):
    api = api or FakeApi(registry)
    return OrderAdapter(api, registry.register, tags or StrategyTags(), registry.add_tag), api


def _stock_order(**kw):
    return sj.StockOrder(action="Buy", price=0, quantity=2, price_type="MKT", time_in_force="IOC", **kw)


STOCK = sj.Stock(exchange="TSE", code="2330")
TXF = sj.Future(exchange="TAIFEX", code="TXFL6")


def test_tag_is_registered_before_place_order_and_the_intent_right_after():
    registry = IntentRegistry()
    adapter, api = _adapter(registry)

    trade = adapter.place("mean_rev", STOCK, _stock_order())

    (_, sent, by_tag_at_call, intent_at_call), = api.calls
    assert sent.custom_field == "MEANRE" and by_tag_at_call == "mean_rev" and intent_at_call is None
    assert registry.get("t0000001") == registry.get(trade.order.id)
    intent = registry.get("t0000001")
    assert (intent.strategy, intent.symbol, intent.custom_field) == ("mean_rev", "2330", "MEANRE")


def test_the_callers_order_is_not_changed_the_sent_copy_carries_the_tag():
    registry = IntentRegistry()
    adapter, api = _adapter(registry)
    order = sj.StockOrder(action="Sell", price=1005.0, quantity=3, price_type="LMT", time_in_force="ROD",
                          order_lot="Common", order_cond="MarginTrading")

    adapter.place("mean_rev", STOCK, order)

    sent = api.calls[0][1]
    assert order.custom_field is None and type(sent) is sj.StockOrder
    assert {k: v for k, v in sent.dict().items() if k != "custom_field"} == {k: v for k, v in order.dict().items() if k != "custom_field"}
    assert registry.get("t0000001").symbol == "2330:MarginTrading"


def test_futures_orders_are_tagged_and_registered_under_the_contracts_full_code():
    registry = IntentRegistry()
    adapter, api = _adapter(registry)

    adapter.place("trend", TXF, sj.FuturesOrder(action="Buy", price=0, quantity=1, price_type="MKP", time_in_force="IOC", octype="Auto"))

    sent = api.calls[0][1]
    assert type(sent) is sj.FuturesOrder and sent.custom_field == "TREND" and sent.octype == sj.FuturesOCType.Auto
    assert registry.get("t0000001").symbol == "TXFL6"


@pytest.mark.parametrize("tag", ["MEANREV", "", 42])
def test_a_tag_shioaji_cannot_carry_is_refused_naming_field_value_and_strategy(tag):
    registry = IntentRegistry()
    adapter, api = _adapter(registry, tags=lambda strategy: tag)

    with pytest.raises(ValueError, match=rf"custom_field={tag!r}: expected 1 to 6 characters .*'mean_rev'"):
        adapter.place("mean_rev", STOCK, _stock_order())
    assert api.calls == [] and len(registry) == 0


def test_an_order_already_tagged_for_someone_else_is_refused():
    registry = IntentRegistry()
    adapter, api = _adapter(registry)

    with pytest.raises(ValueError, match=r"order.custom_field='MOMO': strategy 'mean_rev' places with tag 'MEANRE'"):
        adapter.place("mean_rev", STOCK, _stock_order(custom_field="MOMO"))
    adapter.place("mean_rev", STOCK, _stock_order(custom_field="MEANRE"))  # its own tag is fine
    assert len(api.calls) == 1


def test_a_refused_place_order_registers_no_intent():
    registry = IntentRegistry()
    adapter, api = _adapter(registry, api=FakeApi(registry, fail=sj.ShioajiValueError("no")))

    with pytest.raises(sj.ShioajiValueError):
        adapter.place("mean_rev", STOCK, _stock_order())
    assert len(registry) == 0 and adapter.placed == 0


def test_an_intent_that_cannot_be_recorded_is_logged_and_counted_and_the_trade_returned():
    registry = IntentRegistry()

    def broken(*args):
        raise OSError("disk full")

    api = FakeApi(registry)
    adapter = OrderAdapter(api, broken, StrategyTags(), registry.add_tag)

    with capture_logs() as logs:
        trade = adapter.place("mean_rev", STOCK, _stock_order())

    assert trade.order.id == "t0000001" and adapter.intent_failures == 1
    (line,) = [entry for entry in logs if entry["event"] == "intent_not_recorded"]
    assert line["log_level"] == "error" and line["order_id"] == "t0000001" and "disk full" in line["error"]


def test_cancel_goes_to_the_broker():
    registry = IntentRegistry()
    adapter, api = _adapter(registry)
    trade = adapter.place("mean_rev", STOCK, _stock_order())

    adapter.cancel(trade)

    assert api.calls[-1] == ("cancel", trade)


def test_strategy_tags_use_the_configured_tag_else_derive_a_free_one():
    tags = StrategyTags({"MREV": "meanrev", "MEANRE": "other"})

    assert tags("meanrev") == "MREV"
    assert tags("mean_rev") == "MEANR1"  # "MEANRE" is taken
    assert tags("mean_rev") == "MEANR1"  # stable
    assert tags("x-y") == "XY" and tags("___") == "S"
    with pytest.raises(ValueError, match="strategy=''"):
        tags("")


def test_helpers():
    assert validate_tag("ABC123", "s") == "ABC123"
    assert intent_symbol(STOCK, _stock_order(order_cond="ShortSelling")) == "2330:ShortSelling"
    assert intent_symbol(STOCK, _stock_order()) == "2330"
    assert intent_symbol(sj.Future(exchange="TAIFEX", code="TXFR1", target_code="TXFL6"), None) == "TXFL6"
    assert with_custom_field(_stock_order(), "T1").custom_field == "T1"


# --- attribution when the broker's report races the return of place_order ------------------------

class RacingApi:
    """A broker whose reports are booked before `place_order` returns (the SDK allows it)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.sim = SimShioaji(generate_session(SimConfig(seed=1, n_orders=0)), ack_latency_s=0.0, fill_latency_s=0.0)
        self.sim.login("k", "s")
        self.sim.broker.set_as_of(0.0)
        self.pipeline = pipeline
        self.sim.set_order_callback(lambda stat, msg: None)

    def place_order(self, contract, order):
        trade = self.sim.place_order(contract, order)
        records = [r for r in self.sim.broker.truth_records() if (r[1].get("trade_id") or r[1]["order"]["id"]) == trade.order.id]
        self.pipeline.process_batch([(1, state, msg) for state, msg in records])  # booked before the return
        return trade


def _racing():
    registry = IntentRegistry()
    pipeline = Pipeline(SETTINGS, intents=registry)
    api = RacingApi(pipeline)
    return OrderAdapter(api, registry.register, StrategyTags(), registry.add_tag), pipeline, api


def test_a_stock_fill_racing_the_return_is_attributed_by_its_tag():
    adapter, pipeline, api = _racing()

    adapter.place("mean_rev", api.sim.Contracts.Stocks["2330"], _stock_order())

    assert {(k.strategy, k.symbol): s.quantity for k, s in pipeline.store.view().positions.items()} == {("mean_rev", "2330"): 2000}


def test_a_futures_fill_racing_the_return_is_unassigned_later_reports_are_attributed():
    adapter, pipeline, api = _racing()
    contract = api.sim.Contracts.Futures["TXFL6"]

    trade = adapter.place("trend", contract, sj.FuturesOrder(
        action="Buy", price=1, quantity=1, price_type="LMT", time_in_force="ROD", octype="Auto"))  # rests
    api.sim.broker.set_mark("TXFL6", "27000")
    adapter.place("trend", contract, sj.FuturesOrder(
        action="Buy", price=0, quantity=1, price_type="MKT", time_in_force="IOC", octype="Auto"))  # fills before the return
    api.sim.cancel_order(trade)
    cancel = [r for r in api.sim.broker.truth_records() if r[1].get("operation", {}).get("op_type") == "Cancel"]
    pipeline.process_batch([(2, state, msg) for state, msg in cancel])  # a report after the registration

    positions = {(k.strategy, k.symbol): s.quantity for k, s in pipeline.store.view().positions.items()}
    assert positions == {("unassigned", "TXFL6"): 1}  # the documented limit: futures carry no custom_field
    order = pipeline.normalizer.orders.record("F002000-7654321", trade.order.id)
    assert order.strategy == "trend"


def test_order_call_budget_refuses_place_and_cancel_past_the_limit_and_frees_after_the_window():
    # Arrange: a budget of 3 calls per 10 s on a hand-driven clock
    from execstate.api import order_budget
    from execstate.bridge.orders import OrderRateLimited

    now = [100.0]
    settings = parse_settings({"rate_limits": {"order_calls_per_window": 3, "order_window_ms": 10_000}})
    registry = IntentRegistry()
    api = FakeApi(registry)
    adapter = OrderAdapter(api, registry.register, StrategyTags(), registry.add_tag, order_budget(settings, clock=lambda: now[0]))

    # Act / Assert: 2 places and a cancel use the budget; the next call is refused before the broker sees it
    trade = adapter.place("mean_rev", STOCK, _stock_order())
    adapter.place("mean_rev", STOCK, _stock_order())
    adapter.cancel(trade)
    with pytest.raises(OrderRateLimited, match=r"place_order refused: 3 order calls in the last 10 s \(rate_limits.order_calls_per_window=3\)"):
        adapter.place("other", STOCK, _stock_order())
    assert len(api.calls) == 3
    assert registry.resolve("", "OTHER") != "other"  # a refused order registers nothing

    now[0] += 10.1  # the window (plus its safety margin) has passed
    adapter.place("mean_rev", STOCK, _stock_order())
    assert len(api.calls) == 4


def test_a_contract_without_a_symbol_is_refused_before_anything_is_sent():
    # Arrange
    registry = IntentRegistry()
    adapter, api = _adapter(registry)

    # Act
    with pytest.raises(AttributeError):
        adapter.place("mean_rev", SimpleNamespace(security_type="STK"), _stock_order())  # no `code`

    # Assert: the order never went out, so no live order lost its handle
    assert api.calls == [] and adapter.placed == 0
