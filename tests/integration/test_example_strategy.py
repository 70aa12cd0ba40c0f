"""The strategy API end to end: the example script as a process, and a strategy in this process
against a running service on the simulated broker (fills, positions, reconcile, HALT)."""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import shioaji as sj

from execstate.api import Execstate, TradingHalted
from execstate.config import parse_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "simple_strategy.py"


@pytest.fixture
def state_dir():
    # short path: the control socket's path must stay under 108 bytes
    path = Path(tempfile.mkdtemp(prefix="es-", dir="/tmp"))
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def _settings(state_dir: Path):
    return parse_settings({
        "state_dir": str(state_dir),
        "recorder": {"enabled": False, "parquet_snapshots": False},
        "telemetry": {"metrics_port": 0},
        "runtime": {"gc_freeze_after_start": False, "switch_interval_us": 0},
    })


def test_example_places_receives_its_fills_and_prints_matching_positions():
    run = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120)

    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    fills = re.findall(r"^fill (\w+): strategy=(\S+) (Buy|Sell) (\d+) (\S+) @", out, re.M)
    callbacks = re.findall(r"^callback: (Buy|Sell) (\d+) (\S+) @", out, re.M)
    positions = {m[0]: int(m[1]) for m in re.findall(r"^position (\S+): quantity=(-?\d+)", out, re.M)}
    assert len(fills) == 4 and {f[1] for f in fills} == {"mean_rev"}  # never "unassigned"
    assert sorted(callbacks) == sorted((f[2], f[3], f[4]) for f in fills)
    expected: dict[str, int] = {}
    for _, _, side, qty, symbol in fills:
        expected[symbol] = expected.get(symbol, 0) + (int(qty) if side == "Buy" else -int(qty))
    assert positions == expected == {"2330": 1000, "TXFL6": 1}
    assert "halt: halted=False" in out and out.rstrip().endswith("stopped")
    assert len(re.findall(r"^placed \w+: .*custom_field 'MEANRE'", out, re.M)) == 3


def test_a_strategy_in_process_gets_its_fills_positions_match_the_broker_and_halt_stops_orders(state_dir):
    with Execstate.simulated(_settings(state_dir), seed=3, orders=40) as es:
        assert es.service.playback.join(30)  # the simulated day's own orders, played at once
        by_callback, stream = [], es.fills("mean_rev")
        es.on_fill(by_callback.append, strategy="mean_rev")
        others = es.fills()
        stocks, futures = es.api.Contracts.Stocks, es.api.Contracts.Futures

        trades = [
            es.place("mean_rev", stocks["2330"], sj.StockOrder(action="Buy", price=0, quantity=3, price_type="MKT", time_in_force="IOC")),
            es.place("mean_rev", stocks["2330"], sj.StockOrder(action="Sell", price=0, quantity=1, price_type="MKT", time_in_force="IOC")),
            es.place("mean_rev", stocks["2890"], sj.StockOrder(action="Buy", price=0, quantity=250, price_type="MKT",
                                                             time_in_force="IOC", order_lot="IntradayOdd")),
            es.place("mean_rev", futures["TXFR1"], sj.FuturesOrder(action="Sell", price=0, quantity=2, price_type="MKP",
                                                                    time_in_force="IOC", octype="Auto")),
        ]
        resting = es.place("mean_rev", stocks["2330"], sj.StockOrder(action="Buy", price=1, quantity=1, price_type="LMT",
                                                                     time_in_force="ROD"))
        received = [stream.get(timeout=10) for _ in range(7)]  # deals: 2330 2 + 1, 2890 2, TXF 2
        es.api.drain_orders(10)
        es.sync()

        with pytest.raises(queue.Empty):
            stream.get(timeout=0.1)  # and no more
        assert sorted(f.event_id for f in by_callback) == sorted(f.event_id for f in received)
        assert {f.strategy for f in received} == {"mean_rev"}
        assert {f.order_id for f in received} == {t.order.id for t in trades}
        assert not any(f.strategy == "unassigned" and f.order_id in {t.order.id for t in trades} for f in others.drain())
        assert {p.symbol: p.quantity for p in es.positions("mean_rev").positions} == {"2330": 2000, "2890": 250, "TXFL6": -2}

        es.cancel(resting)
        es.api.drain_orders(10)
        es.sync()
        result = es.service.reconciler.check(reason="test")
        assert result.error == "" and result.discrepancies == [] and result.corrections == []

        es.service.halt.enter("test: books cannot be trusted")
        with pytest.raises(TradingHalted, match="test: books cannot be trusted"):
            es.place("mean_rev", stocks["2330"], sj.StockOrder(action="Buy", price=0, quantity=1, price_type="MKT", time_in_force="IOC"))
        assert es.halt.halted and es.is_halted
        assert es.service.halt.clear("test")
    assert es.service.phase == "stopping"


def test_after_a_restart_the_broker_still_holds_placed_orders_and_new_ones_are_not_taken_for_duplicates(state_dir):
    buy = sj.StockOrder(action="Buy", price=0, quantity=2, price_type="MKT", time_in_force="IOC")
    with Execstate.simulated(_settings(state_dir), seed=5) as es:
        first = es.place("mean_rev", es.api.Contracts.Stocks["2330"], buy)
        es.api.drain_orders(10)
        es.sync()
        assert es.quantity("mean_rev", "2330") == 2000

    with Execstate.simulated(_settings(state_dir), seed=5) as es:
        assert es.service.startup.discrepancies == [] and es.quantity("mean_rev", "2330") == 2000
        stream = es.fills("mean_rev")
        second = es.place("mean_rev", es.api.Contracts.Stocks["2330"], buy)
        got = [stream.get(timeout=10) for _ in range(2)]
        es.api.drain_orders(10)
        es.sync()

        assert second.order.id != first.order.id and {f.order_id for f in got} == {second.order.id}
        assert es.quantity("mean_rev", "2330") == 4000
        assert es.service.reconciler.check(reason="test").discrepancies == []


def test_a_second_simulated_instance_on_the_same_state_directory_is_refused_and_leaves_the_first_alone(state_dir):
    from execstate.control import ControlStartError

    with Execstate.simulated(_settings(state_dir), seed=5) as first:
        socket_files = sorted(p.name for p in state_dir.iterdir())
        with pytest.raises(ControlStartError):
            Execstate.simulated(_settings(state_dir), seed=5)

        assert sorted(p.name for p in state_dir.iterdir()) == socket_files
        trade = first.place("mean_rev", first.api.Contracts.Stocks["2330"],
                            sj.StockOrder(action="Buy", price=0, quantity=1, price_type="MKT", time_in_force="IOC"))
        first.api.drain_orders(10)
        first.sync()
        assert first.quantity("mean_rev", "2330") == 1000 and trade.order.id
