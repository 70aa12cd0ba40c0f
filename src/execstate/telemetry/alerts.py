"""In-process alerts: the conditions of deploy/prometheus/alerts.yml, evaluated by the service
itself, so it logs an alert and can HALT without Prometheus.

Entry points: `rules_for(settings, pnl_mismatch_twd) -> tuple[Rule, ...]`, `AlertInputs` (one plain reading),
`AlertEvaluator(rules, halt).evaluate(inputs, now_s) -> [Transition]`, `.firing()`,
`.firing_by_name()`; `InputsReader(settings, sources, started_s).read(now_s) -> AlertInputs`;
`AlertLoop(evaluator, reader, interval_s).start()` / `.stop()`; `market_open(unix_s)`.

Invariants:
- A rule is a pure function of an `AlertInputs`: no clock, no I/O. Time enters as `now_s`,
  handed to `InputsReader.read` and `AlertEvaluator.evaluate` by the loop (the only clock).
- Names, `cause` labels, severities, `for` durations and windows are alerts.yml's; thresholds
  come from `AlertSettings`, whose defaults are alerts.yml's (tests/unit/telemetry/test_alerts.py
  compares the two), except the PnL mismatch's: `reconcile.max_pnl_mismatch_twd`, the threshold
  reconciliation itself reports PnL differences by. ExecstateDown (failed scrapes) has no
  in-process form.
- `for`, as in Prometheus: a rule is pending from the first evaluation at which its condition
  holds and fires once it has held for `for_s`; a pending rule whose condition lapses is
  dropped silently, a firing one resolves.
- Each transition is logged once: `alert_firing` (error for `page`, warning for `warn`) and
  `alert_resolved` (info), with the rule's name, cause, severity and values. A rule marked
  `halts` calls `halt(reason)` once, when it starts firing: an operator who clears HALT while
  it still fires is not overruled (it HALTs again only after resolving and firing anew).
- `evaluate` never raises: a rule or a `halt` that raises is counted in `errors` and logged,
  and the rule keeps its previous state. `AlertLoop` never dies on an error either.
- `InputsReader` reads the same sources as the Prometheus collector (`MetricSources`); a
  source that is missing or fails leaves its inputs at the healthy defaults (an unreadable
  source never HALTs). It reads `orders_working` (a round trip to the pipeline worker) only
  when the callback gap is over its threshold in market hours.
- `firing()` / `firing_by_name()` return an immutable copy published after each evaluation:
  any thread may call them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from execstate.config import AlertSettings, ReconcileSettings
from execstate.telemetry.logging import get_logger

log = get_logger("execstate.alerts")

PAGE, WARN = "page", "warn"  # alerts.yml's severities: page wakes someone, warn goes to the channel
FIRING, RESOLVED = "firing", "resolved"
# windows of alerts.yml's range vectors, s
CORRECTIONS_WINDOW_S = 300.0  # increase(reconciliation_corrections_total[5m])
RECOVERY_WINDOW_S = 300.0  # increase(reconciliation_failures_total[5m]) and the slow-check buckets
SPOOL_WINDOW_S = 300.0  # deriv(recorder_spool_rows[5m])
BANS_WINDOW_S = 600.0  # increase(broker_bans_total[10m])
_UP_STATES = ("up", "reconnecting")  # connection states that are not "down" (unknown counts as down, as connection_up == 0)


# --- market hours ------------------------------------------------------------------------

_TAIPEI_OFFSET_S = 8 * 3600  # Asia/Taipei is UTC+8 with no DST
_DAY_OPEN, _DAY_CLOSE = 8 * 60 + 30, 13 * 60 + 45  # minutes after midnight, Taipei
_NIGHT_OPEN, _NIGHT_CLOSE = 15 * 60, 5 * 60


def market_open(unix_s: float) -> bool:
    """Whether Unix time `unix_s` falls in a Taiwan session in which order callbacks are due.

    Taipei time: 08:30-13:45 (stock orders from 08:30, trading 09:00-13:30; the TAIFEX day
    session 08:45-13:45) and 15:00-05:00 (the TAIFEX night session), opening Monday to Friday.
    The same windows as alerts.yml's `execstate:market_open`: exchange holidays count as open,
    after-hours odd lots and fixing (one auction at 14:30) are not covered.
    """
    days, seconds = divmod(int(unix_s) + _TAIPEI_OFFSET_S, 86_400)
    minute = seconds // 60
    weekday = (days + 3) % 7  # Monday = 0; 1970-01-01 was a Thursday
    opens_today = weekday < 5
    opened_yesterday = (weekday + 6) % 7 < 5
    day = opens_today and _DAY_OPEN <= minute < _DAY_CLOSE
    night = (opens_today and minute >= _NIGHT_OPEN) or (opened_yesterday and minute < _NIGHT_CLOSE)
    return day or night


# --- inputs and rules --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertInputs:
    """One reading of everything the rules look at. The defaults are a healthy, idle service."""

    callback_gap_s: float = 0.0  # since the last order callback (0 before the first)
    orders_working: int | None = 0  # None: not read (gap under its threshold, or market closed) or unreadable
    market_open: bool = False
    mismatch_quantity: int = 0  # largest |broker - ours| at the last check (the opening check excluded)
    mismatch_pnl_twd: float = 0.0  # largest unrealized-PnL difference from the broker's over accounts, TWD (reconciliation_pnl_mismatch_twd)
    mismatch_pnl_account: str = ""  # the account it is on
    corrections_recent: int = 0  # corrections booked in the last CORRECTIONS_WINDOW_S
    recovery_over_budget_recent: int = 0  # checks that errored or took longer than recovery_s, last RECOVERY_WINDOW_S
    last_recovery_s: float | None = None  # duration of the last check (None before the first)
    halted: bool = False
    halt_reason: str = ""
    spool_rows: int = 0
    spool_age_s: float = 0.0  # oldest spooled batch (0 when empty)
    spool_growth_rows_per_s: float = 0.0  # slope of spool_rows over SPOOL_WINDOW_S (0 with fewer than two readings)
    connection: str = "up"  # up, reconnecting, down, unknown
    connection_for_s: float = 0.0  # time in that state
    bans_recent: int = 0  # broker bans in the last BANS_WINDOW_S


@dataclass(frozen=True)
class Rule:
    """One alerting rule of alerts.yml: `fires(inputs)` is its expression, `for_s` its `for`."""

    name: str
    cause: str  # the rule's `cause` label in alerts.yml ("" when the alert has a single rule)
    severity: str  # PAGE or WARN
    for_s: float
    fires: Callable[[AlertInputs], bool]
    values: Callable[[AlertInputs], dict[str, Any]]  # what the log line and status show
    halts: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.cause)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.cause})" if self.cause else self.name


def rules_for(s: AlertSettings, pnl_mismatch_twd: Decimal | float | None = None) -> tuple[Rule, ...]:
    """alerts.yml's alerting rules with `s`'s thresholds, in the file's order.

    `pnl_mismatch_twd`: the PnL mismatch threshold, `reconcile.max_pnl_mismatch_twd` (None: its default).
    HALTing rules: recovery too slow, a mismatch that outlives the checks meant to correct it,
    and the connection down or reconnecting too long (the positions cannot be trusted). The
    others only warn: CallbacksStopped above all, because a resting limit order in a quiet
    market gets no callbacks (the monitor reconciles on that same condition, which is what
    protects the books); a PnL mismatch, whose quantities agree (the price, the fees or the
    broker's estimate differ: worth a look, not a stop); HALT itself is an alert, not a cause.
    """
    pnl_threshold = float(ReconcileSettings().max_pnl_mismatch_twd if pnl_mismatch_twd is None else pnl_mismatch_twd)
    return (
        Rule("ExecstateCallbacksStopped", "", WARN, 1.0,
             lambda i: i.callback_gap_s > s.callback_gap_s and (i.orders_working or 0) > 0 and i.market_open,
             lambda i: {"callback_gap_s": round(i.callback_gap_s, 3), "orders_working": i.orders_working, "market_open": i.market_open}),
        Rule("ExecstateReconciliationMismatch", "quantity", PAGE, 15.0,
             lambda i: i.mismatch_quantity > s.mismatch_quantity_threshold,
             lambda i: {"mismatch_quantity": i.mismatch_quantity, "threshold": s.mismatch_quantity_threshold}, halts=True),
        Rule("ExecstateReconciliationMismatch", "corrections", WARN, 0.0,
             lambda i: i.corrections_recent > 0,
             lambda i: {"corrections_recent": i.corrections_recent, "window_s": CORRECTIONS_WINDOW_S}),
        Rule("ExecstateReconciliationPnlMismatch", "", WARN, 15.0,
             lambda i: i.mismatch_pnl_twd > pnl_threshold,
             lambda i: {"account": i.mismatch_pnl_account, "mismatch_pnl_twd": round(i.mismatch_pnl_twd, 2), "threshold_twd": pnl_threshold}),
        Rule("ExecstateRecoverySlow", "", PAGE, 0.0,
             lambda i: i.recovery_over_budget_recent > 0,
             lambda i: {"checks_over_budget": i.recovery_over_budget_recent, "last_recovery_s": _round(i.last_recovery_s),
                        "recovery_s": s.recovery_s, "window_s": RECOVERY_WINDOW_S}, halts=True),
        Rule("ExecstateHalted", "", PAGE, 0.0,
             lambda i: i.halted,
             lambda i: {"reason": i.halt_reason}),
        Rule("ExecstateRecorderSpoolGrowing", "growing", WARN, 120.0,
             lambda i: i.spool_growth_rows_per_s > 0,
             lambda i: {"spool_growth_rows_per_s": round(i.spool_growth_rows_per_s, 3), "spool_rows": i.spool_rows}),
        Rule("ExecstateRecorderSpoolGrowing", "stale", WARN, 0.0,
             lambda i: i.spool_age_s > s.spool_age_s,
             lambda i: {"spool_age_s": round(i.spool_age_s, 1), "spool_rows": i.spool_rows, "threshold_s": s.spool_age_s}),
        Rule("ExecstateConnectionDown", "down", PAGE, s.connection_down_s,
             lambda i: i.connection not in _UP_STATES,
             lambda i: {"connection": i.connection, "connection_for_s": round(i.connection_for_s, 1)}, halts=True),
        Rule("ExecstateConnectionDown", "reconnecting", PAGE, s.reconnecting_s,
             lambda i: i.connection == "reconnecting",
             lambda i: {"connection": i.connection, "connection_for_s": round(i.connection_for_s, 1)}, halts=True),
        Rule("ExecstateBrokerBanned", "", WARN, 0.0,
             lambda i: i.bans_recent > 0,
             lambda i: {"bans_recent": i.bans_recent, "window_s": BANS_WINDOW_S}),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# --- evaluation --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transition:
    rule: Rule
    state: str  # FIRING or RESOLVED
    at_s: float
    values: dict[str, Any]


@dataclass(slots=True)
class _Active:
    since_s: float  # the condition has held since
    firing_since_s: float | None = None
    values: dict[str, Any] = field(default_factory=dict)


class AlertEvaluator:
    """Pending and firing state of `rules`, advanced by `evaluate(inputs, now_s)`.

    `halt(reason)` is called when a rule marked `halts` starts firing (e.g. `HaltState.enter`).
    """

    def __init__(self, rules: Iterable[Rule], halt: Callable[[str], Any] | None = None) -> None:
        self.rules = tuple(rules)
        keys = [r.key for r in self.rules]
        if len(set(keys)) != len(keys):
            raise ValueError(f"rules must have distinct (name, cause): {keys}")
        self._halt = halt
        self._active: dict[tuple[str, str], _Active] = {}
        self._names = tuple(dict.fromkeys(r.name for r in self.rules))
        self._published: tuple[tuple[dict[str, Any], ...], Mapping[str, int]] = ((), MappingProxyType(dict.fromkeys(self._names, 0)))
        self.errors = 0
        self.halts = 0  # halt() calls made

    def evaluate(self, inputs: AlertInputs, now_s: float) -> list[Transition]:
        """Advance every rule to `now_s` with `inputs`; returns the transitions, in rule order."""
        transitions = []
        for rule in self.rules:
            try:
                holds = bool(rule.fires(inputs))
                values = rule.values(inputs)
            except Exception as exc:
                self.errors += 1
                log.error("alert_rule_failed", alert=rule.name, cause=rule.cause, error=repr(exc))
                continue
            active = self._active.get(rule.key)
            if holds:
                if active is None:
                    active = self._active[rule.key] = _Active(now_s)
                active.values = values
                if active.firing_since_s is None and now_s - active.since_s >= rule.for_s:
                    active.firing_since_s = now_s
                    transitions.append(Transition(rule, FIRING, now_s, values))
                    self._fired(rule, values)
            elif active is not None:
                del self._active[rule.key]
                if active.firing_since_s is not None:
                    transitions.append(Transition(rule, RESOLVED, now_s, values))
                    log.info("alert_resolved", alert=rule.name, cause=rule.cause, severity=rule.severity,
                             firing_for_s=round(now_s - active.firing_since_s, 3), values=values)
        self._publish()
        return transitions

    def _fired(self, rule: Rule, values: dict[str, Any]) -> None:
        emit = log.error if rule.severity == PAGE else log.warning
        emit("alert_firing", alert=rule.name, cause=rule.cause, severity=rule.severity, halts=rule.halts, values=values)
        if not rule.halts or self._halt is None:
            return
        reason = f"alert {rule.label}: " + ", ".join(f"{k}={v}" for k, v in values.items())
        try:
            self._halt(reason)
            self.halts += 1
        except Exception as exc:
            self.errors += 1
            log.error("alert_halt_failed", alert=rule.name, cause=rule.cause, error=repr(exc))

    def _publish(self) -> None:
        firing = []
        counts = dict.fromkeys(self._names, 0)
        for rule in self.rules:
            active = self._active.get(rule.key)
            if active is None or active.firing_since_s is None:
                continue
            counts[rule.name] += 1
            firing.append({"alert": rule.name, "cause": rule.cause, "severity": rule.severity, "halts": rule.halts,
                           "firing_since_s": active.firing_since_s, "values": dict(active.values)})
        self._published = (tuple(firing), MappingProxyType(counts))  # one assignment: readers see all or nothing

    def firing(self) -> list[dict[str, Any]]:
        """The rules firing after the last evaluation (alert, cause, severity, halts, firing_since_s, values)."""
        return [dict(a) for a in self._published[0]]

    def firing_by_name(self) -> Mapping[str, int]:
        """Rules firing per alert name, every name present (0 when silent): `execstate_alerts_firing`."""
        return self._published[1]


# --- reading the service -----------------------------------------------------------------


class CounterWindow:
    """Increase of a monotonic counter over the last `window_s`, from readings: the latest
    value minus the last reading at or before the window's start (PromQL's increase(), without
    its extrapolation). `start_s`: the counter was `start_value` then (a process-lifetime counter
    is 0 when its process starts)."""

    def __init__(self, window_s: float, start_s: float | None = None, start_value: float = 0) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque()
        if start_s is not None:
            self._samples.append((start_s, start_value))

    def observe(self, now_s: float, value: float) -> float:
        samples = self._samples
        samples.append((now_s, value))
        while len(samples) >= 2 and samples[1][0] <= now_s - self.window_s:
            samples.popleft()
        return value - samples[0][1]


class SlopeWindow:
    """Least-squares slope per second of a gauge's readings over the last `window_s` (PromQL's
    deriv()); 0 with fewer than two readings."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque()

    def observe(self, now_s: float, value: float) -> float:
        samples = self._samples
        samples.append((now_s, value))
        while samples[0][0] <= now_s - self.window_s:
            samples.popleft()
        if len(samples) < 2:
            return 0.0
        mean_t = sum(t for t, _ in samples) / len(samples)
        mean_v = sum(v for _, v in samples) / len(samples)
        var = sum((t - mean_t) ** 2 for t, _ in samples)
        return sum((t - mean_t) * (v - mean_v) for t, v in samples) / var if var else 0.0


