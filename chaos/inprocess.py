"""In-process chaos scenarios: a real `Service` on the simulated broker, one fault each.

Entry point: `scenarios(fast) -> list[Scenario]` (`chaos.harness`): `fast=True` is the subset
run inside `make test` (small days, all of it well under 40 s on two cores), `fast=False` the
full list on bigger days. Each scenario runs a `chaos.rig.Rig` (service, recorder on an
embedded chdb, in-process alerts), injects its fault, lets the day play as fast as it can be
delivered, lets the service reconcile by its own triggers (named in each scenario), and ends
with the three verdicts:
- books: `check_books(ours, truth)` per (account, strategy, symbol): recovered deals keep
  their strategy (stock deals by their `custom_field` tag, futures by the registered intent),
  so strategy attribution must hold everywhere here. For days where nothing is lost the books
  are compared before any end-of-day reconcile (from the callbacks alone), then an operator
  reconcile must find nothing to correct: a correction would hide a booking bug.
- rows: `check_rows` on the recorded database, opened after the service stopped.
- alerts: `check_alerts(expected, fired, forbidden)` on the in-process alerts that fired plus
  "HALT" (entered at any time); the reason for each expectation is in the Check detail. Every
  scenario ends with a clean check, which leaves HALT: still HALTed at the end fails too.
  ExecstateCallbacksStopped is neither expected nor forbidden anywhere (it depends on the wall
  clock's market hours), nor is ExecstateReconciliationPnlMismatch (PnL, not quantities).

Deadlines are scaled where a scenario must cross one (a broker ban of 5 s instead of 60 s
against a 1 s reconcile deadline instead of 10 s; retry backoff from 50 ms): the same
comparisons the code makes, in seconds instead of minutes. Seeds are fixed per scenario.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import shioaji as sj

from chaos.harness import Check, Scenario, ScenarioResult, check_alerts, check_books
from chaos.rig import Rig, double_every_event, drop_burst
from execstate.bridge.sim import SimConfig
from execstate.reconcile.gateway import is_ban_error

FAST_ORDERS, FULL_ORDERS = 100, 800
OWN_TRIGGER_TIMEOUT_S = 20.0
HALTED, MISMATCH, SLOW, DOWN, BANNED = ("HALT", "ExecstateReconciliationMismatch", "ExecstateRecoverySlow",
                                        "ExecstateConnectionDown", "ExecstateBrokerBanned")
SPOOL, HALTED_ALERT = "ExecstateRecorderSpoolGrowing", "ExecstateHalted"
# nothing wrong that the service could not repair by itself: none of these may fire
QUIET = frozenset({HALTED, MISMATCH, SLOW, DOWN, BANNED, SPOOL, HALTED_ALERT})
FAST_BACKOFF = {"rate_limits": {"backoff_initial_ms": 50}}
SCALED_DEADLINE_MS = 1000


Act = Callable[[Rig, dict], int]  # injects the fault, plays the day; returns when (wall ns) recovery checks may start


@dataclass(frozen=True)
class Plan:
    name: str
    injected: str
    seed: int
    fast: bool
    act: Act
    knobs: Mapping[str, Any] = field(default_factory=dict)  # SimConfig
    edit: Callable[[Any], Any] | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    settle: str = "own"  # "own": the service's own triggers; "quiet": nothing lost (see module docstring)
    expect: frozenset[str] = frozenset()
    forbid: frozenset[str] = QUIET
    why: str = ""  # why these alerts
    needs: tuple[str, ...] = ()  # reconcile reasons the service must have run by itself


# --- acts ------------------------------------------------------------------------------------

def play_day(rig: Rig, facts: dict) -> int:
    """The whole day, delivered at once."""
    rig.play()
    rig.barrier()
    return time.time_ns()


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def fail_queries(n: int, exc: BaseException) -> Act:
    """The broker's next `n` server calls (after start-up) raise `exc`; then the day plays."""
    def act(rig: Rig, facts: dict) -> int:
        rig.broker.fail_next(n, exc)
        facts["failed_calls"] = n
        return play_day(rig, facts)
    return act


