"""ClickHouse sink: the embedded engine (`chdb://`) or a server (`http(s)://`), one code path.

Entry points: `ClickHouseSink(dsn, schemas_dir)` with `.ensure_schema()`, `.write(batch)`,
`.query(sql)`, `.count(table)`, `.optimize(table)`, `.close()`; `SinkError`, `QueryRefused`,
`mask_dsn(dsn)`, `split_statements(sql)`, `SCHEMAS_DIR`.

Invariants:
- Only clickhouse-connect talks to the database (`get_client(dsn=...)`), so the embedded
  engine and a server run the same statements and the same Arrow inserts.
- Every call on the client holds one lock: chdb sessions are not concurrent, and the sink
  may be shared between the recorder thread and readers.
- `write` converts the whole batch (`record.rows.to_arrow`) before inserting anything: a value
  that cannot be stored raises `ValueError` and nothing is sent. A database that is down or
  fails raises `SinkError` (naming the table, the masked DSN and the cause); the caller spools
  and retries the batch, and the ReplacingMergeTree keys make the retry harmless.
- `query` runs only one read statement (SELECT, SHOW, DESCRIBE, EXPLAIN, WITH), with the
  `readonly=1` setting as a second guard (no writes, DDL or table functions); anything else
  raises `QueryRefused`.
- The client connects on first use; a DSN that cannot connect raises `SinkError` naming the
  DSN with its password masked. A failed `ensure_schema` is retried by the next `write`.
  `close()` releases the engine: one process can hold only one chdb path at a time.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import clickhouse_connect

from execstate.record.rows import to_arrow
from execstate.record.tables import TABLES

SCHEMAS_DIR = Path(__file__).resolve().parents[3] / "schemas"
_OUTFILE = re.compile(r"\bINTO\s+OUTFILE\b", re.I)
_FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+\w+\s*$", re.I)
READ_KEYWORDS = frozenset({"SELECT", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "WITH"})
# http(s) client defaults; a DSN query string (?connect_timeout=...) overrides them
_HTTP_OPTIONS = {"connect_timeout": 5, "send_receive_timeout": 60, "autogenerate_session_id": False}
_SECRET_KEYS = ("password", "access_token", "token")
_CAUSE_CHARS = 400  # of the cause's first line, in a SinkError message


class SinkError(Exception):
    """The database is unreachable or failed; `table` (if any) and `cause` say where and why."""

    def __init__(self, message: str, *, dsn: str, table: str | None = None, cause: BaseException | None = None,
                 rows_written: int = 0) -> None:
        self.dsn = dsn  # masked
        self.table = table
        self.cause = cause
        self.rows_written = rows_written  # rows of the batch inserted before the failure
        super().__init__(message)


class QueryRefused(ValueError):
    """`query` was given something other than one read statement."""


def mask_dsn(dsn: str) -> str:
    """The DSN with any password (userinfo or query parameter) replaced by `***`."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparseable dsn>"
    if not _secrets(dsn):
        return dsn
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostinfo}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() in _SECRET_KEYS else v) for k, v in pairs], safe="*/:")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _secrets(dsn: str) -> list[str]:
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return []
    found = [parts.password] if parts.password else []
    found += [v for k, v in parse_qsl(parts.query) if k.lower() in _SECRET_KEYS and v]
    return found


# --- SQL text ---------------------------------------------------------------------------

_TOKEN = re.compile(r"""'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"|`(?:[^`\\]|\\.|``)*`|--[^\n]*|/\*.*?\*/|;|[^'"`;/-]+|.""", re.S)


def split_statements(sql: str) -> list[str]:
    """Split SQL on `;` outside strings, quoted names and comments; comments are dropped."""
    statements: list[str] = []
    current: list[str] = []
    for match in _TOKEN.finditer(sql):
        token = match.group()
        if token == ";":
            statements.append("".join(current).strip())
            current = []
        elif token.startswith("--") or (token.startswith("/*") and token.endswith("*/") and len(token) >= 4):
            current.append(" ")
        else:
            current.append(token)
    statements.append("".join(current).strip())
    return [s for s in statements if s]


