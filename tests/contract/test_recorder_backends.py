"""ClickHouseSink contract, one suite for every backend: embedded chdb, chdb behind the HTTP
interface (tests/fixtures/ch_http.py) and, when CLICKHOUSE_DSN is set, a real server.

Every test gets its own data directory (or database) and closes its sink in teardown: one
process can hold only one chdb path at a time.
"""

import gzip
import math
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from decimal import Decimal as D
from urllib.parse import urlsplit, urlunsplit

import clickhouse_connect
import pytest
from ch_http import ClickHouseHTTPFixture
from payloads import futures_deal, futures_order, stock_deal, stock_order

from execstate.app import Pipeline
from execstate.config import parse_settings
from execstate.domain.events import DeadLetter, FillEvent, OrderEvent, PositionDelta, PositionRecord, PositionSnapshot, ReconcileRecord
from execstate.record.clickhouse import ClickHouseSink, QueryRefused, SinkError, mask_dsn, split_statements
from execstate.record.rows import COLUMNS, KEYS, dead_letter_json, row_count
from execstate.record.tables import TABLES

BACKENDS = ["chdb", "http"] + (["server"] if os.environ.get("CLICKHOUSE_DSN") else [])
T0 = 1_779_333_919_920_000_123  # 2026-05-21 11:25:19.920000123 Asia/Taipei
BIG = D("99999999999999.9999")  # the largest Decimal(18, 4)


@dataclass
class Backend:
    name: str
    dsn: str
    http: ClickHouseHTTPFixture | None = None


def _server_database(dsn: str):
    """A fresh database on the real server; yields its DSN, drops it afterwards."""
    admin = clickhouse_connect.get_client(dsn=dsn)
    database = f"execstate_test_{uuid.uuid4().hex[:12]}"
    admin.command(f"CREATE DATABASE {database}")
    parts = urlsplit(dsn)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))
    finally:
        admin.command(f"DROP DATABASE IF EXISTS {database}")
        admin.close()


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    if request.param == "chdb":
        yield Backend("chdb", f"chdb://{tmp_path / 'clickhouse'}")
    elif request.param == "http":
        with ClickHouseHTTPFixture(tmp_path / "clickhouse") as http:
            yield Backend("http", http.dsn, http)
    else:
        yield from (Backend("server", dsn) for dsn in _server_database(os.environ["CLICKHOUSE_DSN"]))


@pytest.fixture
def http(tmp_path):
    """The HTTP fixture alone, for what only it can do (go down, show its request log)."""
    with ClickHouseHTTPFixture(tmp_path / "clickhouse") as fixture:
        yield fixture


@pytest.fixture
def sink(backend):
    sink = ClickHouseSink(backend.dsn)
    sink.ensure_schema()
    try:
        yield sink
    finally:
        sink.close()


# --- events -----------------------------------------------------------------------------

