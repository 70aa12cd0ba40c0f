"""A ClickHouse sink in a child process: Arrow conversion and database calls leave this
process, so recording never holds the service's GIL.

Entry point: `ProcessSink(dsn, schemas_dir=None)`: the `Sink` protocol (`write`, `close`)
plus `ensure_schema`, `query`, `count`, like `ClickHouseSink`, which runs in the child.

Why: the embedded engine (chdb) holds the GIL while it inserts (measured: a thread that
sleeps 0.5 ms woke with p99 gaps of 3.6 ms and up to 22 ms beside a thread inserting), and
the Arrow conversion is Python work; both stretched the pipeline's latency tail.
Invariants:
- Batches cross as msgpack bytes (`spool.encode_batch`): exact Decimals, one C call here.
- Errors keep their meaning: `ValueError` (data the database can never store: the
  recorder parks it), `QueryRefused`, and `SinkError` for everything else, including a dead
  child, which is started again on the next call.
- One child, owned by this object; `close()` stops it and waits, so the embedded engine's
  data directory is free for the next opener (one process at a time).
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from execstate.record.clickhouse import QueryRefused, SinkError, mask_dsn
from execstate.record.spool import decode_batch, encode_batch


def _serve(conn: Any, dsn: str, schemas_dir: str | None) -> None:  # runs in the child
    from execstate.record.clickhouse import ClickHouseSink

    sink = ClickHouseSink(dsn, Path(schemas_dir)) if schemas_dir else ClickHouseSink(dsn)
    try:
        while True:
            try:
                op, arg = conn.recv()
            except EOFError:
                return
            try:
                if op == "write":
                    result: Any = sink.write(decode_batch(arg))
                elif op == "query":
                    result = sink.query(*arg)
                elif op == "count":
                    result = sink.count(*arg)
                elif op == "ensure_schema":
                    result = sink.ensure_schema()
                elif op == "close":
                    conn.send(("ok", None))
                    return
                else:
                    raise ValueError(f"op={op!r}: unknown")
                conn.send(("ok", result))
            except QueryRefused as exc:
                conn.send(("refused", str(exc)))
            except SinkError as exc:
                conn.send(("sink", str(exc)))
            except (ValueError, TypeError) as exc:
                conn.send(("value", f"{type(exc).__name__}: {exc}"))
            except Exception as exc:
                conn.send(("sink", f"{type(exc).__name__}: {exc}"))
    finally:
        sink.close()


class ProcessSink:
    def __init__(self, dsn: str, schemas_dir: Path | None = None) -> None:
        self.dsn = mask_dsn(dsn)
        self._dsn = dsn
        self._schemas_dir = str(schemas_dir) if schemas_dir else None
        self._lock = threading.Lock()
        self._proc: Any = None
        self._conn: Any = None
        self._closed = False
        self.restarts = 0

    def __repr__(self) -> str:
        return f"ProcessSink({self.dsn!r})"

    def _child(self) -> Any:
        if self._proc is None or not self._proc.is_alive():
            if self._proc is not None:
                self.restarts += 1
            ctx = multiprocessing.get_context("spawn")  # never fork a threaded process
            parent, child = ctx.Pipe()
            self._proc = ctx.Process(target=_serve, args=(child, self._dsn, self._schemas_dir), name="execstate-clickhouse", daemon=True)
            self._proc.start()
            child.close()
            self._conn = parent
        return self._conn

    def _call(self, op: str, arg: Any) -> Any:
        with self._lock:
            if self._closed:
                raise SinkError(f"sink for {self.dsn} is closed", dsn=self.dsn)
            conn = self._child()
            try:
                conn.send((op, arg))
                kind, value = conn.recv()  # waits without the GIL
            except (EOFError, OSError) as exc:
                self._stop_child(kill=True)
                raise SinkError(f"the ClickHouse writer process for {self.dsn} died: {type(exc).__name__}", dsn=self.dsn) from None
        if kind == "ok":
            return value
        if kind == "value":
            raise ValueError(value)
        if kind == "refused":
            raise QueryRefused(value)
        raise SinkError(value, dsn=self.dsn)

    def write(self, batch: Mapping[str, list[Any]]) -> int:
        return self._call("write", encode_batch(batch))

    def ensure_schema(self) -> None:
        self._call("ensure_schema", None)

    def query(self, sql: str, read_only: bool = True, parameters: Mapping[str, Any] | None = None) -> tuple[tuple[str, ...], list[tuple]]:
        return self._call("query", (sql, read_only, dict(parameters) if parameters else None))

    def count(self, table: str, final: bool = True) -> int:
        return self._call("count", (table, final))

    def _stop_child(self, kill: bool = False) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is None:
            return
        if not kill and proc.is_alive():
            try:
                conn.send(("close", None))
                conn.recv()
            except (EOFError, OSError):
                pass
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop_child()
