"""The fast in-process chaos scenarios (`chaos.inprocess.scenarios(fast=True)`) inside `make test`:
a real service on the simulated broker per scenario, each ending with books, rows and alerts
verdicts. Also: a verdict can fail (a truth tampered by one lot is reported as a failure)."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # `chaos` is a top-level package of the repository, not installed
    sys.path.insert(0, _ROOT)

from chaos.harness import Check, Scenario, ScenarioResult, check_books, render_table, run_scenarios  # noqa: E402
from chaos.inprocess import FAST_ORDERS, scenarios  # noqa: E402
from chaos.rig import Rig  # noqa: E402
from execstate.bridge.sim import SimConfig  # noqa: E402


def test_every_fast_scenario_passes():
    # Arrange
    fast = scenarios(fast=True)
    assert fast and all(s.fast for s in fast)

    # Act
    results = run_scenarios(fast, progress=lambda _line: None)

    # Assert
    failed = [r.name for r in results if not r.passed]
    assert not failed, f"failed: {failed}\n" + render_table(results) + "\n".join(
        f"{r.name}: {r.facts.get('traceback', '')}" for r in results if r.error)


def test_fast_list_is_a_subset_of_the_full_list():
    assert {s.name for s in scenarios(fast=True)} < {s.name for s in scenarios(fast=False)}


def _tampered_day() -> ScenarioResult:
    """A clean day whose broker truth is off by one lot on one position: books must fail."""
    result = ScenarioResult("tampered_truth", "truth moved by one lot")
    with Rig(SimConfig(seed=7, n_orders=FAST_ORDERS // 2)) as rig:
        rig.start()
        rig.play()
        rig.barrier()
        truth = rig.truth()
        key = next(k for k, q in sorted(truth.items()) if q)
        truth[key] += 1000
        result.books = check_books(rig.ours(), truth)
        result.facts["tampered"] = key
        rig.stop()
        result.rows = rig.rows_check()
    return result


def test_a_books_check_fails_when_the_truth_is_off_by_one_lot():
    # Act
    [result] = run_scenarios([Scenario("tampered_truth", "truth moved by one lot", _tampered_day, fast=True)],
                             progress=lambda _line: None)

    # Assert: the service did nothing wrong, the verdict still catches the difference
    account, _strategy, symbol = result.facts["tampered"]
    assert result.error == "" and result.rows.ok
    assert result.books.ok is False and f"('{account}', '{symbol}')" in result.books.detail
    assert not result.passed and "FAIL" in render_table([result])


def test_a_scenario_that_raises_is_a_failed_result_not_a_crash():
    def boom() -> ScenarioResult:
        raise RuntimeError("injected")

    [result] = run_scenarios([Scenario("boom", "raises", boom)], progress=lambda _line: None)

    assert not result.passed and result.error == "RuntimeError: injected"
    assert Check.na().mark == "-"
