"""One reconciliation: recover missed broker records, compare books, correct what is confirmed.

Entry points: `Reconciler.check(accounts=None, symbols=None, reason=..., opening=False)`,
`ReconcileResult`, `attribution_from(snapshot_records, positions)`.

A check:
1. fetches the broker's view (`fetch(accounts, deadline)`: positions in shares and the
   day's order/deal records), through the rate-limited gateway;
2. resubmits the day's records into the pipeline: they are real broker facts, deduplicated
   there, so only the events we missed (lost callbacks) change anything, with their own
   strategy attribution and prices;
3. waits for the pipeline to book them, then diffs net quantities per (account, symbol);
4. compares unrealized PnL with the broker's `pnl` where the quantities agree (`pnl`:
   our open lots valued at the broker's last price, its way), when given `open_costs`;
5. confirms mismatches (`MismatchTracker`) and submits correcting events for them;
6. HALTs when it ran past the deadline, or when a runtime correction exceeds the
   configured quantity threshold (an unexplained position change: a human should look).
Invariants: never writes the store (corrections go through the pipeline); a failed or
late check halts instead of guessing. A PnL difference never halts and corrects nothing
(the quantity is right; the price, fees or the broker's estimate differ): it is reported
in `pnl_discrepancies`, logged, and alerted on (warn); a PnL comparison that fails is
logged (`reconcile_pnl_failed`) and leaves the check's outcome alone.
Logged per check: one `reconcile_result` (counts, duration, error, HALT), one
`reconcile_mismatch` per difference (account, symbol, ours vs broker, and whether it is
corrected now, waits for a second look, or, at the opening, is carried from before today),
one `reconcile_pnl_mismatch` per PnL difference over the threshold (account, symbol, ours,
broker, diff), one `correction_applied` per correcting event (account, strategy, symbol,
correction id, quantity, price).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

import msgspec

from execstate.config import ReconcileSettings
from execstate.domain.events import CORRECTION_STATE, Correction, ReconcileRecord
from execstate.domain.payloads import state_name
from execstate.domain.reports import BrokerPosition, BrokerSnapshot
from execstate.reconcile.diff import Discrepancy, book_quantities, diff
from execstate.reconcile.halt import HaltState
from execstate.reconcile.pnl import BrokerEstimate, OpenCost, PnlDiscrepancy, compare_pnl
from execstate.reconcile.policy import MismatchTracker, corrections_for
from execstate.telemetry.logging import get_logger

log = get_logger("execstate.reconcile")

Fetch = Callable[[list[str], float], tuple[BrokerSnapshot, list[tuple[Any, Any]]]]


class ReconcileResult(msgspec.Struct):
    reason: str
    accounts: tuple[str, ...]
    started_ns: int
    duration_ms: float
    records_resubmitted: int = 0
    recovered_fills: int = 0
    discrepancies: list[Discrepancy] = msgspec.field(default_factory=list)
    pending: list[Discrepancy] = msgspec.field(default_factory=list)
    corrections: list[Correction] = msgspec.field(default_factory=list)
    error: str = ""
    halted: bool = False
    pnl_discrepancies: list[PnlDiscrepancy] = msgspec.field(default_factory=list)
    pnl_compared: int = 0  # positions whose unrealized PnL was compared with the broker's
    # per account compared: largest |broker - ours| PnL beyond its convention's allowance, TWD.
    # Set by checks over all symbols only (a check of a few symbols says nothing of the rest).
    pnl_max_diff_twd: dict[str, Decimal] = msgspec.field(default_factory=dict)

    @property
    def clean(self) -> bool:
        """No error and no quantity difference (PnL differences do not make a check unclean)."""
        return not self.error and not self.discrepancies


def reconcile_record(r: ReconcileResult) -> ReconcileRecord:
    """The recorded form of a result."""
    return ReconcileRecord(
        f"R:{r.started_ns}:{r.reason}", r.reason, r.accounts, r.started_ns, r.duration_ms, r.records_resubmitted, r.recovered_fills,
        msgspec.json.encode(r.discrepancies).decode(), msgspec.json.encode(r.corrections).decode(), r.error, r.halted,
        msgspec.json.encode(r.pnl_discrepancies).decode(),
    )


def attribution_from(snapshot_records: Iterable[Any], positions: Mapping[Any, Any]) -> dict[tuple[str, str], list[tuple[str, int, Decimal]]]:
    """Who held what in the last snapshot that our books do not hold now, per (account, symbol).

    At the first start of a day the books are empty and the snapshot is the previous close,
    so an opening position goes back to the strategies that held it.
    """
    ours = {(k.account, k.strategy, k.symbol): s.quantity for k, s in positions.items()}
    out: dict[tuple[str, str], list[tuple[str, int, Decimal]]] = {}
    for rec in snapshot_records:
        missing = rec.quantity - ours.get((rec.account, rec.strategy, rec.symbol), 0)
        if missing:
            out.setdefault((rec.account, rec.symbol), []).append((rec.strategy, missing, rec.avg_price))
    return out


class Reconciler:
    def __init__(
        self,
        settings: ReconcileSettings,
        accounts: list[str],
        fetch: Fetch,
        view: Callable[[], Any],
        submit: Callable[[str, dict], None],
        in_flight: Callable[[], set[tuple[str, str]]],
        fills_booked: Callable[[], int],
        halt: HaltState,
        clock: Callable[[], float] = time.monotonic,
        on_result: Callable[[ReconcileResult], None] | None = None,
        open_costs: Callable[[], Mapping[tuple[str, str], OpenCost]] | None = None,
        estimate: BrokerEstimate | None = None,
    ) -> None:
        """`open_costs`: our open lots per (account, symbol) at the time of the call (`pnl.open_costs`
        over the store's fills); None: no PnL comparison. `estimate`: the broker's sale-cost rates."""
        self.settings = settings
        self.accounts = accounts
        self._fetch = fetch
        self._view = view
        self._submit = submit
        self._in_flight = in_flight
        self._fills_booked = fills_booked
        self.halt = halt
        self._clock = clock
        self.tracker = MismatchTracker(settings.confirmations)
        self._on_result = on_result
        self._open_costs = open_costs
        self._estimate = estimate or BrokerEstimate()
        self.last: ReconcileResult | None = None
        self.checks = 0

    def check(self, accounts: Iterable[str] | None = None, symbols: Iterable[str] | None = None, reason: str = "operator", opening: bool = False, attribution: Mapping | None = None) -> ReconcileResult:
        """Run one reconciliation (see the module docstring). `opening`: the startup check,
        whose differences are positions carried from before today (not mismatches)."""
        wanted = [a for a in (accounts or self.accounts) if a in self.accounts] or list(self.accounts)
        symbol_set = set(symbols) if symbols else None
        started, t0 = time.time_ns(), self._clock()
        deadline = t0 + self.settings.deadline_ms / 1000
        result = ReconcileResult(reason, tuple(wanted), started, 0.0)
        try:
            broker, records = self._fetch(wanted, deadline)
            before = self._fills_booked()
            for state, payload in records:
                self._submit(state_name(state), payload)  # the pipeline makes Shioaji's dict-likes plain
            result.records_resubmitted = len(records)
            in_flight = self._in_flight()  # a barrier: everything resubmitted is booked
            result.recovered_fills = self._fills_booked() - before
            positions = self._view().positions
            ours, theirs = book_quantities(positions), broker.quantities()
            found = diff(ours, theirs, wanted, symbol_set)
            checked = [k for k in {*ours, *theirs} if k[0] in wanted and (symbol_set is None or k[1] in symbol_set)]
            confirmed = found if opening else self.tracker.observe(found, in_flight, checked)
            result.discrepancies = found
            self._compare_pnl(result, ours, broker, wanted, symbol_set)
            result.pending = [d for d in found if d not in confirmed]
            result.corrections = self._correct(confirmed, broker, positions, reason, attribution if opening else None)
            if result.corrections:
                self._in_flight()  # barrier: corrections booked before we report
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"[:500]
        result.duration_ms = (self._clock() - t0) * 1000
        self._judge(result, opening)
        self.last = result
        self.checks += 1
        if self._on_result is not None:
            try:
                self._on_result(result)
            except Exception as exc:  # recording a result must never break reconciliation
                log.error("reconcile_result_not_recorded", error=repr(exc))
        return result

    def _compare_pnl(self, result: ReconcileResult, ours: Mapping[tuple[str, str], int], broker: BrokerSnapshot,
                     wanted: list[str], symbols: set[str] | None) -> None:
        if self._open_costs is None:
            return
        try:
            check = compare_pnl(self._open_costs(), ours, broker.positions, wanted, symbols,
                                self.settings.max_pnl_mismatch_twd, self._estimate)
        except Exception as exc:  # a PnL comparison never fails a check: it only warns
            log.error("reconcile_pnl_failed", reason=result.reason, error=repr(exc)[:500])
            return
        result.pnl_discrepancies, result.pnl_compared = check.discrepancies, check.compared
        if symbols is None:
            result.pnl_max_diff_twd = check.max_diff_twd

    def _correct(self, confirmed: list[Discrepancy], broker: BrokerSnapshot, positions: Mapping[Any, Any], reason: str, attribution: Mapping | None) -> list[Correction]:
        if not confirmed:
            return []
        reports: dict[tuple[str, str], BrokerPosition] = {(p.account, p.symbol): p for p in broker.positions}
        costs: dict[tuple[str, str], list] = {}
        for key, state in positions.items():
            acc = costs.setdefault((key.account, key.symbol), [0, Decimal(0)])
            acc[0] += state.quantity
            acc[1] += state.cost
        our_avg = {k: (c / q) for k, (q, c) in costs.items() if q}
        corrections = corrections_for(confirmed, reports, our_avg, reason, time.time_ns(), attribution)
        for c in corrections:
            self._submit(CORRECTION_STATE, msgspec.to_builtins(c))
        return corrections

    def _judge(self, result: ReconcileResult, opening: bool) -> None:
        s = self.settings
        if result.error:
            result.halted = self.halt.enter(f"reconcile ({result.reason}) failed: {result.error}") or self.halt.is_halted
        elif result.duration_ms > s.deadline_ms:
            result.halted = self.halt.enter(f"reconcile ({result.reason}) took {result.duration_ms:.0f} ms > deadline {s.deadline_ms} ms") or self.halt.is_halted
        elif not opening and any(abs(c.quantity) > s.max_quantity_mismatch for c in result.corrections):
            worst = max(result.corrections, key=lambda c: abs(c.quantity))
            result.halted = self.halt.enter(f"unexplained position change: {worst.account} {worst.symbol} corrected by {worst.quantity}") or self.halt.is_halted
        elif result.clean and self.halt.is_halted and not result.pending:
            self.halt.clear("clean reconcile")
        _log_result(result, opening, self.halt.is_halted)


def _log_result(result: ReconcileResult, opening: bool, halted: bool) -> None:
    """The lines of one check (see the module docstring). Differences at the opening are
    positions carried from before today (info); later ones are mismatches (warning)."""
    mismatch = log.info if opening else log.warning
    pending = {(d.account, d.symbol) for d in result.pending}
    corrected = {(c.account, c.symbol) for c in result.corrections}
    for d in result.discrepancies:
        key = (d.account, d.symbol)
        status = "pending" if key in pending else "corrected" if key in corrected else "uncorrected"
        mismatch("reconcile_mismatch", reason=result.reason, account=d.account, symbol=d.symbol, ours=d.ours, broker=d.broker,
                 difference=d.delta, kind=d.kind, status=status, opening=opening)
    for p in result.pnl_discrepancies:
        log.warning("reconcile_pnl_mismatch", reason=result.reason, account=p.account, symbol=p.symbol, ours=str(p.ours),
                    broker=str(p.broker), diff=str(p.diff_twd), tolerance=str(p.tolerance_twd), opening=opening)
    for c in result.corrections:
        mismatch("correction_applied", reason=c.reason, account=c.account, strategy=c.strategy, symbol=c.symbol,
                 correction_id=c.correction_id, quantity=c.quantity, price=c.price, opening=opening)
    level = log.warning if (result.error or halted or (result.discrepancies and not opening)) else log.info
    level(
        "reconcile_result", reason=result.reason, accounts=list(result.accounts), opening=opening, duration_ms=round(result.duration_ms, 1),
        resubmitted=result.records_resubmitted, recovered_fills=result.recovered_fills, mismatches=len(result.discrepancies),
        pending=len(result.pending), corrections=len(result.corrections), pnl_compared=result.pnl_compared,
        pnl_mismatches=len(result.pnl_discrepancies),
        error=result.error, halted=halted,
    )
