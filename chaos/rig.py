"""A real `Service` in this process on the simulated broker: the rig of a chaos scenario.

Entry points:
- `Rig(sim, *, edit=None, settings=None, broker_latency_s=0.0, capture=True)`, a context
  manager. Life: `start()`, `play(start=0, stop=None)`, `place(strategy, contract, order)`,
  `barrier()`, `await_check(after_ns, timeout_s, accounts=None, reasons=())`,
  `operator_check(reason)`, `stop()`, `rows_check()`, `close()`. Readings: `ours()`,
  `truth()`, `truth_fills()`, `dirty_accounts()`, `fired()`. Attributes: `session`, `api`
  (`SimShioaji`), `broker` (`SimBroker`: `fail_next`, `latency_s`, `gate`), `service`,
  `settings`, `results` (every `ReconcileResult`, in order), `halts` (every `HaltStatus`
  change), `logs` (captured structlog events), `playbacks`.
- `chaos_settings(state_dir, overrides)`, `edited(session, events, dropped)`,
  `drop_burst(session, at, n, noticed=True)`, `double_every_event(session)`,
  `yesterdays_close(session)`.

What the rig sets up is what a deployment has on the first start of a day: yesterday's
closing snapshot on disk (so the opening positions go back to the strategies that held
them), the intents of the day's orders registered as the order adapter registers them
(futures deals carry no `custom_field`), the recorder on (embedded chdb under the rig's
directory, written in-process: `recorder.writer_process: false`), the in-process alerts
evaluated every 50 ms, the HTTP endpoint on a free port. The broker stands before the day's
first event at start; `play` moves it with the delivered stream (`SimShioaji.play`).

Invariants: one `Rig` holds one chdb path; `stop()` closes the service's sink before
`rows_check()` opens its own, and `close()` releases everything and removes the directory,
so rigs can run one after another in one process. `fired()` is the set of in-process alert
names that fired (`alert_firing` log lines, captured with `structlog.testing.capture_logs`)
plus "HALT" if HALT was entered at any time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from chaos.harness import BookKey, Check, check_rows
from execstate.app import write_snapshot_file
from execstate.bridge.sim import STRATEGY_TAGS, SimBroker, SimConfig, SimSession, SimShioaji, generate_session
from execstate.config import Settings, parse_settings
from execstate.domain.events import PositionRecord, PositionSnapshot
from execstate.reconcile.halt import HaltStatus
from execstate.reconcile.reconciler import ReconcileResult
from execstate.service import Service

__all__ = ["Rig", "chaos_settings", "double_every_event", "drop_burst", "edited", "yesterdays_close"]


def _merge(base: dict, over: Mapping) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


def chaos_settings(state_dir: Path, overrides: Mapping[str, Any] | None = None) -> Settings:
    """The shipped defaults (deadline 10 s, 2 confirmations, 25 queries / 5 s ...) with what a
    rig needs: `state_dir`, the sim's strategy tags, the recorder in-process, no Parquet, a
    free metrics port, alerts evaluated every 50 ms, no process-wide GC tuning; then
    `overrides` (nested keys as in config/execution.yaml)."""
    base = {
        "state_dir": str(state_dir),
        "strategies": {"tags": dict(STRATEGY_TAGS)},
        "runtime": {"gc_freeze_after_start": False, "switch_interval_us": 0},
        "recorder": {"enabled": True, "writer_process": False, "parquet_snapshots": False, "batch_ms": 50},
        "telemetry": {"metrics_port": 0},
        "alerts": {"eval_interval_ms": 50},
    }
    return parse_settings(_merge(base, overrides or {}), source="chaos settings")


def edited(session: SimSession, events: list[tuple[int, str, dict]], dropped: list[tuple[int, str, dict]] | None = None) -> SimSession:
    """`session` delivering `events` instead: (receive time ns, state, payload) in delivery
    order (times made strictly increasing); `dropped` (delivery index, state, payload) are
    lost events the broker notices (SequenceGap) when play passes them (default: kept)."""
    recv, last = [], 0
    for ts, _, _ in events:
        last = max(ts, last + 1)
        recv.append(last)
    return dataclasses.replace(session, events=[(s, m) for _, s, m in events], recv_ts_ns=recv,
                               dropped=sorted(session.dropped if dropped is None else dropped, key=lambda d: d[0]))


def _stream(session: SimSession) -> list[tuple[int, str, dict]]:
    return [(ts, s, m) for ts, (s, m) in zip(session.recv_ts_ns, session.events)]


def drop_burst(session: SimSession, at: int, n: int, *, noticed: bool = True) -> SimSession:
    """Lose the `n` consecutive deliveries from index `at` (clamped to the stream). `noticed`:
    the broker's trade cache sees the gap in its receipt sequence (SequenceGap), as the SDK's
    does with event ids; otherwise nothing tells the client."""
    stream = _stream(session)
    at = max(0, min(at, len(stream) - n))
    lost = stream[at:at + n]
    kept = stream[:at] + stream[at + n:]
    shifted = [(i - n if i > at + n else min(i, at), s, m) for i, s, m in session.dropped]
    dropped = shifted + ([(at, s, m) for _, s, m in lost] if noticed else [])
    return edited(session, kept, dropped)


def double_every_event(session: SimSession) -> SimSession:
    """Every delivery arrives twice in a row (identical payload, 1 ns apart)."""
    return edited(session, [e for ts, s, m in _stream(session) for e in ((ts, s, m), (ts + 1, s, m))])


def yesterdays_close(session: SimSession) -> PositionSnapshot:
    """The snapshot yesterday's service left on disk: the opening positions, by strategy."""
    from execstate.domain.instruments import stock_symbol

    records = tuple(
        PositionRecord(p.account, p.strategy_id, stock_symbol(p.code, p.cond) if p.cond else p.code, p.quantity,
                       Decimal(str(p.price)), Decimal(0), Decimal(0), Decimal(0), Decimal(0), None, Decimal(1))
        for p in session.initial_positions)
    return PositionSnapshot(seq=0, ts=0, positions=records)