def hand_built() -> dict[str, list]:
    """Every table's events with edge values: tiny, large and negative money, ns timestamps, unicode."""
    order = OrderEvent(
        event_id=f"O:9A95-1234567:892f730b:New:{T0}", account="9A95-1234567", order_id="892f730b", seqno="361840",
        ordno="Y23CL", strategy="alpha", symbol="2890", code="2890", kind="STK", op_type="New", op_code="00", op_msg="委託成功",
        ok=True, action="Buy", price=D("26.85"), order_quantity=1000, cancel_quantity=0, modified_price=D("0.0001"),
        order_cond="Cash", order_lot="Common", price_type="LMT", time_in_force="ROD", custom_field="a1", status="Submitted",
        ts_event=T0, ts_recv=T0 + 30_000_001,
    )
    rejected = OrderEvent(**{**{f: getattr(order, f) for f in order.__struct_fields__}, "event_id": f"O:9A95-1234567:892f730c:New:{T0 + 1}",
                             "order_id": "892f730c", "op_code": "88", "ok": False, "price": BIG, "status": "Failed", "ts_event": T0 + 1})
    fills = [
        FillEvent(event_id="F:9A95-1234567:892f730b:669915", account="9A95-1234567", order_id="892f730b", seqno="361840",
                  ordno="Y23CL", exchange_seq="669915", strategy="alpha", symbol="2890", code="2890", kind="STK", side="Buy",
                  price=D("26.85"), quantity=1000, multiplier=D("1"), is_etf=False, order_cond="Cash", order_lot="Common",
                  market_type="", custom_field="a1", ts_event=T0 + 80_000_000, ts_recv=T0 + 99_999_999),
        FillEvent(event_id="F:F002000-1234567:0bbe4f6d:j5006396", account="F002000-1234567", order_id="0bbe4f6d", seqno="354926",
                  ordno="ta0fu", exchange_seq="j5006396", strategy="unassigned", symbol="TXFL6", code="TXF", kind="FUT", side="Sell",
                  price=D("27012"), quantity=3, multiplier=D("200"), is_etf=True, order_cond="", order_lot="", market_type="Night",
                  custom_field="", ts_event=1_764_685_425_000_000_001, ts_recv=1_764_685_425_000_000_999, correction="startup"),
    ]
    deltas = [
        PositionDelta(seq=1, cause="fill", source_id=fills[0].event_id, account="9A95-1234567", strategy="alpha", symbol="2890",
                      quantity_before=0, quantity_after=1000, avg_price=D("26.850000"), realized_pnl_change=D("0"), realized_pnl=D("0"),
                      fee=D("38"), tax=D("0"), fees=D("38"), taxes=D("0"), ts_event=fills[0].ts_event, ts_recv=fills[0].ts_recv),
        PositionDelta(seq=2, cause="reorder", source_id=fills[1].event_id, account="F002000-1234567", strategy="unassigned",
                      symbol="TXFL6", quantity_before=-5, quantity_after=-8, avg_price=D("27011.3333333333"),
                      realized_pnl_change=D("-123456789012345678.0123456789"), realized_pnl=D("0.0000000001"),
                      fee=D("150"), tax=D("-13"), fees=BIG, taxes=-BIG, ts_event=fills[1].ts_event, ts_recv=fills[1].ts_recv),
    ]
    snapshot = PositionSnapshot(seq=2, ts=T0 + 1_000_000_007, positions=(
        PositionRecord(account="9A95-1234567", strategy="alpha", symbol="2890", quantity=1000, avg_price=D("26.85"), realized_pnl=D("0"),
                       unrealized_pnl=D("50.0000000001"), fees=D("38"), taxes=D("0"), mark_price=D("26.9"), multiplier=D("1")),
        PositionRecord(account="F002000-1234567", strategy="unassigned", symbol="TXFL6", quantity=-8, avg_price=D("27011.3333333333"),
                       realized_pnl=D("-1.5"), unrealized_pnl=D("0"), fees=D("0.0001"), taxes=D("0"), mark_price=None, multiplier=D("200")),
    ))
    letters = [
        DeadLetter(reason="price=nan: expected a finite price", state="SDEAL", ts_recv=T0 + 5,
                   msg={"price": math.nan, "code": "2890", "name": "台積電", "nested": {"b": [1, 2.5], "a": None}}),
        DeadLetter(reason="internal error: KeyError('x')", state="FORDER", ts_recv=T0 + 6, msg="{'x': 1}"),
    ]
    records = [ReconcileRecord(record_id=f"R:{T0}:poll", reason="poll", accounts=("9A95-1234567", "F002000-1234567"), started_ns=T0,
                               duration_ms=12.5, records_resubmitted=1, recovered_fills=2,
                               discrepancies='[{"account":"9A95-1234567","symbol":"2890","ours":1000,"broker":2000}]',
                               corrections="[]", error="", halted=True,
                               pnl_discrepancies='[{"account":"9A95-1234567","symbol":"2330","ours":"13788.00","broker":"11786",'
                                                 '"diff_twd":"-2002.00","tolerance_twd":"100.00"}]')]
    return {"orders": [order, rejected], "fills": fills, "position_deltas": deltas, "position_snapshots": [snapshot],
            "dead_letters": letters, "reconciliations": records}


