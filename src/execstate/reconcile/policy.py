"""Which discrepancies to repair, and the correcting events that repair them.

Entry points: `MismatchTracker.observe(discrepancies, in_flight) -> confirmed`,
`corrections_for(confirmed, broker, our_avg, reason, now_ns, attribution) -> list[Correction]`.

Invariants:
- A mismatch is repaired only when seen with the same quantities on `confirmations`
  consecutive checks, or at once when no order on that symbol is in flight; a fill still in
  the pipe is therefore not "corrected" away.
- A correction moves our net quantity exactly to the broker's: it never invents a fill that
  flattens a real broker position (the NautilusTrader warm-restart bug, #4736).
- Corrections are events with a deterministic id and a reason, applied through the same
  path as fills (journaled, booked by the single writer), never patched into the store.
- Corrections carry no fees or taxes: they are not trades we know the costs of.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from execstate.domain.events import UNASSIGNED, Correction
from execstate.domain.instruments import symbol_parts
from execstate.domain.reports import BrokerPosition
from execstate.reconcile.diff import Discrepancy

class MismatchTracker:
    """Remembers discrepancies across checks to confirm them."""

    def __init__(self, confirmations: int) -> None:
        self.confirmations = confirmations
        self._seen: dict[tuple[str, str], tuple[int, int, int]] = {}  # key -> (ours, broker, times seen)

    def observe(self, discrepancies: Iterable[Discrepancy], in_flight: set[tuple[str, str]], checked: Iterable[tuple[str, str]] = ()) -> list[Discrepancy]:
        """Record one check; return the discrepancies confirmed by it.

        `checked` lists the keys this check covered: a key checked and found clean forgets
        its history.
        """
        current = {(d.account, d.symbol): d for d in discrepancies}
        for key in checked:
            if key not in current:
                self._seen.pop(key, None)
        confirmed = []
        for key, d in current.items():
            ours, broker, times = self._seen.get(key, (d.ours, d.broker, 0))
            times = times + 1 if (ours, broker) == (d.ours, d.broker) else 1
            self._seen[key] = (d.ours, d.broker, times)
            if key not in in_flight or times >= self.confirmations:
                confirmed.append(d)
                del self._seen[key]
        return confirmed

    def pending(self) -> dict[tuple[str, str], int]:
        return {k: v[2] for k, v in self._seen.items()}


def corrections_for(
    confirmed: Iterable[Discrepancy],
    broker: Mapping[tuple[str, str], BrokerPosition],
    our_avg: Mapping[tuple[str, str], Decimal],
    reason: str,
    now_ns: int,
    attribution: Mapping[tuple[str, str], list[tuple[str, int, Decimal]]] | None = None,
) -> list[Correction]:
    """Correcting events that bring our net quantity to the broker's for each confirmed key.

    Price: the broker's average price when we add to what the broker holds; our own average
    when we take away (so the correction books no PnL). `attribution` (from the last
    snapshot: strategy, quantity, avg price per key) assigns an opening position to the
    strategies that held it; what is left goes to "unassigned".
    """
    out: list[Correction] = []
    for d in confirmed:
        key = (d.account, d.symbol)
        kind, code, _full, cond = symbol_parts(d.symbol)
        remaining = d.delta
        n = 0
        for strategy, qty, price in (attribution or {}).get(key, []):
            if remaining == 0 or (qty > 0) != (remaining > 0):
                continue
            take = qty if abs(qty) <= abs(remaining) else remaining
            out.append(Correction(f"C:{d.account}:{d.symbol}:{now_ns}:{n}", d.account, strategy, d.symbol, kind, code, cond, take, str(price), reason, now_ns))
            remaining -= take
            n += 1
        if remaining:
            report = broker.get(key)
            adds = report is not None and report.quantity != 0 and (remaining > 0) == (report.quantity > 0)
            price = report.avg_price if adds else our_avg.get(key) or (report.avg_price if report else Decimal(0))
            out.append(Correction(f"C:{d.account}:{d.symbol}:{now_ns}:{n}", d.account, UNASSIGNED, d.symbol, kind, code, cond, remaining, str(price), reason, now_ns))
    return out
