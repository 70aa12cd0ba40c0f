"""Recording as a user meets it: the service writes to ClickHouse over HTTP (a real server's
interface, served here by the embedded engine), the database goes down and comes back, the
service is killed with batches spooled; replays are re-ingested. Every row lands once."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from service_proc import spawn, wait_for
from ch_http import ClickHouseHTTPFixture

from execstate.bridge.sim import SimConfig, generate_session
from execstate.record.clickhouse import ClickHouseSink

ORDERS = 80


def cli(*args, cwd, env, timeout=120):
    return subprocess.run([sys.executable, "-m", "execstate.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def start(cwd, env, pace="300"):
    proc = spawn([sys.executable, "-m", "execstate.cli", "run", "--orders", str(ORDERS), "--pace", pace], cwd=cwd, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr_text()[-3000:])
        answer = cli("status", "--json", cwd=cwd, env=env)
        if answer.returncode in (0, 1) and json.loads(answer.stdout).get("phase") == "running":
            return proc
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("service did not answer")


def status(cwd, env):
    return json.loads(cli("status", "--json", cwd=cwd, env=env).stdout)




def counts(dsn):
    sink = ClickHouseSink(dsn)
    try:
        rows = {t: sink.count(t) for t in ("orders", "fills", "position_deltas")}
        rows["trades"] = sink.query("SELECT count() FROM fills FINAL WHERE correction = ''")[1][0][0]  # corrections are fills too
        return rows, sink.query("SELECT count() - uniqExact(event_id) FROM fills FINAL")[1][0][0]  # once each, after FINAL
    finally:
        sink.close()


@pytest.fixture
def workdir():
    path = Path(tempfile.mkdtemp(prefix="es-rec-", dir="/tmp"))
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def test_database_down_mid_session_then_back_loses_nothing_and_doubles_nothing(workdir):
    session = generate_session(SimConfig(seed=1, n_orders=ORDERS))
    with ClickHouseHTTPFixture(workdir / "ch") as ch:
        env = {**os.environ, "CLICKHOUSE_DSN": ch.dsn}
        proc = start(workdir, env, pace="80")
        try:
            wait_for(lambda: status(workdir, env)["counts"]["fills"] > 20, what="first fills")
            ch.stop()  # the database goes away in the middle of the day
            wait_for(lambda: (status(workdir, env)["recorder"] or {}).get("spool_rows", 0) > 0, what="rows spooled")
            wait_for(lambda: status(workdir, env)["counts"]["fills"] >= len(session.fills), what="the day to play")
            ch.start()  # and comes back
            wait_for(lambda: (status(workdir, env)["recorder"] or {}).get("spool_rows", 1) == 0, timeout=90, what="spool drained")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
        assert proc.returncode == 0
    # the fixture released the engine: read the same data directory directly
    rows, extra = counts(f"chdb://{workdir / 'ch'}")
    assert rows["trades"] == len(session.fills) and extra == 0  # every deal once, none doubled
    assert rows["position_deltas"] >= len(session.fills)


def test_sigkill_with_batches_spooled_then_restart_delivers_every_row_once(workdir):
    session = generate_session(SimConfig(seed=1, n_orders=ORDERS))
    with ClickHouseHTTPFixture(workdir / "ch") as ch:
        env = {**os.environ, "CLICKHOUSE_DSN": ch.dsn}
        ch.stop()  # the database is down from the start: everything spools
        proc = start(workdir, env, pace="400")
        wait_for(lambda: status(workdir, env)["counts"]["fills"] >= len(session.fills), what="the day to play")
        wait_for(lambda: (status(workdir, env)["recorder"] or {}).get("spool_rows", 0) > 0, what="rows spooled")
        proc.kill()  # SIGKILL: what was acknowledged is in the spool or the journal
        proc.wait(timeout=30)
        ch.start()
        proc = start(workdir, env)  # drains the spool first, replays the journal (same ids)
        try:
            wait_for(lambda: (status(workdir, env)["recorder"] or {}).get("spool_rows", 1) == 0, timeout=90, what="spool drained")
            time.sleep(0.5)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
    rows, extra = counts(f"chdb://{workdir / 'ch'}")
    assert rows["trades"] == len(session.fills) and extra == 0


def test_replaying_a_journal_twice_records_each_row_once_and_query_reads_it(workdir):
    env = {k: v for k, v in os.environ.items() if k != "CLICKHOUSE_DSN"}
    demo = cli("demo", "--orders", "60", "--pace", "0", cwd=workdir, env=env)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "Rows in ClickHouse" in demo.stdout
    journal = workdir / "state" / "journal" / "demo-seed1.jsonl"
    first = cli("query", "SELECT count() FROM fills FINAL", "--json", cwd=workdir, env=env)
    assert first.returncode == 0, first.stderr
    fills = json.loads(first.stdout)["rows"][0][0]
    for _ in range(2):
        replay = cli("replay", str(journal), "--json", cwd=workdir, env=env)
        assert replay.returncode == 0 and "warning" not in replay.stderr, replay.stderr
    again = json.loads(cli("query", "SELECT count() FROM fills FINAL", "--json", cwd=workdir, env=env).stdout)["rows"][0][0]
    assert again == fills > 0
    refused = cli("query", "DROP TABLE fills", cwd=workdir, env=env)
    assert refused.returncode == 2 and "error" in refused.stderr
