"""The normalizer fuzz target and the hostile-payload scenarios of `make chaos`.

Usage: `python -m chaos.fuzz [--budget-s 60] [--engine hypothesis|atheris] [--seed N] [--json]`.
Entry points: `run_fuzz(budget_s, seed=None) -> FuzzReport`, `check_example(recipes, resends, n0, work)`,
`JsonLogs(path)` (structlog as in production, to a file, for a `with` block),
`run_atheris(budget_s)`, `hostile_day(seed, orders)`, `scenarios(fast) -> list[Scenario]`.
Modules: `chaos.fuzz_checks` (the checks on one example, `JsonLogs`), `chaos.fuzz_day` (the
hostile day); this module keeps the budget loop, atheris, the scenario list and the CLI, and
re-exports the names above.

The fuzz: Hypothesis draws batches of hostile payloads (`chaos.hostile`) and each batch goes
through the real `Pipeline.process_batch` (journal to a temp file, structlog configured to
write JSON lines to a temp file, so the journal, the log renderers and the dead-letter path
all see the hostile input), for a fixed time budget. Per batch it asserts:
- no exception escapes `process_batch`;
- each payload is accounted for exactly once: one event (order or fill), one duplicate, or one
  dead letter (events and dead letters carry the payload's `ts_recv`; duplicates are the
  rest and equal the duplicate counter);
- the outcome is the oracle's (`hostile.judge`) where it decides: rejected payloads are dead
  letters, accepted ones are events unless the contract's dedupe (event id, natural key) makes
  them duplicates;
- every dead letter has a reason naming a field (one the oracle blames) or the problem, is
  never an internal error for plain JSON input, keeps the payload bounded (a 1 MB string is
  not kept whole) without any `person_id`, and can be recorded (Arrow rows of `dead_letters`);
- the dead-letter counter and `execution_events_total{type="dead_letter"}` (through the
  Prometheus collector) equal the dead letters kept;
- accepted events, their position deltas and the snapshot can be recorded (Arrow rows of their
  tables) and JSON-encoded; books are the signed sum of the accepted fills (a rejected payload
  never touches them);
- a replay of the batch's journal gives every plain-JSON payload the same outcome.
A violation is shrunk by Hypothesis and reported with the minimal batch.

Scenarios: "normalizer fuzz <budget>s" (budget from EXECSTATE_FUZZ_BUDGET_S, else 60 s, 5 s
fast); with atheris installed (the `chaos` extra) and not fast, "normalizer fuzz (atheris)" for
half that budget in a child process; and "hostile payloads in a live day": a simulated day delivered through the real
bridge callback with rejected and accepted-but-duplicate hostile payloads interleaved, then
books against the broker's truth (and again after a journal replay), rows in ClickHouse
(each deal once, each dead letter once with its reason, bounded, without `person_id`), and
the in-process alert rules (none may fire; there is no dead-letter alert).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _extra in (ROOT / "src", ROOT):
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))

from chaos import hostile as h  # noqa: E402
from chaos.harness import Check, Scenario, ScenarioResult  # noqa: E402
from chaos.fuzz_checks import (  # noqa: E402,F401  (re-exported: tests and callers use `chaos.fuzz.<name>`)
    _BROKEN, _FIELD, DEFAULT_BUDGET_S, FAST_BUDGET_S, KEPT_JSON_MAX, REASON_MAX, TAGS, JsonLogs, Tally, Violation,
    _settings, check_example, reason_class)
from chaos.fuzz_day import ACCEPTED_EXTRAS, DayPlan, hostile_day, plan_day  # noqa: E402,F401


# --- the budget loop --------------------------------------------------------------------------

@dataclass
class FuzzReport:
    engine: str
    budget_s: float
    seed: int
    elapsed_s: float = 0.0
    rounds: int = 0
    tally: Tally = field(default_factory=Tally)
    failure: str = ""
    failing_example: str = ""

    @property
    def cases_per_s(self) -> float:
        return self.tally.cases / self.elapsed_s if self.elapsed_s else 0.0

    def facts(self) -> dict[str, Any]:
        t = self.tally
        return {"engine": self.engine, "seed": self.seed, "budget_s": self.budget_s, "elapsed_s": round(self.elapsed_s, 1),
                "examples": t.examples, "cases": t.cases, "cases_per_s": round(self.cases_per_s),
                "accepted": t.accepted, "rejected": t.rejected, "duplicates": t.duplicates, "undecided_by_oracle": t.undecided,
                "exotic": t.exotic, "replayed": t.replayed, "distinct_reasons": len(t.raw_reasons),
                "reason_classes": len(t.reasons), "exceptions": 1 if "escaped" in self.failure else 0,
                "top_reasons": dict(t.reasons.most_common(12)), "failure": self.failure, "failing_example": self.failing_example}


def run_fuzz(budget_s: float, seed: int | None = None, *, batch_max: int = 12, round_examples: int = 100) -> FuzzReport:
    """Hypothesis for `budget_s` seconds of wall time (the last example may finish after it)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hyp_seed
    from hypothesis import strategies as st

    seed = random.randrange(1 << 32) if seed is None else seed
    report = FuzzReport("hypothesis", budget_s, seed)
    work = Path(tempfile.mkdtemp(prefix="execstate-fuzz-"))
    counter = [1]
    last: list[Any] = [None]
    failing = [False]
    start = time.monotonic()
    deadline = start + budget_s
    recipes = st.lists(h.hostile_recipes(), min_size=1, max_size=batch_max)
    resends = st.lists(st.integers(0, batch_max - 1), max_size=3)

    @settings(max_examples=round_examples, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.generate, Phase.shrink], print_blob=False, report_multiple_bugs=False)
    @given(recipes, resends)
    def example(batch: list[h.Recipe], again: list[int]) -> None:
        if time.monotonic() > deadline and not failing[0]:
            return  # budget spent: the rest of the round passes through
        last[0] = (batch, again)
        n0 = counter[0]
        counter[0] += len(batch) + 1
        try:
            tally = check_example(batch, again, n0, work)
        except BaseException:
            failing[0] = True  # Hypothesis shrinks now: never skip again
            raise
        report.tally.add(tally)

    try:
        with JsonLogs(work / "fuzz-log.jsonl"):
            while time.monotonic() < deadline:
                hyp_seed(seed + report.rounds)(example)()
                report.rounds += 1
    except Exception as exc:
        report.failure = f"{type(exc).__name__}: {exc}"[:1500]
        if last[0] is not None:
            batch, again = last[0]
            report.failing_example = "; ".join(r.describe() for r in batch) + (f"; redeliver {again}" if again else "")
            report.failing_example += "\n" + _repr_limited(batch)
    finally:
        report.elapsed_s = time.monotonic() - start
        shutil.rmtree(work, ignore_errors=True)
    return report


