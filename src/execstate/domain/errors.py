"""Errors that name what was wrong.

Entry points: `FieldError` (bad field value), `MalformedEvent` (raw payload rejected),
`ConfigError` (bad settings file). Every message names the field, the value and what was expected.
"""

from __future__ import annotations


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class FieldError(ValueError):
    """A field holds a value of the wrong type or range."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field = field
        self.value = value
        self.expected = expected
        super().__init__(f"{field}={_short(value)}: expected {expected}")


class MalformedEvent(ValueError):
    """A raw broker event that cannot be normalized; `reason` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ConfigError(ValueError):
    """The settings file is invalid; the message lists every bad key with its value."""
