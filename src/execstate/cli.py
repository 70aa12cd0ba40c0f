"""Command line: `demo`, `replay FILE [--json]`, `run`, and the operator commands that talk
to a running service: `status`, `snapshot [--json]`, `reconcile [--symbol S]`, `halt-clear`.

Entry point: `main()` (console script `execstate`). Thin by design: parse, load settings,
call into `app` / `service` or the control endpoint, print.
Exit codes: 0 success; 1 the service is HALTed, or a reconcile left differences or failed;
2 bad input (settings, missing file, missing credentials); 3 the service is not running.
Logging is configured once, at the start of each command (never at import): `run` logs to
stderr (`--log-level`; `--log-json/--log-console`, default JSON lines unless stderr is a
terminal); `demo` and `replay` log JSON lines to `<state_dir>/logs/<command>-<day>.jsonl`
(`--log-level`, default info) and only warnings to the terminal, and name the file at the
end; the operator commands log warnings to stderr.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from execstate.config import Settings, load_settings
from execstate.domain.errors import ConfigError
from execstate.domain.events import PositionSnapshot
from execstate.domain.money import quantize_money
from execstate.telemetry.logging import configure_logging
from execstate.telemetry.stats import PipelineStats

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Execution events and position state for Shioaji traders.")
console = Console(width=None if sys.stdout.isatty() else 150)
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="settings file (default config/execution.yaml)")]
LogLevelOpt = Annotated[str, typer.Option("--log-level", help="debug, info, warning, error or critical")]
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_TAIPEI = dt.timezone(dt.timedelta(hours=8))


def _settings(path: Path | None) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _log_level(level: str) -> str:
    if level.lower() not in _LOG_LEVELS:
        typer.echo(f"error: --log-level={level!r}: expected one of {', '.join(_LOG_LEVELS)}", err=True)
        raise typer.Exit(2)
    return level.lower()


def _job_logging(settings: Settings, command: str, level: str) -> Path:
    """Logging for a short job (demo, replay): JSON lines at `level` to
    `<state_dir>/logs/<command>-<Taipei day>.jsonl`, only warnings and above to the terminal.
    Returns the log file's path (the command's last lines name it)."""
    path = Path(settings.state_dir) / "logs" / f"{command}-{dt.datetime.now(_TAIPEI).date().isoformat()}.jsonl"
    try:
        configure_logging(level=level, file=path, console_level="warning")
    except OSError as exc:
        typer.echo(f"error: cannot open the log file {str(path)!r}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    return path


def positions_table(snapshot: PositionSnapshot, title: str = "Positions") -> Table:
    table = Table(title=title)
    for name in ("account", "strategy", "symbol"):
        table.add_column(name)
    for name in ("quantity", "avg price", "realized", "unrealized", "fees", "taxes", "net"):
        table.add_column(name, justify="right")
    for p in snapshot.positions:
        net = p.realized_pnl + p.unrealized_pnl - p.fees - p.taxes
        table.add_row(
            p.account, p.strategy, p.symbol, f"{p.quantity:,}", f"{p.avg_price.normalize():f}" if p.quantity else "-",
            *(f"{quantize_money(v):,.0f}" for v in (p.realized_pnl, p.unrealized_pnl, p.fees, p.taxes, net)),
        )
    return table


def strategy_table(snapshot: PositionSnapshot) -> Table:
    totals: dict[tuple[str, str], list] = {}
    for p in snapshot.positions:
        row = totals.setdefault((p.account, p.strategy), [0, 0, 0, 0, 0])
        row[0] += 1
        row[1] += p.realized_pnl
        row[2] += p.unrealized_pnl
        row[3] += p.fees + p.taxes
        row[4] += p.realized_pnl + p.unrealized_pnl - p.fees - p.taxes
    table = Table(title="PnL per strategy (TWD)")
    for name, justify in (("account", "left"), ("strategy", "left"), ("symbols", "right"), ("realized", "right"), ("unrealized", "right"), ("fees+taxes", "right"), ("net", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for (account, strategy), (n, *money) in sorted(totals.items()):
        table.add_row(account, strategy, str(n), *(f"{quantize_money(v):,.0f}" for v in money))
    return table


def counts_table(stats: PipelineStats, extra: dict[str, object] | None = None) -> Table:
    table = Table(title="Events")
    table.add_column("counter")
    table.add_column("value", justify="right")
    for name, value in {**stats.counts(), **(extra or {})}.items():
        if isinstance(value, bool):
            text = "yes" if value else "NO"
        elif isinstance(value, int):
            text = f"{value:,}"
        else:
            text = str(value)
        table.add_row(name, text)
    return table


def latency_table(stats: PipelineStats) -> Table:
    table = Table(title="Callback to position visible (latency)")
    for name in ("samples", "median", "p99", "p99.9", "max"):
        table.add_column(name, justify="right")
    pct = stats.latency_ns.percentiles(50, 99, 99.9, 100)
    if pct:
        table.add_row(f"{len(stats.latency_ns):,}", *(f"{v / 1000:,.1f} us" for v in pct))
    return table


@app.command()
def demo(
    config: ConfigOpt = None,
    seed: Annotated[int, typer.Option(help="simulated session seed")] = 1,
    orders: Annotated[int, typer.Option(help="orders in the simulated session")] = 600,
    pace: Annotated[float, typer.Option(help="events per second delivered by the simulated broker (0 = as fast as possible)")] = 5000.0,
    log_level: LogLevelOpt = "info",
) -> None:
    """Run a simulated Shioaji session through the whole pipeline and show the books."""
    from execstate.jobs import intents_file_for, run_demo

    settings = _settings(config)
    log_path = _job_logging(settings, "demo", _log_level(log_level))
    with console.status("simulated session running..."):
        result = run_demo(settings, seed=seed, orders=orders, pace=pace or None)
    snap = result.snapshot
    console.print(f"[bold]execstate demo[/]: {result.events:,} raw events from the simulated broker (seed {seed}) in {result.elapsed_s:.2f} s")
    console.print(positions_table(snap))
    console.print(strategy_table(snap))
    console.print(counts_table(result.pipeline.stats, {"dead letters kept": len(result.pipeline.dead_letters), "books match broker quantities": result.matches_broker}))
    console.print(latency_table(result.pipeline.stats))
    if result.recorded is not None:
        table = Table(title=f"Rows in ClickHouse ({result.pipeline.settings.clickhouse_dsn()}, after FINAL)")
        table.add_column("table")
        table.add_column("rows", justify="right")
        for name, rows in result.recorded.items():
            table.add_row(name, f"{rows:,}")
        console.print(table)
    if result.record_error:
        console.print(f"[yellow]recording[/]: {result.record_error}")
    console.print(f"journal: {result.journal_path}; replay it with\n  .venv/bin/execstate replay {result.journal_path} --intents {intents_file_for(result.journal_path)} --json")
    console.print(f"log: {log_path} (JSON lines: every position adjustment, duplicate, dead letter; warnings also shown here)")
    if not result.matches_broker:
        for key, (ours, broker) in sorted(result.mismatches.items()):
            console.print(f"[red]mismatch[/] {key}: ours {ours}, broker {broker}")
        raise typer.Exit(1)


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(help="journal file (JSON lines: ts_ns, state, msg)")],
    as_json: Annotated[bool, typer.Option("--json", help="print final positions as JSON")] = False,
    intents: Annotated[Optional[Path], typer.Option(help="intents file (JSON lines: order_id, strategy) registered during the session")] = None,
    record: Annotated[bool, typer.Option("--record/--no-record", help="also record into the configured database (idempotent)")] = True,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = "info",
) -> None:
    """Feed a journal through the pipeline and print the final positions."""
    from execstate.app import positions_as_dicts
    from execstate.jobs import replay_journal
    from execstate.normalize.intents import IntentRegistry

    settings = _settings(config)
    for label, path in (("journal", file), ("intents", intents)):
        if path is not None and not path.is_file():
            typer.echo(f"error: {label} file {str(path)!r} not found", err=True)
            raise typer.Exit(2)
    log_path = _job_logging(settings, "replay", _log_level(log_level))
    registry = IntentRegistry(dict(settings.strategies.tags), path=intents) if intents else None
    pipeline = replay_journal(file, settings, intents=registry, record=record)
    if record and pipeline.record_error:
        typer.echo(f"warning: not recorded: {pipeline.record_error}", err=True)
    snap = pipeline.snapshot()
    if as_json:
        sys.stdout.write(json.dumps(positions_as_dicts(snap), indent=2) + "\n")
        typer.echo(f"log: {log_path}", err=True)
        return
    console.print(positions_table(snap, title=f"Positions after replay of {file}"))
    console.print(counts_table(pipeline.stats, {"bad journal lines": pipeline.bad_journal_lines}))
    for dead in list(pipeline.dead_letters)[:20]:
        console.print(f"[yellow]dead letter[/]: {dead.reason}")
    console.print(f"log: {log_path}")


EXIT_ATTENTION, EXIT_BAD_INPUT, EXIT_NOT_RUNNING = 1, 2, 3


def _client(config: Path | None) -> Any:
    from execstate.control import ControlClient

    return ControlClient(Path(_settings(config).state_dir))


def _request(config: Path | None, command: str, **args: Any) -> Any:
    """The operator commands' one call to the running service (logging set up first: warnings to stderr)."""
    from execstate.control import ControlError, ServiceNotRunning

    configure_logging(level="warning")

    try:
        return _client(config).request(command, **args)
    except ServiceNotRunning as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_NOT_RUNNING) from None
    except ControlError as exc:
        typer.echo(f"error: {exc.code}: {exc}", err=True)
        raise typer.Exit(EXIT_ATTENTION) from None


