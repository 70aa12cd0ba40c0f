"""Deterministic simulated Shioaji broker: a generated trading day, its truth, and a fake client.

Entry points: `generate_session(SimConfig(seed=...)) -> SimSession`, `write_journal`,
`SimBroker(session, clock)` (portfolio queries with Shioaji's rate limits and ban),
`SimShioaji(session, broker, clock)` (duck-typed `shioaji.Shioaji`: login, callbacks, `play`,
`place_order` / `cancel_order` on real shioaji orders, `Contracts`).

Invariants: depends only on the stdlib and the real `shioaji` package (its enums, `Account`,
`BaseContract`, `ServerError`); never constructs `shioaji.Shioaji`. Same seed, same session.
Module map: `catalog` (instruments, ticks, fees, accounts), `records` (truth and report types),
`session` (generator), `ratelimit`, `broker`, `placement` (order entry and fill model), `api`.
"""

from execstate.bridge.sim.api import (
    Playback, SimShioaji, SimTradeCacheHealth, SimTradeCacheHealthReason)
from execstate.bridge.sim.broker import SimBroker
from execstate.bridge.sim.catalog import (
    FUTOPT_ACCOUNT, INSTRUMENTS, STOCK_ACCOUNT, STRATEGY_TAGS, UNASSIGNED, AccountSpec, FeeModel,
    Instrument, symbol_for)
from execstate.bridge.sim.placement import OrderDesk, Outbox, Placement, SimContracts
from execstate.bridge.sim.ratelimit import BAN_MESSAGE, RateGate, ban_error
from execstate.bridge.sim.records import (
    DEFAULT_INITIAL_POSITIONS, InitialPosition, SimDeal, SimFill, SimFuturePosition,
    SimFutureProfitDetail, SimFutureProfitLoss, SimIntent, SimOrder, SimOrderResult,
    SimOrderStatusInfo, SimSettlement, SimStockPosition, SimStockProfitDetail, SimStockProfitLoss,
    SimTrade, build_trades, event_ts)
from execstate.bridge.sim.session import SimConfig, SimSession, generate_session, write_journal

__all__ = [
    "BAN_MESSAGE", "DEFAULT_INITIAL_POSITIONS", "FUTOPT_ACCOUNT", "INSTRUMENTS", "STOCK_ACCOUNT",
    "STRATEGY_TAGS", "UNASSIGNED", "AccountSpec", "FeeModel", "InitialPosition", "Instrument",
    "OrderDesk", "Outbox", "Placement", "Playback", "RateGate", "SimBroker", "SimConfig",
    "SimContracts", "SimDeal", "SimFill", "SimFuturePosition",
    "SimFutureProfitDetail", "SimFutureProfitLoss", "SimIntent", "SimOrder", "SimOrderResult",
    "SimOrderStatusInfo", "SimSession", "SimSettlement", "SimShioaji", "SimStockPosition",
    "SimStockProfitDetail", "SimStockProfitLoss", "SimTrade", "SimTradeCacheHealth",
    "SimTradeCacheHealthReason", "ban_error", "build_trades", "event_ts", "generate_session",
    "symbol_for", "write_journal",
]
