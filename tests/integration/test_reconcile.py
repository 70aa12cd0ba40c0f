"""Reconciliation against the simulated broker: opening positions, lost callbacks, confirmed
corrections, deadlines, unrealized PnL against the broker's. Real pipeline, real bridge, real
shioaji enums."""

import time
from decimal import Decimal

from execstate.app import Pipeline
from execstate.bridge.shioaji_adapter import ShioajiBridge
from execstate.bridge.sim import SimConfig, SimShioaji, generate_session
from execstate.config import parse_settings
from execstate.domain.events import PositionRecord
from execstate.domain.instruments import stock_symbol
from execstate.normalize.intents import IntentRegistry
from execstate.reconcile.broker import account_key, direct_calls, make_fetch
from execstate.reconcile.diff import book_quantities
from execstate.positions.fees import FeeSchedule
from execstate.reconcile.halt import HaltState
from execstate.reconcile.pnl import BrokerEstimate, OpenCostCache
from execstate.reconcile.reconciler import Reconciler, attribution_from

SETTINGS = parse_settings({
    "strategies": {"tags": {"MOMO": "momo", "MREV": "meanrev", "FTRD": "fut_trend"}},
    "runtime": {"gc_freeze_after_start": False, "switch_interval_us": 0},
    "fees": {"stock": {"discount": "0.6"}},  # the simulated broker's commission (FeeModel), as config/execution.yaml
})


class Rig:
    """A service in miniature: simulated Shioaji -> bridge -> pipeline, plus a reconciler."""

    def __init__(self, seed=1, n_orders=120, clock=time.monotonic, recent_ns=5_000_000_000, **sim):
        self.session = generate_session(SimConfig(seed=seed, n_orders=n_orders, **sim))
        self.api = SimShioaji(self.session)
        self.accounts = {account_key(a): a for a in self.api.login("k", "s")}
        self.api.broker.set_as_of(0.0)  # the broker before the day's first event
        intents = IntentRegistry(dict(SETTINGS.strategies.tags))
        for i in self.session.intents:
            intents.register(i.order_id, i.strategy_id, i.symbol, i.custom_field)
        self.pipeline = Pipeline(SETTINGS, intents=intents)
        ShioajiBridge(self.api, self.pipeline.queue).attach()
        self.halt = HaltState()
        self.fetch = make_fetch(direct_calls(self.api), self.accounts)
        costs = OpenCostCache(FeeSchedule(SETTINGS.fees))
        self.reconciler = Reconciler(
            SETTINGS.reconcile, list(self.accounts), lambda keys, deadline: self.fetch(keys, deadline),
            self.pipeline.store.view, self.pipeline.submit,
            lambda: self.pipeline.on_worker(lambda: self.pipeline.normalizer.in_flight(time.time_ns(), recent_ns)),
            lambda: self.pipeline.stats.fills, self.halt, clock,
            open_costs=lambda: costs(self.pipeline.on_worker(self.pipeline.store.fills)),
            estimate=BrokerEstimate.from_fees(SETTINGS.fees.stock),
        )
        self.pipeline.start()

    def play(self, **kw):
        self.api.play(**kw)
        self.pipeline.on_worker(lambda: None)  # everything delivered is booked

    def books(self):
        return {k: q for k, q in book_quantities(self.pipeline.store.view().positions).items() if q}

    def broker(self):
        snap, _ = self.fetch(list(self.accounts), 0)
        return {k: q for k, q in snap.quantities().items() if q}

    def close(self):
        self.pipeline.stop()


def _symbol(p) -> str:
    return stock_symbol(p.code, p.cond) if p.cond else p.code


def startup(rig):
    """The first start of a day: the last snapshot on disk is yesterday's close."""
    held = [PositionRecord(p.account, p.strategy_id, _symbol(p), p.quantity, Decimal(str(p.price)), Decimal(0), Decimal(0),
                           Decimal(0), Decimal(0), None, Decimal(1)) for p in rig.session.initial_positions]
    return rig.reconciler.check(reason="startup", opening=True, attribution=attribution_from(held, rig.pipeline.store.view().positions))


