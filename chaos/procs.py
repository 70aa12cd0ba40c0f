"""Process-level chaos plumbing: the real `execstate run` process on its own state directory,
spawned, SIGKILLed, stopped and asked for its status, for `chaos.process_kill` and
`chaos.process_db` (scenario list: `chaos.process.scenarios`).

Entry points: `Day` (incarnations of `execstate run`, one after another, on one state
directory), `JournalProgress` (how much of the day the journal holds), `Orphans` (descendants
of a killed service, until they exit); the shared verdict helpers are in `chaos.proc_verdicts`.


Import note: `tests/fixtures` (`ch_http.ClickHouseHTTPFixture`, `service_proc.spawn`) is put on
`sys.path` by this module, so `python -m chaos.run` from the repo root needs no set-up.

Invariants:
- Every service runs in a fresh `/tmp/es-chaos-*` directory with its own config file
  (`telemetry.metrics_port: 0`, an absolute `state_dir`, recording to the fixture through
  `CLICKHOUSE_DSN`), seeded with yesterday's close (`state/snapshots/latest.json`: the day's
  opening positions by strategy), as an operator's state directory is after a normal day.
- Everything a scenario starts is killed by id in `finally`: each service process and its
  descendants (the ClickHouse writer child and multiprocessing's resource tracker, which exit
  by themselves within seconds of their parent's SIGKILL: `slowest_child_exit_s`); one still
  alive after 10 s is SIGKILLed and fails the scenario (`children_killed`). The HTTP fixture is
  closed (its port released). Directories are removed unless CHAOS_KEEP=1.
- The fixture's engine lives in the scenario process (one chdb path per process at a time),
  so scenarios run one after another; the rows are read from its data directory once the
  service has stopped and the fixture is closed.
"""


from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import yaml

_REPO = Path(__file__).resolve().parents[1]
_FIXTURES = str(_REPO / "tests" / "fixtures")
if _FIXTURES not in sys.path:
    sys.path.insert(0, _FIXTURES)

from ch_http import ClickHouseHTTPFixture  # noqa: E402
from service_proc import LoggedProcess, spawn  # noqa: E402

from execstate.bridge.sim import SimConfig, generate_session  # noqa: E402
from execstate.domain.payloads import without_person_id  # noqa: E402

# alerts that HALT (alerts.yml's page rules marked `halts`), and HALT itself: never legitimate here
HALTING_ALERTS = ("ExecstateReconciliationMismatch", "ExecstateRecoverySlow", "ExecstateConnectionDown", "ExecstateHalted")
FORBIDDEN = ("HALT", *HALTING_ALERTS)
SPOOL_ALERT = "ExecstateRecorderSpoolGrowing"
BOOK_FIELDS = ("quantity", "avg_price", "realized_pnl", "fees", "taxes")
KEEP = os.environ.get("CHAOS_KEEP", "") not in ("", "0")


# --- processes -------------------------------------------------------------------------------


