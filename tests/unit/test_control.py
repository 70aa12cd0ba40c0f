"""The control endpoint over real Unix sockets: auth, errors, concurrency, lifecycle."""

import shutil
import socket
import stat
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from structlog.testing import capture_logs

from execstate.control import AlreadyRunning, ControlClient, ControlError, ControlServer, ControlStartError, ServiceNotRunning


@pytest.fixture
def state_dir():
    # tmp_path can exceed the 108-byte limit of a Unix socket path; /tmp keeps it short
    root = Path(tempfile.mkdtemp(prefix="es-", dir="/tmp"))
    yield root / "state"
    shutil.rmtree(root, ignore_errors=True)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _raw_request(sock_path: Path, payload: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(5)
        conn.connect(str(sock_path))
        conn.sendall(payload)
        return msgspec.json.decode(conn.makefile("rb").readline())


def _leave_stale_socket(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: what a crashed process leaves


def test_command_with_args_round_trips(state_dir):
    handlers = {"echo": lambda args: {"got": args, "price": Decimal("101.5")}}
    with ControlServer(state_dir, handlers):
        result = ControlClient(state_dir).request("echo", symbol="2330", quantity=3)
    assert result == {"got": {"symbol": "2330", "quantity": 3}, "price": "101.5"}


def test_wrong_or_missing_token_is_refused_and_handler_not_called(state_dir):
    calls = []
    with ControlServer(state_dir, {"status": calls.append}) as server:
        wrong = _raw_request(server.socket_path, b'{"token": "guess", "command": "status", "args": {}}\n')
        missing = _raw_request(server.socket_path, b'{"command": "status"}\n')
    assert wrong["ok"] is False and wrong["code"] == "unauthorized"
    assert missing["code"] == "unauthorized"
    assert calls == []


def test_token_and_socket_are_private_and_new_state_dir_is_0700(state_dir):
    with ControlServer(state_dir, {}) as server:
        assert _mode(server.token_path) == 0o600
        assert _mode(server.socket_path) == 0o600
        assert stat.S_ISSOCK(server.socket_path.stat().st_mode)
        assert _mode(state_dir) == 0o700
        assert len(server.token_path.read_text().strip()) >= 40


def test_each_start_writes_a_fresh_token(state_dir):
    with ControlServer(state_dir, {}) as server:
        first = server.token_path.read_text()
    with ControlServer(state_dir, {}) as server:
        second = server.token_path.read_text()
    assert first != second


def test_unknown_command_names_the_known_ones(state_dir):
    with ControlServer(state_dir, {"status": lambda a: "up"}), pytest.raises(ControlError) as err:
        ControlClient(state_dir).request("flatten")
    assert err.value.code == "unknown_command"
    assert "'flatten'" in err.value.message and "status" in err.value.message


def test_raising_handler_fails_that_request_and_server_keeps_serving(state_dir):
    def boom(args):
        raise ValueError("no such account\nsecond line")

    with ControlServer(state_dir, {"boom": boom, "status": lambda a: "up"}):
        client = ControlClient(state_dir)
        with pytest.raises(ControlError) as err:
            client.request("boom")
        after = client.request("status")
    assert err.value.code == "failed"
    assert err.value.message == "ValueError: no such account second line"
    assert after == "up"


def test_slow_handler_does_not_delay_status(state_dir):
    handlers = {"slow": lambda a: time.sleep(1) or "done", "status": lambda a: "up"}
    with ControlServer(state_dir, handlers):
        client = ControlClient(state_dir)
        slow = threading.Thread(target=client.request, args=("slow",))
        slow.start()
        time.sleep(0.1)  # the slow request is inside its handler now
        started = time.monotonic()
        assert client.request("status") == "up"
        elapsed = time.monotonic() - started
        slow.join()
    assert elapsed < 0.5


def test_silent_client_does_not_block_others_and_is_dropped_after_deadline(state_dir):
    with ControlServer(state_dir, {"status": lambda a: "up"}, client_deadline_s=0.3) as server:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
            idle.settimeout(5)
            idle.connect(str(server.socket_path))
            assert ControlClient(state_dir).request("status") == "up"
            reply = msgspec.json.decode(idle.makefile("rb").readline())
    assert reply["code"] == "bad_request" and "within" in reply["error"]


def test_client_without_server_says_not_running(state_dir):
    with pytest.raises(ServiceNotRunning) as err:
        ControlClient(state_dir).request("status")
    assert str(err.value) == f"execstate is not running (no control socket at {state_dir / 'control.sock'})"
    assert "\n" not in str(err.value)


def test_client_against_stale_socket_says_not_running(state_dir):
    _leave_stale_socket(state_dir / "control.sock")
    with pytest.raises(ServiceNotRunning):
        ControlClient(state_dir).request("status")


def test_stale_socket_from_crash_is_replaced(state_dir):
    _leave_stale_socket(state_dir / "control.sock")
    with ControlServer(state_dir, {"status": lambda a: "up"}):
        assert ControlClient(state_dir).request("status") == "up"


def test_second_server_on_same_state_dir_fails_and_first_keeps_working(state_dir):
    with ControlServer(state_dir, {"status": lambda a: "up"}) as first:
        token = first.token_path.read_text()
        with pytest.raises(AlreadyRunning) as err:
            ControlServer(state_dir, {}).start()
        assert str(err.value) == f"execstate is already running (control socket {state_dir / 'control.sock'})"
        assert first.token_path.read_text() == token
        assert ControlClient(state_dir).request("status") == "up"


def test_live_foreign_listener_on_socket_is_not_replaced(state_dir):
    state_dir.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(state_dir / "control.sock"))
        other.listen()
        with pytest.raises(AlreadyRunning):
            ControlServer(state_dir, {}).start()
        assert (state_dir / "control.sock").exists()
        assert not (state_dir / "control.token").exists()


def test_oversize_request_is_bad_request(state_dir):
    calls = []
    with ControlServer(state_dir, {"status": calls.append}), pytest.raises(ControlError) as err:
        ControlClient(state_dir).request("status", blob="x" * 200_000)
    assert err.value.code == "bad_request" and "too large" in err.value.message
    assert calls == []


def test_malformed_json_is_bad_request(state_dir):
    with ControlServer(state_dir, {}) as server:
        reply = _raw_request(server.socket_path, b"{not json\n")
    assert reply["ok"] is False and reply["code"] == "bad_request"


def test_stop_removes_socket_and_token_and_client_then_says_not_running(state_dir):
    server = ControlServer(state_dir, {"status": lambda a: "up"}).start()
    server.stop()
    server.stop()  # idempotent
    assert not (state_dir / "control.sock").exists()
    assert not (state_dir / "control.token").exists()
    with pytest.raises(ServiceNotRunning):
        ControlClient(state_dir).request("status")


def test_socket_path_too_long_fails_with_clear_message():
    long_dir = Path("/tmp") / ("x" * 120)
    with pytest.raises(ControlStartError, match="too long"):
        ControlServer(long_dir, {}).start()
    assert not long_dir.exists()


def test_token_never_reaches_the_logs(state_dir):
    def boom(args):
        raise RuntimeError("broken")

    with capture_logs() as logs, ControlServer(state_dir, {"boom": boom}) as server:
        token = server.token_path.read_text().strip()
        with pytest.raises(ControlError):
            ControlClient(state_dir).request("boom")
        _raw_request(server.socket_path, b'{"token": "guess", "command": "boom"}\n')
    assert {entry["event"] for entry in logs} >= {"control_started", "control_handler_failed", "control_unauthorized"}
    assert token not in repr(logs)
    assert token not in repr(server)


def test_client_with_too_long_state_dir_fails_with_clear_message():
    with pytest.raises(ControlError, match="too long"):
        ControlClient(Path("/tmp") / ("x" * 120)).request("status")


def test_burst_of_concurrent_clients_all_get_answers(state_dir):
    results = []
    with ControlServer(state_dir, {"status": lambda a: "up"}):
        client = ControlClient(state_dir)
        threads = [threading.Thread(target=lambda: results.append(client.request("status"))) for _ in range(200)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == ["up"] * 200
