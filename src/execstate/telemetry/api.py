"""The dashboard API's contract: response types, routes and the OpenAPI document built from them.

Entry points: `Route`, `API_ROUTES` (name -> `Route`), `StatusResponse`, `PositionsResponse`,
`OrdersResponse`, `ErrorResponse`, `openapi_document(routes)`, `API_PREFIX`.

Invariants:
- The OpenAPI `components.schemas` are generated from these types with
  `msgspec.json.schema_components`, and the server converts every handler result into its
  route's type before encoding: the description and the responses cannot drift apart (a
  result that does not fit is a 500, never an undocumented shape).
- Money and prices are decimal text ("1234.5"), as in `replay --json` and `snapshot --json`;
  positions keep exactly that row shape (quantity as integer text), plus the unrealized PnL
  and the mark price. Times are int ns since the epoch.
- Only the API's own paths need the token; `/metrics` (Prometheus scrapes it) and
  `/api/v1/openapi.json` (shapes only, no data) do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from execstate.domain.events import Correction
from execstate.normalize.orders import OrderRow
from execstate.reconcile.diff import Discrepancy
from execstate.reconcile.gateway import GatewayStats
from execstate.reconcile.pnl import PnlDiscrepancy

API_PREFIX = "/api/v1"
OPENAPI_PATH = f"{API_PREFIX}/openapi.json"
METRICS_PATH = "/metrics"
API_VERSION = "1.0.0"

DecimalText = Annotated[str, msgspec.Meta(pattern=r"^-?[0-9]+(\.[0-9]+)?$", description="Exact decimal as text, e.g. \"-1234.5\".")]
IntegerText = Annotated[str, msgspec.Meta(pattern=r"^-?[0-9]+$", description="Integer as text (book units: shares or contracts).")]
Nanoseconds = Annotated[int, msgspec.Meta(description="Nanoseconds since the Unix epoch.")]


class ErrorResponse(msgspec.Struct, frozen=True):
    """Every refusal or failure: 401 (token), 404, 405, 500, 503 (not ready, retry later)."""

    error: str


class HaltInfo(msgspec.Struct, frozen=True):
    halted: bool
    reason: str
    since_ns: Nanoseconds


class ReconcileSummary(msgspec.Struct, frozen=True):
    """The last reconciliation with the broker (`execstate reconcile` prints the same)."""

    reason: str
    accounts: list[str]
    started_ns: Nanoseconds
    duration_ms: float
    records_resubmitted: int
    recovered_fills: int
    discrepancies: list[Discrepancy]
    pending: list[Discrepancy]
    corrections: list[Correction]
    error: str
    halted: bool
    pnl_discrepancies: Annotated[list[PnlDiscrepancy], msgspec.Meta(
        description="Unrealized PnL differences from the broker's over reconcile.max_pnl_mismatch_twd (TWD, decimal text)."
    )] = msgspec.field(default_factory=list)


class FiringAlert(msgspec.Struct, frozen=True):
    """One in-process alert rule firing (deploy/prometheus/alerts.yml's rules, `telemetry/alerts.py`)."""

    alert: str
    cause: Annotated[str, msgspec.Meta(description="The rule's `cause` label; \"\" when the alert has one rule.")]
    severity: Annotated[str, msgspec.Meta(description="page | warn")]
    halts: Annotated[bool, msgspec.Meta(description="Whether the rule HALTs the service when it starts firing.")]
    firing_since_s: Annotated[float, msgspec.Meta(description="Unix time, s, it started firing.")]
    values: Annotated[dict[str, Any], msgspec.Meta(description="The readings and threshold it fired on.")]


class StatusResponse(msgspec.Struct, frozen=True):
    """What `execstate status --json` shows: connection, callbacks, queue, orders, counts, HALT, alerts."""

    phase: Annotated[str, msgspec.Meta(description="starting | running | stopping")]
    connection: Annotated[str, msgspec.Meta(description="up | reconnecting | down | unknown")]
    connection_since_ns: Nanoseconds
    last_callback_ns: Nanoseconds
    callback_gap_s: float | None
    queue_depth: int
    outstanding_orders: int
    counts: dict[str, int]
    halt: HaltInfo
    last_reconcile: ReconcileSummary | None
    journal: str
    uptime_s: float
    metrics_url: str
    broker_budget: GatewayStats
    recorder: dict[str, Any] | None
    alerts: Annotated[list[FiringAlert], msgspec.Meta(description="In-process alert rules firing now.")] = msgspec.field(default_factory=list)


class PositionRow(msgspec.Struct, frozen=True):
    """One position per (account, strategy, symbol): the `snapshot --json` row, plus marks."""

    account: str
    strategy: str
    symbol: str
    quantity: IntegerText
    avg_price: DecimalText
    realized_pnl: DecimalText
    fees: DecimalText
    taxes: DecimalText
    unrealized_pnl: DecimalText
    mark_price: DecimalText | None


class PositionsResponse(msgspec.Struct, frozen=True):
    """All positions at one store sequence number."""

    seq: int
    ts: Nanoseconds
    positions: list[PositionRow]


class OrdersResponse(msgspec.Struct, frozen=True):
    """The day's orders, in the order first seen, with their current status and quantities."""

    day: Annotated[str, msgspec.Meta(description="Trading day, YYYY-MM-DD (Taipei).")]
    orders: list[OrderRow]


@dataclass(frozen=True)
class Route:
    """One read-only JSON endpoint: `GET {API_PREFIX}/{name}` answers with `response`."""

    name: str
    summary: str
    response: type
    description: str = ""

    @property
    def path(self) -> str:
        return f"{API_PREFIX}/{self.name}"


API_ROUTES: dict[str, Route] = {
    r.name: r
    for r in (
        Route("status", "Service status", StatusResponse, "Connection, last callback and gap, queue, outstanding orders, counts, HALT, firing alerts."),
        Route("positions", "Positions and PnL", PositionsResponse, "503 while the service is starting (journal replay, opening reconcile)."),
        Route("orders", "Orders of the day", OrdersResponse, "Status and quantities of every order seen today. 503 while starting."),
    )
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}


def openapi_document(routes: list[Route] | tuple[Route, ...]) -> dict[str, Any]:
    """The OpenAPI 3.1 description of `routes` (plus /metrics and the document itself)."""
    refs, components = msgspec.json.schema_components([ErrorResponse, *(r.response for r in routes)],
                                                      ref_template="#/components/schemas/{name}")
    paths: dict[str, Any] = {}
    for route, ref in zip(routes, refs[1:]):
        paths[route.path] = {"get": {
            "operationId": f"get_{route.name}", "summary": route.summary, "description": route.description,
            "responses": {
                "200": {"description": route.summary, "content": {"application/json": {"schema": ref}}},
                "401": _error("Missing or wrong bearer token (the control token, `<state_dir>/control.token`)."),
                "500": _error("The handler failed; the reason is in `error`."),
                "503": _error("Not ready (starting, stopping, or the pipeline is busy): try again."),
            },
        }}
    paths[OPENAPI_PATH] = {"get": {
        "operationId": "get_openapi", "summary": "This document", "security": [],
        "responses": {"200": {"description": "OpenAPI 3.1 document", "content": {"application/json": {"schema": {"type": "object"}}}}},
    }}
    paths[METRICS_PATH] = {"get": {
        "operationId": "get_metrics", "summary": "Prometheus metrics", "security": [],
        "description": "Prometheus text format, or OpenMetrics when the Accept header asks for it.",
        "responses": {"200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                      "500": _error("A collector failed.")},
    }}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "execstate dashboard API", "version": API_VERSION,
            "description": "Read-only views of the running service, on its loopback HTTP server. "
                           "Send the control token as `Authorization: Bearer <token>`. Money is decimal text.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearerToken": {"type": "http", "scheme": "bearer",
                                                "description": "The control endpoint's token, from `<state_dir>/control.token` (0600)."}},
        },
        "security": [{"bearerToken": []}],
    }
