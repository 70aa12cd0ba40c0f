-- Order reports (execstate.domain.events.OrderEvent), one row per event.
-- Key: event_id = O:{account}:{order_id}:{op_type}:{ts_event}, deterministic from broker ids,
-- so a retried or replayed insert collapses to one row (ReplacingMergeTree, newest
-- recorded_at wins: the copies are identical facts). ts_event is part of the id, so a
-- duplicate always lands in the same partition and merges there.
CREATE TABLE IF NOT EXISTS orders
(
    event_id        String,
    account         LowCardinality(String),
    order_id        String,
    seqno           String,
    ordno           String,
    strategy        LowCardinality(String),
    symbol          LowCardinality(String),
    code            LowCardinality(String),
    kind            LowCardinality(String),
    op_type         LowCardinality(String),
    op_code         LowCardinality(String),
    op_msg          String,
    ok              Bool,
    action          LowCardinality(String),
    price           Decimal(18, 4),
    order_quantity  Int64,
    cancel_quantity Int64,
    modified_price  Decimal(18, 4),
    order_cond      LowCardinality(String),
    order_lot       LowCardinality(String),
    price_type      LowCardinality(String),
    time_in_force   LowCardinality(String),
    custom_field    LowCardinality(String),
    status          LowCardinality(String),
    ts_event        DateTime64(9, 'Asia/Taipei'),
    ts_recv         DateTime64(9, 'Asia/Taipei'),
    recorded_at     DateTime64(9, 'Asia/Taipei') DEFAULT now64(9)
)
ENGINE = ReplacingMergeTree(recorded_at)
PARTITION BY toDate(ts_event, 'Asia/Taipei')
ORDER BY event_id;