def _read_statement(sql: str) -> str:
    """The single read statement in `sql`, or raise QueryRefused."""
    statements = split_statements(sql)
    if len(statements) != 1:
        raise QueryRefused(f"query refused: expected exactly one statement, got {len(statements)}")
    statement = statements[0]
    keyword = re.match(r"\(*\s*([A-Za-z]+)", statement)
    word = keyword.group(1).upper() if keyword else ""
    if word not in READ_KEYWORDS:
        raise QueryRefused(f"query refused: {word or statement[:20]!r} is not a read statement "
                           f"(allowed: SELECT, SHOW, DESCRIBE, EXPLAIN, WITH)")
    if _OUTFILE.search(statement):
        raise QueryRefused("query refused: INTO OUTFILE writes a file")
    return statement


def _check_table(table: str) -> str:
    if table not in TABLES:
        raise ValueError(f"table={table!r}: expected one of {', '.join(TABLES)}")
    return table


# --- the sink ---------------------------------------------------------------------------

class ClickHouseSink:
    """Write recorded events to ClickHouse and read them back. Thread-safe.

    `dsn`: `chdb:///absolute/data/dir` (embedded engine; a relative `chdb://a/b` means path
    `a`, database `b`, as clickhouse-connect parses it) or `http(s)://user:password@host:port/db`.
    `schemas_dir`: the `*.sql` files `ensure_schema` applies (default: the repository's `schemas/`).
    """

    def __init__(self, dsn: str, schemas_dir: Path = SCHEMAS_DIR) -> None:
        self.dsn = mask_dsn(dsn)
        self.schemas_dir = Path(schemas_dir)
        self.embedded = dsn.startswith("chdb:")
        self._dsn = dsn
        self._secrets = _secrets(dsn)
        self._lock = threading.Lock()
        self._client: Any = None
        self._closed = False
        self._schema_pending = False  # ensure_schema failed: write applies it first

    def __repr__(self) -> str:
        return f"ClickHouseSink({self.dsn!r})"

    def __enter__(self) -> ClickHouseSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- connection (call with the lock held) -------------------------------------------
    def _error(self, what: str, exc: BaseException, table: str | None = None, rows_written: int = 0) -> SinkError:
        """A SinkError for `what` failing: masked DSN, the cause's first line (`.cause` has it all)."""
        cause = (str(exc).strip().splitlines() or [""])[0]
        for secret in self._secrets:
            cause = cause.replace(secret, "***")
        if len(cause) > _CAUSE_CHARS:
            cause = cause[: _CAUSE_CHARS - 3] + "..."
        message = f"{what} ({self.dsn}): {type(exc).__name__}: {cause}"
        return SinkError(message, dsn=self.dsn, table=table, cause=exc, rows_written=rows_written)

    def _connected(self) -> Any:
        if self._closed:
            raise SinkError(f"sink for {self.dsn} is closed", dsn=self.dsn)
        if self._client is None:
            options = {} if self.embedded else dict(_HTTP_OPTIONS)
            try:
                self._client = clickhouse_connect.get_client(dsn=self._dsn, **options)
            except Exception as exc:
                raise self._error("cannot connect to ClickHouse", exc) from exc
        return self._client

    # --- schema ---------------------------------------------------------------------------
    def schema_statements(self) -> list[tuple[str, str]]:
        """(file name, statement) for every statement of `schemas_dir/*.sql`, files in name order."""
        files = sorted(self.schemas_dir.glob("*.sql"))
        if not files:
            raise FileNotFoundError(f"schemas_dir={str(self.schemas_dir)!r}: expected *.sql files")
        return [(f.name, stmt) for f in files for stmt in split_statements(f.read_text(encoding="utf-8"))]

    def ensure_schema(self) -> None:
        """Apply every schema statement (all `IF NOT EXISTS`: safe at every start), then check
        that every recorded table exists. If it fails (SinkError), the next `write` retries it
        first, so a database that was down at start gets its tables when it comes back."""
        statements = self.schema_statements()
        with self._lock:
            self._schema_pending = True
            self._apply_schema(statements)

    def _apply_schema(self, statements: list[tuple[str, str]]) -> None:
        """(lock held) Run the schema statements; clear `_schema_pending` once all tables exist."""
        client = self._connected()
        for name, statement in statements:
            try:
                client.command(statement)
            except Exception as exc:
                raise self._error(f"schema file {name} failed", exc) from exc
        try:
            present = {row[0] for row in client.query("SELECT name FROM system.tables WHERE database = currentDatabase()").result_rows}
        except Exception as exc:
            raise self._error("cannot list tables", exc) from exc
        missing = [table for table in TABLES if table not in present]
        if missing:
            raise SinkError(f"schema in {self.schemas_dir} does not create {', '.join(missing)} on {self.dsn}", dsn=self.dsn)
        self._schema_pending = False

    # --- write ----------------------------------------------------------------------------
    def write(self, batch: Mapping[str, list]) -> int:
        """Insert a batch (table -> events of that table's type); return the rows written.

        Raises ValueError (nothing written) for an unknown table or an unrepresentable value,
        SinkError when the database is down or fails (`rows_written` rows already went in).
        """
        unknown = [table for table in batch if table not in TABLES]
        if unknown:
            raise ValueError(f"tables={unknown!r}: expected keys of {', '.join(TABLES)}")
        tables = [(table, to_arrow(table, batch[table])) for table in TABLES if batch.get(table)]
        written = 0
        with self._lock:
            if self._schema_pending:
                self._apply_schema(self.schema_statements())
            client = self._connected()
            for table, arrow in tables:
                if arrow.num_rows == 0:
                    continue
                try:
                    client.insert_arrow(table, arrow)
                except Exception as exc:
                    raise self._error(f"insert into {table} failed", exc, table=table, rows_written=written) from exc
                written += arrow.num_rows
        return written

    # --- read -----------------------------------------------------------------------------
    def query(self, sql: str, read_only: bool = True, parameters: Mapping[str, Any] | None = None) -> tuple[tuple[str, ...], list[tuple]]:
        """Run one statement; return (column names, rows as tuples).

        With `read_only` (the default) only a single SELECT / SHOW / DESCRIBE / EXPLAIN / WITH
        statement is accepted (else QueryRefused) and it runs with `readonly=1` (so a SETTINGS
        clause or a table function is refused by the database: pass `read_only=False`).
        Without it, any statement runs; one that returns no result set gives `((), [])`.
        """
        if read_only:
            statement = _read_statement(sql)
            return self._select(statement, parameters, read_only=True)
        statements = split_statements(sql)
        if len(statements) != 1:
            raise QueryRefused(f"query refused: expected exactly one statement, got {len(statements)}")
        statement = statements[0]
        word = statement.split(None, 1)[0].lstrip("(").upper()
        if word in READ_KEYWORDS:
            return self._select(statement, parameters, read_only=False)
        with self._lock:
            client = self._connected()
            try:
                client.command(statement, parameters=dict(parameters) if parameters else None)
            except Exception as exc:
                raise self._error("statement failed", exc) from exc
        return (), []

    def _select(self, statement: str, parameters: Mapping[str, Any] | None, read_only: bool) -> tuple[tuple[str, ...], list[tuple]]:
        if _FORMAT_CLAUSE.search(statement):
            raise QueryRefused("query refused: leave out the FORMAT clause (rows come back as Python values)")
        with self._lock:
            client = self._connected()
            settings = None
            if read_only:
                current = client.server_settings.get("readonly")
                # readonly=1: no writes, DDL, table functions or SETTINGS changes; a user that is
                # read-only on the server already cannot (and need not) set it
                settings = None if current is not None and current.readonly else {"readonly": "1"}
            try:
                result = client.query(statement, parameters=dict(parameters) if parameters else None, settings=settings)
                return tuple(result.column_names), [tuple(row) for row in result.result_rows]
            except Exception as exc:
                raise self._error("query failed", exc) from exc

    def count(self, table: str, final: bool = True) -> int:
        """Rows in a recorded table; with `final`, after ReplacingMergeTree deduplication."""
        _, rows = self.query(f"SELECT count() FROM {_check_table(table)}{' FINAL' if final else ''}")
        return int(rows[0][0])

    def optimize(self, table: str) -> None:
        """Merge a table's parts now (`OPTIMIZE TABLE ... FINAL`): duplicates go for good."""
        self.query(f"OPTIMIZE TABLE {_check_table(table)} FINAL", read_only=False)

    def close(self) -> None:
        """Close the client (for chdb: release the data directory). Idempotent."""
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            client.close()