def pipeline_events() -> dict[str, list]:
    """Orders, fills, deltas and a snapshot from the real pipeline (stocks, futures, options)."""
    pipeline = Pipeline(parse_settings({}))
    got: dict[str, list] = {"order": [], "fill": [], "delta": []}
    for topic, sink in got.items():
        pipeline.bus.subscribe(topic, sink.append)
    pipeline.process_batch([
        (1_779_333_919_950_000_001, "SORDER", stock_order()),
        (1_779_333_920_100_000_002, "SDEAL", stock_deal(price=26.85, quantity=2)),
        (1_779_333_920_200_000_003, "SDEAL", stock_deal(exchange_seq="669916", action="Sell", price=26.9, quantity=1)),
        (1_779_331_888_100_000_004, "FORDER", futures_order()),
        (1_779_331_888_200_000_005, "FDEAL", futures_deal(trade_id="0bbe4f6d", code="TMF", full_code="TMFF6", security_type="FUT",
                                                          price=36112.0, action="Buy", ts=1779331888.5)),
        (1_764_685_425_100_000_006, "FDEAL", futures_deal()),
    ])
    snapshot = pipeline.store.snapshot(1_779_333_921_000_000_007)
    assert got["fill"] and got["delta"] and snapshot.positions
    return {"orders": got["order"], "fills": got["fill"], "position_deltas": got["delta"], "position_snapshots": [snapshot]}


# --- reading back -------------------------------------------------------------------------

def read_back(sink: ClickHouseSink, table: str) -> list:
    """The table's rows (FINAL) rebuilt as events, in key order; dead letters as (fields, msg JSON)."""
    columns = COLUMNS[table]
    select = ", ".join(f"toUnixTimestamp64Nano({name}) AS {name}" if kind[0] == "ts" else name for name, kind in columns)
    names, rows = sink.query(f"SELECT {select} FROM {table} FINAL ORDER BY {', '.join(KEYS[table])}")
    assert names == tuple(name for name, _ in columns)
    dicts = [dict(zip(names, row)) for row in rows]
    if table == "position_snapshots":
        snaps: dict[tuple, list] = {}
        for row in dicts:
            snaps.setdefault((row.pop("seq"), row.pop("ts")), []).append(PositionRecord(**row))
        return [PositionSnapshot(seq=seq, ts=ts, positions=tuple(sorted(recs, key=_position_key)))
                for (seq, ts), recs in sorted(snaps.items())]
    if table == "dead_letters":
        return sorted((row["reason"], row["state"], row["ts_recv"], row["msg"]) for row in dicts)
    if table == "reconciliations":
        return [ReconcileRecord(**{**row, "accounts": tuple(row["accounts"])}) for row in dicts]
    return [TABLES[table](**row) for row in dicts]


def _position_key(rec: PositionRecord) -> tuple:
    return rec.account, rec.strategy, rec.symbol


def expected(table: str, events: list) -> list:
    """What read_back returns for `events`."""
    if table == "position_snapshots":
        snaps = (PositionSnapshot(s.seq, s.ts, tuple(sorted(s.positions, key=_position_key))) for s in events)
        return sorted(snaps, key=lambda s: (s.seq, s.ts))
    if table == "dead_letters":
        return sorted((d.reason, d.state, d.ts_recv, dead_letter_json(d.msg)) for d in events)
    return sorted(events, key=lambda e: tuple(getattr(e, k) for k in KEYS[table]))


# --- the contract ---------------------------------------------------------------------------

