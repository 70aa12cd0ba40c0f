"""What a reconciliation asks the broker, and how the answers become a `BrokerSnapshot`.

Entry points: `account_key(account)`, `make_fetch(run_calls, accounts) -> fetch(keys, deadline)`,
`direct_calls(client)`.

Per account a check makes two calls: `list_positions(account, unit=Unit.Share)` (portfolio
budget: 25 per 5 s; shares, because `Unit.Common` drops odd shares), then
`order_deal_records(account)` (the day's order and deal reports, for recovering missed
callbacks). Positions go first, for all accounts in parallel, and records second: so the
records cover every deal the positions include, and a deal between the two queries makes
us ahead of the positions on a symbol that just traded (which the reconciler treats as in
flight), never behind them. Invariant: nothing here calls the broker except
through `run_calls`, which in the service is the rate-limited gateway.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import shioaji as sj

from execstate.domain.reports import BrokerSnapshot, future_position_report, stock_position_report

Call = tuple[str, str, tuple, dict]  # (budget group, method name, args, kwargs)
RunCalls = Callable[[list[Call], float], list[Any]]


def account_key(account: Any) -> str:
    """The books' account id for a Shioaji `Account`: "{broker_id}-{account_id}"."""
    return f"{account.broker_id}-{account.account_id}"


def _is_stock(account: Any) -> bool:
    return str(getattr(account.account_type, "value", account.account_type)) in ("S", "Stock")


def direct_calls(client: Any) -> RunCalls:
    """Call the client one call at a time, with no budget (tests against the simulated broker)."""
    return lambda calls, deadline: [getattr(client, method)(*args, **kwargs) for _, method, args, kwargs in calls]


def make_fetch(run_calls: RunCalls, accounts: Mapping[str, Any]) -> Callable[[list[str], float], tuple[BrokerSnapshot, list]]:
    """A `fetch(account_keys, deadline)` for the `Reconciler`."""

    def fetch(keys: list[str], deadline: float) -> tuple[BrokerSnapshot, list]:
        position_calls: list[Call] = [
            ("portfolio", "list_positions", (accounts[key],), {"unit": sj.Unit.Share} if _is_stock(accounts[key]) else {}) for key in keys
        ]
        position_results = run_calls(position_calls, deadline)
        taken = time.time_ns()
        record_results = run_calls([("order", "order_deal_records", (accounts[key],), {}) for key in keys], deadline)
        records: list = []
        positions = []
        for key, reported, recs in zip(keys, position_results, record_results):
            convert = stock_position_report if _is_stock(accounts[key]) else future_position_report
            positions.extend(convert(key, p) for p in reported or [])
            records.extend(recs or [])
        return BrokerSnapshot(tuple(keys), tuple(positions), taken), records

    return fetch
