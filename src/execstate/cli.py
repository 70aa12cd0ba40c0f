"""Command line: `execstate demo`, `execstate replay FILE [--json]`.

Entry point: `main()` (console script `execstate`). Thin by design: parse, load settings,
call into `app`, print. Exit codes: 0 success, 2 bad input (settings, missing file).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

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


def _settings(path: Path | None) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


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
) -> None:
    """Run a simulated Shioaji session through the whole pipeline and show the books."""
    from execstate.app import intents_file_for, run_demo

    settings = _settings(config)
    configure_logging(json=True, level="error")
    with console.status("simulated session running..."):
        result = run_demo(settings, seed=seed, orders=orders, pace=pace or None)
    snap = result.snapshot
    console.print(f"[bold]execstate demo[/]: {result.events:,} raw events from the simulated broker (seed {seed}) in {result.elapsed_s:.2f} s")
    console.print(positions_table(snap))
    console.print(strategy_table(snap))
    console.print(counts_table(result.pipeline.stats, {"dead letters kept": len(result.pipeline.dead_letters), "books match broker quantities": result.matches_broker}))
    console.print(latency_table(result.pipeline.stats))
    console.print(f"journal: {result.journal_path}; replay it with\n  .venv/bin/execstate replay {result.journal_path} --intents {intents_file_for(result.journal_path)} --json")
    if not result.matches_broker:
        for key, (ours, broker) in sorted(result.mismatches.items()):
            console.print(f"[red]mismatch[/] {key}: ours {ours}, broker {broker}")
        raise typer.Exit(1)


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(help="journal file (JSON lines: ts_ns, state, msg)")],
    as_json: Annotated[bool, typer.Option("--json", help="print final positions as JSON")] = False,
    intents: Annotated[Optional[Path], typer.Option(help="intents file (JSON lines: order_id, strategy) registered during the session")] = None,
    config: ConfigOpt = None,
) -> None:
    """Feed a journal through the pipeline and print the final positions."""
    from execstate.app import positions_as_dicts, replay_journal
    from execstate.normalize.intents import IntentRegistry

    settings = _settings(config)
    for label, path in (("journal", file), ("intents", intents)):
        if path is not None and not path.is_file():
            typer.echo(f"error: {label} file {str(path)!r} not found", err=True)
            raise typer.Exit(2)
    configure_logging(json=True, level="critical" if as_json else "error")
    registry = IntentRegistry(dict(settings.strategies.tags), path=intents) if intents else None
    pipeline, reader = replay_journal(file, settings, intents=registry)
    snap = pipeline.snapshot()
    if as_json:
        sys.stdout.write(json.dumps(positions_as_dicts(snap), indent=2) + "\n")
        return
    console.print(positions_table(snap, title=f"Positions after replay of {file}"))
    console.print(counts_table(pipeline.stats, {"bad journal lines": len(reader.bad_lines)}))
    for dead in list(pipeline.dead_letters)[:20]:
        console.print(f"[yellow]dead letter[/]: {dead.reason}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
