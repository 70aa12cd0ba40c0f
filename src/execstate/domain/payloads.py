"""Helpers on Shioaji payloads shared by the bridge and the normalizer.

Entry points: `state_name(state) -> "SORDER"|"SDEAL"|"FORDER"|"FDEAL"|other`, `to_plain(msg)`,
`without_person_id(value)`, `kept_copy(msg)`, `safe_text(value, limit)`, `state_text(state)`,
`open_append_only(path)`.
Invariants: none mutates its input; `to_plain` returns JSON-ready builtins only;
`without_person_id` drops the `person_id` key at any depth (accounts in payloads carry it,
and nothing we store or log may). `kept_copy` (what a dead letter keeps of a rejected payload),
`safe_text` and `state_text` never raise, and return bounded UTF-8-encodable data.
"""

from __future__ import annotations

import re
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
# a person_id's value inside text (a payload that arrived as JSON text, an error message):
# the key, up to 6 quoting/escaping/separator characters, then the value up to its delimiter
_PERSON_ID_IN_TEXT = re.compile(r"(person_id\W{0,6})[^\s\"',;:=}\]\\]+")


def scrub_person_id_text(text: str) -> str:
    """`text` with the value after every `person_id` replaced by `***`."""
    return _PERSON_ID_IN_TEXT.sub(r"\1***", text) if PERSON_ID in text else text


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
    if kind is str:  # a payload that arrived as text (only at the top: nested strings are not scanned)
        return scrub_person_id_text(value)
    return value


KEPT_TEXT_MAX = 1024  # characters of one string a dead letter keeps (Shioaji's longest field is a 512-character op_msg)
KEPT_ITEMS_MAX = 256  # members of one object or list
KEPT_DEPTH_MAX = 32  # nesting
KEPT_TOTAL_MAX = 64 * 1024  # characters of text (strings and keys) in the whole copy


def safe_text(value: Any, limit: int) -> str:
    """`value` as text of at most `limit` characters, lone surrogates escaped (`\\udc80`), so it
    can be encoded as UTF-8 (a table row, a log line); never raises."""
    try:
        text = value if type(value) is str else str(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    text = text[:limit]
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def state_text(state: Any) -> str:
    """A raw event's state as a dead letter records it: the value of shioaji's `OrderState`, else
    the state as text, at most 40 characters; never raises."""
    try:
        value = getattr(state, "value", state)
    except Exception:
        value = f"<{type(state).__name__}>"
    return safe_text(value, 40)


def kept_copy(msg: Any) -> Any:
    """What a dead letter keeps of a rejected payload: `to_plain` without `person_id`, bounded.

    Strings longer than `KEPT_TEXT_MAX` are cut (with a note of how much is missing), objects and
    lists keep their first `KEPT_ITEMS_MAX` members, nesting stops at `KEPT_DEPTH_MAX`, and the
    whole copy holds at most `KEPT_TOTAL_MAX` characters of text; lone surrogates are escaped,
    ints too long to print become a note. Never raises (a payload that cannot be read at all
    becomes `"<unreadable TYPE>"`: a repr could carry `person_id`).
    """
    try:
        return _kept(msg, 0, [KEPT_TOTAL_MAX])
    except Exception:
        return f"<unreadable {type(msg).__name__}>"


def _kept_text(text: str, budget: list[int], limit: int = KEPT_TEXT_MAX) -> str:
    text = scrub_person_id_text(text)
    room = max(0, min(limit, budget[0]))
    if len(text) > room:
        text = text[:room] + f"...<{len(text) - room} more characters>"
    budget[0] -= min(len(text), room)
    return safe_text(text, len(text))


def _kept(value: Any, depth: int, budget: list[int]) -> Any:
    kind = type(value)
    if kind is str:
        return _kept_text(value, budget)
    if value is None or kind is bool or kind is float:
        return value
    if kind is int:
        return value if value.bit_length() <= 256 else f"<int of {value.bit_length()} bits>"
    mapping = kind is dict or isinstance(value, Mapping) or (hasattr(value, "items") and not isinstance(value, (str, bytes)))
    if mapping or kind is list or kind is tuple:
        if depth >= KEPT_DEPTH_MAX:
            return f"<{kind.__name__} nested deeper than {KEPT_DEPTH_MAX}>"
        if not mapping:
            items = [_kept(v, depth + 1, budget) for v in value[:KEPT_ITEMS_MAX]]
            if len(value) > KEPT_ITEMS_MAX:
                items.append(f"<{len(value) - KEPT_ITEMS_MAX} more items>")
            return items
        out: dict[str, Any] = {}
        for i, (k, v) in enumerate(value.items()):
            if i >= KEPT_ITEMS_MAX:
                out["..."] = f"<more than {KEPT_ITEMS_MAX} members>"
                break
            key = _kept_text(k if type(k) is str else safe_text(getattr(k, "value", k), KEPT_TEXT_MAX), budget, 128)
            if key != PERSON_ID:
                out[key] = _kept(v, depth + 1, budget)
        return out
    plain = getattr(value, "value", value)  # enums (a str, int ... subclass) and shioaji's OrderState
    if isinstance(plain, bool):
        return bool(plain)
    if isinstance(plain, int):
        return _kept(int(plain), depth, budget)
    if isinstance(plain, float):
        return float(plain)
    if isinstance(plain, str):
        return _kept_text(str.__str__(plain), budget)
    return _kept_text(str(plain) if isinstance(plain, Decimal) else repr(plain), budget)


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
