"""The loopback HTTP server: token, errors as JSON, /metrics, the OpenAPI document, loopback only."""

import http.client
import json
import threading
from decimal import Decimal

import jsonschema
import pytest
from openapi_spec_validator import validate
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from execstate.normalize.orders import OrderBook, EventKind
from execstate.reconcile.gateway import GatewayStats
from execstate.telemetry.api import API_ROUTES, openapi_document
from execstate.telemetry.http import Unavailable, start_server, stop_server

TOKEN = "s3cret-token_value"

STATUS = {
    "phase": "running", "connection": "up", "connection_since_ns": 1, "last_callback_ns": 2, "callback_gap_s": 0.5,
    "queue_depth": 0, "outstanding_orders": 1, "counts": {"fills": 3, "orders": 4},
    "halt": {"halted": False, "reason": "", "since_ns": 1},
    "last_reconcile": None, "journal": "state/journal/x.jsonl", "uptime_s": 12.5, "metrics_url": "http://127.0.0.1:1/metrics",
    "broker_budget": GatewayStats({"portfolio": 2}, 0, 0, 0, 0.0, 0.0, 0.0, {"portfolio": 1}, None),
    "recorder": None,
}
POSITIONS = {"seq": 7, "ts": 99, "positions": [{
    "account": "S1", "strategy": "momo", "symbol": "2330", "quantity": "2000", "avg_price": "985.5", "realized_pnl": "-12",
    "fees": "1.4", "taxes": "0", "unrealized_pnl": "1000", "mark_price": "986",
}]}


def _orders():
    book = OrderBook()
    book.on_order_event("S1", "ord1", EventKind.NEW, 2000, 0, ts=5)
    book.on_fill("S1", "ord1", 1000, ts=6)
    return {"day": "2026-11-25", "orders": book.rows()}


class Calls:
    def __init__(self):
        self.n = 0

    def __call__(self, value):
        def handler():
            self.n += 1
            return value() if callable(value) else value
        return handler


@pytest.fixture
def registry():
    reg = CollectorRegistry()
    Counter("execution_events", "Events.", ["type"], registry=reg).labels("fill").inc(3)
    return reg


@pytest.fixture
def calls():
    return Calls()


@pytest.fixture
def server(registry, calls):
    srv = start_server(registry, {"status": calls(STATUS), "positions": calls(POSITIONS), "orders": calls(_orders)}, TOKEN)
    yield srv
    stop_server(srv)


def request(srv, path, method="GET", token=None, headers=None):
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    try:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        conn.request(method, path, headers=hdrs)
        reply = conn.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        conn.close()


def test_api_request_without_a_token_is_refused_before_the_handler(server, calls):
    status, headers, body = request(server, "/api/v1/positions")

    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert headers["Content-Type"] == "application/json"
    assert "token" in json.loads(body)["error"]
    assert calls.n == 0


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}x", "Bearer ", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN[:-1]}"])
def test_wrong_token_or_scheme_is_refused(server, calls, header):
    status, _, body = request(server, "/api/v1/status", headers={"Authorization": header})

    assert status == 401 and "error" in json.loads(body)
    assert calls.n == 0


def test_the_token_is_never_logged(server):
    with capture_logs() as logs:
        request(server, "/api/v1/status", token=TOKEN + "wrong")
        request(server, "/api/v1/status", token=TOKEN)

    assert logs and TOKEN not in repr(logs)
    assert TOKEN not in repr(server)


@pytest.mark.parametrize("name,expected", [("status", STATUS), ("positions", POSITIONS)])
def test_right_token_returns_the_handlers_data_as_json(server, name, expected):
    status, headers, body = request(server, f"/api/v1/{name}?ignored=1", token=TOKEN)

    assert status == 200 and headers["Content-Type"] == "application/json"
    data = json.loads(body)
    if name == "status":
        assert data["counts"] == {"fills": 3, "orders": 4} and data["broker_budget"]["calls"] == {"portfolio": 2}
        assert data["last_reconcile"] is None and data["halt"]["halted"] is False
    else:
        assert data == expected


