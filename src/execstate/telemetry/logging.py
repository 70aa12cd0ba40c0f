"""Logging set-up: structlog, JSON lines in production, console in a terminal.

Entry points: `configure_logging(json=None, level="info", stream=None)`, `redact`.
Call once at start (never at import). Invariant: values of secret keys (API key, secret
key, CA password, tokens) and `person_id` never reach a log line: the `redact` processor
replaces them, at any depth of the event dict.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

SECRET_KEYS = frozenset({"api_key", "secret_key", "ca_passwd", "ca_password", "password", "token", "person_id", "sj_api_key", "sj_secret_key"})
_MASK = "***"


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (_MASK if str(k).lower() in SECRET_KEYS else _scrub(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v) for v in value)
    return value


def redact(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: mask secrets and personal ids."""
    return _scrub(event_dict)


def configure_logging(json: bool | None = None, level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog once. `json=None`: JSON unless the stream is a terminal."""
    out = stream or sys.stderr
    if json is None:
        json = not out.isatty()
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
