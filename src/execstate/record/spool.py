"""A durable local spool of record batches, for when ClickHouse is down or behind.

Entry points: `Spool(directory, max_bytes)`: `.put(batch) -> SpoolEntry`, `.oldest()`,
iteration (put order), `.get(entry) -> batch`, `.ack(entry)`, `.size_bytes()`, `.rows()`,
`.oldest_age_s(now)`, `.park(batch, reason)`; `SpoolFull`, `SpoolCorrupt`; `batch_rows(batch)`,
`event_rows(event)`.

A batch is `{table: [event, ...]}` with tables and event types from `record.tables.TABLES`.
One batch is one file `<seq:016d>.batch`: a 24-byte header (magic, format version, CRC-32
of the payload, row count, put time in ns) and the msgspec msgpack payload.

Invariants:
- `put` is atomic and durable before it returns: temp file, fsync, rename, fsync of the
  directory. A crash leaves either the whole file or only `*.tmp`, removed at the next open.
- Lexical order of names is put order; numbering continues after a restart (past any file
  already in the directory or in `bad/`), so a new `Spool` yields the old entries first.
- A batch decodes back to the same Structs (exact `Decimal`s, int ns, nested tuples).
- Bounded: a put that would take the spool past `max_bytes` (or a full disk) raises
  `SpoolFull` and writes nothing; the caller decides (the recorder holds the batch and
  retries, it never drops it).
- A corrupt committed file (bad header, CRC or payload) never crashes anything: it is moved
  to `<dir>/bad/` next to a `.reason` file and counted in `corrupt`. `park` keeps a batch
  the database refused as data there too (same format, so it can be inspected and re-put).
- One writer thread (the recorder's worker puts, gets, acks and parks); any thread may read
  the metrics. Open reads and CRC-checks every file once (~1 s per GiB), then trusts its index.
"""

from __future__ import annotations

import errno
import os
import re
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from execstate.domain.events import PositionSnapshot
from execstate.record.tables import TABLES
from execstate.telemetry.logging import get_logger

log = get_logger(__name__)

MAGIC = b"ESPL"
VERSION = 1
_HEADER = struct.Struct("<4sB3xIIq")  # magic, version, crc32(payload), rows, put time ns
SUFFIX = ".batch"
TMP_SUFFIX = ".tmp"
BAD_DIR = "bad"
_NAME = re.compile(r"^(\d{16})\.batch")

# Every table is an optional list field, so one Struct decodes any batch exactly;
# unknown tables are refused rather than silently dropped.
_Batch = msgspec.defstruct(
    "SpoolBatch",
    [(name, list[event_type], msgspec.field(default_factory=list)) for name, event_type in TABLES.items()],
    forbid_unknown_fields=True,
)
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Batch)


class SpoolFull(Exception):
    """A put would take the spool past its byte limit (or the disk is full); nothing was written."""


class SpoolCorrupt(Exception):
    """A committed spool file could not be read back; it has been moved to `bad/`."""


def event_rows(event: Any) -> int:
    """Database rows an event becomes: a PositionSnapshot is one row per position."""
    return len(event.positions) if type(event) is PositionSnapshot else 1


