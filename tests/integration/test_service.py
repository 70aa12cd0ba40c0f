"""`execstate run` as a real process, driven from another "terminal" with the CLI."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from service_proc import spawn


def cli(*args, cwd, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "execstate.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def start(cwd, *args):
    proc = spawn([sys.executable, "-m", "execstate.cli", "run", "--orders", "80", "--pace", "400", *args], cwd=cwd)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"service exited early: {proc.stderr_text()[-2000:]}")
        answer = cli("status", "--json", cwd=cwd)
        if answer.returncode in (0, 1) and json.loads(answer.stdout).get("phase") == "running":
            return proc
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("service did not answer within 60 s")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    return err


def wait_until_played(cwd, expected_min_fills=1):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = json.loads(cli("status", "--json", cwd=cwd).stdout)
        if status["counts"]["fills"] >= expected_min_fills and status["queue_depth"] == 0:
            return status
        time.sleep(0.2)
    raise AssertionError("the simulated day did not play")


@pytest.fixture
def workdir():
    # short path: a Unix socket path must stay under 108 bytes
    path = Path(tempfile.mkdtemp(prefix="es-", dir="/tmp"))
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def test_run_status_snapshot_reconcile_and_sigterm_then_restart_rebuilds_the_same_books(workdir):
    proc = start(workdir)
    try:
        status = wait_until_played(workdir, expected_min_fills=50)
        assert status["connection"] == "up"
        time.sleep(1.5)  # the simulated day ends; let the monitor settle
        reconcile = cli("reconcile", cwd=workdir)
        assert reconcile.returncode == 0, reconcile.stdout + reconcile.stderr
        assert "books match the broker" in reconcile.stdout
        snap = cli("snapshot", "--json", cwd=workdir)
        assert snap.returncode == 0
        before = json.loads(snap.stdout)
        assert before and set(before[0]) == {"account", "strategy", "symbol", "quantity", "avg_price", "realized_pnl", "fees", "taxes"}
        table = cli("status", cwd=workdir)
        assert table.returncode == 0 and "outstanding orders" in table.stdout
        url = json.loads(cli("status", "--json", cwd=workdir).stdout)["metrics_url"]
        assert url.startswith("http://127.0.0.1:")
        import urllib.request

        text = urllib.request.urlopen(url, timeout=10).read().decode()
        fills = json.loads(cli("status", "--json", cwd=workdir).stdout)["counts"]["fills"]
        assert f'execution_events_total{{type="fill"}} {float(fills)}' in text
        assert "position_delta_latency_ms_bucket" in text and "halt_state 0.0" in text
    finally:
        err = stop(proc)
    assert "execstate stopped" in err
    assert (workdir / "state" / "snapshots" / "latest.json").exists()
    assert not (workdir / "state" / "control.sock").exists()
    token = (workdir / "state" / "control.token")
    assert not token.exists()

    proc = start(workdir)  # restart: replays the day's journal, reconciles with the broker
    try:
        after = json.loads(cli("snapshot", "--json", cwd=workdir).stdout)
        status = json.loads(cli("status", "--json", cwd=workdir).stdout)
        assert not status["halt"]["halted"], status["halt"]
        net = lambda rows: {(r["account"], r["strategy"], r["symbol"]): r["quantity"] for r in rows if r["quantity"] != "0"}
        assert net(after) == net(before)
        assert status["last_reconcile"]["corrections"] == []
    finally:
        stop(proc)


def test_operator_commands_without_a_running_service_fail_in_one_line(workdir):
    for command in (["status"], ["snapshot", "--json"], ["reconcile"]):
        result = cli(*command, cwd=workdir)
        assert result.returncode == 3
        assert result.stderr.strip().count("\n") == 0 and "not running" in result.stderr


def test_real_broker_needs_credentials_from_the_environment(workdir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SJ_")}
    result = cli("run", "--broker", "shioaji", cwd=workdir, env=env)
    assert result.returncode == 2
    assert "SJ_API_KEY" in result.stderr and "SJ_SECRET_KEY" in result.stderr


def test_second_service_on_the_same_state_directory_is_refused_before_touching_the_journal(workdir):
    proc = start(workdir)
    try:
        wait_until_played(workdir)
        journal = next((workdir / "state" / "journal").glob("*.jsonl"))
        size = journal.stat().st_size
        second = cli("run", "--orders", "80", "--pace", "0", cwd=workdir, timeout=60)
        assert second.returncode == 1
        assert second.stderr.strip().startswith("error: execstate is already running")
        first_status = cli("status", "--json", cwd=workdir)
        assert first_status.returncode in (0, 1)  # the first one still answers
        time.sleep(0.5)
        lines = journal.read_bytes().splitlines()
        assert all(line.startswith(b'{"ts_ns"') for line in lines)  # no interleaved writer
        assert journal.stat().st_size >= size
    finally:
        stop(proc)


def test_sigkill_in_the_middle_of_the_session_then_restart_ends_with_the_brokers_books(workdir):
    from execstate.bridge.sim import SimConfig, generate_session

    session = generate_session(SimConfig(seed=1, n_orders=80))
    proc = spawn([sys.executable, "-m", "execstate.cli", "run", "--orders", "80", "--pace", "60"], cwd=workdir)
    journal = workdir / "state" / "journal" / f"{session.config.trade_date.isoformat()}.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not journal.exists() or journal.stat().st_size < 20_000):
        time.sleep(0.1)
    proc.kill()  # SIGKILL mid-session: no clean shutdown, stale socket and token left behind
    proc.wait(timeout=30)
    delivered = len(journal.read_bytes().splitlines())
    assert 0 < delivered < len(session.events)

    proc = start(workdir, "--pace", "400")  # resumes the day where the journal stops
    try:
        wait_until_played(workdir, expected_min_fills=len(session.fills))
        time.sleep(1.0)
        reconcile = cli("reconcile", cwd=workdir)
        assert reconcile.returncode == 0 and "books match the broker" in reconcile.stdout, reconcile.stdout
        rows = json.loads(cli("snapshot", "--json", cwd=workdir).stdout)
        ours = {(r["account"], r["strategy"], r["symbol"]): int(r["quantity"]) for r in rows if r["quantity"] != "0"}
        truth = {k: q for k, q in session.expected_quantities(include_initial=True).items() if q}
        net = lambda d: {(a, s): sum(q for (a2, _, s2), q in d.items() if (a2, s2) == (a, s)) for a, _, s in d}
        assert {k: v for k, v in net(ours).items() if v} == {k: v for k, v in net(truth).items() if v}
        status = json.loads(cli("status", "--json", cwd=workdir).stdout)
        assert status["counts"]["fills"] == len(session.fills)  # every deal booked once across the crash
        assert status["counts"]["dead_letters"] == 0
    finally:
        stop(proc)
