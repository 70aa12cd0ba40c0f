"""A real Prometheus server (Debian's package) on loopback scrapes a running `execstate run`:
the metrics arrive, and a callback gap with orders working fires ExecstateCallbacksStopped.

The rules are the shipped ones, except the market-hours recording rule, which is pinned open
(`vector(1)`) so the test does not depend on the time of day it runs at.
"""

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from service_proc import spawn
from service_proc import wait_for as _wait_for
import yaml

ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate, timeout, what):
    return _wait_for(predicate, timeout, what, poll_s=0.5)


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "execstate.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(port: int, path: str, **params) -> dict:
    url = f"http://127.0.0.1:{port}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.loads(reply.read())




@pytest.fixture
def workdir():
    path = Path(tempfile.mkdtemp(prefix="es-prom-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_prometheus_scrapes_the_service_and_a_callback_gap_fires_the_alert(workdir):
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus not found: make test installs Debian's prometheus package"
    # a day that ends with an order working
    service = spawn([sys.executable, "-m", "execstate.cli", "run", "--orders", "120", "--pace", "400"], cwd=workdir)
    prom = None
    try:
        status = wait_for(lambda: (s := cli("status", "--json", cwd=workdir)).returncode in (0, 1)
                          and json.loads(s.stdout).get("phase") == "running" and json.loads(s.stdout), 60, "the service")
        target = urllib.parse.urlsplit(status["metrics_url"]).netloc
        rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                if rule.get("record") == "execstate:market_open":
                    rule["expr"] = "vector(1)"  # pinned open: the test must not depend on the hour
        (workdir / "alerts.yml").write_text(yaml.safe_dump(rules))
        (workdir / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(workdir / "alerts.yml")],
            "scrape_configs": [{"job_name": "execstate", "static_configs": [{"targets": [target]}]}],
        }))
        port = free_port()
        prom = subprocess.Popen([prometheus, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

        def fills_seen():
            result = api(port, "/api/v1/query", query='execution_events_total{type="fill"}')["data"]["result"]
            return result and float(result[0]["value"][1]) > 0

        wait_for(fills_seen, 60, "execution_events_total in Prometheus")
        # the simulated day ends with orders still working and no more callbacks: a callback gap
        wait_for(lambda: json.loads(cli("status", "--json", cwd=workdir).stdout)["outstanding_orders"] > 0, 30, "working orders")

        def alert_firing():
            alerts = api(port, "/api/v1/alerts")["data"]["alerts"]
            return [a for a in alerts if a["labels"]["alertname"] == "ExecstateCallbacksStopped" and a["state"] == "firing"]

        firing = wait_for(alert_firing, 60, "ExecstateCallbacksStopped firing")
        assert firing[0]["labels"]["severity"] == "warn"  # not page: a resting order in a quiet market looks the same
        up = api(port, "/api/v1/query", query='up{job="execstate"}')["data"]["result"]
        assert float(up[0]["value"][1]) == 1
    finally:
        if prom is not None:
            prom.terminate()
            prom.wait(timeout=30)
        service.send_signal(signal.SIGTERM)
        service.communicate(timeout=60)