def outside_client_ban(ban_s: float) -> Act:
    """Another client on the same login (a notebook, a second script) polls positions until
    the broker's 25-per-5-s accounting limit bans the login; the day then plays. The ban is
    `ban_s` long on the broker, and the gateway assumes as much (+ up to 0.2 s jitter)."""
    def act(rig: Rig, facts: dict) -> int:
        rig.broker.gate.ban_s = ban_s
        rig.service.gateway.ban_s, rig.service.gateway.ban_jitter_s = ban_s, 0.2
        calls = 0
        while calls < 100:
            calls += 1
            try:
                rig.api.list_positions(rig.api.stock_account, unit=sj.Unit.Share)
            except sj.ShioajiError as exc:
                if not is_ban_error(exc):
                    raise
                break
        facts["outside_calls"] = calls
        facts["broker_bans"] = rig.broker.gate.bans
        if not rig.broker.gate.banned():
            raise AssertionError(f"{calls} outside calls did not get the login banned")
        return play_day(rig, facts)
    return act


def slow_broker(latency_s: float, heal: bool) -> Act:
    """Every broker call takes `latency_s` from now on; the day plays. With `heal`, wait for
    the HALT and the slow checks to end, make the broker fast again and run the operator's
    `execstate reconcile` (what an operator does after a HALT: a clean check clears it)."""
    def act(rig: Rig, facts: dict) -> int:
        rig.broker.latency_s = latency_s
        after = play_day(rig, facts)
        if not heal:
            return after
        _wait(lambda: rig.service.halt.is_halted, 30, "HALT")
        slow_ms = rig.settings.reconcile.deadline_ms
        _wait(lambda: any(r.duration_ms > slow_ms for r in rig.results) and not rig.dirty_accounts(), 30,
              "the slow checks to repair the books")
        facts["slowest_check_ms"] = round(max(r.duration_ms for r in rig.results), 1)
        rig.broker.latency_s = 0.0
        after = time.time_ns()
        rig.operator_check("operator after HALT")
        return after
    return act


def disconnect(lost: int, down_s: float = 0.0, *, until_halt: bool = False) -> Act:
    """Half the day, then the session drops: `lost` events pass while it is down (lost, as
    callbacks are in an outage), it stays down `down_s` (or until HALT), comes back, and the
    rest of the day plays. Recovery checks count from the reconnect."""
    def act(rig: Rig, facts: dict) -> int:
        half = len(rig.session.events) // 2
        rig.play(stop=half)
        rig.barrier()
        rig.api.disconnect()
        t_down = time.monotonic()
        if lost:
            pb = rig.play(start=half, stop=half + lost)
            facts["lost_while_down"] = pb.lost
        if until_halt:
            _wait(lambda: rig.service.halt.is_halted, 30, "HALT while down")
        elif down_s:
            time.sleep(max(0.0, down_s - (time.monotonic() - t_down)))
        facts["down_ms"] = round((time.monotonic() - t_down) * 1000, 1)
        after = time.time_ns()
        rig.api.reconnect()
        rig.play(start=half + lost)
        rig.barrier()
        return after
    return act


def strategy_orders(rig: Rig, facts: dict) -> int:
    """The day plays, then strategies place orders through the service: some fill, one is
    cancelled by the exchange (IOC far from the market), two are refused by the broker."""
    after = play_day(rig, facts)
    stocks, futures = rig.api.Contracts.Stocks, rig.api.Contracts.Futures
    ioc = {"time_in_force": "IOC"}
    fut = {"price": 0, "price_type": "MKP", "octype": "Auto", **ioc}
    orders = [
        ("momo", stocks["2330"], sj.StockOrder(action="Buy", price=0, quantity=3, price_type="MKT", **ioc)),
        ("meanrev", stocks["2890"], sj.StockOrder(action="Sell", price=0, quantity=1, price_type="MKT", **ioc)),
        ("fut_trend", futures["TXFR1"], sj.FuturesOrder(action="Sell", quantity=2, **fut)),
        ("meanrev", stocks["2317"], sj.StockOrder(action="Buy", price=1, quantity=1, price_type="LMT", **ioc)),  # IOC, unfilled
        ("momo", stocks["2330"], sj.StockOrder(action="Buy", price=0, quantity=1, price_type="LMT", time_in_force="ROD")),  # no price
        ("fut_trend", stocks["2330"], sj.FuturesOrder(action="Buy", quantity=1, **fut)),  # a futures order on a stock
    ]
    refused = 0
    for strategy, contract, order in orders:
        try:
            rig.place(strategy, contract, order)
        except (sj.ShioajiValueError, sj.ShioajiTypeError):
            refused += 1
    if refused != 2:
        raise AssertionError(f"{refused} of the strategy orders refused by the broker, 2 meant to be")
    if not rig.api.drain_orders(10):
        raise TimeoutError("placed orders' reports did not all arrive")
    rig.barrier()
    facts.update(placed=len(orders), refused=refused, placed_fills=len(rig.broker.placed_fills))
    return after