def by_key(rig):
    return {(k.account, k.strategy, k.symbol): s.quantity for k, s in rig.pipeline.store.view().positions.items() if s.quantity}


def test_startup_loads_yesterdays_positions_attributed_from_last_snapshot():
    rig = Rig()
    try:
        result = startup(rig)
        assert result.error == "" and not rig.halt.is_halted
        assert rig.books() == rig.broker() and rig.books()  # yesterday's holdings, odd shares included
        assert by_key(rig) == {(p.account, p.strategy_id, _symbol(p)): p.quantity for p in rig.session.initial_positions}
        assert rig.pipeline.stats.corrections == len(result.corrections) == len(rig.session.initial_positions)
    finally:
        rig.close()


def test_lost_deal_callbacks_are_recovered_from_broker_records_without_corrections():
    rig = Rig(seed=2, drop_rate=0.1)
    try:
        startup(rig)
        rig.play()
        assert rig.session.dropped and rig.books() != rig.broker()  # callbacks were lost
        result = rig.reconciler.check(reason="callback gap")
        assert result.recovered_fills > 0 and result.corrections == [] and result.error == ""
        assert rig.books() == rig.broker()
        assert not rig.halt.is_halted
        # recovered deals kept their strategy attribution: books equal the truth per strategy
        truth = {k: q for k, q in rig.session.expected_quantities(include_initial=True).items() if q}
        assert by_key(rig) == truth
    finally:
        rig.close()


