"""`make chaos`: every fault scenario against the simulated broker, then one summary table.

Usage: `python -m chaos.run [--fast] [--only NAME ...] [--fuzz-budget-s N]`.
Scenario modules each export `scenarios(fast: bool) -> list[Scenario]`:
- `chaos.inprocess`: callback loss, duplicates, reordering, rejects, broker query faults and
  bans, connection drops, recovery past its deadline (a real Service in this process);
- `chaos.process`: SIGKILL at random points with restarts, the database down (real processes);
- `chaos.fuzz`: hostile payloads in a live day and the normalizer fuzz target.
Writes `chaos/results/chaos.json` and `chaos.txt`; exits 1 if any scenario failed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT / "src", ROOT):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from chaos.harness import Scenario, render_table, run_scenarios, write_results  # noqa: E402

MODULES = ("chaos.inprocess", "chaos.process", "chaos.fuzz")
RESULTS = ROOT / "chaos" / "results"


def collect(fast: bool, only: list[str] | None = None) -> list[Scenario]:
    found: list[Scenario] = []
    for name in MODULES:
        found.extend(importlib.import_module(name).scenarios(fast))
    if only:
        unknown = [o for o in only if not any(o in s.name for s in found)]
        if unknown:
            raise SystemExit(f"--only {unknown}: no scenario matches (have: {', '.join(s.name for s in found)})")
        found = [s for s in found if any(o in s.name for o in only)]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.run", description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="the small subset that runs inside `make test`")
    parser.add_argument("--only", nargs="*", help="run scenarios whose name contains any of these")
    parser.add_argument("--fuzz-budget-s", type=float, default=None, help="time budget of the normalizer fuzz (default 60 s, 5 s with --fast)")
    args = parser.parse_args(argv)
    if args.fuzz_budget_s is not None:
        if args.fuzz_budget_s <= 0:
            parser.error(f"--fuzz-budget-s={args.fuzz_budget_s}: expected a positive number of seconds")
        os.environ["EXECSTATE_FUZZ_BUDGET_S"] = str(args.fuzz_budget_s)
    scenarios = collect(args.fast, args.only)
    results = run_scenarios(scenarios, progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(render_table(results))
    path = write_results(results, RESULTS)
    print(f"results: {path.relative_to(ROOT)}")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
