"""The fast process-level chaos scenarios (`chaos.process`, `scenarios(fast=True)`) inside the
test suite: a real `execstate run` SIGKILLed at 5 points and restarted, ClickHouse (HTTP) down
for 5 s mid-session, and a SIGKILL with batches spooled. Each must pass every verdict
(books, rows, alerts); the summary table is printed on failure. About 45 s.

`chaos` is imported from the repository root (run with --import-mode=importlib, no __init__.py).
"""

import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from chaos.harness import render_table, run_scenarios  # noqa: E402
from chaos.process import scenarios  # noqa: E402


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_fast_process_scenarios_pass_books_rows_and_alerts():
    fast = scenarios(fast=True)
    assert [s.name for s in fast] == ["sigkill-restarts", "database-down", "database-down-sigkill"]

    results = run_scenarios(fast, progress=lambda line: None)

    failed = [r for r in results if not r.passed]
    details = "\n".join(f"{r.name}: {r.error}\n{r.facts.get('traceback', '')}{r.facts.get('log_tail', '')}" for r in failed)
    assert not failed, "\n" + render_table(results) + "\n" + details
    kills = results[0].facts
    assert kills["kills"] >= 5 and kills["restarts"] == kills["kills"]
    assert results[1].facts["spool_rows_max"] > 0