class Rig:
    """One service, one simulated day (see the module docstring).

    `sim`: the day's knobs; `edit(session) -> session`: changes to the delivered stream made
    before play (`drop_burst`, `double_every_event`, ...); `settings`: overrides for
    `chaos_settings`; `broker_latency_s`: every broker server call takes this long;
    `capture`: capture structlog output (alerts, reconcile results) instead of printing it.
    """

    def __init__(self, sim: SimConfig, *, edit: Callable[[SimSession], SimSession] | None = None,
                 settings: Mapping[str, Any] | None = None, broker_latency_s: float = 0.0, capture: bool = True) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="es-chaos-", dir="/tmp"))  # short: the control socket path is limited
        try:
            self._build(sim, edit, settings, broker_latency_s, capture)
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def _build(self, sim: SimConfig, edit: Callable[[SimSession], SimSession] | None, settings: Mapping[str, Any] | None,
               broker_latency_s: float, capture: bool) -> None:
        self.settings = chaos_settings(self.root / "state", settings)
        self.dsn = self.settings.clickhouse_dsn()
        session = generate_session(sim)
        self.session = edit(session) if edit is not None else session
        self.broker = SimBroker(self.session, latency_s=broker_latency_s)
        self.api = SimShioaji(self.session, self.broker)
        self.accounts = self.api.login("sim", "sim")
        self.broker.set_as_of(0.0)  # the broker before the day's first event
        write_snapshot_file(yesterdays_close(self.session), Path(self.settings.state_dir) / "snapshots" / "latest.json")
        self.service = Service(self.settings, self.api, self.accounts, day=self.session.config.trade_date.isoformat())
        for intent in self.session.intents:  # as the order adapter registered them when placing
            self.service.intents.register(intent.order_id, intent.strategy_id, intent.symbol, intent.custom_field)
        self.results: list[ReconcileResult] = []
        self.halts: list[HaltStatus] = []
        self.service.halt.subscribe(self.halts.append)
        record = self.service.reconciler._on_result  # noqa: SLF001 - chain, keep the service's own recording

        def on_result(result: ReconcileResult) -> None:
            self.results.append(result)
            if record is not None:
                record(result)

        self.service.reconciler._on_result = on_result  # noqa: SLF001
        self._capture = capture_logs() if capture else contextlib.nullcontext([])
        self.logs: list[dict[str, Any]] = []
        self._stack = contextlib.ExitStack()
        self.started = self.stopped = False
        self.playbacks: list[Any] = []
        self.placed: dict[str, str] = {}  # order id -> strategy, for orders placed through the service

    # --- life cycle ------------------------------------------------------------------------
    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> Rig:
        self.logs = self._stack.enter_context(self._capture)
        self.started = True
        self.service.start()
        return self

    def play(self, start: int = 0, stop: int | None = None) -> Any:
        """Deliver `session.events[start:stop]` as fast as possible, on the SDK-like thread,
        and wait for the delivery to end (not for the books: see `barrier`)."""
        pb = self.api.play(start=start, stop=stop)
        self.playbacks.append(pb)
        return pb

    def place(self, strategy: str, contract: Any, order: Any) -> Any:
        """Place through the strategy API (`Execstate.attach(service).place`), remembering who
        placed the order (the broker's truth knows only its tag); raises what `place` raises."""
        from execstate.api import Execstate

        trade = Execstate.attach(self.service).place(strategy, contract, order)
        self.placed[trade.order.id] = strategy
        return trade

    def barrier(self) -> None:
        """Everything delivered so far is booked and published."""
        self.service.pipeline.on_worker(lambda: None)

    def await_check(self, after_ns: int, timeout_s: float, accounts: Any = None, reasons: tuple[str, ...] = (),
                    want: Callable[[ReconcileResult], bool] | None = None) -> list[ReconcileResult]:
        """Wait (at most `timeout_s`) until the reconciles the service ran, started after
        `after_ns` (wall ns), include one for each of `reasons` and, among those satisfying
        `want` (default: clean), cover `accounts` (default: every account). Returns the
        checks satisfying `want` (a partial cover on timeout)."""
        want = want or (lambda r: r.clean)
        wanted = set(self.service.accounts if accounts is None else accounts)
        deadline = time.monotonic() + timeout_s
        while True:
            since = [r for r in list(self.results) if r.started_ns > after_ns]
            good = [r for r in since if want(r)]
            done = {a for r in good for a in r.accounts} >= wanted and set(reasons) <= {r.reason for r in since}
            if done or time.monotonic() > deadline:
                return good
            time.sleep(0.02)

    def dirty_accounts(self) -> set[str]:
        """Accounts whose net books differ from the broker's truth now."""
        ours: dict[tuple[str, str], int] = {}
        truth: dict[tuple[str, str], int] = {}
        for books, out in ((self.ours(), ours), (self.truth(), truth)):
            for (account, _strategy, symbol), qty in books.items():
                out[(account, symbol)] = out.get((account, symbol), 0) + qty
        return {a for a, s in set(ours) | set(truth) if ours.get((a, s), 0) != truth.get((a, s), 0)}

    def operator_check(self, reason: str = "operator", wait_s: float = 60.0) -> ReconcileResult | None:
        """`execstate reconcile`: a full check through the monitor, waited for."""
        return self.service.monitor.request(reason=reason, wait_s=wait_s)

    def ours(self) -> dict[BookKey, int]:
        """Our books now: quantity per (account, strategy, symbol)."""
        return {(k.account, k.strategy, k.symbol): s.quantity for k, s in self.service.pipeline.store.view().positions.items()}

    def truth(self) -> dict[BookKey, int]:
        """The broker's truth per (account, strategy, symbol): opening positions, the day's
        deals, and the deals of orders placed through the service."""
        out = dict(self.session.expected_quantities(include_initial=True))
        for f in self.broker.placed_fills:  # the broker knows tags, not strategies: who placed it does
            key = (f.account, self.placed.get(f.order_id, f.strategy_id), f.symbol)
            out[key] = out.get(key, 0) + f.signed_quantity
        return out

    def truth_fills(self) -> int:
        return len(self.session.fills) + len(self.broker.placed_fills)

    def fired(self) -> set[str]:
        """Alert names that fired (as logged), plus "HALT" if HALT was ever entered."""
        names = {e["alert"] for e in self.logs if e.get("event") == "alert_firing"}
        return names | ({"HALT"} if self.service.halt.entered else set())

    def stop(self) -> None:
        """One last alert evaluation, then the service's clean stop (its sink closed)."""
        if self.started and not self.stopped:
            self.stopped = True
            with contextlib.suppress(Exception):
                self.service.alert_loop.tick()
            self.service.stop()

    def rows_check(self, *, min_deltas: int | None = None) -> Check:
        """`check_rows` on the recorded database (after `stop`): every deal once."""
        from execstate.record.clickhouse import ClickHouseSink

        if not self.stopped:
            raise RuntimeError("stop() the service first: the embedded engine admits one client per path")
        sink = ClickHouseSink(self.dsn)
        try:
            return check_rows(sink, self.truth_fills(), min_deltas=min_deltas)
        finally:
            sink.close()

    def close(self) -> None:
        try:
            self.stop()
        finally:
            for pb in self.playbacks:
                pb.stop()
            self._stack.close()
            shutil.rmtree(self.root, ignore_errors=True)
