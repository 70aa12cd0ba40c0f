"""The strategy API over a pipeline: subscriptions with strategy filters, consistent positions,
HALT refusing orders, and orders placed through the adapter."""

from __future__ import annotations

import queue
import threading
from types import SimpleNamespace

import pytest
import shioaji as sj
from payloads import stock_deal, stock_order

from execstate.api import EventStream, Execstate, TradingHalted
from execstate.app import Pipeline
from execstate.bridge.shioaji_adapter import ShioajiBridge
from execstate.bridge.sim import SimConfig, SimShioaji, generate_session
from execstate.config import parse_settings
from execstate.reconcile.halt import HaltState

SETTINGS = parse_settings({"strategies": {"tags": {"MOMO": "momo", "MREV": "meanrev"}},
                           "runtime": {"gc_freeze_after_start": False, "switch_interval_us": 0}})


def _deal(tag, seq, qty=1, action="Buy"):
    return (1, "SDEAL", stock_deal(event_id=f"e{seq}", exchange_seq=str(seq), trade_id=f"t{seq}", custom_field=tag,
                                   quantity=qty, action=action, ts=1779333920.0 + seq))


@pytest.fixture()
def es():
    return Execstate(Pipeline(SETTINGS))


def test_callbacks_and_streams_get_only_their_strategys_events(es):
    mine, everyone = [], []
    es.on_fill(mine.append, strategy="momo")
    es.on_fill(everyone.append)
    stream, deltas, orders = es.fills("momo"), es.deltas("momo"), es.orders("meanrev")

    es.pipeline.process_batch([_deal("MOMO", 1), _deal("MREV", 2), _deal("MOMO", 3),
                               (1, "SORDER", stock_order(custom_field="MREV"))])

    assert [f.exchange_seq for f in mine] == ["1", "3"] and len(everyone) == 3
    assert [f.exchange_seq for f in stream.drain()] == ["1", "3"]
    assert [d.quantity_after for d in deltas.drain()] == [1000, 2000]
    assert [(o.strategy, o.op_type) for o in orders.drain()] == [("meanrev", "New")]


def test_a_callback_sees_books_that_include_its_fill(es):
    seen = []
    es.on_fill(lambda f: seen.append(es.quantity("momo", f.symbol)))

    es.pipeline.process_batch([_deal("MOMO", 1, qty=2)])

    assert seen == [2000]


def test_closing_a_listener_or_stream_stops_its_events(es):
    got = []
    listener = es.on_delta(got.append)
    stream = es.fills()
    listener.close()
    stream.close()
    listener.close()  # idempotent

    es.pipeline.process_batch([_deal("MOMO", 1)])

    assert got == [] and list(stream) == []


def test_a_stream_hands_events_to_another_thread(es):
    es.pipeline.start()
    try:
        got = []
        with es.fills("momo") as stream:
            reader = threading.Thread(target=lambda: got.extend(stream.get(timeout=5) for _ in range(2)))
            reader.start()
            for raw in (_deal("MOMO", 1), _deal("MREV", 2), _deal("MOMO", 3)):
                es.pipeline.queue.put(raw)
            reader.join(5)
            with pytest.raises(queue.Empty):
                stream.get(timeout=0.05)
        assert [f.exchange_seq for f in got] == ["1", "3"]
    finally:
        es.pipeline.stop()


def test_positions_are_filtered_from_one_view(es):
    es.pipeline.process_batch([_deal("MOMO", 1, qty=3), _deal("MREV", 2), _deal("MOMO", 3, action="Sell")])

    snap = es.positions("momo")
    everything = es.positions()

    assert [(p.strategy, p.symbol, p.quantity) for p in snap.positions] == [("momo", "2890", 2000)]
    assert snap.seq == everything.seq == 3 and len(everything.positions) == 2
    assert es.positions(account="9A95-1234567", symbol="2890").positions == everything.positions
    assert es.positions("nobody").positions == () and es.quantity("meanrev", "2890") == 1000


def test_halt_state_is_readable_and_subscribable():
    halt = HaltState()
    es = Execstate(Pipeline(SETTINGS), halt=halt)
    changes = []
    es.on_halt(changes.append)

    halt.enter("unexplained change on 2330")

    assert es.is_halted and es.halt.reason == "unexplained change on 2330"
    assert [c.halted for c in changes] == [True]


class RecordingApi:
    def __init__(self):
        self.placed, self.cancelled = [], []

    def place_order(self, contract, order):
        self.placed.append((contract, order))
        return SimpleNamespace(order=SimpleNamespace(id=f"p{len(self.placed):07d}"))

    def cancel_order(self, trade):
        self.cancelled.append(trade)
        return trade


def _order():
    return sj.StockOrder(action="Buy", price=0, quantity=1, price_type="MKT", time_in_force="IOC")


def test_placing_while_halted_is_refused_with_the_reason_and_cancels_still_go():
    halt, api = HaltState(), RecordingApi()
    es = Execstate(Pipeline(SETTINGS), api=api, halt=halt)
    trade = es.place("meanrev", sj.Stock(exchange="TSE", code="2330"), _order())
    halt.enter("reconcile past the deadline")

    with pytest.raises(TradingHalted, match=r"HALTed \(reconcile past the deadline\): orders are refused"):
        es.place("meanrev", sj.Stock(exchange="TSE", code="2330"), _order())
    es.cancel(trade)

    assert len(api.placed) == 1 and api.cancelled == [trade]
    halt.clear("operator")
    es.place("meanrev", sj.Stock(exchange="TSE", code="2330"), _order())
    assert len(api.placed) == 2


def test_place_tags_with_the_configured_tag_and_registers_the_intent():
    api = RecordingApi()
    es = Execstate(Pipeline(SETTINGS), api=api)

    trade = es.place("meanrev", sj.Stock(exchange="TSE", code="2330"), _order())

    assert api.placed[0][1].custom_field == "MREV"
    assert es.pipeline.intents.get(trade.order.id).strategy == "meanrev"


def test_placing_without_a_broker_or_before_start_up_is_refused():
    with pytest.raises(RuntimeError, match="no broker session"):
        Execstate(Pipeline(SETTINGS)).place("s", sj.Stock(exchange="TSE", code="2330"), _order())
    service = SimpleNamespace(phase="starting")
    es = Execstate(Pipeline(SETTINGS), api=RecordingApi(), service=service)
    with pytest.raises(RuntimeError, match="execstate is starting"):
        es.place("s", sj.Stock(exchange="TSE", code="2330"), _order())


def test_orders_placed_on_the_simulated_broker_come_back_as_the_strategys_fills():
    session = generate_session(SimConfig(seed=1, n_orders=0))
    api = SimShioaji(session, ack_latency_s=0.0, fill_latency_s=0.0)
    api.login("k", "s")
    pipeline = Pipeline(SETTINGS)
    ShioajiBridge(api, pipeline.queue).attach()
    es = Execstate(pipeline, api=api)
    pipeline.start()
    try:
        stream = es.fills("mean_rev")
        es.place("mean_rev", api.Contracts.Stocks["2330"], sj.StockOrder(
            action="Buy", price=0, quantity=2, price_type="MKT", time_in_force="IOC"))
        got = [stream.get(timeout=5) for _ in range(2)]
        es.sync()
        assert {(f.strategy, f.custom_field, f.quantity) for f in got} == {("mean_rev", "MEANRE", 1000)}
        assert es.quantity("mean_rev", "2330") == 2000
        assert isinstance(stream, EventStream)
    finally:
        pipeline.stop()
