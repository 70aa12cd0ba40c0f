"""Helpers on Shioaji payloads shared by the bridge and the normalizer.

Entry points: `state_name(state) -> "SORDER"|"SDEAL"|"FORDER"|"FDEAL"|other`, `to_plain(msg)`,
`without_person_id(value)`, `open_append_only(path)`.
Invariants: none mutates its input; `to_plain` returns JSON-ready builtins only;
`without_person_id` drops the `person_id` key at any depth (accounts in payloads carry it,
and nothing we store or log may).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

from execstate.domain.errors import MalformedEvent

_STATE_ALIASES = {"StockOrder": "SORDER", "StockDeal": "SDEAL", "FuturesOrder": "FORDER", "FuturesDeal": "FDEAL"}


def state_name(state: Any) -> str:
    """"SDEAL" from a shioaji `OrderState`, its name ("StockDeal") or a plain string."""
    value = getattr(state, "value", state)
    if not isinstance(value, str):
        raise MalformedEvent(f"state={state!r:.60}: expected SORDER, SDEAL, FORDER or FDEAL")
    return _STATE_ALIASES.get(value, value)


_SCALARS = (str, int, float, bool, type(None))


def to_plain(value: Any) -> Any:
    """A JSON-ready copy of a payload (Shioaji's OrderEventDict is dict-like, not a dict)."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict or isinstance(value, Mapping) or (hasattr(value, "items") and not isinstance(value, (str, bytes))):
        return {str(k): to_plain(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [to_plain(v) for v in value]
    if isinstance(value, _SCALARS):  # subclasses: enums that are str, bool, ...
        return getattr(value, "value", value)
    if isinstance(value, Decimal):
        return str(value)
    return getattr(value, "value", repr(value))


PERSON_ID = "person_id"


def without_person_id(value: Any) -> Any:
    """`value` with every `person_id` key removed, at any depth (containers copied only where
    one was found; other values shared)."""
    kind = type(value)
    if kind is dict:
        if PERSON_ID in value:
            return {k: without_person_id(v) for k, v in value.items() if k != PERSON_ID}
        out = None
        for k, v in value.items():
            if type(v) in (dict, list, tuple):
                new = without_person_id(v)
                if new is not v:
                    out = out if out is not None else dict(value)
                    out[k] = new
        return out if out is not None else value
    if kind is list or kind is tuple:
        items = [without_person_id(v) for v in value]
        return value if all(a is b for a, b in zip(items, value)) else kind(items)
    return value


def open_append_only(path: Path, buffering: int = -1) -> BinaryIO:
    """Open a JSON-lines file for appending, first ending a line torn by a crash.

    Without this, the first record written after a restart would be glued to the torn
    fragment and lost on the next read; with it, only the fragment is reported as bad.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = path.open("ab", buffering=buffering)
    if fh.tell() > 0:
        with path.open("rb") as tail:
            tail.seek(-1, 2)
            if tail.read(1) != b"\n":
                fh.write(b"\n")
                fh.flush()
    return fh
