"""Logging set-up: outputs and levels, JSON vs console, log files, redaction, the fast path."""

import io
import json
import subprocess
import sys

import pytest
import structlog
from structlog.testing import capture_logs

from execstate.telemetry import logging as logmod
from execstate.telemetry.logging import configure_logging, get_logger, json_lines_writer, level_enabled, redact


@pytest.fixture(autouse=True)
def restore_structlog():
    saved = structlog.get_config()
    yield
    active = logmod._active
    if active is not None:
        for out in active.outputs:
            if out.owned:
                out.stream.close()
    logmod._active = None
    structlog.configure(**saved)


def _lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_on_a_stream_that_is_not_a_terminal():
    # Arrange
    out = io.StringIO()
    configure_logging(level="info", stream=out)

    # Act
    get_logger("t").info("something_happened", account="9A95-1234567", quantity=3)
    get_logger("t").debug("not_shown")

    # Assert
    (line,) = _lines(out.getvalue())
    assert line["event"] == "something_happened" and line["level"] == "info" and line["quantity"] == 3
    assert line["timestamp"].endswith("Z")


def test_console_text_when_asked():
    # Arrange
    out = io.StringIO()
    configure_logging(json=False, level="info", stream=out)

    # Act
    get_logger("t").warning("broker_event", resp_code=500)

    # Assert
    text = out.getvalue()
    assert "broker_event" in text and "resp_code=500" in text and not text.startswith("{")


def test_file_gets_json_at_level_and_console_only_warnings(tmp_path):
    # Arrange
    out, path = io.StringIO(), tmp_path / "logs" / "demo-2026-11-25.jsonl"
    configure_logging(json=False, level="info", stream=out, file=path, console_level="warning")

    # Act
    log = get_logger("t")
    log.debug("too_low")
    log.info("position_adjusted", reason="fill")
    log.warning("order_failed", op_code="88")

    # Assert
    assert [e["event"] for e in _lines(path.read_text())] == ["position_adjusted", "order_failed"]
    assert "order_failed" in out.getvalue() and "position_adjusted" not in out.getvalue()


def test_log_file_is_appended_to(tmp_path):
    # Arrange
    path = tmp_path / "replay.jsonl"
    path.write_text('{"event":"earlier"}\n')

    # Act
    configure_logging(level="info", stream=io.StringIO(), file=path, console_level="warning")
    get_logger("t").info("later")

    # Assert
    assert [e["event"] for e in _lines(path.read_text())] == ["earlier", "later"]


def test_secrets_and_person_id_are_masked_at_any_depth():
    # Arrange
    out = io.StringIO()
    configure_logging(level="info", stream=out)

    # Act
    get_logger("t").info("login", api_key="AK-1", nested={"account": {"person_id": "A123456789"}}, items=[{"SJ_SECRET_KEY": "SK-1"}])

    # Assert
    text = out.getvalue()
    assert "AK-1" not in text and "A123456789" not in text and "SK-1" not in text
    assert _lines(text)[0]["nested"] == {"account": {"person_id": "***"}}


def test_redact_leaves_a_flat_event_untouched_and_copies_only_when_needed():
    flat = {"event": "x", "account": "9A95-1234567"}
    assert redact(None, "info", flat) is flat
    secret = {"event": "x", "token": "t0k"}
    assert redact(None, "info", secret) == {"event": "x", "token": "***"} and secret["token"] == "t0k"


def test_decimals_and_odd_values_are_rendered_as_text():
    # Arrange
    from decimal import Decimal
    from pathlib import Path

    out = io.StringIO()
    configure_logging(level="info", stream=out)

    # Act
    get_logger("t").info("values", price=Decimal("512.50"), path=Path("/tmp/x"), pair=(1, "a"))

    # Assert
    (line,) = _lines(out.getvalue())
    assert line["price"] == "512.50" and line["path"] == "/tmp/x" and line["pair"] == [1, "a"]


def test_bad_level_is_refused():
    with pytest.raises(ValueError, match="log level"):
        configure_logging(level="loud", stream=io.StringIO())


def test_fast_path_only_when_every_output_at_the_level_renders_json(tmp_path):
    # JSON stream: fast path
    configure_logging(json=True, level="info", stream=io.StringIO())
    assert json_lines_writer("info") is not None
    # console at info: structlog renders
    configure_logging(json=False, level="info", stream=io.StringIO())
    assert json_lines_writer("info") is None
    # console only for warnings, JSON file at info: fast path for info lines
    configure_logging(json=False, level="info", stream=io.StringIO(), file=tmp_path / "x.jsonl", console_level="warning")
    assert json_lines_writer("info") is not None and json_lines_writer("warning") is None
    # tests capturing logs: structlog
    with capture_logs():
        assert json_lines_writer("info") is None and level_enabled("info")
    assert json_lines_writer("info") is not None


def test_fast_path_writes_whole_lines_to_its_outputs(tmp_path):
    # Arrange
    out, path = io.StringIO(), tmp_path / "x.jsonl"
    configure_logging(json=True, level="info", stream=out, file=path, console_level="warning")

    # Act
    json_lines_writer("info")(b'{"event":"a"}\n{"event":"b","note":"\xe5\x8f\xb0"}\n')

    # Assert
    assert [e["event"] for e in _lines(path.read_text())] == ["a", "b"]
    assert _lines(path.read_text(encoding="utf-8"))[1]["note"] == "台"
    assert out.getvalue() == ""  # the console takes warnings only


def test_level_enabled_follows_the_outputs():
    configure_logging(level="warning", stream=io.StringIO())
    assert not level_enabled("info") and level_enabled("error")


def test_importing_the_package_configures_nothing():
    code = (
        "import structlog, execstate.cli, execstate.app, execstate.service, execstate.jobs, execstate.telemetry.adjustments;"
        "from execstate.telemetry import logging as l; print(l._active is None, structlog.is_configured())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["True", "False"], result.stderr[-2000:]


def test_ready_made_lines_and_structlog_lines_keep_their_order_in_a_file(tmp_path):
    # Arrange
    path = tmp_path / "x.jsonl"
    configure_logging(json=True, level="info", stream=io.StringIO(), file=path, console_level="warning")
    log, write = get_logger("t"), json_lines_writer("info")

    # Act
    log.info("one")
    write(b'{"event":"two"}\n')
    log.info("three")

    # Assert
    assert [e["event"] for e in _lines(path.read_text())] == ["one", "two", "three"]
