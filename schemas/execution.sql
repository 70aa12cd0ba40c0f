-- Rejected raw events and reconciliation outcomes.
--
-- dead_letters (execstate.domain.events.DeadLetter): one row per rejected raw event.
-- Key: letter_id = hex blake2b-128 of (state, ts_recv, reason, msg as sorted-key JSON), see
-- execstate.record.rows.dead_letter_id: the same rejection recorded twice collapses.
-- msg is the payload as JSON text (NaN / Infinity kept as tokens, like the journal).
CREATE TABLE IF NOT EXISTS dead_letters
(
    letter_id    String,
    reason       String,
    state        LowCardinality(String),
    ts_recv      DateTime64(9, 'Asia/Taipei'),
    msg          String,
    recorded_at  DateTime64(9, 'Asia/Taipei') DEFAULT now64(9)
)
ENGINE = ReplacingMergeTree(recorded_at)
PARTITION BY toDate(ts_recv, 'Asia/Taipei')
ORDER BY letter_id;

-- reconciliations (execstate.domain.events.ReconcileRecord): one row per reconciliation run.
-- Key: record_id = R:{started_ns}:{reason}. started_ns is the run's start time (ns): the
-- column keeps the field's name and holds it as a timestamp. discrepancies and corrections
-- are JSON lists, as in the event; so is pnl_discrepancies (unrealized PnL differences from the
-- broker's over reconcile.max_pnl_mismatch_twd), added later: the ALTER below gives it to a
-- table created before it (both statements are idempotent).
CREATE TABLE IF NOT EXISTS reconciliations
(
    record_id            String,
    reason               LowCardinality(String),
    accounts             Array(LowCardinality(String)),
    started_ns           DateTime64(9, 'Asia/Taipei'),
    duration_ms          Float64,
    records_resubmitted  Int64,
    recovered_fills      Int64,
    discrepancies        String,
    corrections          String,
    error                String,
    halted               Bool,
    pnl_discrepancies    String DEFAULT '[]',
    recorded_at          DateTime64(9, 'Asia/Taipei') DEFAULT now64(9)
)
ENGINE = ReplacingMergeTree(recorded_at)
PARTITION BY toDate(started_ns, 'Asia/Taipei')
ORDER BY record_id;

ALTER TABLE reconciliations ADD COLUMN IF NOT EXISTS pnl_discrepancies String DEFAULT '[]' AFTER halted;
