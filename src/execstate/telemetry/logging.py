"""Logging set-up: structlog, JSON lines in production, console in a terminal, optionally a file.

Entry points: `configure_logging(json=None, level="info", stream=None, file=None,
console_level=None)`, `redact`, `get_logger(name)`, `route(level)` / `json_lines_writer(level)`
(where high-volume lines go, and their fast path: see `telemetry.adjustments`),
`level_enabled(level)`, `LEVELS`.

Call `configure_logging` once at start (never at import): `execstate run` logs to stderr
(JSON unless stderr is a terminal); the demo and replays log JSON lines to a file at `level`
and only `console_level` and above to the terminal.

Invariants:
- Values of secret keys (API key, secret key, CA password, tokens) and `person_id` never
  reach a log line: the `redact` processor replaces them, at any depth of the event dict.
- Every output gets whole lines, one `write` per line (or per batch of ready-made lines),
  so lines from different threads never interleave mid-line.
"""

from __future__ import annotations

import json as _json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import msgspec
import structlog

SECRET_KEYS = frozenset({
    "api_key", "secret_key", "ca_passwd", "ca_password", "password", "token", "person_id",
    "sj_api_key", "sj_secret_key", "sj_ca_password", "sj_person_id",
})
_MASK = "***"
LEVELS = {"debug": 10, "info": 20, "msg": 20, "warning": 30, "warn": 30, "error": 40, "exception": 40, "critical": 50, "fatal": 50}
_CONTAINERS = (dict, list, tuple)


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (_MASK if str(k).lower() in SECRET_KEYS else _scrub(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v) for v in value)
    return value