def test_status_carries_the_firing_alerts_and_the_last_reconciles_pnl_differences(registry):
    # Arrange: Service._status's shape, with an alert firing and a reconcile that found a PnL difference
    firing = {"alert": "ExecstateReconciliationPnlMismatch", "cause": "", "severity": "warn", "halts": False,
              "firing_since_s": 1779330615.0, "values": {"account": "S1", "mismatch_pnl_twd": 2000.0, "threshold_twd": 100.0}}
    last = {"reason": "poll", "accounts": ["S1"], "started_ns": 5, "duration_ms": 12.5, "records_resubmitted": 3, "recovered_fills": 0,
            "discrepancies": [], "pending": [], "corrections": [], "error": "", "halted": False,
            "pnl_discrepancies": [{"account": "S1", "symbol": "2330", "ours": "13788.00", "broker": "11788", "diff_twd": "-2000.00",
                                   "tolerance_twd": "100.00"}]}
    srv = start_server(registry, {"status": lambda: dict(STATUS, alerts=[firing], last_reconcile=last)}, TOKEN)
    try:
        doc = json.loads(request(srv, "/api/v1/openapi.json")[2])
        schema = doc["paths"]["/api/v1/status"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]

        # Act
        status, _, body = request(srv, "/api/v1/status", token=TOKEN)
    finally:
        stop_server(srv)

    # Assert
    data = json.loads(body)
    assert status == 200 and data["alerts"] == [firing]
    assert data["last_reconcile"]["pnl_discrepancies"] == last["pnl_discrepancies"]
    jsonschema.validate(data, {**schema, "components": doc["components"]})
    assert "alerts" in doc["components"]["schemas"]["StatusResponse"]["properties"]


def test_status_without_alerts_says_none_are_firing(server):
    status, _, body = request(server, "/api/v1/status", token=TOKEN)

    assert status == 200 and json.loads(body)["alerts"] == []


def test_orders_come_out_as_rows_with_status_and_quantities(server):
    status, _, body = request(server, "/api/v1/orders", token=TOKEN)

    assert status == 200
    assert json.loads(body) == {"day": "2026-11-25", "orders": [{
        "account": "S1", "order_id": "ord1", "status": "PartFilled", "strategy": "unassigned", "symbol": "",
        "order_quantity": 2000, "cancel_quantity": 0, "filled_quantity": 1000, "live_quantity": 2000, "last_ts": 6,
    }]}


def test_metrics_need_no_token_and_are_prometheus_text(server):
    status, headers, body = request(server, "/metrics")

    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples = {s.name: s.value for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}
    assert samples["execution_events_total"] == 3.0


def test_metrics_honor_an_openmetrics_accept_header(server):
    status, headers, body = request(server, "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})

    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


@pytest.mark.parametrize("path", ["/", "/api/v1/", "/api/v1/nope", "/metrics/x", "/api/v1/status/"])
def test_unknown_path_is_a_json_404(server, path):
    status, headers, body = request(server, path, token=TOKEN)

    assert status == 404 and headers["Content-Type"] == "application/json"
    assert "no such path" in json.loads(body)["error"]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "FROB"])
def test_anything_but_get_is_a_405_the_api_is_read_only(server, calls, method):
    status, headers, body = request(server, "/api/v1/status", method=method, token=TOKEN)

    assert status == 405 and headers["Allow"] == "GET"
    assert "error" in json.loads(body)
    assert calls.n == 0


def test_head_is_a_405_without_a_body(server):
    status, headers, body = request(server, "/metrics", method="HEAD")

    assert status == 405 and headers["Allow"] == "GET" and body == b""


@pytest.mark.parametrize("exc,code", [(RuntimeError("books broken"), 500), (Unavailable("execstate is starting"), 503),
                                      (TimeoutError("pipeline worker busy"), 503)])