def _repr_limited(batch: list[h.Recipe], limit: int = 4000) -> str:
    text = h.srepr([(r.state, r.mutations) for r in batch], limit)
    return text if len(text) <= limit else text[:limit] + "..."


# --- atheris (optional second engine) ---------------------------------------------------------

def run_atheris(budget_s: float, stats_path: Path | None = None) -> int:
    """libFuzzer (atheris) driving the same Hypothesis test through `fuzz_one_input`, with
    coverage of `execstate`'s code guiding it. Runs in this process until `budget_s` or the
    first violation (atheris then exits the process, the failing input under a temp directory).
    Call before anything imports `execstate` (its modules are instrumented as they load)."""
    import atheris  # the `chaos` extra: pip install -e '.[chaos]'

    if "execstate" in sys.modules:
        raise RuntimeError("run_atheris: execstate is already imported, so it cannot be instrumented")
    with atheris.instrument_imports(include=["execstate"]):
        import execstate.app  # noqa: F401  (and, through it, the normalizer, journal, payload helpers)
        import execstate.record.rows  # noqa: F401
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    work = Path(tempfile.mkdtemp(prefix="execstate-atheris-"))
    tally = Tally()
    counter = [1]
    started = time.monotonic()

    @settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(h.hostile_recipes(), min_size=1, max_size=12), st.lists(st.integers(0, 11), max_size=3))
    def example(batch: list[h.Recipe], again: list[int]) -> None:
        n0 = counter[0]
        counter[0] += len(batch) + 1
        tally.add(check_example(batch, again, n0, work))
        if stats_path is not None and tally.examples % 50 == 0:
            _write_stats(stats_path, tally, time.monotonic() - started)

    logs = JsonLogs(work / "fuzz-log.jsonl").__enter__()
    import atexit

    atexit.register(lambda: (_write_stats(stats_path, tally, time.monotonic() - started) if stats_path else None, logs.__exit__()))
    artifacts = Path(tempfile.mkdtemp(prefix="execstate-atheris-crashes-"))
    atheris.Setup([sys.argv[0], f"-max_total_time={max(1, int(budget_s))}", "-rss_limit_mb=4096", "-timeout=60", "-max_len=4096",
                   f"-artifact_prefix={artifacts}/"], example.hypothesis.fuzz_one_input)
    atheris.Fuzz()
    return 0


def _write_stats(path: Path, tally: Tally, elapsed: float) -> None:
    data = {"examples": tally.examples, "cases": tally.cases, "accepted": tally.accepted, "rejected": tally.rejected,
            "duplicates": tally.duplicates, "distinct_reasons": len(tally.raw_reasons), "elapsed_s": round(elapsed, 1)}
    path.write_text(json.dumps(data))


# --- scenarios --------------------------------------------------------------------------------

