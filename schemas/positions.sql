-- Position changes and position snapshots.
--
-- position_deltas (execstate.domain.events.PositionDelta): one row per change of one position.
-- Key: (account, strategy, symbol, source_id, cause). `seq` is a per-run store counter and
-- differs on a replay, so it is kept as data but is not part of the key: the causing fill
-- (source_id) changes a position at most once per cause. ts_event is the causing fill's
-- broker time, so a replayed delta lands in the same partition as the original.
-- Book values (average price, realized PnL) keep the ledger's 10 decimal places.
CREATE TABLE IF NOT EXISTS position_deltas
(
    seq                  Int64,
    cause                LowCardinality(String),
    source_id            String,
    account              LowCardinality(String),
    strategy             LowCardinality(String),
    symbol               LowCardinality(String),
    quantity_before      Int64,
    quantity_after       Int64,
    avg_price            Decimal(38, 10),
    realized_pnl_change  Decimal(38, 10),
    realized_pnl         Decimal(38, 10),
    fee                  Decimal(18, 4),
    tax                  Decimal(18, 4),
    fees                 Decimal(18, 4),
    taxes                Decimal(18, 4),
    ts_event             DateTime64(9, 'Asia/Taipei'),
    ts_recv              DateTime64(9, 'Asia/Taipei'),
    recorded_at          DateTime64(9, 'Asia/Taipei') DEFAULT now64(9)
)
ENGINE = ReplacingMergeTree(recorded_at)
PARTITION BY toDate(ts_event, 'Asia/Taipei')
ORDER BY (account, strategy, symbol, source_id, cause);

-- position_snapshots (execstate.domain.events.PositionSnapshot flattened): one row per
-- PositionRecord, carrying the snapshot's seq and ts.
-- Key: (account, strategy, symbol, ts), i.e. the row id {ts}:{account}:{strategy}:{symbol}:
-- a snapshot written twice collapses, and a position's history reads in time order.
CREATE TABLE IF NOT EXISTS position_snapshots
(
    seq             Int64,
    ts              DateTime64(9, 'Asia/Taipei'),
    account         LowCardinality(String),
    strategy        LowCardinality(String),
    symbol          LowCardinality(String),
    quantity        Int64,
    avg_price       Decimal(38, 10),
    realized_pnl    Decimal(38, 10),
    unrealized_pnl  Decimal(38, 10),
    fees            Decimal(18, 4),
    taxes           Decimal(18, 4),
    mark_price      Nullable(Decimal(18, 4)),
    multiplier      Decimal(18, 4),
    recorded_at     DateTime64(9, 'Asia/Taipei') DEFAULT now64(9)
)
ENGINE = ReplacingMergeTree(recorded_at)
PARTITION BY toDate(ts, 'Asia/Taipei')
ORDER BY (account, strategy, symbol, ts);