def _proc_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: starttime (pid reuse guard)


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, start time) of every live descendant of `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], list(children.get(pid, ()))
    while todo:
        child = todo.pop()
        start = _proc_start_time(child)
        if start is not None:
            out.append((child, start))
        todo.extend(children.get(child, ()))
    return out


def _alive(pid: int, start: str) -> bool:
    return _proc_start_time(pid) == start


class Orphans:
    """Descendants of a killed service: they must exit by themselves (the writer child sees its
    pipe close) within `grace_s`; those that do not are SIGKILLed by id and counted. A watcher
    thread checks every 50 ms while any is left, so `slowest_exit_s` is measured, not guessed."""

    def __init__(self, grace_s: float = 10.0) -> None:
        self.grace_s = grace_s
        self._watched: list[tuple[int, str, float]] = []  # pid, start time, parent died at (monotonic)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.killed = 0
        self.slowest_exit_s = 0.0

    def watch(self, procs: list[tuple[int, str]]) -> None:
        now = time.monotonic()
        with self._lock:
            self._watched += [(pid, start, now) for pid, start in procs]
            if self._watched and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._run, name="chaos-orphans", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while self.sweep():
            time.sleep(0.05)

    def sweep(self) -> int:
        """Forget the exited, kill those past their grace; returns how many are still watched."""
        with self._lock:
            now, left = time.monotonic(), []
            for pid, start, since in self._watched:
                if not _alive(pid, start):
                    self.slowest_exit_s = max(self.slowest_exit_s, now - since)
                elif now - since > self.grace_s:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        self.killed += 1
                    except ProcessLookupError:
                        pass
                else:
                    left.append((pid, start, since))
            self._watched = left
            return len(left)

    def wait(self) -> None:
        """Until every watched process has exited or been killed (at most `grace_s`)."""
        while self.sweep():
            time.sleep(0.05)


# --- one day of the service on one state directory -----------------------------------------


def _write_config(work: Path, overrides: dict[str, dict[str, Any]] | None = None) -> Path:
    data = yaml.safe_load((_REPO / "config" / "execution.yaml").read_text())
    data["state_dir"] = str(work / "state")
    data["telemetry"]["metrics_port"] = 0  # any free port: runs never clash on 9464
    for section, values in (overrides or {}).items():
        data[section].update(values)
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _seed_yesterdays_close(state: Path, session: Any) -> None:
    """Yesterday's close as the last snapshot on disk: the day's opening positions by strategy."""
    from execstate.app import write_snapshot_file
    from execstate.bridge.sim.catalog import instrument_for
    from execstate.domain.events import PositionRecord, PositionSnapshot

    records = tuple(
        PositionRecord(p.account, p.strategy_id, p.symbol, p.quantity, p.price, Decimal(0), Decimal(0), Decimal(0), Decimal(0),
                       p.price, Decimal(instrument_for(p.code).multiplier))
        for p in session.initial_positions)
    write_snapshot_file(PositionSnapshot(0, time.time_ns() - 86_400 * 10**9, records), state / "snapshots" / "latest.json")


class JournalProgress:
    """How many of the day's events (in delivery order) today's journal holds, read
    incrementally (the same rule as `service.resume_point`), and the journal's lines."""

    def __init__(self, path: Path, events: list[tuple[str, dict]]) -> None:
        self.path = path
        self._keys = [msgspec.json.encode(without_person_id(msg)) for _, msg in events]
        self._seen: set[bytes] = set()
        self._offset = 0
        self.delivered = 0
        self.lines = 0

    @property
    def total(self) -> int:
        return len(self._keys)

    def update(self) -> int:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return self.delivered
        end = data.rfind(b"\n") + 1  # complete lines only: a torn tail is read once it is ended
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            try:
                msg = msgspec.json.decode(line)["msg"]
            except (msgspec.DecodeError, KeyError, TypeError):
                try:
                    msg = json.loads(line)["msg"]
                except (ValueError, KeyError, TypeError):
                    continue  # a torn fragment, ended by the next start
            self._seen.add(msgspec.json.encode(msg))
            self.lines += 1
        self._offset += end
        while self.delivered < len(self._keys) and self._keys[self.delivered] in self._seen:
            self.delivered += 1
        return self.delivered


class Day:
    """`execstate run` incarnations, one after another, on one state directory.

    `spawn()` starts one; `status()` asks it in-process (the control socket); `cli(...)` runs
    an operator command as a user would; `kill()` SIGKILLs it; `terminate()` stops it cleanly;
    `close()` (in `finally`) kills whatever is still running and removes the directories.
    """

    def __init__(self, name: str, seed: int, orders: int, pace: float, *, clickhouse: bool = True,
                 overrides: dict[str, dict[str, Any]] | None = None) -> None:
        self.work = Path(tempfile.mkdtemp(prefix=f"es-chaos-{name}-", dir="/tmp"))
        self.seed, self.orders, self.pace = seed, orders, pace
        self.session = generate_session(SimConfig(seed=seed, n_orders=orders))
        self.config = _write_config(self.work, overrides if clickhouse else {**(overrides or {}), "recorder": {"enabled": False}})
        self.state = self.work / "state"
        _seed_yesterdays_close(self.state, self.session)
        self.env = {k: v for k, v in os.environ.items() if k != "CLICKHOUSE_DSN"}
        # ClickHouse's HTTP interface (served here, over the embedded engine at work/ch): stop()/start() take it down
        self.clickhouse = ClickHouseHTTPFixture(self.work / "ch") if clickhouse else None
        if self.clickhouse is not None:
            try:
                self.clickhouse.start()
            except BaseException:
                self.clickhouse.close()
                shutil.rmtree(self.work, ignore_errors=True)
                raise
            self.env["CLICKHOUSE_DSN"] = self.clickhouse.dsn
        self.journal = self.state / "journal" / f"{self.session.config.trade_date.isoformat()}.jsonl"
        self.progress = JournalProgress(self.journal, self.session.events)
        self.proc: LoggedProcess | None = None
        self.spawned_at = 0.0
        self.incarnations = 0
        self.logs: list[str] = []  # stderr of every finished incarnation
        self.orphans = Orphans()  # descendants of killed incarnations, until they exit
        self.boot_s: list[float] = []  # spawn -> phase running, per incarnation

    # -- processes ------------------------------------------------------------------------
    def spawn(self, pace: float | None = None) -> LoggedProcess:
        assert self.proc is None, "one incarnation at a time"
        cmd = [sys.executable, "-m", "execstate.cli", "run", "-c", str(self.config), "--seed", str(self.seed),
               "--orders", str(self.orders), "--pace", str(self.pace if pace is None else pace)]
        self.proc = spawn(cmd, cwd=self.work, env=self.env)
        self.spawned_at = time.monotonic()
        self.incarnations += 1
        return self.proc

    def kill(self) -> None:
        """SIGKILL the service (only it: its children see their pipe close, as after a real crash)."""
        proc = self._take()
        children = _descendants(proc.pid)
        proc.kill()
        proc.wait(timeout=30)
        self.orphans.watch(children)
        self._finish(proc)

    def terminate(self, timeout_s: float = 90) -> int:
        """SIGTERM and wait: queues drained, last snapshot written, the recorder flushed."""
        proc = self._take()
        children = _descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=timeout_s)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            self.orphans.watch(children)
            self.orphans.wait()
            self._finish(proc)
        return code

    def _take(self) -> LoggedProcess:
        proc, self.proc = self.proc, None
        assert proc is not None, "no incarnation running"
        return proc

    def _finish(self, proc: LoggedProcess) -> None:
        self.logs.append(proc.stderr_text())
        shutil.rmtree(proc.stderr_path.parent, ignore_errors=True)

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.kill()
            except Exception:  # noqa: BLE001 - cleanup goes on
                pass
        self.orphans.wait()
        if self.clickhouse is not None:
            self.clickhouse.close()
        if not KEEP:
            shutil.rmtree(self.work, ignore_errors=True)

    # -- talking to it --------------------------------------------------------------------
    def status(self, timeout_s: float = 5) -> dict | None:
        """The running incarnation's status, or None when it does not answer (yet)."""
        from execstate.control import ControlClient, ControlError

        try:
            return ControlClient(self.state, timeout_s=timeout_s).request("status")
        except ControlError:
            return None

    def cli(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "execstate.cli", *args, "-c", str(self.config)], cwd=self.work, env=self.env,
                              capture_output=True, text=True, timeout=timeout_s)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _check_alive(self) -> None:
        if not self.alive():
            text = self.proc.stderr_text()[-1500:] if self.proc is not None else ""
            raise RuntimeError(f"execstate exited (code {self.proc.poll() if self.proc else None}): {text}")

    def wait_running(self, timeout_s: float = 90) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            st = self.status(timeout_s=2)
            if st is not None and st.get("phase") == "running":
                self.boot_s.append(time.monotonic() - self.spawned_at)
                return st
            time.sleep(0.02)
        raise TimeoutError(f"execstate did not reach phase running within {timeout_s} s")

    def wait_until(self, predicate: Any, what: str, timeout_s: float = 180, every_s: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            value = predicate()
            if value:
                return value
            time.sleep(every_s)
        raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")

    def wait_day_played(self, timeout_s: float = 300) -> dict:
        """Every event of the day in the journal (`resume_point` == all) and nothing left in the queue."""
        def done() -> dict | None:
            if self.progress.update() < self.progress.total:
                return None
            st = self.status()
            return st if st is not None and st["queue_depth"] == 0 else None

        return self.wait_until(done, "the day to play", timeout_s)

    def wait_recorded(self, timeout_s: float = 180) -> dict:
        """The recorder has nothing in memory or in the spool (the database took everything)."""
        def drained() -> dict | None:
            st = self.status()
            rec = (st or {}).get("recorder") or {}
            return st if rec and rec["spool_rows"] == 0 and rec["queued"] == 0 and rec["held_rows"] == 0 else None

        return self.wait_until(drained, "the spool to drain", timeout_s, every_s=0.2)

    # -- reading the results --------------------------------------------------------------
    def books(self) -> list[dict]:
        """`execstate snapshot --json`: positions rows as the operator sees them."""
        out = self.cli("snapshot", "--json")
        if out.returncode != 0:
            raise RuntimeError(f"execstate snapshot --json: exit {out.returncode}: {out.stderr[-500:]}")
        return json.loads(out.stdout)

    def final_status(self) -> dict:
        out = self.cli("status", "--json")
        if out.returncode not in (0, 1):  # 1: HALTed (judged by the caller)
            raise RuntimeError(f"execstate status --json: exit {out.returncode}: {out.stderr[-500:]}")
        return json.loads(out.stdout)

    def truth(self) -> dict[tuple[str, str, str], int]:
        return self.session.expected_quantities(include_initial=True)

    def log_events(self, *names: str) -> list[dict]:
        """JSON log lines named `names` from every finished incarnation (and the running one)."""
        texts = list(self.logs) + ([self.proc.stderr_text()] if self.proc is not None else [])
        out = []
        for text in texts:
            for line in text.splitlines():
                if line.startswith("{") and any(f'"event":"{n}"' in line for n in names):
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
        return out

    def fired(self) -> set[str]:
        """Alerts that fired in any incarnation (`alert_firing` lines), plus "HALT" if HALT was entered."""
        names = {e["alert"] for e in self.log_events("alert_firing")}
        return names | ({"HALT"} if self.log_events("halt_entered") else set())