def _phantom_deal(rig, code="2890", qty=1, exchange_seq="999999"):
    """A deal the broker never made (a corrupted or foreign event) lands in our books."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
    from payloads import stock_deal

    rig.pipeline.submit("SDEAL", stock_deal(event_id="phantom-" + exchange_seq, trade_id="deadbeef", exchange_seq=exchange_seq,
                                            code=code, quantity=qty, custom_field="MOMO", ts=time.time()))
    rig.pipeline.on_worker(lambda: None)


def _working_order(rig, code="2890"):
    from payloads import stock_order

    rig.pipeline.submit("SORDER", stock_order(event_id="working-1", order_id="0badf00d", code=code, quantity=5, custom_field="MOMO", exchange_ts=time.time()))
    rig.pipeline.on_worker(lambda: None)


def _corrupt_books(rig, account, symbol, quantity):
    """Our books drift from the broker with no order involved (e.g. a bad correction)."""
    from execstate.domain.events import CORRECTION_STATE
    from execstate.domain.instruments import symbol_parts

    kind, code, _, cond = symbol_parts(symbol)
    rig.pipeline.submit(CORRECTION_STATE, {"correction_id": f"C:test:{symbol}", "account": account, "strategy": "momo", "symbol": symbol,
                                           "security_type": kind, "code": code, "order_cond": cond, "quantity": quantity,
                                           "price": "1", "reason": "test corruption", "ts_ns": time.time_ns()})
    rig.pipeline.on_worker(lambda: None)


def test_mismatch_without_orders_in_flight_is_corrected_at_once_and_halts():
    rig = Rig(seed=3, recent_ns=1)  # only working orders count as in flight here
    try:
        startup(rig)
        rig.play()
        assert rig.books() == rig.broker()
        in_flight = rig.pipeline.on_worker(rig.pipeline.normalizer.orders.in_flight)
        account, symbol = next(k for k in sorted(rig.broker()) if k not in in_flight)
        _corrupt_books(rig, account, symbol, 1000)
        result = rig.reconciler.check(reason="poll")
        assert [(c.symbol, c.quantity, c.strategy) for c in result.corrections] == [(symbol, -1000, "unassigned")]
        assert rig.books() == rig.broker()
        assert rig.halt.is_halted and symbol in rig.halt.status().reason  # an unexplained change stops trading
        clean = rig.reconciler.check(reason="poll")
        assert clean.clean and not rig.halt.is_halted  # a clean reconcile clears HALT
    finally:
        rig.close()


def test_mismatch_with_order_in_flight_is_corrected_only_when_confirmed():
    rig = Rig(seed=3)
    try:
        startup(rig)
        rig.play()
        _working_order(rig)
        _phantom_deal(rig, exchange_seq="888888")
        first = rig.reconciler.check(reason="poll")
        assert first.corrections == [] and [d.symbol for d in first.pending] == ["2890"]
        assert rig.books() != rig.broker()  # a fill may still be in the pipe: not corrected yet
        second = rig.reconciler.check(reason="poll")
        assert [(c.symbol, c.quantity) for c in second.corrections] == [("2890", -1000)]
        assert rig.books() == rig.broker()
    finally:
        rig.close()


def test_mismatch_that_resolves_before_confirmation_is_never_corrected():
    rig = Rig(seed=3)
    try:
        startup(rig)
        rig.play()
        _working_order(rig)
        _phantom_deal(rig, exchange_seq="777777")
        assert rig.reconciler.check(reason="poll").pending
        _phantom_deal(rig, qty=1, exchange_seq="777778")  # books move on: the mismatch changed
        third = rig.reconciler.check(reason="poll")
        assert third.corrections == [] and third.pending  # changed values restart the count
    finally:
        rig.close()


def test_recovery_past_the_deadline_halts():
    class SlowClock:
        def __init__(self):
            self.t = 0.0

        def __call__(self):
            self.t += 11.0  # each reading 11 s later: the check takes 11 s > 10 s deadline
            return self.t

    rig = Rig(seed=4, clock=SlowClock())
    try:
        result = rig.reconciler.check(reason="startup", opening=True)
        assert result.duration_ms > SETTINGS.reconcile.deadline_ms
        assert rig.halt.is_halted and "deadline" in rig.halt.status().reason
    finally:
        rig.close()


def test_broker_failure_during_reconcile_halts_with_the_error():
    import shioaji as sj

    rig = Rig(seed=5)
    try:
        rig.api.broker.fail_next(5, sj.ServerError("StatusCode: 500, Detail: internal"))
        result = rig.reconciler.check(reason="poll")
        assert "ServerError" in result.error
        assert rig.halt.is_halted and "failed" in rig.halt.status().reason
    finally:
        rig.close()


def test_symbol_that_just_traded_counts_as_in_flight():
    rig = Rig(seed=3)  # recent fills (5 s) count as in flight
    try:
        startup(rig)
        rig.play()
        in_orders = rig.pipeline.on_worker(rig.pipeline.normalizer.orders.in_flight)
        account, symbol = next(k for k in sorted(rig.broker()) if k not in in_orders)
        _corrupt_books(rig, account, symbol, 1000)
        first = rig.reconciler.check(reason="poll")
        assert first.corrections == [] and [(d.account, d.symbol) for d in first.pending] == [(account, symbol)]
        second = rig.reconciler.check(reason="poll")
        assert [(c.symbol, c.quantity) for c in second.corrections] == [(symbol, -1000)]
    finally:
        rig.close()


# --- unrealized PnL against the broker's list_positions pnl -----------------------------------


def _reprice_books(rig, account, symbol, quantity, price):
    """Our average price for (account, symbol) goes wrong, its quantity stays right: the open
    quantity is taken away and booked again at `price` (two corrections, no fees)."""
    from execstate.domain.events import CORRECTION_STATE
    from execstate.domain.instruments import symbol_parts

    kind, code, _, cond = symbol_parts(symbol)
    now = time.time_ns()
    for n, (qty, px) in enumerate(((-quantity, "1"), (quantity, price))):
        rig.pipeline.submit(CORRECTION_STATE, {"correction_id": f"C:test-price:{symbol}:{n}", "account": account, "strategy": "momo",
                                               "symbol": symbol, "security_type": kind, "code": code, "order_cond": cond, "quantity": qty,
                                               "price": px, "reason": "test corruption", "ts_ns": now + n})
    rig.pipeline.on_worker(lambda: None)


def test_unrealized_pnl_agrees_with_the_broker_on_a_played_day():
    rig = Rig(seed=1, n_orders=400)
    try:
        startup(rig)
        rig.play()
        snapshot, _ = rig.fetch(list(rig.accounts), 0)

        result = rig.reconciler.check(reason="poll")

        assert result.clean and rig.books() == rig.broker()
        # every open position is compared: board and odd lots, margin, short sales, ETFs, futures, options
        assert result.pnl_compared == len([p for p in snapshot.positions if p.quantity]) > 15
        assert result.pnl_discrepancies == []
        assert set(result.pnl_max_diff_twd) == set(rig.accounts)
        assert max(result.pnl_max_diff_twd.values()) < Decimal("0.01")  # the same lots, fees and estimate as the broker
        assert not rig.halt.is_halted
    finally:
        rig.close()


def test_wrong_average_price_is_a_pnl_discrepancy_on_that_symbol_only_and_warns_in_process():
    from structlog.testing import capture_logs

    from execstate.config import AlertSettings
    from execstate.telemetry.alerts import AlertEvaluator, InputsReader, rules_for
    from execstate.telemetry.metrics import MetricSources, ReconcileMetrics

    rig = Rig(seed=3, recent_ns=1)
    try:
        # Arrange: a played day, then 1 TWD a share too much on our cost of one stock position
        startup(rig)
        rig.play()
        snapshot, _ = rig.fetch(list(rig.accounts), 0)
        target = next(p for p in sorted(snapshot.positions, key=lambda p: p.symbol) if p.symbol.isdigit() and p.quantity >= 1000)
        _reprice_books(rig, target.account, target.symbol, target.quantity, str(target.avg_price + 1))
        metrics = ReconcileMetrics(SETTINGS.reconcile.deadline_ms)
        halts = []
        evaluator = AlertEvaluator(rules_for(AlertSettings(), SETTINGS.reconcile.max_pnl_mismatch_twd), halt=halts.append)
        reader = InputsReader(AlertSettings(), MetricSources(reconcile=metrics), started_s=0.0)

        # Act
        with capture_logs() as logs:
            result = rig.reconciler.check(reason="poll")
        metrics.record(result)
        t0 = 1_779_330_600.0
        pending = evaluator.evaluate(reader.read(t0), t0)
        fired = evaluator.evaluate(reader.read(t0 + 15), t0 + 15)

        # Assert: quantities agree, nothing corrected or halted; one PnL difference, on that symbol
        assert result.discrepancies == [] and result.corrections == [] and not rig.halt.is_halted
        (d,) = result.pnl_discrepancies
        assert (d.account, d.symbol) == (target.account, target.symbol)
        assert abs(d.diff_twd - target.quantity) < Decimal("0.05")  # broker - ours: 1 TWD a share
        assert abs(d.broker - target.pnl) < Decimal("0.01") and d.tolerance_twd == SETTINGS.reconcile.max_pnl_mismatch_twd
        (line,) = [e for e in logs if e["event"] == "reconcile_pnl_mismatch"]
        assert (line["log_level"], line["account"], line["symbol"], line["diff"]) == ("warning", target.account, target.symbol, str(d.diff_twd))
        assert {"ours", "broker"} <= set(line)
        # in-process: pending, then firing after 15 s; warn, never HALT
        assert pending == []
        assert [(t.rule.name, t.rule.severity, t.state) for t in fired] == [("ExecstateReconciliationPnlMismatch", "warn", "firing")]
        (firing,) = evaluator.firing()
        assert firing["values"]["account"] == target.account and firing["values"]["mismatch_pnl_twd"] >= target.quantity - 1
        assert halts == [] and evaluator.halts == 0 and not rig.halt.is_halted
    finally:
        rig.close()