def test_schema_applies_twice_and_creates_every_table(backend):
    with ClickHouseSink(backend.dsn) as sink:
        sink.ensure_schema()
        sink.ensure_schema()
        _, rows = sink.query("SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name")
    assert {name for (name,) in rows} >= set(TABLES)


def test_schema_columns_and_keys_match_the_rows_module(sink):
    for table in TABLES:
        names, rows = sink.query(f"DESCRIBE TABLE {table}")
        described = [row[names.index("name")] for row in rows]
        assert described == [name for name, _ in COLUMNS[table]] + ["recorded_at"], table
        _, info = sink.query("SELECT sorting_key, engine_full FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
                             parameters={"t": table})
        sorting_key, engine = info[0]
        assert tuple(k.strip() for k in sorting_key.split(",")) == KEYS[table], table
        assert engine.startswith("ReplacingMergeTree(recorded_at)"), table


@pytest.mark.parametrize("table", list(TABLES))
def test_hand_built_events_are_read_back_identical(sink, table):
    # Arrange
    events = hand_built()[table]
    # Act
    written = sink.write({table: events})
    # Assert
    assert written == row_count(table, events)
    assert read_back(sink, table) == expected(table, events)


def test_money_keeps_its_exact_decimal_digits(sink):
    sink.write(hand_built())
    _, rows = sink.query("SELECT toString(price), toString(modified_price) FROM orders FINAL ORDER BY event_id")
    assert rows == [("26.85", "0.0001"), (str(BIG), "0.0001")]
    _, rows = sink.query("SELECT toString(realized_pnl_change), toString(taxes) FROM position_deltas FINAL WHERE cause = 'reorder'")
    assert rows == [("-123456789012345678.0123456789", f"-{BIG}")]
    _, rows = sink.query("SELECT toUnixTimestamp64Nano(ts_event), toString(ts_event) FROM orders FINAL ORDER BY event_id LIMIT 1")
    assert rows == [(T0, "2026-05-21 11:25:19.920000123")]  # Asia/Taipei wall time, to the ns


def test_pipeline_events_are_read_back_identical(sink):
    batch = pipeline_events()
    assert sink.write(batch) == sum(row_count(t, events) for t, events in batch.items())
    for table, events in batch.items():
        assert read_back(sink, table) == expected(table, events), table


def test_the_same_batch_written_twice_is_kept_once(sink):
    # Arrange
    batch = hand_built()
    rows = {table: row_count(table, events) for table, events in batch.items()}
    # Act
    sink.write(batch)
    sink.write(batch)
    # Assert
    assert {t: sink.count(t, final=False) for t in TABLES} == {t: 2 * n for t, n in rows.items()}
    assert {t: sink.count(t) for t in TABLES} == rows
    for table in TABLES:
        sink.optimize(table)
    assert {t: sink.count(t, final=False) for t in TABLES} == rows
    for table, events in batch.items():
        assert read_back(sink, table) == expected(table, events), table


def test_a_replayed_delta_with_a_new_seq_replaces_the_first(sink):
    first = hand_built()["position_deltas"]
    replayed = [PositionDelta(**{**{f: getattr(d, f) for f in d.__struct_fields__}, "seq": d.seq + 100}) for d in first]
    sink.write({"position_deltas": first})
    sink.write({"position_deltas": replayed})
    assert sink.count("position_deltas") == len(first)
    assert [d.seq for d in read_back(sink, "position_deltas")] == [d.seq for d in expected("position_deltas", replayed)]


@pytest.mark.parametrize("sql", [
    "INSERT INTO fills (event_id) VALUES ('x')",
    "DROP TABLE fills",
    "  drop table fills",
    "TRUNCATE TABLE orders",
    "SELECT 1; DROP TABLE fills",
    "OPTIMIZE TABLE fills FINAL",
    "ALTER TABLE fills DELETE WHERE 1",
    "SELECT * FROM fills INTO OUTFILE 'fills.csv'",
    "SELECT 1 FORMAT JSON",
    "",
])
def test_query_refuses_anything_but_one_read_statement(sink, sql):
    sink.write({"fills": hand_built()["fills"]})
    with pytest.raises(QueryRefused, match="query refused"):
        sink.query(sql)
    assert sink.count("fills") == 2


