"""Local control endpoint: how an operator's terminal talks to the running service.

Entry points: `ControlServer(state_dir, handlers)` (`.start()`, `.stop()`, context manager),
`ControlClient(state_dir).request(command, **args)`, errors `ControlError` (an error reply;
`.code`, `.message`), `ServiceNotRunning` (a `ControlError`), `ControlStartError` and
`AlreadyRunning` (the server could not start).

Protocol: a Unix domain socket at `<state_dir>/control.sock`; one request per connection, one
JSON line each way (msgspec; `Decimal` travels as a string):
    -> {"token": "...", "command": "status", "args": {...}}
    <- {"ok": true, "result": ...}
    <- {"ok": false, "error": "one-line message", "code": "unauthorized" | "bad_request" | "unknown_command" | "failed"}
The client adds its own codes: "not_running", "timeout", "protocol" (and "unauthorized" for an unreadable token).

Invariants:
- Local only by construction (no network socket). The socket file is 0600 and a directory we
  create is 0700; on top of that every request carries the token the server wrote at start to
  `<state_dir>/control.token` (created 0600, never wider, replaced atomically), compared with
  `hmac.compare_digest`. A request with a wrong or missing token never reaches a handler.
- The token never reaches a log line, an error message or a handler's arguments. `token` hands
  it to the HTTP API (`telemetry.http`), which accepts it as a bearer token.
- Each connection is served on its own thread; a request is capped (64 KiB) and must arrive
  within the client deadline (5 s), so a stuck client or a slow handler blocks only itself.
- Handlers are called concurrently from those threads, so they must be thread-safe. A handler
  that raises becomes a `failed` reply; the server keeps serving.
- One server per state_dir: an exclusive `flock` on `<state_dir>/control.lock` (left in place,
  harmless) plus a probe of an existing socket. A socket left by a crashed process is replaced.
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import os
import secrets
import socket
import socketserver
import stat
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from execstate.telemetry.logging import get_logger

SOCKET_NAME = "control.sock"
TOKEN_NAME = "control.token"
LOCK_NAME = "control.lock"
MAX_REQUEST_BYTES = 64 * 1024
CLIENT_DEADLINE_S = 5.0
# sun_path is 108 bytes on Linux, including the terminating NUL (104 on macOS: bind reports it)
MAX_SOCKET_PATH_BYTES = 107

Handler = Callable[[dict], object]
log = get_logger("execstate.control")


class ControlError(Exception):
    """An error reply from the service (or a client-side failure), with a machine-readable code."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


class ServiceNotRunning(ControlError):
    """Nothing is serving the control socket of this state_dir."""

    def __init__(self, message: str) -> None:
        super().__init__("not_running", message)


class ControlStartError(RuntimeError):
    """The control server could not start (path too long, socket path taken, ...)."""


class AlreadyRunning(ControlStartError):
    """Another execstate process already serves this state_dir."""


class _BadRequest(Exception):
    pass


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _socket_path(state_dir: Path) -> Path:
    path = Path(state_dir) / SOCKET_NAME
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH_BYTES:
        raise ControlStartError(f"control socket path too long ({size} bytes > {MAX_SOCKET_PATH_BYTES}): {path}; use a shorter state_dir")
    return path


def _reply_error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": _one_line(message), "code": code}


class _UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True  # a stuck handler never keeps the process alive
    request_queue_size = 128  # listen backlog: bursts of operator scripts queue, not fail
    block_on_close = False
    control: ControlServer


class _ConnectionHandler(socketserver.BaseRequestHandler):
    server: _UnixServer

    def handle(self) -> None:
        self.server.control._serve_connection(self.request)


