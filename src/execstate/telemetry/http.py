"""The loopback HTTP server: Prometheus `/metrics` and the read-only dashboard API, one port.

Entry points: `start_server(registry, handlers, token, host, port) -> TelemetryHTTPServer`
(`.metrics_url`, `.api_url`, `.openapi`), `stop_server(server)`, `Unavailable` (raise it in a
handler for a 503). The API's contract (paths, response types, OpenAPI) is in `telemetry.api`.

Routes (GET only; anything else is 405 with `Allow: GET`):
    /metrics                 no token: Prometheus text (OpenMetrics if the Accept header asks)
    /api/v1/openapi.json     no token: the OpenAPI 3.1 document (shapes only, no data)
    /api/v1/<name>           `Authorization: Bearer <token>`: `handlers[name]()` as JSON
Every reply other than /metrics is JSON; a refusal or failure is `{"error": "..."}`: 401 (with
`WWW-Authenticate: Bearer`), 404, 405, 500 (handler failed, or its result does not fit the
route's type), 503 (`Unavailable` or `TimeoutError`: not ready, try again).

Invariants:
- Loopback only: a non-loopback host is a ValueError before anything binds.
- The server knows nothing of the service: it gets a registry, zero-arg handlers by route
  name (each must have a `Route` in `routes`, so nothing undocumented is served) and a token.
- The token is compared with `hmac.compare_digest` and never logged or echoed: request
  headers are not logged at all. A wrong or missing token never reaches a handler.
- Each request is served on its own daemon thread with a socket timeout, so a stuck client or
  a slow handler blocks only itself; handlers are called concurrently and must be thread-safe.
- A handler that raises becomes a JSON 5xx with the reason; the connection is always answered.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import msgspec
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from execstate.telemetry.api import API_PREFIX, API_ROUTES, METRICS_PATH, OPENAPI_PATH, Route, openapi_document
from execstate.telemetry.logging import get_logger

log = get_logger("execstate.http")

Handler = Callable[[], Any]
REQUEST_TIMEOUT_S = 10.0
_JSON = "application/json"
_ENCODER = msgspec.json.Encoder()


class Unavailable(Exception):
    """Raised by a handler when its data is not ready (start-up, shutdown): answered with 503."""


def require_loopback(host: str) -> None:
    """ValueError unless `host` is "localhost" or a loopback address."""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the HTTP server binds a loopback address only, got {host!r}")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


class TelemetryHTTPServer(ThreadingHTTPServer):
    """`ThreadingHTTPServer` serving `/metrics` and the API; see the module docstring."""

    daemon_threads = True  # a stuck request never keeps the process alive
    block_on_close = False
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry, handlers: Mapping[str, Handler], token: str,
                 routes: Mapping[str, Route]) -> None:
        unknown = sorted(set(handlers) - set(routes))
        if unknown:
            raise ValueError(f"handlers without a documented route: {unknown}")
        if handlers and not token:
            raise ValueError("the API needs a token (an empty one would refuse every request)")
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.registry = registry
        self.handlers = dict(handlers)
        self.routes = {routes[name].path: routes[name] for name in handlers}
        self._token = token.encode("utf-8")
        self.openapi = _ENCODER.encode(openapi_document(tuple(self.routes.values())))
        super().__init__(address, _RequestHandler)
        self.thread: threading.Thread | None = None

    def __repr__(self) -> str:  # never shows the token
        return f"TelemetryHTTPServer({self.base_url!r}, routes={sorted(self.handlers)})"

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    @property
    def metrics_url(self) -> str:
        return self.base_url + METRICS_PATH

    @property
    def api_url(self) -> str:
        return self.base_url + API_PREFIX + "/"

    def authorized(self, header: str | None) -> bool:
        scheme, _, credentials = (header or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not self._token:
            return False
        return hmac.compare_digest(credentials.strip().encode("utf-8", "surrogateescape"), self._token)


class _RequestHandler(BaseHTTPRequestHandler):
    server: TelemetryHTTPServer
    timeout = REQUEST_TIMEOUT_S
    server_version = "execstate"
    sys_version = ""
    error_content_type = _JSON

    # -- dispatch ---------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = urlsplit(self.path).path
        if path == METRICS_PATH:
            return self._metrics()
        if path == OPENAPI_PATH:
            return self._send(HTTPStatus.OK, self.server.openapi)
        route = self.server.routes.get(path)
        if route is None:
            known = ", ".join([METRICS_PATH, OPENAPI_PATH, *self.server.routes])
            return self._error(HTTPStatus.NOT_FOUND, f"no such path {path[:100]!r} (known: {known})")
        if not self.server.authorized(self.headers.get("Authorization")):
            log.warning("http_unauthorized", path=path)
            return self._error(HTTPStatus.UNAUTHORIZED, "missing or wrong token: send 'Authorization: Bearer <token>' "
                               "with the control token (<state_dir>/control.token)", {"WWW-Authenticate": 'Bearer realm="execstate"'})
        self._api(route)

    def _not_allowed(self) -> None:
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} not allowed: the API is read-only (GET)", {"Allow": "GET"})

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed  # noqa: N815

    # -- routes -----------------------------------------------------------------------------

    def _metrics(self) -> None:
        try:
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            body = encoder(self.server.registry)
        except Exception as exc:
            log.error("http_metrics_failed", error=_one_line(repr(exc)))
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"metrics failed: {type(exc).__name__}: {exc}")
        self._send(HTTPStatus.OK, body, content_type)

    def _api(self, route: Route) -> None:
        try:
            result = self.server.handlers[route.name]()
        except (Unavailable, TimeoutError) as exc:
            return self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"{exc}" or type(exc).__name__, {"Retry-After": "1"})
        except Exception as exc:
            log.error("http_handler_failed", route=route.name, exc_info=True)
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")
        try:
            if not isinstance(result, route.response):
                result = msgspec.convert(msgspec.to_builtins(result), route.response)
            body = _ENCODER.encode(result)
        except (msgspec.ValidationError, TypeError, ValueError, OverflowError) as exc:
            log.error("http_response_invalid", route=route.name, error=_one_line(str(exc)))
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"the {route.name} result does not match its schema: {exc}")
        self._send(HTTPStatus.OK, body)

    # -- replies ----------------------------------------------------------------------------

    def _error(self, status: HTTPStatus, message: str, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, _ENCODER.encode({"error": _one_line(message)}), headers=headers)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str = _JSON, headers: Mapping[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError as exc:  # the client went away: nothing left to answer
            log.debug("http_client_gone", error=repr(exc))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (bad request line, unsupported method, ...) as JSON too."""
        self.close_connection = True
        try:
            status = HTTPStatus(code)
        except ValueError:
            status = HTTPStatus.BAD_REQUEST
        allow = {"Allow": "GET"} if status in (HTTPStatus.NOT_IMPLEMENTED, HTTPStatus.METHOD_NOT_ALLOWED) else None
        if status is HTTPStatus.NOT_IMPLEMENTED:  # an unknown method: read-only, GET only
            status = HTTPStatus.METHOD_NOT_ALLOWED
        self._send(status, _ENCODER.encode({"error": _one_line(message or status.phrase)}), headers=allow)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        """Request lines at debug only (paths, never headers: the token stays out of the logs)."""
        log.debug("http_request", client=self.address_string(), line=_one_line(format % args))


def start_server(registry: CollectorRegistry, handlers: Mapping[str, Handler] | None = None, token: str = "", *,
                 host: str = "127.0.0.1", port: int = 0, routes: Mapping[str, Route] = API_ROUTES) -> TelemetryHTTPServer:
    """Serve `/metrics` from `registry` and the API from `handlers` on a loopback address.

    `port=0` picks a free port. Serves on a daemon thread; stop with `stop_server(server)`.
    Raises ValueError for a non-loopback
    host, a handler without a route or handlers without a token; OSError when the port is taken.
    """
    require_loopback(host)
    server = TelemetryHTTPServer((host, port), registry, handlers or {}, token, routes)
    server.thread = threading.Thread(target=server.serve_forever, args=(0.2,), name="execstate-http", daemon=True)
    server.thread.start()
    log.info("http_server_started", metrics_url=server.metrics_url, api_url=server.api_url if server.handlers else None)
    return server


def stop_server(server: TelemetryHTTPServer) -> None:
    """Stop serving and close the socket; in-flight requests finish on their daemon threads."""
    server.shutdown()
    server.server_close()
    if server.thread is not None:
        server.thread.join(timeout=5)
