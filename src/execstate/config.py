"""Validated settings, loaded from `config/execution.yaml`.

Entry points: `load_settings(path=None) -> Settings`, `Settings`, `DEFAULT_CONFIG_PATH`.

Invariants:
- Units are in the field names (`snapshot_interval_ms`); money and rates are `Decimal`.
- Unknown keys are errors (a typo never silently falls back to a default).
- A bad file raises `ConfigError` whose message names each bad key, its value and what was
  expected, e.g. `fees.stock.discount = '1.7': expected a number <= 1`.
- Settings are read once at start (never at import) and are immutable afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from execstate.domain.errors import ConfigError

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[2] / "config" / "execution.yaml"

Rate = Annotated[Decimal, Field(ge=0, le=1)]
Money = Annotated[Decimal, Field(ge=0)]
PositiveMs = Annotated[int, Field(gt=0, strict=True)]
Seconds = Annotated[float, Field(gt=0, strict=True)]  # an int is accepted; a string or a bool is not
Flag = Annotated[bool, Field(strict=True)]
Multiplier = Annotated[Decimal, Field(gt=0)]
K = TypeVar("K")
V = TypeVar("V")
# a mapping that cannot be changed after load (settings are immutable)
ReadOnly = Annotated[dict[K, V], AfterValidator(MappingProxyType)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QueueSettings(_Model):
    batch_max: Annotated[int, Field(gt=0, le=1_000_000, strict=True)] = 4096
    dedupe_capacity: Annotated[int, Field(gt=0, strict=True)] = 2_000_000
    dead_letter_capacity: Annotated[int, Field(gt=0, strict=True)] = 100_000


class ReconcileSettings(_Model):
    callback_gap_threshold_ms: PositiveMs = 1000
    deadline_ms: PositiveMs = 10_000
    confirmations: Annotated[int, Field(ge=1, le=10, strict=True)] = 2
    recent_fill_window_ms: PositiveMs = 5000  # a symbol with a fill this recent counts as in flight
    max_quantity_mismatch: Annotated[int, Field(ge=0, strict=True)] = 0
    # unrealized PnL vs the broker's list_positions pnl, per position: reported (and alerted on, warn:
    # ExecstateReconciliationPnlMismatch in deploy/prometheus/alerts.yml, change both) above this
    max_pnl_mismatch_twd: Money = Decimal("100")
    poll_interval_ms: PositiveMs = 5000


class RateLimitSettings(_Model):
    portfolio_queries_per_window: Annotated[int, Field(gt=0, le=25, strict=True)] = 25
    portfolio_window_ms: PositiveMs = 5000
    order_calls_per_window: Annotated[int, Field(gt=0, le=250, strict=True)] = 250
    order_window_ms: PositiveMs = 10_000
    backoff_initial_ms: PositiveMs = 500
    backoff_max_ms: PositiveMs = 60_000


class OddLotSettings(_Model):
    # True: odd-lot and board-lot fills of a stock share one position, in shares.
    # False: odd lots are kept as their own position, symbol suffixed ":Odd".
    combine_with_board_lots: Flag = True


class StockFeeSettings(_Model):
    commission_rate: Rate = Decimal("0.001425")
    discount: Annotated[Decimal, Field(gt=0, le=1)] = Decimal("1")
    min_fee_board_lot: Money = Decimal("20")
    min_fee_odd_lot: Money = Decimal("1")
    rounding: Literal["floor", "round", "ceil"] = "floor"
    tax_rate: Rate = Decimal("0.003")
    day_trade_tax_rate: Rate = Decimal("0.0015")
    etf_tax_rate: Rate = Decimal("0.001")
    etf_code_prefixes: tuple[str, ...] = ("00",)
    etf_codes: tuple[str, ...] = ()
    non_etf_codes: tuple[str, ...] = ()
    day_trade_conds: tuple[str, ...] = ("Cash",)


class FuturesFeeSettings(_Model):
    futures_tax_rate: Rate = Decimal("0.00002")
    option_tax_rate: Rate = Decimal("0.001")
    # broker commission plus exchange fees, TWD per contract per side, by product root
    fee_per_contract: ReadOnly[str, Money] = Field(default_factory=lambda: MappingProxyType({"default": Decimal("50")}))


class FeeSettings(_Model):
    stock: StockFeeSettings = Field(default_factory=StockFeeSettings)
    futures: FuturesFeeSettings = Field(default_factory=FuturesFeeSettings)


def _default_products() -> MappingProxyType:
    weekly_txo = {root: Decimal(50) for root in ("TX1", "TX2", "TX4", "TX5")}  # weekly TXO series roots
    return MappingProxyType({
        "TXF": Decimal(200), "MXF": Decimal(50), "TMF": Decimal(10), "TXO": Decimal(50),
        "EXF": Decimal(4000), "FXF": Decimal(1000), **weekly_txo,
    })


class MultiplierSettings(_Model):
    products: ReadOnly[str, Multiplier] = Field(default_factory=_default_products)
    overrides: ReadOnly[str, Multiplier] = Field(default_factory=lambda: MappingProxyType({}))
    default_future: Annotated[Decimal, Field(gt=0)] = Decimal(2000)
    default_option: Annotated[Decimal, Field(gt=0)] = Decimal(2000)


class StrategySettings(_Model):
    # custom_field tag (<= 6 chars, as Shioaji allows) -> strategy id
    tags: ReadOnly[Annotated[str, Field(min_length=1, max_length=6)], str] = Field(default_factory=lambda: MappingProxyType({}))


class RuntimeSettings(_Model):
    # A CPU-bound strategy thread holds the GIL for up to the switch interval (default 5 ms);
    # 100 us keeps callback-to-visible p99 under 1 ms (shared/reference/performance.md).
    switch_interval_us: Annotated[int, Field(ge=0, le=100_000, strict=True)] = 100  # 0: leave Python's default
    gc_freeze_after_start: Flag = True  # move start-up objects out of the collector's way
    gc_gen0_threshold: Annotated[int, Field(ge=0, strict=True)] = 10_000  # 0: leave Python's default (700)


class RecorderSettings(_Model):
    enabled: Flag = True
    # clickhouse-connect DSN: chdb://<dir> (embedded engine, the default: <state_dir>/clickhouse)
    # or http(s)://user:password@host:8123/database. CLICKHOUSE_DSN in the environment overrides it.
    dsn: str = ""
    batch_rows: Annotated[int, Field(gt=0, le=500_000, strict=True)] = 10_000
    batch_ms: PositiveMs = 200
    spool_max_bytes: Annotated[int, Field(gt=0, strict=True)] = 1 << 30
    parquet_snapshots: Flag = True
    # write from a child process: the embedded engine holds the GIL while inserting, which
    # would stretch the pipeline's latency tail (measured: ms stalls)
    writer_process: Flag = True


class TelemetrySettings(_Model):
    metrics_port: Annotated[int, Field(ge=0, le=65535, strict=True)] = 9464  # loopback only; 0 = any free port
    log_adjustments: Flag = True  # one `position_adjusted` log line per position delta (telemetry/adjustments.py)


class AlertSettings(_Model):
    """In-process alerts (`telemetry/alerts.py`): the conditions of deploy/prometheus/alerts.yml,
    evaluated by the service itself. Defaults are that file's thresholds; change both together."""

    enabled: Flag = True
    eval_interval_ms: PositiveMs = 1000  # as Prometheus' evaluation_interval
    callback_gap_s: Seconds = 1.0  # CallbacksStopped: no order callback this long (orders working, market open)
    mismatch_quantity_threshold: Annotated[int, Field(ge=0, strict=True)] = 0  # ReconciliationMismatch: above this for 15 s
    recovery_s: Seconds = 10.0  # RecoverySlow: a check failed or took longer than this in the last 5 min
    spool_age_s: Seconds = 60.0  # RecorderSpoolGrowing (stale): oldest spooled batch older than this
    connection_down_s: Seconds = 10.0  # ConnectionDown (down): down, not reconnecting, this long
    reconnecting_s: Seconds = 30.0  # ConnectionDown (reconnecting): reconnecting this long


