"""Every Prometheus metric name and label execstate exposes, in one place.

Entry points: the constants below. Alert rules (deploy/prometheus/alerts.yml), the Grafana
dashboard and tests refer to these names; change them here and there together.
"""

EXECUTION_EVENTS_TOTAL = "execution_events_total"  # counter{type}: order, fill, duplicate, dead_letter, correction, late, unexpected_transition, order_failure, overfill, deal_before_order
POSITION_DELTA_LATENCY_MS = "position_delta_latency_ms"  # histogram: callback time_ns -> delta visible to readers
CALLBACK_GAP_SECONDS = "callback_gap_seconds"  # gauge: now - last order callback (0 before the first)
ORDERS_WORKING = "orders_working"  # gauge: orders that may still fill
RECONCILIATION_DURATION_MS = "reconciliation_duration_ms"  # histogram
RECONCILIATION_MISMATCHES_TOTAL = "reconciliation_mismatches_total"  # counter{kind}: quantity, missing_ours, missing_broker, pnl (over reconcile.max_pnl_mismatch_twd)
RECONCILIATION_CORRECTIONS_TOTAL = "reconciliation_corrections_total"  # counter
RECONCILIATION_LAST_MISMATCH_QUANTITY = "reconciliation_last_mismatch_quantity"  # gauge: largest |broker - ours| at the last check
# gauge{account}: largest |broker - ours| unrealized PnL, TWD, at the last check of all symbols, beyond the
# allowance of an unverified convention (stock shorts; 0 for the others): see reconcile/pnl.py
RECONCILIATION_PNL_MISMATCH_TWD = "reconciliation_pnl_mismatch_twd"
RECONCILIATION_FAILURES_TOTAL = "reconciliation_failures_total"  # counter: checks that errored or ran past the deadline
QUEUE_DEPTH = "queue_depth"  # gauge{queue}: raw (bridge -> pipeline), recorder
BROKER_QUERY_BUDGET_USED = "broker_query_budget_used"  # gauge{group}: calls in the current window (portfolio: of 25 per 5 s)
BROKER_BANS_TOTAL = "broker_bans_total"  # counter
RECORDER_SPOOL_ROWS = "recorder_spool_rows"  # gauge
RECORDER_SPOOL_BYTES = "recorder_spool_bytes"  # gauge
RECORDER_SPOOL_OLDEST_AGE_SECONDS = "recorder_spool_oldest_age_seconds"  # gauge
RECORDER_ROWS_WRITTEN_TOTAL = "recorder_rows_written_total"  # counter
HALT_STATE = "halt_state"  # gauge: 1 while HALTed
CONNECTION_UP = "connection_up"  # gauge: 1 when the Shioaji session is up
CONNECTION_STATE = "connection_state"  # gauge{state}: up, reconnecting, down, unknown (1 for the current one)

# Positions and PnL per (account, strategy), summed over symbols (bounded: strategies come from
# strategies.tags, plus "unassigned"). Read from the store's view at scrape time. TWD, gross.
POSITIONS_OPEN = "execstate_positions_open"  # gauge{account,strategy}: positions with a non-zero quantity
REALIZED_PNL_TWD = "execstate_realized_pnl_twd"  # gauge{account,strategy}: realized PnL, before fees and taxes
UNREALIZED_PNL_TWD = "execstate_unrealized_pnl_twd"  # gauge{account,strategy}: at the last marks (0 without one)
FEES_TWD = "execstate_fees_twd"  # gauge{account,strategy}: fees booked
TAXES_TWD = "execstate_taxes_twd"  # gauge{account,strategy}: transaction taxes booked
ALERTS_FIRING = "execstate_alerts_firing"  # gauge{alert}: in-process alert rules firing (telemetry/alerts.py), by alert name