@app.command()
def run(
    config: ConfigOpt = None,
    broker: Annotated[str, typer.Option(help="sim (simulated Shioaji, the default) or shioaji (credentials from SJ_API_KEY / SJ_SECRET_KEY)")] = "sim",
    seed: Annotated[int, typer.Option(help="sim: session seed")] = 1,
    orders: Annotated[int, typer.Option(help="sim: orders in the simulated day")] = 600,
    pace: Annotated[float, typer.Option(help="sim: events per second delivered")] = 50.0,
    log_level: LogLevelOpt = "info",
    log_json: Annotated[Optional[bool], typer.Option("--log-json/--log-console", help="log format on stderr (default: console text on a terminal, else JSON lines)")] = None,
) -> None:
    """Run the service until SIGINT or SIGTERM: bridge, pipeline, reconciliation, control endpoint."""
    import os
    import signal
    import threading

    from execstate.service import CredentialsMissing, Service, connect_shioaji, simulated_session

    settings = _settings(config)
    if broker not in ("sim", "shioaji"):
        typer.echo(f"error: --broker={broker!r}: expected sim or shioaji", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    configure_logging(json=log_json, level=_log_level(log_level))
    session = None
    try:
        if broker == "sim":  # SJ_PERSON_ID: the simulated accounts carry it, as a real login's do
            api, accounts, session, resume_at = simulated_session(settings, seed, orders, person_id=os.environ.get("SJ_PERSON_ID", ""))
        else:
            api, accounts = connect_shioaji(os.environ)
    except CredentialsMissing as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    service = Service(settings, api, accounts, day=session.config.trade_date.isoformat() if session else None)
    if session is not None:  # what the order adapter registers when strategies place orders
        for intent in session.intents:
            if service.intents.get(intent.order_id) is None:
                service.intents.register(intent.order_id, intent.strategy_id, intent.symbol, intent.custom_field)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    from execstate.control import ControlStartError

    try:
        service.start()
    except ControlStartError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_ATTENTION) from None
    if session is not None:
        service.playback = api.play(pace_per_s=pace or None, wait=False, start=resume_at)
    halt = service.halt.status()
    typer.echo(f"execstate running: broker {broker}, day {service.day}, accounts {', '.join(service.accounts)}; "
               f"control socket {service.control.socket_path}; {'HALTED: ' + halt.reason if halt.halted else 'not halted'}", err=True)
    typer.echo(f"metrics: {service.metrics_url or 'unavailable (see the log)'}", err=True)
    if service.api_url:
        typer.echo(f"API: {service.api_url} (Authorization: Bearer $(cat {service.control.token_path}))", err=True)
    stop.wait()
    service.stop()
    typer.echo("execstate stopped: queue drained, last snapshot written", err=True)


