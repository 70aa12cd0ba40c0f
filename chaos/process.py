"""Process-level chaos: the real `execstate run` process against the simulated broker, killed
with SIGKILL and restarted, and its ClickHouse (over HTTP) taken down.

Entry point: `scenarios(fast, seed=...) -> list[Scenario]` (see `chaos.harness`):
- `sigkill-restarts`: one simulated day, SIGKILLed at 24 seeded random points (fast: 5) and
  restarted after each until the day completes. Each kill is of a kind, then classified by
  where it was seen to land: `boot` (a random time since spawn, up to a start-up's length: imports,
  session set-up, before the control endpoint), `start-up` (through `status` in phase "starting":
  opening the recorder, the journal replay, the opening reconcile and the rest of start-up),
  `reconcile` (an operator `reconcile` sent on the control socket, the kill a few ms later, no
  reply byte yet), `after start` (0-250 ms after phase "running"), `delivery` (once a random
  share of what is left of the day reached the journal). The first kill is always in delivery.
  Verdicts: books (`execstate snapshot --json`) equal the broker's truth per account+symbol
  and per strategy AND equal, row for row (quantity, average price, realized PnL, fees, taxes),
  an uninterrupted run of the same day played alongside; every deal in ClickHouse once; no
  HALT and no halting alert in any incarnation, and no restart's opening reconcile corrected
  anything (the journal alone rebuilds the books; only the day's first opening books
  yesterday's positions). Legitimate after a restart, so neither expected nor forbidden: the
  warn alerts (callbacks stopped while orders work in market hours, the spool, broker bans),
  fills the opening reconcile recovers (deals the broker already reports that the journal does
  not hold yet), and dead letters for a journal line torn by the kill.
- `database-down`: ClickHouse (HTTP) down mid-session (fast 5 s, full 120 s) while the day
  plays; rows must spool; with the full run's `alerts.spool_age_s: 30` the stale-spool alert
  must fire and resolve with the drain (fast: the default 60 s, not due); the database comes
  back and the spool drains. Books equal the truth, every deal once, no HALT seen during the
  outage nor after (a recorder outage never stops trading).
- `database-down-sigkill`: the database down, batches spooled, SIGKILL (full: again after a
  restart with the database still down); the spooled files survive; restarted with the
  database back: books equal the truth, every deal once.

Modules: `chaos.procs` (the `Day` of `execstate run` incarnations, the ClickHouse HTTP fixture
from `tests/fixtures` put on `sys.path`, config and status helpers, the invariants on processes
and directories), `chaos.proc_verdicts` (shared verdicts), `chaos.process_kill` (scenario 1),
`chaos.process_db` (scenarios 2 and 3).
"""

from __future__ import annotations

from chaos.harness import Scenario
from chaos.process_db import _database_down, _database_down_sigkill
from chaos.process_kill import _sigkill_restarts


def scenarios(fast: bool, seed: int = 20261125) -> list[Scenario]:
    """The process-level scenarios; `fast`: the small versions that run inside `make test`."""
    kills = 5 if fast else 24
    return [
        Scenario("sigkill-restarts", f"SIGKILL x{kills} at seeded random points, restart after each",
                 lambda: _sigkill_restarts(fast, seed), fast=fast),
        Scenario("database-down", f"ClickHouse (HTTP) down {5 if fast else 120} s mid-session",
                 lambda: _database_down(fast, seed + 1), fast=fast),
        Scenario("database-down-sigkill", "ClickHouse down, SIGKILL with batches spooled, restart with it back",
                 lambda: _database_down_sigkill(fast, seed + 2), fast=fast),
    ]
