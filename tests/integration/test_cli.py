"""The command line as a user runs it: real processes, real files."""

import json
import re
import subprocess
import sys
from pathlib import Path

from payloads import futures_deal, stock_deal, stock_order

from execstate.bridge.journal import JournalWriter

ROOT = Path(__file__).resolve().parents[2]


def execstate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "execstate.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def _journal(path: Path, events) -> Path:
    writer = JournalWriter(path)
    for i, (state, msg) in enumerate(events):
        writer.write((1_779_000_000_000_000_000 + i, state, msg))
    writer.close()
    return path


def test_replay_json_prints_stable_position_shape(tmp_path):
    journal = _journal(tmp_path / "day.jsonl", [
        ("SORDER", stock_order(custom_field="MOMO", quantity=2)),
        ("SDEAL", stock_deal(event_id="a", exchange_seq="1", price=26.85, quantity=2, custom_field="MOMO")),
        ("SDEAL", stock_deal(event_id="a", exchange_seq="1", price=26.85, quantity=2, custom_field="MOMO")),  # duplicate
        ("SDEAL", stock_deal(event_id="b", exchange_seq="2", trade_id="0000beef", action="Sell", price=27.05, quantity=1, custom_field="MOMO", ts=1779333999.0)),
        ("FDEAL", futures_deal(event_id="c", exchange_seq="9", security_type="FUT", code="TXF", full_code="TXFL6", price=27000.0, quantity=2)),
    ])
    result = execstate("replay", str(journal), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    # 2890: buy 2 lots @26.85 (fee floor(53700 * 0.001425 * 0.6) = 45), sell 1 lot @27.05 the same
    # day (fee 23; cash day-trade tax floor(27050 * 0.0015) = 40); realized (27.05 - 26.85) * 1000.
    # TXF: short 2 @27000; fee 60 x 2; tax round(27000 * 200 * 0.00002) = 108 per contract.
    assert rows == [
        {"account": "9A95-1234567", "strategy": "momo", "symbol": "2890", "quantity": "1000", "avg_price": "26.85",
         "realized_pnl": "200", "fees": "68", "taxes": "40"},
        {"account": "F002000-1234567", "strategy": "unassigned", "symbol": "TXFL6", "quantity": "-2", "avg_price": "27000",
         "realized_pnl": "0", "fees": "120", "taxes": "216"},
    ]


def test_replay_reports_bad_lines_and_keeps_going(tmp_path):
    journal = _journal(tmp_path / "day.jsonl", [("SDEAL", stock_deal(event_id="a"))])
    with journal.open("ab") as fh:
        fh.write(b"not json\n")
        fh.write(b'{"ts_ns": 5, "state": "SDEAL", "msg": {"price": "NaN"}}\n')
    result = execstate("replay", str(journal), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "journal line 2" in result.stdout and "price" in result.stdout


def test_replay_of_missing_file_is_a_one_line_error(tmp_path):
    result = execstate("replay", "nope.jsonl", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: journal file 'nope.jsonl' not found"


def test_bad_config_fails_naming_key_value_and_expectation(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("fees:\n  stock:\n    discount: '1.7'\nsnapshot_interval_ms: -5\n")
    journal = _journal(tmp_path / "day.jsonl", [])
    result = execstate("replay", str(journal), "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "fees.stock.discount = '1.7'" in result.stderr and "less than or equal to 1" in result.stderr
    assert "snapshot_interval_ms = -5" in result.stderr


def test_demo_runs_whole_pipeline_and_books_match_broker(tmp_path):
    result = execstate("demo", "--orders", "150", "--pace", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"books match broker quantities\s*│\s*yes", out), out
    assert "PnL per strategy" in out and "Callback to position visible" in out
    journal = tmp_path / "state" / "journal" / "demo-seed1.jsonl"
    replay = execstate("replay", str(journal), "--intents", str(journal.with_name("demo-seed1.intents.jsonl")), "--json", cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    assert {row["strategy"] for row in json.loads(replay.stdout)} >= {"momo", "meanrev", "fut_trend"}


def test_replay_logs_to_a_file_under_the_state_dir_and_names_it(tmp_path):
    # Arrange: a fill, a duplicate, a malformed deal
    journal = _journal(tmp_path / "day.jsonl", [
        ("SDEAL", stock_deal(event_id="a", exchange_seq="1", custom_field="MOMO")),
        ("SDEAL", stock_deal(event_id="a", exchange_seq="1", custom_field="MOMO")),
        ("SDEAL", stock_deal(event_id="z", exchange_seq="3", price="NaN")),
    ])

    # Act
    result = execstate("replay", str(journal), "--no-record", "--log-level", "debug", cwd=tmp_path)

    # Assert
    assert result.returncode == 0, result.stderr
    (log_file,) = (tmp_path / "state" / "logs").glob("replay-*.jsonl")
    assert f"log: {log_file.relative_to(tmp_path)}" in " ".join(result.stdout.split())
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [e["reason"] for e in lines if e["event"] == "position_adjusted"] == ["fill"]
    assert [e["event"] for e in lines if e["event"] in ("duplicate_dropped", "dead_letter")] == ["duplicate_dropped", "dead_letter"]
    assert [e["source"] for e in lines if e["event"] == "duplicate_dropped"] == ["recovery"]  # a replay: debug
    assert "position_adjusted" not in result.stderr  # the terminal gets warnings only
    assert "dead_letter" in result.stderr


def test_log_level_is_checked(tmp_path):
    journal = _journal(tmp_path / "day.jsonl", [])
    result = execstate("replay", str(journal), "--log-level", "loud", cwd=tmp_path)
    assert result.returncode == 2 and "--log-level" in result.stderr
