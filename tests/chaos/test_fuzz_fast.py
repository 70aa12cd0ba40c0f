"""Hostile payloads (`chaos.hostile`, `chaos.fuzz`) inside `make test`: the normalizer fuzz for a
few seconds, the hostile live day, the bugs the fuzz found pinned as Hypothesis examples, and
checks that the oracle and the fuzz's verdicts have teeth."""

import sys
import tempfile
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # `chaos` is a top-level package of the repository, not installed
    sys.path.insert(0, _ROOT)

import pytest  # noqa: E402
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from chaos import fuzz  # noqa: E402
from chaos import hostile as h  # noqa: E402
from chaos.harness import render_table, run_scenarios  # noqa: E402

FUZZ_SEED = 20261125


def _base(state: str) -> dict:
    return next(msg for s, msg in h.base_payloads() if s == state)


def _recipe(state: str, *mutations: tuple) -> h.Recipe:
    return h.Recipe(state, _base(state), tuple(mutations))


# --- the scenarios ------------------------------------------------------------------------------


def test_normalizer_fuzz_for_five_seconds_keeps_every_promise():
    # Act
    report = fuzz.run_fuzz(5.0, FUZZ_SEED)

    # Assert
    facts = report.facts()
    assert report.failure == "", f"{report.failure}\n{report.failing_example}"
    assert facts["cases"] >= 100 and facts["accepted"] > 0 and facts["rejected"] > 0 and facts["duplicates"] > 0
    assert facts["distinct_reasons"] >= 20 and facts["exceptions"] == 0


def test_hostile_day_and_fuzz_scenarios_pass():
    # Arrange
    chosen = fuzz.scenarios(fast=True)
    assert [s.name for s in chosen] == ["hostile payloads in a live day", "normalizer fuzz 5s"] and all(s.fast for s in chosen)

    # Act
    [day] = run_scenarios(chosen[:1], progress=lambda _line: None)

    # Assert
    assert day.passed, render_table([day]) + day.facts.get("traceback", "")
    assert day.books.ok and day.rows.ok and day.alerts.ok
    assert day.facts["rejected"] > 10 and day.facts["dead_letters"] == day.facts["rejected"]
    assert day.facts["accepted_or_duplicate_hostile"] > 0


def test_fuzz_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("EXECSTATE_FUZZ_BUDGET_S", "2.5")
    assert "normalizer fuzz 2.5s" in [s.name for s in fuzz.scenarios(fast=False)]
    monkeypatch.delenv("EXECSTATE_FUZZ_BUDGET_S")
    names = [s.name for s in fuzz.scenarios(fast=False)]
    assert "normalizer fuzz 60s" in names
    assert ("normalizer fuzz (atheris) 30s" in names) == fuzz._atheris_available()


# --- what the fuzz found, pinned ----------------------------------------------------------------
# Each @example is the minimal batch Hypothesis reported for a bug fixed in src/ (see the unit
# tests named in the comments); the random examples keep the same checks honest around them.

ONE_MB_EVENT_ID = [_recipe("FORDER", ("set", ("event_id",), h.Big(h.BIG)))]  # dead letter kept 1 MB (domain/payloads.kept_copy)
SURROGATE_ENUM = [_recipe("FORDER", ("drop", ("event_id",)), ("set", ("operation", "op_type"), "\ud800"))]  # reason named no field (parse._convert)
SURROGATE_CODE = [_recipe("SDEAL", ("set", ("code",), "23\udc80"))]  # accepted, then unjournalable and unrecordable (parse._valid_text, journal)
SURROGATE_STATE = [_recipe("SDEAL", ("state", ("raw", "\ud800")))]  # dead letter state unrecordable (payloads.state_text)
DEEP_EXTRA = [_recipe("FORDER", ("add", (), "", h.Deep(h.DEEP_EXTREME)))]  # journal RecursionError parked but not counted (app)
FAR_FUTURE = [_recipe("SDEAL", ("set", ("ts",), 5e10))]  # 5e19 ns: overflowed int64 in the fills table (schema.EpochS)
HUGE_DEAL = [_recipe("SDEAL", ("set", ("price",), 1e12), ("set", ("quantity",), 10_000_000))]  # fee overflowed Decimal(18, 4) (schema bounds)
BIG_ENUM = [_recipe("SDEAL", ("set", ("action",), h.Big(h.BIG)))]  # 44 ms per reason (parse._split)


@settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.lists(h.hostile_recipes(), min_size=1, max_size=8), st.lists(st.integers(0, 7), max_size=2))
@example(ONE_MB_EVENT_ID, [])
@example(SURROGATE_ENUM, [])
@example(SURROGATE_CODE, [0])
@example(SURROGATE_STATE, [])
@example(DEEP_EXTRA, [])
@example(FAR_FUTURE, [])
@example(HUGE_DEAL, [])
@example(BIG_ENUM, [])
def test_hostile_batches_keep_every_promise(recipes, resends):
    with tempfile.TemporaryDirectory() as work, fuzz.JsonLogs(Path(work) / "log.jsonl"):  # as in production, not rich tracebacks
        fuzz.check_example(recipes, resends, 1, Path(work))


# --- the oracle and the checks have teeth ---------------------------------------------------------


@pytest.mark.parametrize(("state", "mutations", "outcome", "blamed"), [
    ("SDEAL", (), h.ACCEPT, set()),
    ("SDEAL", (("add", (), "extra_field", "x"),), h.ACCEPT, set()),
    ("SDEAL", (("drop", ("price",)),), h.REJECT, {"price"}),
    ("FDEAL", (("set", ("price",), float("nan")),), h.REJECT, {"price"}),
    ("SDEAL", (("set", ("quantity",), 0),), h.REJECT, {"quantity"}),
    ("SORDER", (("set", ("order", "quantity"), 0),), h.ACCEPT, set()),
    ("SORDER", (("drop", ("order", "account", "broker_id")),), h.REJECT, {"order.account.broker_id"}),
    ("FORDER", (("set", ("status", "exchange_ts"), h.MAX_EPOCH_S + 1),), h.REJECT, {"status.exchange_ts"}),
    ("SDEAL", (("state", ("raw", "SRECEIPT")),), h.REJECT, {"state"}),
    ("SDEAL", (("wrap", "list"),), h.REJECT, {"<payload>"}),
    ("SDEAL", (("wrap", "dict_like"),), h.ACCEPT, set()),
    ("SDEAL", (("set", ("web_id",), "\ud800"),), h.EITHER, {"web_id"}),
])
def test_oracle_verdicts(state, mutations, outcome, blamed):
    # Act
    built_state, msg = h.Recipe(state, _base(state), mutations).build(1)
    verdict = h.judge(built_state, msg)

    # Assert
    assert verdict.outcome == outcome, verdict.why
    assert verdict.fields == blamed


def test_a_payload_silently_dropped_is_caught(monkeypatch):
    # Arrange: a normalizer that loses rejected payloads instead of dead-lettering them
    from execstate.normalize.worker import Normalizer

    monkeypatch.setattr(Normalizer, "_dead", lambda self, reason, state, ts_recv, msg: None)

    # Act / Assert
    with tempfile.TemporaryDirectory() as work, pytest.raises(fuzz.Violation, match="silently lost"):
        fuzz.check_example([_recipe("SDEAL", ("drop", ("price",)))], [], 1, Path(work))


def test_a_reason_that_blames_the_wrong_field_is_caught(monkeypatch):
    # Arrange
    from execstate.domain.events import DeadLetter
    from execstate.normalize.worker import Normalizer

    real = Normalizer._dead

    def wrong_field(self, reason, state, ts_recv, msg):
        dead = real(self, reason, state, ts_recv, msg)
        return DeadLetter("code: bad", dead.state, dead.ts_recv, dead.msg)

    monkeypatch.setattr(Normalizer, "_dead", wrong_field)

    # Act / Assert
    with tempfile.TemporaryDirectory() as work, pytest.raises(fuzz.Violation, match="the oracle blames"):
        fuzz.check_example([_recipe("SDEAL", ("set", ("price",), -1.0))], [], 1, Path(work))


def test_an_accepted_payload_the_contract_rejects_is_caught(monkeypatch):
    # Arrange: a schema that lets NaN prices through
    import execstate.normalize.parse as parse

    real = parse._convert
    monkeypatch.setattr(parse, "_convert", lambda msg, schema: real({**msg, "price": 1.0} if "price" in msg else msg, schema))

    # Act / Assert
    with tempfile.TemporaryDirectory() as work, pytest.raises(fuzz.Violation, match="expected a dead letter"):
        fuzz.check_example([_recipe("SDEAL", ("set", ("price",), float("nan")))], [], 1, Path(work))