def batch_rows(batch: Mapping[str, list[Any]]) -> int:
    """Database rows of a batch (see `event_rows`)."""
    total = 0
    for name, events in batch.items():
        total += sum(len(e.positions) for e in events) if name == "position_snapshots" else len(events)
    return total


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One committed batch file."""

    seq: int
    path: Path
    nbytes: int  # file size, header included
    rows: int
    created_ns: int  # wall-clock time of the put (time.time_ns())


class Spool:
    """Batches on disk in put order; see the module docstring for the guarantees."""

    def __init__(self, directory: Path, max_bytes: int, wall_clock_ns: Callable[[], int] = time.time_ns) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes={max_bytes!r}: expected a positive number of bytes")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._wall_clock_ns = wall_clock_ns
        self._lock = threading.Lock()
        self._entries: deque[SpoolEntry] = deque()
        self._bytes = 0
        self._rows = 0
        self.corrupt = 0  # files quarantined to bad/ since open
        self.tmp_removed = 0  # partial writes removed at open
        self.parked = 0  # batches the database refused as data, kept in bad/ (see `park`)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._next_seq = self._open()

    # ----------------------------------------------------------------- open
    def _open(self) -> int:
        highest = 0
        bad = self.directory / BAD_DIR
        if bad.is_dir():
            for path in bad.iterdir():
                if m := _NAME.match(path.name):
                    highest = max(highest, int(m.group(1)))
                    if path.name.endswith(TMP_SUFFIX):
                        path.unlink(missing_ok=True)
        committed: list[tuple[int, Path]] = []
        for path in self.directory.iterdir():
            m = _NAME.match(path.name)
            if m is None or not path.is_file():
                continue
            highest = max(highest, int(m.group(1)))
            if path.name.endswith(TMP_SUFFIX):
                path.unlink(missing_ok=True)
                self.tmp_removed += 1
            elif path.name.endswith(SUFFIX):
                committed.append((int(m.group(1)), path))
        for seq, path in sorted(committed):
            try:
                data = path.read_bytes()
                rows, created_ns = _check(data)
            except (OSError, ValueError) as exc:
                self._quarantine(path, str(exc))
                continue
            self._entries.append(SpoolEntry(seq, path, len(data), rows, created_ns))
            self._bytes += len(data)
            self._rows += rows
        if self.tmp_removed or self.corrupt or self._entries:
            log.info("spool_opened", directory=str(self.directory), entries=len(self._entries), rows=self._rows,
                     bytes=self._bytes, tmp_removed=self.tmp_removed, corrupt=self.corrupt)
        return highest + 1

    # ------------------------------------------------------------------ put
    def put(self, batch: Mapping[str, list[Any]]) -> SpoolEntry:
        """Write one batch durably (fsynced) behind every earlier one; `SpoolFull` if it does not fit."""
        unknown = [name for name in batch if name not in TABLES]
        if unknown:
            raise ValueError(f"tables={unknown!r}: expected names from record.tables.TABLES")
        rows = batch_rows(batch)
        created_ns = self._wall_clock_ns()
        data = _encode(batch, rows, created_ns)
        with self._lock:
            if self._bytes + len(data) > self.max_bytes:
                raise SpoolFull(f"spool {self.directory}: {self._bytes} + {len(data)} bytes > max_bytes={self.max_bytes}")
            seq = self._next_seq
            self._next_seq += 1
        path = self.directory / f"{seq:016d}{SUFFIX}"
        tmp = path.with_name(path.name + TMP_SUFFIX)
        try:
            _write_durably(tmp, path, data)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise SpoolFull(f"spool {self.directory}: disk full ({exc.strerror})") from exc
            raise
        entry = SpoolEntry(seq, path, len(data), rows, created_ns)
        with self._lock:
            self._entries.append(entry)
            self._bytes += entry.nbytes
            self._rows += rows
        return entry

    # ------------------------------------------------------------- reading
    def oldest(self) -> SpoolEntry | None:
        """The entry to send next, or None when the spool is empty."""
        with self._lock:
            return self._entries[0] if self._entries else None

    def __iter__(self) -> Iterator[SpoolEntry]:
        with self._lock:
            entries = list(self._entries)
        return iter(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, entry: SpoolEntry) -> dict[str, list[Any]]:
        """The batch of an entry, as put (tables with no rows omitted).

        Raises `SpoolCorrupt` (after moving the file to `bad/` and dropping the entry) when the
        file cannot be read back; any other `OSError` (e.g. a transient I/O error) propagates.
        """
        try:
            data = entry.path.read_bytes()
        except FileNotFoundError:
            self._drop(entry)
            with self._lock:
                self.corrupt += 1
            log.error("spool_file_missing", path=str(entry.path))
            raise SpoolCorrupt(f"{entry.path}: missing") from None
        try:
            _check(data)
            decoded = _decoder.decode(memoryview(data)[_HEADER.size:])
        except (ValueError, msgspec.DecodeError) as exc:
            self._drop(entry)
            self._quarantine(entry.path, str(exc))
            raise SpoolCorrupt(f"{entry.path}: {exc}") from None
        return {name: events for name in TABLES if (events := getattr(decoded, name))}

    def ack(self, entry: SpoolEntry) -> None:
        """The database took this batch: delete its file (a lost unlink only means a harmless re-send)."""
        entry.path.unlink(missing_ok=True)
        self._drop(entry)

    def park(self, batch: Mapping[str, list[Any]], reason: str) -> Path:
        """Keep a batch the database refused as data (never a transient failure) in `bad/`, with the reason."""
        rows = batch_rows(batch)
        data = _encode(batch, rows, self._wall_clock_ns())
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
        bad = self.directory / BAD_DIR
        bad.mkdir(exist_ok=True)
        path = bad / f"{seq:016d}{SUFFIX}"
        _write_durably(path.with_name(path.name + TMP_SUFFIX), path, data)
        path.with_name(path.name + ".reason").write_text(reason + "\n", encoding="utf-8")
        with self._lock:
            self.parked += 1
        log.error("spool_batch_parked", path=str(path), rows=rows, reason=reason)
        return path

    # ------------------------------------------------------------- metrics
    def size_bytes(self) -> int:
        return self._bytes

    def rows(self) -> int:
        return self._rows

    def oldest_age_s(self, now: float | None = None) -> float:
        """Seconds since the oldest entry was put (wall clock, `time.time()` if `now` is None); 0 when empty."""
        oldest = self.oldest()
        if oldest is None:
            return 0.0
        now_s = time.time() if now is None else now
        return max(0.0, now_s - oldest.created_ns / 1e9)

    # ------------------------------------------------------------ internals
    def _drop(self, entry: SpoolEntry) -> None:
        with self._lock:
            try:
                self._entries.remove(entry)
            except ValueError:
                return
            self._bytes -= entry.nbytes
            self._rows -= entry.rows

    def _quarantine(self, path: Path, reason: str) -> None:
        bad = self.directory / BAD_DIR
        try:
            bad.mkdir(exist_ok=True)
            target = bad / path.name
            os.replace(path, target)
            target.with_name(target.name + ".reason").write_text(reason + "\n", encoding="utf-8")
        except OSError as exc:  # cannot move it: leave it where it is, still never crash
            log.error("spool_quarantine_failed", path=str(path), reason=reason, error=str(exc))
        with self._lock:
            self.corrupt += 1
        log.error("spool_file_corrupt", path=str(path), reason=reason, moved_to=str(bad))


def encode_batch(batch: Mapping[str, list[Any]]) -> bytes:
    """A batch as msgpack (exact Decimals; decoded back to the same event types by `decode_batch`)."""
    return _encoder.encode({name: events for name, events in batch.items() if events})


def decode_batch(data: bytes | memoryview) -> dict[str, list[Any]]:
    decoded = _decoder.decode(data)
    return {name: events for name in TABLES if (events := getattr(decoded, name))}


def _encode(batch: Mapping[str, list[Any]], rows: int, created_ns: int) -> bytes:
    payload = _encoder.encode({name: events for name, events in batch.items() if events})
    return _HEADER.pack(MAGIC, VERSION, zlib.crc32(payload), rows, created_ns) + payload


def _check(data: bytes) -> tuple[int, int]:
    """(rows, created_ns) of a spool file's bytes; ValueError naming what is wrong."""
    if len(data) < _HEADER.size:
        raise ValueError(f"size={len(data)}: expected at least a {_HEADER.size}-byte header")
    magic, version, crc, rows, created_ns = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"magic={magic!r}: expected {MAGIC!r}")
    if version != VERSION:
        raise ValueError(f"version={version}: expected {VERSION}")
    actual = zlib.crc32(memoryview(data)[_HEADER.size:])
    if actual != crc:
        raise ValueError(f"crc32={actual:#010x}: expected {crc:#010x} (torn or damaged payload)")
    return rows, created_ns


def _write_durably(tmp: Path, path: Path, data: bytes) -> None:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
