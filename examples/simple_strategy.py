"""A strategy in the same process as execstate, on the simulated broker.

Run: `.venv/bin/python examples/simple_strategy.py`

Strategy "mean_rev" buys 2 lots of 2330, sells 1, and buys 1 TXF future. It hears its fills
twice (a callback, run on the pipeline thread, and an iterator it reads itself), then reads
its positions and the HALT state. Everything lives in a temporary state directory.
"""

import queue
import shutil
import tempfile

import shioaji as sj

from execstate.api import Execstate
from execstate.config import parse_settings
from execstate.domain.money import fmt_decimal
from execstate.telemetry.logging import configure_logging

STRATEGY = "mean_rev"


def main() -> None:
    configure_logging(level="warning")  # the service's log (stderr): only what needs attention
    state_dir = tempfile.mkdtemp(prefix="es-example-", dir="/tmp")  # short: holds a Unix socket
    settings = parse_settings({
        "state_dir": state_dir,
        "recorder": {"enabled": False, "parquet_snapshots": False},  # no database for an example
        "telemetry": {"metrics_port": 0},  # any free port
    })
    try:
        with Execstate.simulated(settings, seed=1) as es:
            # subscribe before placing: events are not replayed to late subscribers
            es.on_fill(lambda f: print(f"callback: {f.side} {f.quantity} {f.symbol} @ {f.price}"), strategy=STRATEGY)
            fills = es.fills(strategy=STRATEGY)  # an iterator with its own queue, read below

            tsmc = es.api.Contracts.Stocks["2330"]
            txf = es.api.Contracts.Futures["TXFR1"]  # the near month
            orders = [
                (tsmc, sj.StockOrder(action="Buy", price=0, quantity=2, price_type="MKT", time_in_force="IOC")),
                (tsmc, sj.StockOrder(action="Sell", price=0, quantity=1, price_type="MKT", time_in_force="IOC")),
                (txf, sj.FuturesOrder(action="Buy", price=0, quantity=1, price_type="MKP", time_in_force="IOC", octype="Auto")),
            ]
            for contract, order in orders:
                trade = es.place(STRATEGY, contract, order)  # tagged with the strategy's custom_field
                print(f"placed {trade.order.id}: {order.action.value} {order.quantity} {contract.code} "
                      f"(custom_field {trade.order.custom_field!r})")

            # 2 lots of 2330 fill in 2 deals, 1 lot in 1, the future in 1: 4 deals
            received = []
            while len(received) < 4:
                try:
                    received.append(fills.get(timeout=10))
                except queue.Empty:
                    raise SystemExit(f"only {len(received)} fills arrived") from None
            for f in received:
                print(f"fill {f.order_id}: strategy={f.strategy} {f.side} {f.quantity} {f.symbol} @ {f.price}")

            for p in es.positions(STRATEGY).positions:  # one consistent view of the books
                print(f"position {p.symbol}: quantity={p.quantity} avg_price={fmt_decimal(p.avg_price)} "
                      f"realized_pnl={fmt_decimal(p.realized_pnl)} fees={fmt_decimal(p.fees)} taxes={fmt_decimal(p.taxes)}")
            halt = es.halt
            print(f"halt: halted={halt.halted} reason={halt.reason!r}")
        print("stopped")
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