def test_a_failing_handler_is_a_json_5xx_with_the_reason_and_the_server_goes_on(registry, exc, code):
    def boom():
        raise exc

    srv = start_server(registry, {"status": boom, "positions": lambda: POSITIONS}, TOKEN)
    try:
        with capture_logs():
            status, headers, body = request(srv, "/api/v1/status", token=TOKEN)
        assert status == code
        assert str(exc) in json.loads(body)["error"]
        if code == 503:
            assert headers["Retry-After"] == "1"
        assert request(srv, "/api/v1/positions", token=TOKEN)[0] == 200
    finally:
        stop_server(srv)


def test_a_result_that_does_not_fit_its_schema_is_a_500_not_an_undocumented_shape(registry):
    srv = start_server(registry, {"positions": lambda: {"seq": "seven", "ts": 1, "positions": []}}, TOKEN)
    try:
        with capture_logs():
            status, _, body = request(srv, "/api/v1/positions", token=TOKEN)
        assert status == 500 and "schema" in json.loads(body)["error"]
    finally:
        stop_server(srv)


def test_decimals_from_a_handler_travel_as_text(registry):
    row = dict(POSITIONS["positions"][0], avg_price=Decimal("985.5"))
    srv = start_server(registry, {"positions": lambda: {"seq": 1, "ts": 1, "positions": [row]}}, TOKEN)
    try:
        status, _, body = request(srv, "/api/v1/positions", token=TOKEN)
        assert status == 200 and json.loads(body)["positions"][0]["avg_price"] == "985.5"
    finally:
        stop_server(srv)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com"])
def test_a_non_loopback_host_is_refused(registry, host):
    with pytest.raises(ValueError, match="loopback"):
        start_server(registry, {"status": lambda: STATUS}, TOKEN, host=host)


def test_handlers_need_a_documented_route_and_a_token(registry):
    with pytest.raises(ValueError, match="route"):
        start_server(registry, {"secret": lambda: {}}, TOKEN)
    with pytest.raises(ValueError, match="token"):
        start_server(registry, {"status": lambda: STATUS}, "")


def test_openapi_document_is_served_without_a_token_and_is_valid(server):
    status, headers, body = request(server, "/api/v1/openapi.json")

    assert status == 200 and headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {"/api/v1/status", "/api/v1/positions", "/api/v1/orders", "/api/v1/openapi.json", "/metrics"}
    assert doc["paths"]["/api/v1/openapi.json"]["get"]["security"] == [] and doc["security"] == [{"bearerToken": []}]


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_schema_reference_resolves_in_components():
    doc = openapi_document(tuple(API_ROUTES.values()))

    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref


@pytest.mark.parametrize("name", ["status", "positions", "orders"])
def test_every_response_validates_against_its_documented_schema(server, name):
    doc = json.loads(request(server, "/api/v1/openapi.json")[2])
    schema = doc["paths"][f"/api/v1/{name}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]

    status, _, body = request(server, f"/api/v1/{name}", token=TOKEN)

    assert status == 200
    jsonschema.validate(json.loads(body), {**schema, "components": doc["components"]})


def test_error_replies_validate_against_the_error_schema(server):
    doc = json.loads(request(server, "/api/v1/openapi.json")[2])
    error_schema = {"$ref": "#/components/schemas/ErrorResponse", "components": doc["components"]}

    for path, token in (("/api/v1/status", None), ("/nope", TOKEN)):
        jsonschema.validate(json.loads(request(server, path, token=token)[2]), error_schema)


def test_concurrent_requests_are_served(server):
    results = []

    def get():
        results.append(request(server, "/api/v1/status", token=TOKEN)[0])

    threads = [threading.Thread(target=get) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    assert results == [200] * 16


def test_urls_name_the_bound_port(server):
    port = server.server_address[1]

    assert server.metrics_url == f"http://127.0.0.1:{port}/metrics"
    assert server.api_url == f"http://127.0.0.1:{port}/api/v1/"
