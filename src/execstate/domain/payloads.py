"""Helpers on Shioaji payloads shared by the bridge and the normalizer.

Entry points: `state_name(state) -> "SORDER"|"SDEAL"|"FORDER"|"FDEAL"|other`, `to_plain(msg)`.
Invariant: neither mutates its input; `to_plain` returns JSON-ready builtins only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from execstate.domain.errors import MalformedEvent

_STATE_ALIASES = {"StockOrder": "SORDER", "StockDeal": "SDEAL", "FuturesOrder": "FORDER", "FuturesDeal": "FDEAL"}


def state_name(state: Any) -> str:
    """"SDEAL" from a shioaji `OrderState`, its name ("StockDeal") or a plain string."""
    value = getattr(state, "value", state)
    if not isinstance(value, str):
        raise MalformedEvent(f"state={state!r:.60}: expected SORDER, SDEAL, FORDER or FDEAL")
    return _STATE_ALIASES.get(value, value)


def to_plain(value: Any) -> Any:
    """A JSON-ready copy of a payload (Shioaji's OrderEventDict is dict-like, not a dict)."""
    if isinstance(value, Mapping) or (hasattr(value, "items") and not isinstance(value, (str, bytes))):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return getattr(value, "value", repr(value))
