"""Append-only journal of raw events, one JSON object per line, and its reader.

Line format (see contracts/execution.md):
`{"ts_ns": <int>, "state": "SORDER"|"SDEAL"|"FORDER"|"FDEAL", "msg": {...as Shioaji delivered it...}}`

Entry points: `JournalWriter.write(raw)`, `.flush()`, `.close()`; `JournalReader(path)`
(iterate for `RawExecEvent`s; `bad_lines` lists what could not be read).

Invariants:
- A line is written before its event is applied; `flush()` (once per batch) hands the
  bytes to the kernel, so an acknowledged batch survives a SIGKILL of the process.
- Floats are written in shortest round-trip form, so a replay sees the same values (NaN and
  infinities too: those rare lines carry JSON's NaN / Infinity tokens, which the reader accepts).
  A lone surrogate (a str that is not Unicode) is written as its `\\uXXXX` escape and read back
  as it was, so the line stays UTF-8 and the replay sees the same payload.
- `person_id` (accounts in Shioaji's order payloads carry it) is never written, at any depth:
  the line keeps everything else as delivered. Nothing downstream reads it, so a replay does
  not miss it.
- The reader never raises on bad content: a torn last line (a crash mid-write) or a
  malformed line is recorded in `bad_lines` with its number and reason, and skipped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from execstate.domain.events import RawExecEvent
from execstate.domain.payloads import open_append_only, state_name, to_plain, without_person_id

_encoder = msgspec.json.Encoder()


_PERSON_KEY = b'"person_id":'  # inside a JSON string its quotes would be escaped: only a member matches
_PERSON_MEMBER = re.compile(rb'"person_id":"[^"\\]*(?:\\.[^"\\]*)*"')  # a string-valued member


def _without_person_id(body: bytes) -> bytes | None:
    """Encoded JSON without its `person_id` members (and their commas); None when one of them
    does not hold a string (the caller then takes the slow path)."""
    i = body.find(_PERSON_KEY)
    member = _PERSON_MEMBER.match(body, i)
    if member is not None and body.find(_PERSON_KEY, member.end()) == -1:  # the usual case: one account
        end = member.end()
        if body[end:end + 1] == b",":
            return body[:i] + body[end + 1:]
        return body[:i - 1] + body[end:] if body[i - 1:i] == b"," else body[:i] + body[end:]
    parts, start = [], 0
    while i != -1:
        member = _PERSON_MEMBER.match(body, i)
        if member is None:
            return None
        end = member.end()
        if body[end:end + 1] == b",":
            end += 1
        elif body[i - 1:i] == b",":
            i -= 1
        parts.append(body[start:i])
        start = end
        i = body.find(_PERSON_KEY, end)
    parts.append(body[start:])
    return b"".join(parts)


_STATE_BYTES = {name: name.encode() for name in ("SORDER", "SDEAL", "FORDER", "FDEAL")}


def encode_line(raw: RawExecEvent | tuple) -> bytes:
    """One journal line. Fast path: a known state (shioaji's OrderState hashes like its value),
    an int timestamp and a plain-dict payload are spliced without building a wrapper dict."""
    ts_ns, state, msg = raw
    state_bytes = _STATE_BYTES.get(state) if isinstance(state, str) else None
    if state_bytes is not None and type(ts_ns) is int and type(msg) is dict:
        try:
            body = _encoder.encode(msg)
            if _PERSON_KEY in body:
                body = _without_person_id(body)
            if body is not None and b"null" not in body:  # msgspec writes NaN and infinities as null: those lines go the slow way
                return b'{"ts_ns":%d,"state":"%s","msg":%s}\n' % (ts_ns, state_bytes, body)
        except (TypeError, ValueError, OverflowError):
            pass
    try:
        name = state_name(state)
    except Exception:
        name = str(state)[:40]
    # stdlib json keeps NaN / Infinity as tokens (the reader accepts them), so a replay sees what came in
    line = {"ts_ns": ts_ns, "state": name, "msg": without_person_id(to_plain(msg))}
    try:
        return json.dumps(line, separators=(",", ":"), ensure_ascii=False, default=str).encode() + b"\n"
    except UnicodeEncodeError:  # a lone surrogate (not UTF-8): as a \uXXXX escape, which the reader turns back into it
        return json.dumps(line, separators=(",", ":"), ensure_ascii=True, default=str).encode() + b"\n"


class JournalWriter:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh = open_append_only(self.path, buffering=1 << 20)
        self.lines = 0

    def write(self, raw: RawExecEvent | tuple) -> None:
        self._fh.write(encode_line(raw))
        self.lines += 1

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            self._fh.close()


class _Line(msgspec.Struct):
    ts_ns: int
    state: str
    msg: Any


def _lenient(line: bytes) -> _Line | None:
    try:
        data = json.loads(line)
        return msgspec.convert(data, _Line)
    except (ValueError, msgspec.ValidationError):
        return None


class JournalReader:
    """Iterates the raw events of a journal file in order."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.bad_lines: list[tuple[int, str]] = []

    def __iter__(self) -> Iterator[RawExecEvent]:
        decoder = msgspec.json.Decoder(_Line)
        with self.path.open("rb") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                if not line.endswith(b"\n"):
                    self.bad_lines.append((number, "torn last line (no newline): the writer stopped mid-line"))
                    continue
                try:
                    rec = decoder.decode(line)
                except msgspec.DecodeError as exc:
                    rec = _lenient(line)  # a line with NaN / Infinity tokens
                    if rec is None:
                        self.bad_lines.append((number, f"not a journal line: {exc}"))
                        continue
                yield RawExecEvent(rec.ts_ns, rec.state, rec.msg)
