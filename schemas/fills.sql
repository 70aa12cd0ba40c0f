-- Deals (execstate.domain.events.FillEvent), one row per fill.
-- Key: event_id = F:{account}:{order_id}:{exchange_seq}, deterministic from broker ids
-- (a reconciliation correction carries its correction id C:{account}:{symbol}:{ts_ns}:{n}).
-- The broker's deal time ts_event is fixed for a given deal, so duplicates share a partition.
CREATE TABLE IF NOT EXISTS fills
(
    event_id      String,
    account       LowCardinality(String),
    order_id      String,
    seqno         String,
    ordno         String,
    exchange_seq  String,
    strategy      LowCardinality(String),
    symbol        LowCardinality(String),
    code          LowCardinality(String),
    kind          LowCardinality(String),
    side          LowCardinality(String),
    price         Decimal(18, 4),
    quantity      Int64,
    multiplier    Decimal(18, 4),
    is_etf        Bool,
    order_cond    LowCardinality(String),
    order_lot     LowCardinality(String),
    market_type   LowCardinality(String),
    custom_field  LowCardinality(String),
    ts_event      DateTime64(9, 'Asia/Taipei'),
    ts_recv       DateTime64(9, 'Asia/Taipei'),
    correction    LowCardinality(String),
    recorded_at   DateTime64(9, 'Asia/Taipei') DEFAULT now64(9)
)
ENGINE = ReplacingMergeTree(recorded_at)
PARTITION BY toDate(ts_event, 'Asia/Taipei')
ORDER BY event_id;