def atheris_scenario(budget_s: float) -> ScenarioResult:
    """The atheris engine in a child process (it instruments `execstate` as it loads, and exits
    the process at the end or at the first violation)."""
    import subprocess

    name = f"normalizer fuzz (atheris) {budget_s:g}s"
    stats = Path(tempfile.mkdtemp(prefix="execstate-atheris-stats-")) / "stats.json"
    cmd = [sys.executable, "-m", "chaos.fuzz", "--engine", "atheris", "--budget-s", str(budget_s), "--stats", str(stats)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=budget_s + 300)
    counts = json.loads(stats.read_text()) if stats.exists() else {}
    shutil.rmtree(stats.parent, ignore_errors=True)
    result = ScenarioResult(name, f"libFuzzer-guided Hypothesis inputs: {counts.get('cases', 0)} hostile payloads "
                                  f"in {counts.get('examples', 0)} batches")
    result.facts = {**counts, "exit_code": proc.returncode}
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith(("#", "INFO:"))][-12:]
        result.books = Check(False, f"exit {proc.returncode}: " + " | ".join(tail)[-800:])
        result.facts["stderr_tail"] = "\n".join(tail)
    else:
        result.books = Check(True, f"{counts.get('cases', 0)} payloads: {counts.get('accepted', 0)} accepted, "
                                   f"{counts.get('rejected', 0)} rejected ({counts.get('distinct_reasons', 0)} distinct reasons), "
                                   f"{counts.get('duplicates', 0)} duplicates, exceptions 0")
    result.rows = Check.na("checked per batch inside the fuzz (recordable dead letters and events)")
    result.alerts = Check.na("no alerts in a bare pipeline")
    return result


def _atheris_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("atheris") is not None


def _budget(fast: bool) -> float:
    env = os.environ.get("EXECSTATE_FUZZ_BUDGET_S")
    if env:
        return float(env)
    return FAST_BUDGET_S if fast else DEFAULT_BUDGET_S


def fuzz_scenario(budget_s: float, seed: int | None = None) -> ScenarioResult:
    report = run_fuzz(budget_s, seed)
    t = report.tally
    name = f"normalizer fuzz {budget_s:g}s"
    result = ScenarioResult(name, f"Hypothesis: {t.cases} hostile payloads in {t.examples} batches (seed {report.seed})")
    facts = report.facts()
    result.facts = facts
    if report.failure:
        detail = f"{report.failure[:300]} | minimal batch: {report.failing_example[:600]}"
        result.books = Check(False, detail)
        result.error = report.failure.splitlines()[0][:300]
    else:
        result.books = Check(True, f"{t.cases} payloads ({facts['cases_per_s']}/s): {t.accepted} accepted, {t.rejected} rejected "
                                   f"({len(t.raw_reasons)} distinct reasons), {t.duplicates} duplicates, exceptions 0; "
                                   f"books = accepted fills; {t.replayed} replayed identically")
    result.rows = Check(not report.failure, "every dead letter, event, delta and snapshot converts to its table's Arrow rows; "
                                            "dead letters bounded, no person_id") \
        if t.examples else Check.na("no example ran")
    result.alerts = Check.na("no alerts in a bare pipeline; dead-letter counter = metric = rejects checked per batch")
    return result


def scenarios(fast: bool) -> list[Scenario]:
    budget = _budget(fast)
    orders = 120 if fast else 400
    found = [
        Scenario("hostile payloads in a live day", "rejected and accepted hostile payloads interleaved into a simulated day",
                 lambda: hostile_day(orders=orders), fast=True),
        Scenario(f"normalizer fuzz {budget:g}s", "Hypothesis-generated hostile payloads through Pipeline.process_batch",
                 lambda: fuzz_scenario(budget), fast=True),
    ]
    if not fast and _atheris_available():  # the optional second engine (the `chaos` extra), half the budget
        found.append(Scenario(f"normalizer fuzz (atheris) {budget / 2:g}s", "libFuzzer-guided hostile payloads",
                              lambda: atheris_scenario(budget / 2)))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S)
    parser.add_argument("--engine", choices=("hypothesis", "atheris"), default="hypothesis")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--stats", type=Path, default=None, help="atheris: write running counts to this file")
    args = parser.parse_args(argv)
    if args.budget_s <= 0:
        parser.error(f"--budget-s={args.budget_s}: expected a positive number of seconds")
    if args.engine == "atheris":
        return run_atheris(args.budget_s, args.stats)
    report = run_fuzz(args.budget_s, args.seed)
    facts = report.facts()
    if args.json:
        print(json.dumps(facts, indent=1, default=str))
    else:
        for k, v in facts.items():
            print(f"{k}: {v}")
    return 1 if report.failure else 0


if __name__ == "__main__":
    sys.exit(main())