@pytest.mark.parametrize("sql", [
    "SELECT count() FROM fills WHERE event_id != ';DROP'",
    "-- comment; with a semicolon\nSELECT 1;",
    "WITH 1 AS x SELECT x",
    "SHOW TABLES",
    "DESCRIBE TABLE fills",
    "EXPLAIN SELECT 1",
    "(SELECT 1)",
])
def test_query_runs_read_statements(sink, sql):
    names, rows = sink.query(sql)
    assert names and rows


def test_reads_run_with_readonly_so_even_a_read_keyword_cannot_write(sink):
    with pytest.raises(SinkError, match="readonly|READONLY"):
        sink.query("SELECT * FROM file('x.csv', 'CSV', 'a String')")  # a table function: refused in readonly mode
    assert sink.query("SELECT 1 SETTINGS max_threads = 1", read_only=False) == (("1",), [(1,)])


def test_a_bad_value_raises_value_error_and_writes_nothing(sink):
    batch = hand_built()
    bad = FillEvent(**{**{f: getattr(batch["fills"][0], f) for f in FillEvent.__struct_fields__}, "price": 26.85})
    with pytest.raises(ValueError, match=r"fills\.price=26\.85"):
        sink.write({"orders": batch["orders"], "fills": [bad]})
    with pytest.raises(ValueError, match="trades"):
        sink.write({"orders": batch["orders"], "trades": [1]})
    assert sink.count("orders") == 0


def test_writes_from_many_threads_all_land(sink):
    # Arrange
    base = hand_built()["fills"][0]
    batches = [[FillEvent(**{**{f: getattr(base, f) for f in FillEvent.__struct_fields__}, "event_id": f"F:t{t}:{i}"}) for i in range(50)]
               for t in range(8)]
    errors: list[BaseException] = []

    def run(events):
        try:
            sink.write({"fills": events})
            sink.count("fills")
        except BaseException as exc:  # handed to the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(events,)) for events in batches]
    # Act
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Assert
    assert errors == []
    assert sink.count("fills") == 400


def test_http_server_down_raises_sink_error_then_recovers_with_data_intact(http):
    batch = hand_built()
    with ClickHouseSink(http.dsn) as sink:
        sink.ensure_schema()
        sink.write({"orders": batch["orders"]})
        # Act: the database goes away
        http.stop()
        with pytest.raises(SinkError) as caught:
            sink.write({"fills": batch["fills"]})
        # Assert
        assert caught.value.table == "fills" and caught.value.cause is not None
        assert "insert into fills failed" in str(caught.value) and http.dsn in str(caught.value)
        with pytest.raises(SinkError):
            sink.count("orders")
        # Act: it comes back, same data directory and port
        http.start()
        assert sink.write({"fills": batch["fills"]}) == 2
        assert read_back(sink, "orders") == expected("orders", batch["orders"])
        assert read_back(sink, "fills") == expected("fills", batch["fills"])


def test_a_database_down_at_start_gets_its_schema_on_the_first_write_after(http):
    batch = hand_built()
    http.stop()
    with ClickHouseSink(http.dsn) as sink:
        with pytest.raises(SinkError, match="cannot connect"):
            sink.ensure_schema()
        with pytest.raises(SinkError):
            sink.write({"fills": batch["fills"]})
        http.start()
        assert sink.write({"fills": batch["fills"]}) == 2
        assert read_back(sink, "fills") == expected("fills", batch["fills"])


