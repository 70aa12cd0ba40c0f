"""The running service: `execstate run`. Composition of bridge, pipeline, reconciliation and
the control endpoint around one Shioaji session (real or simulated).

Entry points: `Service(settings, api, accounts).start()` / `.stop()`, `connect_shioaji(env)`,
`simulated_session(settings, seed)`, `load_snapshot(path)`, `HANDLERS` (control commands).

Start-up, in order: replay today's journal (so the books are what they were at the crash);
open the journal for appending; attach the bridge and start the worker (callbacks during
start-up are kept, deduplicated later); reconcile with the broker as the day's opening
(yesterday's positions attributed from the last snapshot on disk); log every difference from
the last snapshot; start the monitor and the control endpoint; last, the in-process alerts
(alerts.yml's rules, `telemetry/alerts.py`). HALT when start-up exceeds the deadline.
`stop()` (SIGINT/SIGTERM): stop the alerts and the monitor, drain the queue, write the last
snapshot, close the journal and the control endpoint.
Invariants: credentials come from the environment and are never logged or stored; the
control endpoint is a Unix socket under the state directory with a 0600 token file. The HTTP
server (`/metrics`, the read-only `/api/v1/` for dashboards) binds loopback only, and its API
wants that same token as `Authorization: Bearer`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from execstate.app import Pipeline, open_recorder, positions_as_dicts
from execstate.bus import TOPIC_SNAPSHOT
from execstate.jobs import replay_journal_into
from execstate.bridge.shioaji_adapter import ShioajiBridge
from execstate.config import Settings
from execstate.control import ControlServer
from execstate.domain.events import PositionSnapshot
from execstate.domain.money import fmt_decimal
from execstate.domain.payloads import without_person_id
from execstate.normalize.intents import IntentRegistry
from execstate.positions.fees import FeeSchedule
from execstate.reconcile.broker import account_key, make_fetch
from execstate.reconcile.gateway import BrokerCall, BrokerGateway
from execstate.reconcile.halt import HaltState
from execstate.reconcile.monitor import Monitor
from execstate.reconcile.pnl import BrokerEstimate, OpenCost, OpenCostCache
from execstate.reconcile.reconciler import ReconcileResult, Reconciler, attribution_from, reconcile_record
from execstate.telemetry.alerts import AlertEvaluator, AlertLoop, InputsReader, rules_for
from execstate.telemetry.logging import get_logger
from execstate.telemetry.http import Unavailable, start_server, stop_server
from execstate.telemetry.metrics import MetricSources, ReconcileMetrics, registry_for

log = get_logger("execstate.service")
_TAIPEI = dt.timezone(dt.timedelta(hours=8))


class CredentialsMissing(RuntimeError):
    pass


def connect_shioaji(env: Mapping[str, str]) -> tuple[Any, list[Any]]:
    """Log in to Shioaji with credentials from the environment; returns (api, accounts).

    SJ_API_KEY and SJ_SECRET_KEY are required; SJ_SIMULATION=1 uses SinoPac's simulation
    environment. Values are passed to the SDK and nowhere else.
    """
    missing = [name for name in ("SJ_API_KEY", "SJ_SECRET_KEY") if not env.get(name)]
    if missing:
        raise CredentialsMissing(f"{' and '.join(missing)} not set: export the Shioaji API credentials in the environment")
    import shioaji as sj  # the constructor connects: only here, never at import

    api = sj.Shioaji(simulation=env.get("SJ_SIMULATION", "") in ("1", "true", "yes"))
    api.login(env["SJ_API_KEY"], env["SJ_SECRET_KEY"])
    if env.get("SJ_CA_PATH") and hasattr(api, "activate_ca"):
        api.activate_ca(ca_path=env["SJ_CA_PATH"], ca_passwd=env.get("SJ_CA_PASSWORD", ""), person_id=env.get("SJ_PERSON_ID", ""))
    accounts = [a for a in (getattr(api, "stock_account", None), getattr(api, "futopt_account", None)) if a is not None]
    return api, accounts


def simulated_session(settings: Settings, seed: int, orders: int, person_id: str = "") -> tuple[Any, list[Any], Any, int]:
    """A simulated Shioaji day (the default broker here): (api, accounts, session, resume index).
    `person_id`: carried by the simulated accounts and payloads, as a real login's are.

    After a restart the simulated day goes on where it stopped: the events already in
    today's journal are not delivered again, and the broker stands at the last of them.
    """
    from execstate.bridge.sim import SimConfig, SimShioaji, generate_session

    session = generate_session(SimConfig(seed=seed, n_orders=orders, person_id=person_id))
    api = SimShioaji(session)
    accounts = api.login("sim", "sim")
    journal = Path(settings.state_dir) / "journal" / f"{session.config.trade_date.isoformat()}.jsonl"
    start = resume_point(session.events, journal)
    api.broker.set_as_of(session.recv_ts_ns[start - 1] / 1e9 if start else 0.0)
    if journal.exists():  # orders placed through the strategy API earlier today are broker truth too
        from execstate.bridge.journal import JournalReader

        api.restore_placed((raw.state, raw.msg) for raw in JournalReader(journal))
    return api, accounts, session, start


def resume_point(events: list[tuple[str, dict]], journal: Path) -> int:
    """How many of `events` (in delivery order) the journal already holds (it keeps no `person_id`)."""
    if not journal.exists():
        return 0
    from execstate.bridge.journal import JournalReader

    seen = {msgspec.json.encode(raw.msg) for raw in JournalReader(journal)}
    for i, (_, msg) in enumerate(events):
        if msgspec.json.encode(without_person_id(msg)) not in seen:
            return i
    return len(events)


def load_snapshot(path: Path) -> PositionSnapshot | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=PositionSnapshot)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        if path.exists():
            log.warning("snapshot_unreadable", path=str(path), error=repr(exc))
        return None


def taipei_day(ts: float | None = None) -> str:
    return dt.datetime.fromtimestamp(time.time() if ts is None else ts, _TAIPEI).date().isoformat()


class Service:
    def __init__(self, settings: Settings, api: Any, accounts: list[Any], *, day: str | None = None, intents: IntentRegistry | None = None) -> None:
        self.settings = settings
        self.api = api
        self.accounts = {account_key(a): a for a in accounts}
        state = Path(settings.state_dir)
        self.day = day or taipei_day()
        self.journal_path = state / "journal" / f"{self.day}.jsonl"
        self.snapshot_path = state / "snapshots" / "latest.json"
        self.intents = intents or IntentRegistry(dict(settings.strategies.tags), path=state / "intents.jsonl")
        # snapshot_path is set on the pipeline only after the opening reconcile (see start())
        self.pipeline = Pipeline(settings, intents=self.intents)
        self.recorder: Any = None  # opened in start(), after the single-instance lock: chdb allows one process
        self.sink: Any = None
        if settings.recorder.parquet_snapshots:
            from execstate.record.parquet import ParquetSnapshotWriter

            self.pipeline.bus.subscribe(TOPIC_SNAPSHOT, ParquetSnapshotWriter(state / "parquet").write)
        self.bridge = ShioajiBridge(api, self.pipeline.queue)
        self.halt = HaltState()
        self.gateway = BrokerGateway(api, settings.rate_limits)
        fetch = make_fetch(lambda calls, deadline: self.gateway.map([BrokerCall(m, a, k, g) for g, m, a, k in calls], deadline=deadline), self.accounts)
        self._open_cost_cache = OpenCostCache(FeeSchedule(settings.fees))  # the PnL comparison's opening fees, as the store's
        self.reconciler = Reconciler(
            settings.reconcile, list(self.accounts), fetch, self.pipeline.store.view, self.pipeline.submit,
            self._in_flight, lambda: self.pipeline.stats.fills, self.halt,
            on_result=self._record_result, open_costs=self._open_costs, estimate=BrokerEstimate.from_fees(settings.fees.stock),
        )
        self.monitor = Monitor(
            self.reconciler, settings.reconcile, self.bridge.heartbeat, lambda: self.pipeline.on_worker(self.pipeline.normalizer.orders.working),
            self._sequence_gap, self.halt,
        )
        self.control = ControlServer(state, self.handlers())
        self.reconcile_metrics = ReconcileMetrics(settings.reconcile.deadline_ms, budget_ms=settings.alerts.recovery_s * 1000)
        self.metrics_sources = MetricSources(
            stats=self.pipeline.stats, latency=self.pipeline.latency_ms, heartbeat=self.bridge.heartbeat, halt=self.halt.status,
            reconcile=self.reconcile_metrics, gateway_stats=self.gateway.stats,
            recorder_stats=lambda: self.recorder.stats() if self.recorder is not None else None,
            raw_queue_depth=self.pipeline.queue.qsize,
            orders_working=lambda: self.pipeline.on_worker(self.pipeline.normalizer.orders.working, timeout=0.5),
        )
        # alerts.yml evaluated in-process (telemetry/alerts.py): same readings, logs alert_firing, HALTs on the rules marked `halts`
        self.alerts = AlertEvaluator(rules_for(settings.alerts, settings.reconcile.max_pnl_mismatch_twd), halt=self.halt.enter)
        self.alert_loop = AlertLoop(self.alerts, InputsReader(settings.alerts, self.metrics_sources, time.time()),
                                    settings.alerts.eval_interval_ms / 1000)
        self.metrics_sources.alerts = self.alerts.firing_by_name
        self.metrics_sources.positions = self.pipeline.snapshot  # per (account, strategy) PnL gauges, at scrape time
        self.metrics_server: Any = None
        self.metrics_url = ""
        self.started_ns = 0
        self.phase = "starting"  # -> "running" once start-up (replay, opening reconcile) is done -> "stopping"
        self.startup: ReconcileResult | None = None
        self.replayed = 0

    def _record_result(self, result: ReconcileResult) -> None:
        self.reconcile_metrics.record(result)
        if self.recorder is not None:
            self.recorder.submit(reconcile_record(result))

    def _open_costs(self) -> dict[tuple[str, str], OpenCost]:
        """Our open lots per (account, symbol), for the PnL comparison: the fills are copied on the
        worker (a barrier), the FIFO restatement runs on the reconciler's thread, incrementally."""
        return self._open_cost_cache(self.pipeline.on_worker(self.pipeline.store.fills))

    def _in_flight(self) -> set[tuple[str, str]]:
        recent_ns = self.settings.reconcile.recent_fill_window_ms * 1_000_000
        return self.pipeline.on_worker(lambda: self.pipeline.normalizer.in_flight(time.time_ns(), recent_ns))

    def _sequence_gap(self, key: str) -> bool:
        try:
            health = self.api.trade_cache_health(self.accounts[key])
        except Exception as exc:  # no verdict this time: the periodic poll still reconciles
            log.warning("trade_cache_health_failed", account=key, error=repr(exc)[:200])
            return False
        state = str(getattr(health.state, "value", health.state))
        return state == "Degraded" and any(str(getattr(r.reason, "value", r.reason)) == "SequenceGap" for r in health.reasons)

    def start(self) -> Service:
        t0 = time.monotonic()
        self.started_ns = time.time_ns()
        self.control.start()  # first: it holds the single-instance lock, before the journal or database is touched
        self.recorder, self.sink = open_recorder(self.settings)
        if self.recorder is not None:
            self.pipeline.attach_recorder(self.recorder.submit)
            self.recorder.start()  # drains a previous run's spool before anything new
        previous = load_snapshot(self.snapshot_path)
        if self.journal_path.exists():
            self.replayed = replay_journal_into(self.pipeline, self.journal_path)
        self.pipeline.open_journal(self.journal_path)
        self.bridge.attach()
        self.pipeline.start()
        attribution = attribution_from(previous.positions if previous else (), self.pipeline.store.view().positions)
        self.startup = self.reconciler.check(reason="startup", opening=True, attribution=attribution)
        if not self.startup.error:
            # only now do the books hold yesterday's positions with their strategies: writing
            # latest.json earlier would drop that attribution if this check failed
            self.pipeline.snapshot_path = self.snapshot_path
        else:
            log.warning("snapshot_file_kept", path=str(self.snapshot_path), reason="the opening reconcile failed: latest.json keeps the last good snapshot (yesterday's attribution)")
        elapsed_ms = (time.monotonic() - t0) * 1000
        if elapsed_ms > self.settings.reconcile.deadline_ms:
            self.halt.enter(f"start-up took {elapsed_ms:.0f} ms > deadline {self.settings.reconcile.deadline_ms} ms")
        self._compare_with(previous)
        self.monitor.start()
        self._start_metrics()
        self.phase = "running"
        if self.settings.alerts.enabled:
            self.alert_loop.start()
        log.info("service_started", day=self.day, replayed=self.replayed, accounts=list(self.accounts), startup_ms=round(elapsed_ms, 1), halted=self.halt.is_halted)
        return self

    def _start_metrics(self) -> None:
        """Prometheus /metrics and the dashboard API (/api/v1/, bearer: the control token) on one
        loopback port (`telemetry.http`); a port in use is logged, never fatal."""
        handlers = {"status": lambda: self._status({}), "positions": self._api_positions, "orders": self._api_orders}
        try:
            self.metrics_server = start_server(registry_for(self.metrics_sources), handlers, self.control.token,
                                               port=self.settings.telemetry.metrics_port)
        except OSError as exc:
            log.error("metrics_unavailable", port=self.settings.telemetry.metrics_port, error=str(exc))
            return
        self.metrics_url, self.api_url = self.metrics_server.metrics_url, self.metrics_server.api_url  # both logged by start_server

    def _compare_with(self, previous: PositionSnapshot | None) -> None:
        if previous is None:
            return
        before = {(p.account, p.strategy, p.symbol): p.quantity for p in previous.positions}
        now = {(k.account, k.strategy, k.symbol): s.quantity for k, s in self.pipeline.store.view().positions.items()}
        for key in sorted(set(before) | set(now)):
            if before.get(key, 0) != now.get(key, 0):
                log.info("snapshot_difference", account=key[0], strategy=key[1], symbol=key[2], last_snapshot=before.get(key, 0), now=now.get(key, 0))

    def stop(self) -> None:
        self.phase = "stopping"
        self.alert_loop.stop()  # first: nothing may HALT on the shutdown itself
        self.monitor.stop()
        stop_play = getattr(self, "playback", None)
        if stop_play is not None:
            stop_play.stop()
        self.pipeline.stop()
        if self.recorder is not None:
            self.recorder.stop()  # what cannot reach the database stays in the spool
        self.control.stop()
        if self.metrics_server is not None:
            stop_server(self.metrics_server)
        self.gateway.close()
        log.info("service_stopped", fills=self.pipeline.stats.fills)

    # --- control commands (each runs on a control connection thread) ----------------------
    def handlers(self) -> dict[str, Any]:
        return {"status": self._status, "snapshot": self._snapshot, "reconcile": self._reconcile, "halt-clear": self._halt_clear, "query": self._query}

    def _query(self, args: dict) -> dict:
        if self.sink is None:
            raise RuntimeError("the recorder is disabled (recorder.enabled: false)")
        columns, rows = self.sink.query(str(args.get("sql", "")))
        return {"columns": list(columns), "rows": [[_cell(v) for v in row] for row in rows]}

    def _status(self, _args: dict) -> dict:
        hb = self.bridge.heartbeat()
        halt = self.halt.status()
        last = self.reconciler.last
        now = time.time_ns()
        return {
            "phase": self.phase,
            "connection": hb.connection.value,
            "connection_since_ns": hb.connection_since_ns,
            "last_callback_ns": hb.last_callback_ns,
            "callback_gap_s": round((now - hb.last_callback_ns) / 1e9, 3) if hb.last_callback_ns else None,
            "queue_depth": hb.queue_depth,
            "outstanding_orders": self.pipeline.on_worker(self.pipeline.normalizer.orders.working, timeout=5),
            "counts": self.pipeline.stats.counts(),
            "halt": {"halted": halt.halted, "reason": halt.reason, "since_ns": halt.since_ns},
            "last_reconcile": _summary(last) if last else None,
            "journal": str(self.journal_path),
            "uptime_s": round((now - self.started_ns) / 1e9, 1),
            "metrics_url": self.metrics_url,
            "broker_budget": self.gateway.stats(),
            "recorder": self.recorder.stats() if self.recorder is not None else None,
            "alerts": self.alerts.firing(),
        }

    def _require_running(self) -> None:
        if self.phase != "running":
            raise RuntimeError(f"execstate is {self.phase} (replaying the journal and reconciling with the broker): try again in a moment")

    def _snapshot(self, _args: dict) -> dict:
        self._require_running()
        snap = self.pipeline.snapshot()
        return {"seq": snap.seq, "ts": snap.ts, "positions": positions_as_dicts(snap),
                "unrealized": {f"{p.account}|{p.strategy}|{p.symbol}": str(p.unrealized_pnl) for p in snap.positions}}

    def _reconcile(self, args: dict) -> dict:
        self._require_running()
        symbols = args.get("symbols") or None
        accounts = args.get("accounts") or None
        result = self.monitor.request(accounts, symbols, reason="operator", wait_s=self.settings.reconcile.deadline_ms / 1000 + 30)
        if result is None:
            raise TimeoutError("the reconcile did not finish in time")
        return _summary(result)

    def _halt_clear(self, _args: dict) -> dict:
        return {"cleared": self.halt.clear("operator")}

    # --- dashboard API (each runs on an HTTP request thread; shapes in telemetry.api) -----
    api_url = ""  # set by _start_metrics

    def _api_ready(self) -> None:
        try:
            self._require_running()
        except RuntimeError as exc:
            raise Unavailable(str(exc)) from None

    def _api_positions(self) -> dict:
        self._api_ready()
        snap = self.pipeline.snapshot()
        marks = [{"unrealized_pnl": fmt_decimal(p.unrealized_pnl), "mark_price": None if p.mark_price is None else fmt_decimal(p.mark_price)}
                 for p in snap.positions]
        return {"seq": snap.seq, "ts": snap.ts, "positions": [row | mark for row, mark in zip(positions_as_dicts(snap), marks)]}

    def _api_orders(self) -> dict:
        self._api_ready()
        rows = self.pipeline.on_worker(self.pipeline.normalizer.orders.rows, timeout=2)
        return {"day": self.day, "orders": rows}


def _cell(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def _summary(r: ReconcileResult) -> dict:
    return {
        "reason": r.reason, "accounts": list(r.accounts), "started_ns": r.started_ns, "duration_ms": round(r.duration_ms, 1),
        "records_resubmitted": r.records_resubmitted, "recovered_fills": r.recovered_fills,
        "discrepancies": msgspec.to_builtins(r.discrepancies),
        "pending": msgspec.to_builtins(r.pending),
        "corrections": msgspec.to_builtins(r.corrections),
        "error": r.error, "halted": r.halted,
        "pnl_discrepancies": msgspec.to_builtins(r.pnl_discrepancies),
    }