@app.command()
def status(config: ConfigOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Connection, last callback and gap, queue depth, outstanding orders, counts, HALT state."""
    result = _request(config, "status")
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        table = Table(title="execstate status")
        table.add_column("item")
        table.add_column("value")
        halt = result["halt"]
        rows = [
            ("phase", result.get("phase", "running")),
            ("connection", result["connection"]),
            ("last callback gap", "no callback yet" if result["callback_gap_s"] is None else f"{result['callback_gap_s']:.3f} s"),
            ("queue depth", f"{result['queue_depth']:,}"),
            ("outstanding orders", f"{result['outstanding_orders']:,}"),
            ("HALT", f"HALTED: {halt['reason']}" if halt["halted"] else "no"),
            ("uptime", f"{result['uptime_s']:,.0f} s"),
            ("metrics", result.get("metrics_url") or "unavailable"),
            ("journal", result["journal"]),
        ]
        rows += [(name, f"{value:,}") for name, value in result["counts"].items()]
        last = result.get("last_reconcile")
        if last:
            rows.append(("last reconcile", f"{last['reason']}: {len(last['discrepancies'])} differences, {len(last['corrections'])} corrections, {last['duration_ms']} ms{', error ' + last['error'] if last['error'] else ''}"))
        for name, value in rows:
            table.add_row(name, str(value))
        console.print(table)
    if result["halt"]["halted"]:
        raise typer.Exit(EXIT_ATTENTION)


@app.command()
def snapshot(config: ConfigOpt = None, as_json: Annotated[bool, typer.Option("--json", help="the same JSON shape as replay --json")] = False) -> None:
    """Current positions of the running service."""
    result = _request(config, "snapshot")
    if as_json:
        sys.stdout.write(json.dumps(result["positions"], indent=2) + "\n")
        return
    table = Table(title=f"Positions (store seq {result['seq']})")
    for name in ("account", "strategy", "symbol", "quantity", "avg price", "realized", "unrealized", "fees", "taxes"):
        table.add_column(name, justify="left" if name in ("account", "strategy", "symbol") else "right")
    for p in result["positions"]:
        unrealized = result["unrealized"].get(f"{p['account']}|{p['strategy']}|{p['symbol']}", "0")
        table.add_row(p["account"], p["strategy"], p["symbol"], p["quantity"], p["avg_price"], p["realized_pnl"], unrealized, p["fees"], p["taxes"])
    console.print(table)


@app.command()
def reconcile(
    config: ConfigOpt = None,
    symbol: Annotated[Optional[list[str]], typer.Option("--symbol", help="only these symbols (repeatable)")] = None,
    account: Annotated[Optional[list[str]], typer.Option("--account", help="only these accounts (repeatable)")] = None,
) -> None:
    """Force a broker refresh now; print the differences found and the corrections made."""
    r = _request(config, "reconcile", symbols=symbol or [], accounts=account or [])
    console.print(f"reconcile of {', '.join(r['accounts'])}: {r['records_resubmitted']} broker records resubmitted, "
                  f"{r['recovered_fills']} missed fills recovered, {r['duration_ms']} ms")
    if r["discrepancies"]:
        table = Table(title="Differences found (net quantity per account and symbol)")
        for name in ("account", "symbol", "ours", "broker"):
            table.add_column(name)
        for d in r["discrepancies"]:
            table.add_row(d["account"], d["symbol"], f"{d['ours']:,}", f"{d['broker']:,}")
        console.print(table)
    for c in r["corrections"]:
        console.print(f"corrected {c['account']} {c['symbol']}: {c['quantity']:+,} to {c['strategy']} at {c['price']} ({c['reason']})")
    for d in r["pending"]:
        console.print(f"not corrected yet (an order is in flight; needs a second look): {d['account']} {d['symbol']} ours {d['ours']:,} broker {d['broker']:,}")
    if r["error"]:
        console.print(f"[red]error[/]: {r['error']}")
    if r["halted"]:
        console.print("[red]the service is HALTED[/]")
    if not r["discrepancies"] and not r["error"]:
        console.print("books match the broker")
    if r["error"] or r["pending"] or r["halted"]:
        raise typer.Exit(EXIT_ATTENTION)


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="a read-only statement (SELECT, SHOW, DESCRIBE, EXPLAIN, WITH)")],
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run a read-only query against the configured database and print a table.

    Through the running service when there is one (it owns the embedded engine), else directly.
    """
    from execstate.control import ServiceNotRunning

    settings = _settings(config)
    configure_logging(level="warning")
    try:
        result = _client(config).request("query", sql=sql)
        columns, rows = result["columns"], result["rows"]
    except ServiceNotRunning:
        from execstate.record.clickhouse import ClickHouseSink, QueryRefused, SinkError

        sink = ClickHouseSink(settings.clickhouse_dsn())
        try:
            columns, rows = sink.query(sql)
        except QueryRefused as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except SinkError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_ATTENTION) from None
        finally:
            sink.close()
    except Exception as exc:  # a refusal or failure reported by the service
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_ATTENTION) from None
    if as_json:
        sys.stdout.write(json.dumps({"columns": list(columns), "rows": [[str(v) if not isinstance(v, (int, float, str, type(None))) else v for v in r] for r in rows]}, indent=2) + "\n")
        return
    table = Table(title=f"{len(rows):,} rows")
    for name in columns:
        table.add_column(str(name))
    for row in rows[:1000]:
        table.add_row(*(str(v) for v in row))
    console.print(table)
    if len(rows) > 1000:
        console.print(f"(first 1,000 of {len(rows):,} rows shown)")


@app.command("halt-clear")
def halt_clear(config: ConfigOpt = None) -> None:
    """Leave HALT (operator decision)."""
    result = _request(config, "halt-clear")
    console.print("HALT cleared" if result["cleared"] else "the service was not halted")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
