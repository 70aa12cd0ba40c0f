"""The dashboard API of a running `execstate run` (simulated broker), read like a dashboard would.

After the simulated day has played: /api/v1/positions equals the control `snapshot`,
/api/v1/orders lists every order of the session with the final status the broker's truth
implies, /api/v1/status says running; a request without the token is refused.
"""

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from service_proc import spawn
from service_proc import wait_for as _wait_for
import yaml

from execstate.bridge.sim import SimConfig, generate_session
from execstate.config import DEFAULT_CONFIG_PATH
from execstate.control import ControlClient, ControlError

ORDERS = 80


def wait_for(predicate, timeout, what):
    return _wait_for(predicate, timeout, what, errors=(OSError, ControlError))


def get(url: str, token: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def expected_status(order, filled: int) -> str:
    """The final status the simulated broker's truth implies for one order."""
    if order.rejected:
        return "Failed"
    if "Cancel" in order.ops:
        return "Cancelled"
    if filled == 0:
        return "Submitted"
    return "Filled" if order.filled >= order.live_quantity else "PartFilled"


@pytest.fixture
def workdir():
    path = Path(tempfile.mkdtemp(prefix="es-api-", dir="/tmp"))  # short: Unix socket paths are limited
    settings = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    settings["telemetry"]["metrics_port"] = 0  # any free port: no clash with other tests
    settings["recorder"].update(enabled=False, parquet_snapshots=False)
    (path / "config.yaml").write_text(yaml.safe_dump(settings))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def service(workdir):
    proc = spawn([sys.executable, "-m", "execstate.cli", "run", "-c", "config.yaml", "--orders", str(ORDERS), "--pace", "0"], cwd=workdir)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)




def _order_states(rows: list[dict]) -> dict:
    return {(r["account"], r["order_id"]): (r["status"], r["filled_quantity"], r["strategy"], r["symbol"]) for r in rows}


def test_dashboard_api_serves_the_books_the_orders_and_the_status_of_a_played_day(workdir, service):
    session = generate_session(SimConfig(seed=1, n_orders=ORDERS))
    filled = Counter()
    for f in session.fills:
        filled[(f.account, f.order_id)] += f.quantity
    expected = {(o.account, o.order_id): (expected_status(o, filled[(o.account, o.order_id)]), filled[(o.account, o.order_id)], o.strategy_id, o.symbol)
                for o in session.orders}
    control = ControlClient(workdir / "state")
    status = wait_for(lambda: (s := control.request("status"))["phase"] == "running" and s, 60, "the service")
    assert status["metrics_url"].startswith("http://127.0.0.1:")
    base = status["metrics_url"].removesuffix("/metrics") + "/api/v1"
    token = (workdir / "state" / "control.token").read_text().strip()
    wait_for(lambda: _order_states(get(f"{base}/orders", token)[1]["orders"]) == expected
             and control.request("status")["queue_depth"] == 0, 60, "the simulated day to play")

    # Act
    unauthorized = get(f"{base}/positions")
    wrong = get(f"{base}/orders", token + "x")
    snap = control.request("snapshot")
    positions = get(f"{base}/positions", token)
    orders = get(f"{base}/orders", token)
    api_status = get(f"{base}/status", token)
    openapi = get(f"{base}/openapi.json")

    # Assert: no token, no data
    assert unauthorized[0] == 401 and set(unauthorized[1]) == {"error"}
    assert wrong[0] == 401
    # positions: the control snapshot's rows, plus the unrealized PnL it reports apart
    assert positions[0] == 200 and positions[1]["seq"] == snap["seq"]
    rows = positions[1]["positions"]
    assert rows and [{k: v for k, v in r.items() if k not in ("unrealized_pnl", "mark_price")} for r in rows] == snap["positions"]
    for r in rows:
        assert Decimal(r["unrealized_pnl"]) == Decimal(snap["unrealized"][f"{r['account']}|{r['strategy']}|{r['symbol']}"])
    # orders: every order of the session, with the final status and fills the broker's truth implies
    assert orders[0] == 200 and orders[1]["day"] == session.config.trade_date.isoformat()
    assert len(orders[1]["orders"]) == len(session.orders)
    assert _order_states(orders[1]["orders"]) == expected
    assert {"Filled", "Cancelled", "Failed"} <= {state for state, *_ in expected.values()}  # the day covers them all
    # status: the control status, read over HTTP
    assert api_status[0] == 200
    assert api_status[1]["phase"] == "running" and api_status[1]["connection"] == "up"
    assert api_status[1]["counts"]["fills"] == control.request("status")["counts"]["fills"]
    # the in-process alerts firing, as `execstate status --json` lists them (alert, cause, severity, values...)
    assert isinstance(api_status[1]["alerts"], list)
    assert all({"alert", "cause", "severity", "halts", "firing_since_s", "values"} == set(a) for a in api_status[1]["alerts"])
    assert openapi[0] == 200 and set(openapi[1]["paths"]) >= {"/api/v1/status", "/api/v1/positions", "/api/v1/orders"}


def test_run_prints_the_api_url_and_never_the_token(workdir):
    proc = spawn([sys.executable, "-m", "execstate.cli", "run", "-c", "config.yaml", "--orders", "20", "--pace", "0"], cwd=workdir)
    try:
        control = ControlClient(workdir / "state")
        status = wait_for(lambda: (s := control.request("status"))["phase"] == "running" and s, 60, "the service")
        token = (workdir / "state" / "control.token").read_text().strip()
        base = status["metrics_url"].removesuffix("/metrics") + "/api/v1"
        assert get(f"{base}/status", token + "-wrong")[0] == 401  # logged as refused, without the token
        assert get(f"{base}/status", token)[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    api_line = next(line for line in err.splitlines() if line.startswith("API: "))
    assert f"{base}/" in api_line and "Authorization: Bearer" in api_line
    assert token not in out + err


def test_positions_and_orders_are_503_with_the_reason_until_start_up_is_done(workdir):
    from execstate.config import load_settings
    from execstate.service import Service, simulated_session
    from execstate.telemetry.http import start_server, stop_server
    from prometheus_client import CollectorRegistry

    settings = load_settings(workdir / "config.yaml").model_copy(update={"state_dir": workdir / "state"})
    api, accounts, _session, _ = simulated_session(settings, 1, 20)
    service = Service(settings, api, accounts)  # constructed, not started: phase "starting"
    server = start_server(CollectorRegistry(), {"positions": service._api_positions, "orders": service._api_orders}, "t0ken")
    try:
        for name in ("positions", "orders"):
            code, body = get(f"{server.api_url}{name}", "t0ken")
            assert code == 503 and "starting" in body["error"] and "try again" in body["error"]
    finally:
        stop_server(server)
        service.gateway.close()