# --- running a plan --------------------------------------------------------------------------

def run_plan(plan: Plan, orders: int) -> ScenarioResult:
    result = ScenarioResult(plan.name, plan.injected)
    facts = result.facts
    with Rig(SimConfig(seed=plan.seed, n_orders=orders, **plan.knobs), edit=plan.edit, settings=plan.settings) as rig:
        stats = rig.session.stats()
        facts.update(orders=orders, events=stats["events"], fills=stats["fills"], duplicates=stats["duplicates"],
                     deals_before_order=stats["deal_before_order"], dropped=stats["dropped"], rejects=stats["rejects"])
        rig.start()
        if rig.service.halt.is_halted:
            raise AssertionError(f"HALT at start-up: {rig.service.halt.status().reason}")
        after = plan.act(rig, facts)
        if plan.settle == "quiet":
            result.books = _quiet_books(rig)
        else:
            result.books = _own_books(rig, after, plan.needs)
        missing = [n for n in plan.needs if not any(r.started_ns > after and r.reason == n for r in rig.results)]
        if missing:
            result.error = f"the service ran no {', '.join(repr(m) for m in missing)} reconcile by itself"
        _reconcile_facts(rig, facts)
        still = rig.service.halt.status()
        rig.stop()
        result.rows = rig.rows_check()
        verdict = check_alerts(plan.expect, rig.fired(), forbidden=plan.forbid)
        if still.halted:  # every scenario ends with the books confirmed by a clean check, which leaves HALT
            verdict = Check(False, f"{verdict.detail}; still HALTed at the end ({still.reason})")
        result.alerts = Check(verdict.ok, f"{verdict.detail}. {plan.why}".strip())
        facts["fired"] = sorted(rig.fired())
    return result


def _quiet_books(rig: Rig) -> Check:
    """Nothing was lost: the callbacks alone must make the books, then an end-of-day operator
    reconcile must find them clean (a correction there would have hidden a booking bug)."""
    before = check_books(rig.ours(), rig.truth())
    eod = rig.operator_check("end of day")
    after = check_books(rig.ours(), rig.truth())
    if eod is None or eod.error or eod.corrections or eod.discrepancies:
        what = "no answer" if eod is None else eod.error or f"{len(eod.discrepancies)} differences, {len(eod.corrections)} corrections"
        return Check(False, f"from callbacks: {before.detail}; end-of-day reconcile not clean: {what}")
    if not before.ok:
        return Check(False, f"from callbacks alone: {before.detail}")
    return Check(after.ok, f"{after.detail} from callbacks alone; end-of-day reconcile clean")


def _own_books(rig: Rig, after_ns: int, needs: tuple[str, ...]) -> Check:
    """Events were lost or a query failed: the service's own triggers must repair the books,
    each account that was wrong after the fault confirmed by a clean check started after it."""
    dirty = rig.dirty_accounts()
    checks = rig.await_check(after_ns, OWN_TRIGGER_TIMEOUT_S, accounts=dirty, reasons=needs)
    rig.barrier()
    books = check_books(rig.ours(), rig.truth())
    covered = {a for r in checks for a in r.accounts}
    if not books.ok:
        return books
    if not covered >= dirty:
        return Check(False, f"{books.detail}, but no clean reconcile of {sorted(dirty - covered)} "
                            f"within {OWN_TRIGGER_TIMEOUT_S:.0f} s")
    how = ", ".join(sorted({r.reason for r in checks})) or "nothing to repair"
    return Check(True, f"{books.detail}; {len(dirty)}/{len(rig.service.accounts)} accounts repaired, confirmed by: {how}")