class InputsReader:
    """Turns the service's `MetricSources` (the readings Prometheus scrapes) into `AlertInputs`,
    keeping the windows the rules need. `started_s`: when the counters were 0 (the service's
    construction). Call `read` from one thread."""

    def __init__(self, settings: AlertSettings, sources: Any, started_s: float) -> None:
        self.settings = settings
        self.sources = sources
        self._corrections = CounterWindow(CORRECTIONS_WINDOW_S, started_s)
        self._over_budget = CounterWindow(RECOVERY_WINDOW_S, started_s)
        self._bans = CounterWindow(BANS_WINDOW_S, started_s)
        self._spool = SlopeWindow(SPOOL_WINDOW_S)
        self.source_failures: dict[str, int] = {}  # per source, for the life of the reader
        self._failing: set[str] = set()  # sources whose last read failed

    def read(self, now_s: float) -> AlertInputs:
        values: dict[str, Any] = {"market_open": market_open(now_s)}
        hb = self._call("heartbeat")
        if hb is not None:
            last = int(hb.last_callback_ns)
            values["callback_gap_s"] = max(0.0, now_s - last / 1e9) if last else 0.0
            values["connection"] = str(getattr(hb.connection, "value", hb.connection))
            values["connection_for_s"] = max(0.0, now_s - int(hb.connection_since_ns) / 1e9)
        if values["market_open"] and values.get("callback_gap_s", 0.0) > self.settings.callback_gap_s:
            working = self._call("orders_working")
            values["orders_working"] = None if working is None else int(working)
        else:
            values["orders_working"] = None
        reconcile = getattr(self.sources, "reconcile", None)
        snap = None if reconcile is None else self._guarded("reconcile", reconcile.snapshot)
        if snap is not None:
            values["mismatch_quantity"] = int(snap.last_mismatch_quantity)
            if snap.pnl_mismatch_twd:
                account, diff = max(snap.pnl_mismatch_twd.items(), key=lambda kv: (kv[1], kv[0]))
                values["mismatch_pnl_twd"], values["mismatch_pnl_account"] = float(diff), account
            values["corrections_recent"] = int(self._corrections.observe(now_s, snap.corrections))
            values["recovery_over_budget_recent"] = int(self._over_budget.observe(now_s, snap.over_budget))
            values["last_recovery_s"] = snap.last_duration_ms / 1000 if snap.checks else None
        halt = self._call("halt")
        if halt is not None:
            values["halted"], values["halt_reason"] = bool(halt.halted), str(halt.reason)
        recorder = self._call("recorder_stats")
        if recorder is not None and "spool_rows" in recorder:
            values["spool_rows"] = int(recorder["spool_rows"])
            values["spool_age_s"] = float(recorder.get("spool_oldest_age_s") or 0)
            values["spool_growth_rows_per_s"] = self._spool.observe(now_s, values["spool_rows"])
        gateway = self._call("gateway_stats")
        if gateway is not None:
            values["bans_recent"] = int(self._bans.observe(now_s, int(gateway.bans)))
        return AlertInputs(**values)

    def _call(self, name: str) -> Any:
        source = getattr(self.sources, name, None)
        return None if source is None else self._guarded(name, source)

    def _guarded(self, name: str, source: Callable[[], Any]) -> Any:
        """`source()`, or None (healthy defaults for this reading: never HALT on an unreadable
        source). Failures are counted; the first of a run is a warning, the rest debug."""
        try:
            value = source()
        except Exception as exc:
            self.source_failures[name] = self.source_failures.get(name, 0) + 1
            (log.debug if name in self._failing else log.warning)("alert_source_failed", source=name, error=repr(exc)[:300],
                                                                  failures=self.source_failures[name])
            self._failing.add(name)
            return None
        if name in self._failing:
            self._failing.discard(name)
            log.info("alert_source_recovered", source=name)
        return value


class AlertLoop:
    """Evaluates the rules every `interval_s` on a daemon thread: read the sources, evaluate.
    The clock lives here (wall time, as Prometheus' evaluations)."""

    def __init__(self, evaluator: AlertEvaluator, reader: InputsReader, interval_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.evaluator = evaluator
        self.reader = reader
        self.interval_s = interval_s
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def tick(self) -> list[Transition]:
        now = self._clock()
        return self.evaluator.evaluate(self.reader.read(now), now)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # the loop never dies silently
                self.errors += 1
                log.exception("alert_loop_failed", error=repr(exc))
            self._stop.wait(self.interval_s)

    def start(self) -> AlertLoop:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="execstate-alerts", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