def test_http_reads_run_with_readonly_and_inserts_go_as_arrow(http):
    with ClickHouseSink(http.dsn) as sink:
        sink.ensure_schema()
        sink.write({"fills": hand_built()["fills"]})
        sink.count("fills")
    served = http.log
    assert any(s.sql.startswith("INSERT INTO `fills`") and s.sql.endswith(")") for s in served)
    assert [s.settings.get("readonly") for s in served if s.sql.startswith("SELECT count() FROM fills")] == ["1"]


def test_a_closed_sink_refuses_work_and_releases_the_chdb_path(tmp_path):
    first = ClickHouseSink(f"chdb://{tmp_path / 'a'}")
    first.ensure_schema()
    first.close()
    first.close()  # idempotent
    with pytest.raises(SinkError, match="closed"):
        first.count("fills")
    with ClickHouseSink(f"chdb://{tmp_path / 'b'}") as second:  # another path: only possible once the first is released
        second.ensure_schema()
        assert second.count("fills") == 0


def test_an_unreachable_server_names_the_dsn_with_the_password_masked(tmp_path):
    with ClickHouseHTTPFixture(tmp_path / "ch") as http:
        port = http.port
    sink = ClickHouseSink(f"http://recorder:s3cret@127.0.0.1:{port}/default")
    with pytest.raises(SinkError, match=rf"cannot connect to ClickHouse \(http://recorder:\*\*\*@127\.0\.0\.1:{port}/default\)") as caught:
        sink.ensure_schema()
    assert "s3cret" not in str(caught.value)
    sink.close()


@pytest.mark.parametrize(("dsn", "masked"), [
    ("http://u:pw@host:8123/db", "http://u:***@host:8123/db"),
    ("https://host:8443/db?password=pw&secure=1", "https://host:8443/db?password=***&secure=1"),
    ("http://host:8123/db", "http://host:8123/db"),
    ("chdb:///var/lib/execstate/clickhouse", "chdb:///var/lib/execstate/clickhouse"),
])
def test_mask_dsn_hides_passwords(dsn, masked):
    assert mask_dsn(dsn) == masked


def test_split_statements_ignores_semicolons_in_strings_names_and_comments():
    sql = "CREATE TABLE a (x String DEFAULT ';');\n-- a comment; here\nSELECT `a;b`, \"c;d\" /* ; */ FROM a;;\n  "
    assert split_statements(sql) == ["CREATE TABLE a (x String DEFAULT ';')", 'SELECT `a;b`, "c;d"   FROM a']


def test_http_fixture_speaks_the_clickhouse_http_interface(http):
    """The fixture itself, without clickhouse-connect: what a real server answers."""
    def call(query: str | None = None, body: bytes | None = None, path: str = "/", headers: dict | None = None, **params):
        if query is not None:
            params["query"] = query
        url = f"http://127.0.0.1:{http.port}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers or {})) as response:
                return response.status, response.read(), response.headers
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.headers

    assert call(path="/ping")[:2] == (200, b"Ok.\n")
    assert call("SELECT 1 + {x:UInt8}", param_x="2")[:2] == (200, b"3\n")
    call(body=b"CREATE TABLE t (a UInt8, s String) ENGINE = MergeTree ORDER BY a")
    assert call("INSERT INTO t FORMAT CSV", body=gzip.compress(b"1,a;b\n2,c\n"), headers={"Content-Encoding": "gzip"})[0] == 200
    status, body, headers = call(body=b"SELECT a, s FROM t ORDER BY a FORMAT JSONEachRow")
    assert (status, body, headers["X-ClickHouse-Format"]) == (200, b'{"a":1,"s":"a;b"}\n{"a":2,"s":"c"}\n', "JSONEachRow")
    assert call("SELECT count() FROM t", default_format="CSV")[1] == b"2\n"
    status, body, headers = call("DROP TABLE t", readonly="1")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "164") and b"READONLY" in body
    status, body, headers = call("SELECT nope")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "47") and body.startswith(b"Code: 47.")
