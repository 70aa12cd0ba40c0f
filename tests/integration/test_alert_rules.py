"""The Prometheus rules and configuration in deploy/prometheus, checked by promtool.

Entry points: the tests below; each runs `promtool` (Debian's prometheus package, which
`make test` installs) from the repository root.

Invariants: a missing promtool fails these tests, it never skips them, so broken alert rules
cannot pass unnoticed. `execstate:market_open` is compared minute by minute over a whole week
with the sessions written out in Taipei time here (an independent statement of the same
calendar), because alerts_test.yml can only afford the first hour at a 1 s evaluation step.
"""

import json
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
TAIPEI = timezone(timedelta(hours=8))  # Asia/Taipei has no DST
WEEK_MINUTES = 7 * 24 * 60


def promtool(*args: str) -> None:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool not found: make test installs Debian's prometheus package", pytrace=False)
    proc = subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True, timeout=240)
    output = (proc.stdout + proc.stderr)[:20_000]
    assert proc.returncode == 0, f"promtool {' '.join(args)} exited {proc.returncode}:\n{output}"


def in_session(ts: int) -> bool:
    """Whether Unix time `ts` falls in a window the callback alert watches, in Taipei time:
    08:30-13:45 (stock orders and the TAIFEX day session) and 15:00-05:00 (TAIFEX night),
    opening Monday to Friday; holidays are not modelled."""
    local = datetime.fromtimestamp(ts, TAIPEI)
    minute = local.hour * 60 + local.minute
    opens_today = local.weekday() < 5
    opened_yesterday = (local - timedelta(days=1)).weekday() < 5
    day = opens_today and 8 * 60 + 30 <= minute < 13 * 60 + 45
    night = (opens_today and minute >= 15 * 60) or (opened_yesterday and minute < 5 * 60)
    return day or night


def test_alert_rules_pass_promtool_check():
    promtool("check", "rules", "deploy/prometheus/alerts.yml")


def test_prometheus_config_passes_promtool_check():
    promtool("check", "config", "deploy/prometheus/prometheus.yml")


def test_alert_rule_unit_tests_pass():
    promtool("test", "rules", "deploy/prometheus/tests/alerts_test.yml")


def test_market_open_matches_taipei_sessions_every_minute_of_a_week(tmp_path):
    # Arrange: Thursday 1970-01-01 00:00 UTC to the next Wednesday 23:59, one check a minute.
    checks = [
        {
            "expr": "execstate:market_open",
            "eval_time": f"{minute}m",
            "exp_samples": [{"labels": "execstate:market_open", "value": int(in_session(minute * 60))}],
        }
        for minute in range(WEEK_MINUTES)
    ]
    assert sum(c["exp_samples"][0]["value"] for c in checks) == 5 * (315 + 840)  # 5 days x (5h15 + 14h)
    spec = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "group_eval_order": ["execstate-recording", "execstate"],
        "tests": [{
            "name": "market_open over a week",
            "interval": "1m",
            "input_series": [{"series": 'halt_state{job="execstate"}', "values": "0x10"}],
            "promql_expr_test": checks,
        }],
    }
    test_file = tmp_path / "market_open_test.yml"
    test_file.write_text(json.dumps(spec))  # JSON is YAML

    # Act / Assert
    promtool("test", "rules", str(test_file))