class ControlServer:
    """Serve `handlers` (command name -> `fn(args: dict) -> result`) on `<state_dir>/control.sock`.

    `start()` returns self and serves on a background thread; `stop()` closes the socket and
    removes the socket and token files. Use as a context manager to do both.
    """

    def __init__(self, state_dir: Path, handlers: Mapping[str, Handler], *, max_request_bytes: int = MAX_REQUEST_BYTES, client_deadline_s: float = CLIENT_DEADLINE_S) -> None:
        self.state_dir = Path(state_dir)
        self.socket_path = self.state_dir / SOCKET_NAME
        self.token_path = self.state_dir / TOKEN_NAME
        self.handlers = dict(handlers)
        self.max_request_bytes = max_request_bytes
        self.client_deadline_s = client_deadline_s
        self._token = b""
        self._lock_fd: int | None = None
        self._bound = False
        self._server: _UnixServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:  # never shows the token
        return f"ControlServer({str(self.state_dir)!r}, commands={sorted(self.handlers)})"

    @property
    def token(self) -> str:
        """The current token ("" before `start()` and after `stop()`), for the service's other local
        endpoints that accept the same one (the HTTP API). Never log it."""
        return self._token.decode("ascii")

    def start(self) -> ControlServer:
        """Write a fresh token, bind the socket, serve in the background. Raises `ControlStartError`."""
        if self._server is not None:
            return self
        _socket_path(self.state_dir)
        self._make_state_dir()
        try:
            self._acquire_lock()
            self._clear_stale_socket()
            self._write_token()
            self._server = self._bind()
        except BaseException:
            self._cleanup()
            raise
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), name="execstate-control", daemon=True)
        self._thread.start()
        log.info("control_started", socket=str(self.socket_path), commands=sorted(self.handlers))
        return self

    def stop(self) -> None:
        """Stop accepting, remove the socket and token files. Idempotent; in-flight requests finish on their threads."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            log.info("control_stopped", socket=str(self.socket_path))
        if self._thread is not None:
            self._thread.join()
        self._cleanup()

    def __enter__(self) -> ControlServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- start-up ---------------------------------------------------------------------------

    def _make_state_dir(self) -> None:
        with contextlib.suppress(FileExistsError):  # an existing directory keeps its mode
            self.state_dir.mkdir(parents=True, mode=0o700)
            os.chmod(self.state_dir, 0o700)

    def _already_running(self) -> AlreadyRunning:
        return AlreadyRunning(f"execstate is already running (control socket {self.socket_path})")

    def _acquire_lock(self) -> None:
        fd = os.open(self.state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._already_running() from None
        self._lock_fd = fd

    def _clear_stale_socket(self) -> None:
        try:
            mode = os.lstat(self.socket_path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ControlStartError(f"{self.socket_path} exists and is not a socket; move it away and start again")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(str(self.socket_path))
            except ConnectionRefusedError:
                pass  # nobody listens: the file is left over from a crash
            except (BlockingIOError, TimeoutError):  # a listener with a full backlog is alive
                raise self._already_running() from None
            except OSError as exc:
                raise ControlStartError(f"cannot check control socket {self.socket_path}: {exc}") from None
            else:
                raise self._already_running()
        self.socket_path.unlink(missing_ok=True)
        log.warning("control_stale_socket_replaced", socket=str(self.socket_path))

    def _write_token(self) -> None:
        token = secrets.token_urlsafe(32)
        tmp = self.state_dir / f"{TOKEN_NAME}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # the umask can only narrow 0600; make it exact anyway
            os.write(fd, token.encode("ascii") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.token_path)  # readers see the old token or the new one, never half
        self._token = token.encode("ascii")

    def _bind(self) -> _UnixServer:
        try:
            server = _UnixServer(str(self.socket_path), _ConnectionHandler)
        except OSError as exc:
            raise ControlStartError(f"cannot listen on control socket {self.socket_path}: {exc}") from exc
        self._bound = True
        os.chmod(self.socket_path, 0o600)  # had the umask's mode since bind; the token guarded that moment
        server.control = self
        return server

    def _cleanup(self) -> None:
        self._server = None
        self._thread = None
        # remove only what this server created: a failed start leaves another server's files alone.
        if self._bound:
            self.socket_path.unlink(missing_ok=True)
            self._bound = False
        if self._token:
            self.token_path.unlink(missing_ok=True)
            self._token = b""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # -- serving ----------------------------------------------------------------------------

    def _serve_connection(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + self.client_deadline_s
        try:
            reply = self._respond(self._read_request(conn, deadline))
        except _BadRequest as exc:
            reply = _reply_error("bad_request", str(exc))
        try:
            data = msgspec.json.encode(reply)
        except (TypeError, ValueError, OverflowError) as exc:  # a result msgspec cannot encode
            log.error("control_reply_unencodable", error=_one_line(f"{type(exc).__name__}: {exc}"))
            data = msgspec.json.encode(_reply_error("failed", f"{type(exc).__name__}: {exc}"))
        conn.settimeout(self.client_deadline_s)
        with contextlib.suppress(OSError):
            conn.sendall(data + b"\n")

    def _read_request(self, conn: socket.socket, deadline: float) -> bytes:
        buf = bytearray()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _BadRequest(f"request not received within {self.client_deadline_s:g} s")
            conn.settimeout(remaining)
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                raise _BadRequest(f"connection error while reading the request: {exc}") from None
            if not chunk:
                raise _BadRequest("connection closed before a complete request line")
            end = chunk.find(b"\n")
            buf += chunk if end < 0 else chunk[:end]
            if len(buf) > self.max_request_bytes:
                raise _BadRequest(f"request too large (limit {self.max_request_bytes} bytes)")
            if end >= 0:
                return bytes(buf)

    def _respond(self, line: bytes) -> dict[str, Any]:
        try:
            request = msgspec.json.decode(line)
        except msgspec.DecodeError as exc:
            return _reply_error("bad_request", f"request is not valid JSON: {exc}")
        if not isinstance(request, dict):
            return _reply_error("bad_request", "request must be a JSON object")
        if not self._authorized(request.pop("token", None)):
            log.warning("control_unauthorized", command=str(request.get("command"))[:64])
            return _reply_error("unauthorized", f"bad or missing token (read it from {self.token_path})")
        command, args = request.get("command"), request.get("args", {})
        if not isinstance(command, str) or not isinstance(args, dict):
            return _reply_error("bad_request", 'expected {"token": str, "command": str, "args": object}')
        handler = self.handlers.get(command)
        if handler is None:
            known = ", ".join(sorted(self.handlers)) or "none"
            return _reply_error("unknown_command", f"unknown command {command[:64]!r} (known: {known})")
        try:
            return {"ok": True, "result": handler(args)}
        except Exception as exc:
            log.error("control_handler_failed", command=command, exc_info=True)
            return _reply_error("failed", f"{type(exc).__name__}: {exc}")

    def _authorized(self, token: object) -> bool:
        if not isinstance(token, str) or not self._token:
            return False
        return hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self._token)


class ControlClient:
    """Send one command to the running service and return its result.

    `request(command, **args)` raises `ServiceNotRunning` when nothing serves the socket and
    `ControlError(code, message)` for an error reply, a timeout or an unreadable token.
    """

    def __init__(self, state_dir: Path, timeout_s: float = 10) -> None:
        self.state_dir = Path(state_dir)
        self.socket_path = self.state_dir / SOCKET_NAME
        self.token_path = self.state_dir / TOKEN_NAME
        self.timeout_s = timeout_s

    def request(self, command: str, /, **args: Any) -> Any:
        """Run `command` with `args` in the service; return its result (JSON types)."""
        deadline = time.monotonic() + self.timeout_s
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            self._connect(conn, deadline)
            payload = msgspec.json.encode({"token": self._read_token(), "command": command, "args": args}) + b"\n"
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                conn.sendall(payload)  # on a refused oversize request the reply is still waiting
            return self._read_reply(conn, command, deadline)

    def _connect(self, conn: socket.socket, deadline: float) -> None:
        not_running = f"execstate is not running (no control socket at {self.socket_path})"
        while True:
            conn.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                return conn.connect(str(self.socket_path))
            except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
                raise ServiceNotRunning(not_running) from None
            except (BlockingIOError, TimeoutError):  # listen backlog full: wait for a free slot
                if time.monotonic() >= deadline:
                    raise ControlError("timeout", f"execstate did not accept a connection within {self.timeout_s:g} s") from None
                time.sleep(0.01)
            except OSError as exc:  # e.g. "AF_UNIX path too long"
                raise ControlError("protocol", f"cannot connect to {self.socket_path}: {exc}") from None

    def _read_token(self) -> str:
        try:
            return self.token_path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            raise ServiceNotRunning(f"execstate is not running (no control token at {self.token_path})") from None
        except (PermissionError, UnicodeDecodeError) as exc:
            reason = f"{type(exc).__name__}; run as the user that started execstate"
            raise ControlError("unauthorized", f"cannot read control token {self.token_path}: {reason}") from None

    def _read_reply(self, conn: socket.socket, command: str, deadline: float) -> Any:
        chunks: list[bytes] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ControlError("timeout", f"no reply from execstate within {self.timeout_s:g} s (command {command!r})")
            conn.settimeout(remaining)
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                raise ControlError("protocol", f"connection to execstate failed: {exc}") from None
            chunks.append(chunk)
            if not chunk or b"\n" in chunk:
                break
        line = b"".join(chunks).split(b"\n", 1)[0]
        if not line:
            raise ControlError("protocol", f"execstate closed the connection without a reply (command {command!r})")
        try:
            reply = msgspec.json.decode(line)
        except msgspec.DecodeError as exc:
            raise ControlError("protocol", f"unreadable reply from execstate: {exc}") from None
        if not isinstance(reply, dict) or "ok" not in reply:
            raise ControlError("protocol", "unreadable reply from execstate: not a reply object")
        if reply["ok"]:
            return reply.get("result")
        raise ControlError(str(reply.get("code", "failed")), str(reply.get("error", "unknown error")))