def redact(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: mask secrets and personal ids (at any depth)."""
    if SECRET_KEYS.isdisjoint(k.lower() if type(k) is str else k for k in event_dict):
        for value in event_dict.values():
            if type(value) in _CONTAINERS:
                return _scrub(event_dict)
        return event_dict  # the common case: flat scalars, no secret key; nothing copied
    return _scrub(event_dict)


_json_encoder = msgspec.json.Encoder(enc_hook=str)


def _dumps(obj: Any, **_kw: Any) -> str:
    """JSON for a log line: msgspec (Decimals as strings, anything odd as str), stdlib as fallback."""
    try:
        return _json_encoder.encode(obj).decode()
    except (TypeError, ValueError, OverflowError):
        return _json.dumps(obj, default=str, ensure_ascii=False)


class _Output:
    """One destination: a text stream, a renderer and the lowest level it takes."""

    def __init__(self, stream: TextIO, json: bool, level: int, owned: bool = False) -> None:
        self.stream = stream
        self.json = json
        self.level = level
        self.owned = owned  # opened by us (a log file): closed on reconfiguration
        self.render = structlog.processors.JSONRenderer(serializer=_dumps) if json else structlog.dev.ConsoleRenderer(colors=False)
        self.lock = threading.Lock()

    def write(self, text: str) -> None:
        with self.lock:
            self.stream.write(text)
            self.stream.flush()

    def write_bytes(self, data: bytes) -> None:
        """Ready-made UTF-8 lines: straight to the binary layer when there is one (no decode and
        re-encode), after whatever the text layer holds."""
        binary = getattr(self.stream, "buffer", None)
        if binary is None:
            self.write(data.decode())
            return
        with self.lock:
            self.stream.flush()
            binary.write(data)
            binary.flush()


class _FanOut:
    """The logger at the end of the processor chain: renders the event dict once per output
    whose level admits the method's level. structlog calls `logger.<method>(**event_dict)`."""

    def __init__(self, outputs: tuple[_Output, ...]) -> None:
        self._outputs = outputs

    def _emit(self, method: str, event_dict: dict[str, Any]) -> None:
        level = LEVELS[method]
        for out in self._outputs:
            if level >= out.level:  # the console renderer pops keys: it gets a copy
                out.write(out.render(None, method, event_dict if out.json else dict(event_dict)) + "\n")


def _method(name: str) -> Callable[..., None]:
    def emit(self: _FanOut, **event_dict: Any) -> None:
        self._emit(name, event_dict)

    emit.__name__ = name
    return emit


for _name in LEVELS:
    setattr(_FanOut, _name, _method(_name))


def _to_outputs(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Last processor: hands the event dict to `_FanOut` (as keywords). Its presence at the end
    of the chain marks the configuration as ours (`capture_logs` replaces the chain in place)."""
    return event_dict


class _Active:
    """What the last `configure_logging` set up (for the fast path and for closing files)."""

    def __init__(self, outputs: tuple[_Output, ...]) -> None:
        self.outputs = outputs
        self.writers: dict[int, Any] = {}  # level -> what `route` returns for it


_active: _Active | None = None


def _ours() -> _Active | None:
    processors = structlog.get_config()["processors"]
    return _active if processors and processors[-1] is _to_outputs else None


def _level(name: str) -> int:
    value = LEVELS.get(name.lower())
    if value is None:
        raise ValueError(f"log level {name!r}: expected one of debug, info, warning, error, critical")
    return value


def configure_logging(
    json: bool | None = None,
    level: str = "info",
    stream: TextIO | None = None,
    file: str | Path | None = None,
    console_level: str | None = None,
) -> None:
    """Configure structlog (call once, at start).

    `stream` (default stderr) gets lines at `console_level` (default `level`) and above, as
    JSON (`json=True`), console text (`json=False`) or JSON unless the stream is a terminal
    (`json=None`). `file`, when given, gets JSON lines at `level` and above (opened for
    appending, line-buffered; its directory is created).
    """
    global _active
    out = stream or sys.stderr
    if json is None:
        json = not (hasattr(out, "isatty") and out.isatty())
    outputs = [_Output(out, json, _level(console_level or level))]
    if file is not None:
        path = Path(file)
        path.parent.mkdir(parents=True, exist_ok=True)
        outputs.append(_Output(path.open("a", buffering=1, encoding="utf-8"), True, _level(level), owned=True))
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
        structlog.processors.format_exc_info,
        _to_outputs,
    ]
    previous, fan_out = _active, _FanOut(tuple(outputs))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(min(o.level for o in outputs)),
        logger_factory=lambda *_args: fan_out,
        cache_logger_on_first_use=False,  # tests swap the configuration (capture_logs)
    )
    _active = _Active(tuple(outputs))
    if previous is not None:
        for o in previous.outputs:
            if o.owned:
                o.stream.close()


STRUCTLOG = "structlog"


def route(level: str = "info") -> Callable[[bytes], None] | str | None:
    """Where a high-volume line at `level` goes under the current configuration (decide once
    per batch): None, nowhere (the level is filtered out, or structlog was never configured:
    no one chose a destination for such volume); `STRUCTLOG`, through structlog line by line
    (console rendering, `capture_logs` in tests, someone else's configuration); else a
    function writing ready-made JSON lines (newline-terminated UTF-8) to every output that
    takes `level`, all of which render JSON (this module's configuration)."""
    if not structlog.is_configured():
        return None
    active = _ours()
    if active is None:
        return STRUCTLOG
    wanted = _level(level)
    writer = active.writers.get(wanted)
    if writer is None:
        targets = tuple(o for o in active.outputs if wanted >= o.level)
        if not targets:
            writer = active.writers[wanted] = _NOWHERE
        elif not all(o.json for o in targets):
            writer = active.writers[wanted] = STRUCTLOG
        else:
            def write(data: bytes) -> None:
                for o in targets:
                    o.write_bytes(data)

            writer = active.writers[wanted] = write
    return None if writer is _NOWHERE else writer


_NOWHERE = "nowhere"


def json_lines_writer(level: str = "info") -> Callable[[bytes], None] | None:
    """The writer `route(level)` gives, or None when lines at `level` go through structlog or nowhere."""
    found = route(level)
    return found if callable(found) else None


def level_enabled(level: str) -> bool:
    """Whether a line at `level` would be written anywhere under the current configuration."""
    active = _ours()
    if active is None:
        return True  # not ours (tests, defaults): let structlog decide
    return any(_level(level) >= o.level for o in active.outputs)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