class Settings(_Model):
    state_dir: Path = Path("state")
    snapshot_interval_ms: PositiveMs = 1000
    queue: QueueSettings = Field(default_factory=QueueSettings)
    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    odd_lots: OddLotSettings = Field(default_factory=OddLotSettings)
    fees: FeeSettings = Field(default_factory=FeeSettings)
    multipliers: MultiplierSettings = Field(default_factory=MultiplierSettings)
    strategies: StrategySettings = Field(default_factory=StrategySettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    recorder: RecorderSettings = Field(default_factory=RecorderSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)

    def clickhouse_dsn(self, env: Mapping[str, str] | None = None) -> str:
        """CLICKHOUSE_DSN, else `recorder.dsn`, else the embedded engine under the state directory."""
        env = os.environ if env is None else env
        return env.get("CLICKHOUSE_DSN") or self.recorder.dsn or f"chdb://{Path(self.state_dir).resolve() / 'clickhouse'}"


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "<root>"
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        return f"{key} = {value!r}: unknown key"
    if error["type"] == "missing":
        return f"{key}: missing"
    return f"{key} = {value!r}: expected {error['msg'].removeprefix('Input should be ').lower()}"


def parse_settings(data: object, source: str = "<settings>") -> Settings:
    """Validate a mapping (as loaded from YAML) into `Settings`, or raise `ConfigError`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        lines = "\n".join(f"  {_describe(err)}" for err in exc.errors())
        raise ConfigError(f"{source}: invalid settings\n{lines}") from None


def load_settings(path: str | Path | None = None) -> Settings:
    """Read and validate a YAML settings file (default: `config/execution.yaml`)."""
    file = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read settings ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML ({exc})") from None
    return parse_settings(data, str(file))
