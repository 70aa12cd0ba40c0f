"""A full `execstate run --broker sim` at log level debug, with credentials and a person_id in
the environment (the simulated accounts carry that person_id in every order payload, as a real
login's do) and a malformed payload delivered through the callback (a dead letter): none of
those values may appear in the logs, any file under the state directory, or any ClickHouse
table. The logs must show the lines the service owes (so this fails if logging were off)."""

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

SECRETS = {
    "SJ_API_KEY": "AKx7Q2-api-key-9f3e1c",
    "SJ_SECRET_KEY": "SKz4W8-secret-key-b62d0a",
    "SJ_CA_PASSWORD": "CAp5V1-ca-password-77e4",
    "SJ_PERSON_ID": "Z129384756",
}

# The service as the CLI runs it, with one addition standing in for a faulty broker: shortly
# after the bridge is attached, Shioaji's order callback receives a malformed order event
# (an unknown action) whose account carries the person_id.
RUNNER = r"""
import os, sys, threading
import shioaji as sj
from execstate.bridge import shioaji_adapter

MALFORMED = {
    "event_id": "evt-malformed-1",
    "operation": {"op_type": "New", "op_code": "00", "op_msg": ""},
    "order": {"id": "badbad01", "seqno": "900001", "ordno": "Z9999",
              "account": {"account_type": "S", "person_id": os.environ["SJ_PERSON_ID"], "broker_id": "9A95",
                          "account_id": "1234567", "signed": True, "username": ""},
              "action": "Hold", "price": 10.0, "quantity": 1, "time_in_force": "ROD", "order_type": "ROD",
              "price_type": "LMT", "order_cond": "Cash", "order_lot": "Common", "custom_field": ""},
    "status": {"id": "badbad01", "exchange_ts": 1795567749.5, "modified_price": 0.0, "cancel_quantity": 0,
               "order_quantity": 1, "web_id": "137"},
    "contract": {"exchange": "TSE", "code": "2330", "security_type": "STK", "symbol": "TSE2330", "name": "", "currency": "TWD"},
}
attach = shioaji_adapter.ShioajiBridge.attach

def attach_then_misbehave(self):
    out = attach(self)
    threading.Timer(0.3, lambda: self.on_order(sj.OrderState.StockOrder, MALFORMED)).start()
    return out

shioaji_adapter.ShioajiBridge.attach = attach_then_misbehave
from execstate.cli import main
sys.argv = ["execstate", *sys.argv[1:]]
main()
"""


def cli(*args, cwd, timeout=120):
    return subprocess.run([sys.executable, "-m", "execstate.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def workdir():
    path = Path(tempfile.mkdtemp(prefix="es-", dir="/tmp"))  # a Unix socket path must stay short
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def run_service(workdir):
    """Start, let the simulated day play and a reconciliation pass, stop; (stdout, stderr, control token)."""
    env = {**os.environ, **SECRETS}
    proc = spawn([sys.executable, "-c", RUNNER, "run", "--broker", "sim", "--orders", "80", "--pace", "400", "--log-level", "debug"], cwd=workdir, env=env)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"service exited early: {proc.stderr_text()[-3000:]}")
            answer = cli("status", "--json", cwd=workdir)
            if answer.returncode in (0, 1):
                status = json.loads(answer.stdout)
                if status.get("phase") == "running" and status["counts"]["fills"] >= 50 and status["queue_depth"] == 0 and status["counts"]["dead_letters"] >= 1:
                    break
            time.sleep(0.3)
        else:
            raise AssertionError("the simulated day did not play")
        reconcile = cli("reconcile", cwd=workdir)  # one more check, at debug: resubmitted records and all
        assert reconcile.returncode in (0, 1), reconcile.stderr
        token = (workdir / "state" / "control.token").read_text().strip()  # a secret of the service's own
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err[-3000:]
    return out, err, token


def clickhouse_dump(workdir):
    """Every row of every table, as the CLI prints it (the service is stopped: the embedded engine is ours)."""
    tables = cli("query", "SHOW TABLES", "--json", cwd=workdir)
    assert tables.returncode == 0, tables.stderr
    names = [row[0] for row in json.loads(tables.stdout)["rows"]]
    assert {"fills", "orders", "position_deltas", "dead_letters"} <= set(names), names
    dump = {}
    for name in names:
        result = cli("query", f"SELECT * FROM {name}", "--json", cwd=workdir)
        assert result.returncode == 0, result.stderr
        dump[name] = result.stdout
    return dump


def test_no_secret_and_no_person_id_anywhere_after_a_full_run(workdir):
    # Act
    out, err, token = run_service(workdir)
    dump = clickhouse_dump(workdir)

    # Assert: nowhere
    files = [p for p in (workdir / "state").rglob("*") if p.is_file()]
    assert any(p.parent.name == "journal" for p in files) and any(p.suffix == ".parquet" for p in files)
    assert not (workdir / "state" / "control.token").exists()  # removed at stop
    for name, value in {**SECRETS, "control token": token}.items():
        needle = value.encode()
        assert value not in err and value not in out, f"{name} in the service's output"
        for path in files:
            assert needle not in path.read_bytes(), f"{name} in {path.relative_to(workdir)}"
        for table, rows in dump.items():
            assert value not in rows, f"{name} in ClickHouse table {table}"
    assert "person_id" not in "".join(dump.values())

    # Assert: the logs are there, with what they owe
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    events = {}
    for line in lines:
        events.setdefault(line["event"], []).append(line)
    fills = [e for e in events.get("position_adjusted", []) if e["reason"] == "fill"]
    assert len(fills) >= 50 and all(e["account"] and e["symbol"] and e["order_id"] for e in fills)
    assert any(e["source"] == "callback" for e in events.get("duplicate_dropped", [])), "no live duplicate logged"
    assert {e["reason"] for e in events.get("reconcile_result", [])} >= {"startup", "operator"}
    (dead,) = events["dead_letter"]
    assert "action" in dead["reason"]
    dead_rows = json.loads(dump["dead_letters"])["rows"]
    assert len(dead_rows) == 1 and "badbad01" in json.dumps(dead_rows)  # recorded, without the person_id
    assert any(e["level"] == "debug" for e in lines)  # the run was at debug