def _reconcile_facts(rig: Rig, facts: dict) -> None:
    runtime = [r for r in rig.results if r.reason != "startup"]
    stats = rig.service.pipeline.stats
    delivered = sum(pb.delivered for pb in rig.playbacks)
    facts.update(
        delivered=delivered, lost_in_play=sum(pb.lost for pb in rig.playbacks),
        duplicates_dropped=sum(1 for e in rig.logs if e.get("event") == "duplicate_dropped" and e.get("source") == "callback"),
        dead_letters=stats.dead_letters, recovered_fills=sum(r.recovered_fills for r in runtime),
        corrections=sum(len(r.corrections) for r in runtime), checks=len(runtime),
        failed_checks=sum(bool(r.error) for r in runtime), halts=rig.service.halt.entered,
        halted_at_end=rig.service.halt.is_halted,
        reconcile_ms_max=round(max((r.duration_ms for r in runtime), default=0.0), 1),
        triggers=sorted({r.reason for r in runtime}),
    )


# --- the scenarios ---------------------------------------------------------------------------

_NO_ALERT = "Nothing lost that the records cannot repair: no HALT, no alert"
PLANS: tuple[Plan, ...] = (
    Plan("baseline", "nothing (control day)", 101, True, play_day, settle="quiet", why=_NO_ALERT),
    # callback loss
    Plan("loss_1pct", "1% of callbacks lost (broker sees the gap)", 102, True, play_day, knobs={"drop_rate": 0.01},
         why=_NO_ALERT + " (trigger: sequence gap)", needs=("sequence gap",)),
    Plan("loss_10pct", "10% of callbacks lost", 103, True, play_day, knobs={"drop_rate": 0.10},
         why=_NO_ALERT + " (trigger: sequence gap)", needs=("sequence gap",)),
    Plan("loss_burst_100", "100 callbacks in a row lost (broker sees the gap)", 104, True, play_day,
         edit=lambda s: drop_burst(s, len(s.events) // 3, 100), why=_NO_ALERT + " (trigger: sequence gap)", needs=("sequence gap",)),
    Plan("loss_burst_100_silent", "100 callbacks in a row lost, broker reports no gap", 105, False, play_day,
         edit=lambda s: drop_burst(s, len(s.events) // 3, 100, noticed=False),
         why=_NO_ALERT + " (triggers: callback gap with orders working, or the 5 s poll)"),
    # duplicates
    Plan("dup_every_event", "every event delivered twice", 106, True, play_day, edit=double_every_event, settle="quiet",
         knobs={"dup_rate": 0.0}, why="Duplicates change nothing: no correction, no alert"),
    Plan("dup_late", "25% of events duplicated 2-30 min later", 107, True, play_day, settle="quiet",
         knobs={"dup_rate": 0.25, "dup_late_fraction": 1.0}, why="Duplicates change nothing: no correction, no alert"),
    # reordering
    Plan("deals_before_orders", "every order's first deal before its order event", 108, True, play_day, settle="quiet",
         knobs={"deal_before_order_rate": 1.0}, why="Order does not matter to the books: no alert"),
    Plan("shuffle_window_30", "events shuffled within a window of 30", 109, True, play_day, settle="quiet",
         knobs={"reorder_window": 30}, why="Order does not matter to the books: no alert"),
    # rejects and failed orders
    Plan("rejects_and_refusals", "30% of orders rejected by the broker; strategy orders refused/IOC-cancelled", 110, True,
         strategy_orders, settle="quiet", knobs={"reject_rate": 0.30},
         why="Rejects book nothing; refused orders raise to the strategy: no alert"),
    # broker query errors and timeouts
    Plan("query_errors_transient", "3 broker queries fail (ServerError 500), 5% lost", 111, True,
         fail_queries(3, sj.ServerError("StatusCode: 500, Detail: internal error")), knobs={"drop_rate": 0.05},
         settings=FAST_BACKOFF, why="The gateway retries within the deadline: no HALT, no alert", needs=("sequence gap",)),
    Plan("query_timeouts_transient", "3 broker queries time out, 5% lost", 112, True,
         fail_queries(3, TimeoutError("broker did not answer in 30000 ms")), knobs={"drop_rate": 0.05},
         settings=FAST_BACKOFF, why="The gateway retries within the deadline: no HALT, no alert", needs=("sequence gap",)),
    Plan("query_errors_persistent", "12 broker queries fail in a row (retries exhausted), 5% lost", 113, True,
         fail_queries(12, sj.ServerError("StatusCode: 500, Detail: internal error")), knobs={"drop_rate": 0.05},
         settings=FAST_BACKOFF, expect=frozenset({HALTED, SLOW}), forbid=frozenset({MISMATCH, DOWN, BANNED, SPOOL}),
         why="A failed reconcile HALTs (reconciler) and counts as recovery over budget (RecoverySlow); "
             "the next clean check, once the broker answers, clears HALT"),
    Plan("ban_over_limit", "another client exceeds 25 queries/5 s: login banned (5 s, scaled), 5% lost", 114, True,
         outside_client_ban(5.0), knobs={"drop_rate": 0.05},
         settings={"reconcile": {"deadline_ms": SCALED_DEADLINE_MS}, **FAST_BACKOFF},
         expect=frozenset({HALTED, BANNED, SLOW}), forbid=frozenset({MISMATCH, DOWN, SPOOL}),
         why="A ban outlasting the deadline (1 min vs 10 s; scaled: 5 s vs 1 s): the gateway will not wait past it, "
             "the reconcile fails, HALT + RecoverySlow; BrokerBanned warns; after the ban a clean check clears HALT"),
    # recovery too slow
    Plan("recovery_too_slow", "every broker call takes 0.6 s against a 1 s deadline (scaled), 5% lost", 115, True,
         slow_broker(0.6, heal=True), knobs={"drop_rate": 0.05},
         settings={"reconcile": {"deadline_ms": SCALED_DEADLINE_MS}, "alerts": {"recovery_s": SCALED_DEADLINE_MS / 1000}},
         expect=frozenset({HALTED, SLOW}), forbid=frozenset({MISMATCH, DOWN, BANNED, SPOOL}),
         why="A check past the deadline HALTs (reconciler) and RecoverySlow fires; the operator's clean reconcile clears HALT"),
    Plan("slow_but_in_time", "every broker call takes 0.2 s (deadline 10 s), 5% lost", 116, False,
         slow_broker(0.2, heal=False), knobs={"drop_rate": 0.05}, why=_NO_ALERT + " (slow is not late)", needs=("sequence gap",)),
    # connection drop and reconnect
    Plan("reconnect_no_loss", "session down 0.4 s mid-day, nothing lost", 117, True, disconnect(0, 0.4),
         why="A short outage: the reconnect reconciles; no HALT, no alert", needs=("reconnect",)),
    Plan("reconnect_with_loss", "session down 0.4 s mid-day, 40 events lost meanwhile", 118, True, disconnect(40, 0.4),
         why="A short outage: the reconnect recovers what was lost; no HALT, no alert", needs=("reconnect",)),
    Plan("reconnect_blip_with_loss", "session down for <1 ms (between two monitor looks), 40 events lost", 119, True,
         disconnect(40, 0.0), why="A blip the monitor never sees down still reconciles as a reconnect; no HALT, no alert",
         needs=("reconnect",)),
    Plan("outage_past_deadline", "session down past connection_down_s (0.3 s, scaled), 40 events lost", 120, True,
         disconnect(40, until_halt=True), settings={"alerts": {"connection_down_s": 0.3}},
         expect=frozenset({HALTED, DOWN}), forbid=frozenset({MISMATCH, SLOW, BANNED, SPOOL}),
         why="Down past its limit: ConnectionDown HALTs; the reconnect's clean check clears HALT", needs=("reconnect",)),
    # everything at once
    Plan("combined", "5% lost, 10% duplicated, deals first 20%, shuffled by 10, 10% rejects, 5% no event_id", 121, False,
         play_day, knobs={"drop_rate": 0.05, "dup_rate": 0.10, "deal_before_order_rate": 0.2, "reorder_window": 10,
                          "reject_rate": 0.10, "no_event_id_rate": 0.05},
         why=_NO_ALERT + " (trigger: sequence gap)", needs=("sequence gap",)),
)


def _scenario(plan: Plan, orders: int) -> Scenario:
    return Scenario(plan.name, plan.injected, lambda: run_plan(plan, orders), fast=plan.fast)


def scenarios(fast: bool) -> list[Scenario]:
    """The fast subset (small days) or the full list (bigger days)."""
    orders = FAST_ORDERS if fast else FULL_ORDERS
    return [_scenario(p, orders) for p in PLANS if p.fast or not fast]
