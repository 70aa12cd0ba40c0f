"""deploy/grafana/execstate.json: an importable dashboard whose queries name only metrics that
execstate exposes (telemetry/names.py) and are valid PromQL (promtool parses each one as a
recording rule). promtool is Debian's prometheus package, which `make test` installs."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from execstate.telemetry import names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "execstate.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
# template variables, as Grafana would fill them in (instance: "All", a regex)
VARIABLES = {"job": "execstate", "instance": ".*"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset", "inf", "nan"}


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _panels(dashboard: dict) -> list[dict]:
    """Every panel, rows' nested panels included."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _queries(dashboard: dict) -> list[tuple[int, str, str]]:
    return [(p["id"], t["refId"], t["expr"]) for p in _panels(dashboard) if p["type"] != "row" for t in p["targets"]]


def _metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers left once strings, label matchers,
    ranges and grouping clauses are removed, that are not function calls or keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    found = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", text):
        if re.match(r"\s*\(", text[m.end():]) or m.group().lower() in NOT_METRICS:
            continue
        found.add(m.group())
    return found


def _exposed() -> set[str]:
    return {v for k, v in vars(names).items() if k.isupper() and isinstance(v, str)}


def _base(name: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in _exposed():
            return name.removesuffix(suffix)
    return name


def test_dashboard_is_grafana_json_with_a_prometheus_datasource_variable():
    d = _dashboard()

    assert d["title"] == "execstate" and d["uid"] == "execstate"
    assert 36 <= d["schemaVersion"] <= 41
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert set(VARIABLES) <= set(variables)


def test_panel_ids_are_unique_and_panels_do_not_overlap():
    panels = _panels(_dashboard())
    ids = [p["id"] for p in panels]

    assert len(ids) == len(set(ids))
    cells = {}
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]


def test_every_panel_has_the_datasource_and_targets():
    for p in _panels(_dashboard()):
        if p["type"] == "row":
            continue  # a row is a heading: no query
        assert p["datasource"] == DATASOURCE, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DATASOURCE and t["expr"].strip(), (p["title"], t["refId"])
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]


def test_metric_name_extraction():
    expr = ('histogram_quantile(0.99, sum by (le) (rate(position_delta_latency_ms_bucket{job="$job", le=~"1(\\\\.0)?"}[1m])))'
            ' + on (instance) group_left (state) 2 * max(connection_state{state="up"}) > bool 1e3 unless halt_state offset 5m')

    assert _metric_names(expr) == {"position_delta_latency_ms_bucket", "connection_state", "halt_state"}


def test_every_metric_in_a_query_is_defined_in_names_py():
    # Arrange
    used = {_base(name) for _, _, expr in _queries(_dashboard()) for name in _metric_names(expr)}

    # Assert
    assert used - _exposed() == set()
    wanted = {  # the panels the dashboard is for
        names.EXECUTION_EVENTS_TOTAL, names.POSITION_DELTA_LATENCY_MS, names.CALLBACK_GAP_SECONDS, names.QUEUE_DEPTH,
        names.RECONCILIATION_DURATION_MS, names.RECONCILIATION_MISMATCHES_TOTAL, names.RECONCILIATION_CORRECTIONS_TOTAL,
        names.BROKER_QUERY_BUDGET_USED, names.RECORDER_SPOOL_ROWS, names.RECORDER_SPOOL_OLDEST_AGE_SECONDS, names.HALT_STATE,
        names.CONNECTION_STATE, names.POSITIONS_OPEN, names.REALIZED_PNL_TWD, names.UNREALIZED_PNL_TWD, names.FEES_TWD,
        names.ALERTS_FIRING,
    }
    assert wanted - used == set()


def _fill_variables(expr: str) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: VARIABLES[m.group(1)], expr)


def test_every_query_is_valid_promql(tmp_path):
    # Arrange: each query as a recording rule, so promtool parses it
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool not found: install Debian's prometheus package (make test does)")
    queries = _queries(_dashboard())
    rules = {"groups": [{"name": "grafana-dashboard", "rules": [
        {"record": f"dashboard:panel{panel}_{ref}", "expr": _fill_variables(expr)} for panel, ref, expr in queries]}]}
    rules_file = tmp_path / "dashboard_rules.yml"
    rules_file.write_text(yaml.safe_dump(rules, sort_keys=False))

    # Act
    proc = subprocess.run([exe, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=120)

    # Assert
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[:5000]
    assert f"SUCCESS: {len(queries)} rules found" in proc.stdout
