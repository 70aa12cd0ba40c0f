"""ExecstateCollector: values after known scenarios, robustness to sources, the loopback server."""

import math
import urllib.request
from decimal import Decimal

import pytest
from payloads import stock_deal, stock_order
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from execstate.app import Pipeline
from execstate.bridge.shioaji_adapter import ConnectionState, Heartbeat
from execstate.config import parse_settings
from execstate.domain.events import Correction
from execstate.reconcile.diff import Discrepancy
from execstate.reconcile.gateway import GatewayStats
from execstate.reconcile.halt import HaltState
from execstate.reconcile.pnl import PnlDiscrepancy
from execstate.reconcile.reconciler import ReconcileResult
from execstate.telemetry.histogram import LATENCY_MS_BOUNDS, BucketHistogram
from execstate.telemetry.http import start_server, stop_server
from execstate.telemetry.metrics import MetricSources, ReconcileMetrics, registry_for
from execstate.telemetry.stats import LatencySamples

SETTINGS = parse_settings({"runtime": {"gc_freeze_after_start": False, "switch_interval_us": 0}})
NOW_NS = 1_779_333_920_000_000_000


class _TeeSamples(LatencySamples):
    """Stands in for the wiring in `Pipeline.process_batch`: observe(ns / 1e6) next to the ring's add."""

    __slots__ = ("hist",)

    def __init__(self, hist: BucketHistogram) -> None:
        super().__init__(1024)
        self.hist = hist

    def add(self, ns: int) -> None:
        super().add(ns)
        self.hist.observe(ns / 1e6)


def _scrape(registry):
    """{(sample name, frozenset(labels)): value} from the text exposition, as Prometheus parses it."""
    text = generate_latest(registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value for fam in text_string_to_metric_families(text) for s in fam.samples}


def _get(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


def _names(samples):
    return {name for name, _ in samples}


def _pipeline_with_histogram():
    pipeline = Pipeline(SETTINGS)
    hist = BucketHistogram(LATENCY_MS_BOUNDS)
    pipeline.stats.latency_ns = _TeeSamples(hist)
    return pipeline, hist


def _day_batch(ts):
    return [
        (ts, "SORDER", stock_order(quantity=3)),
        (ts, "SDEAL", stock_deal(exchange_seq="1", event_id="e1")),
        (ts, "SDEAL", stock_deal(exchange_seq="2", event_id="e2")),
        (ts, "SDEAL", stock_deal(exchange_seq="2", event_id="e2")),  # the same deal again
        (ts, "SDEAL", stock_deal(exchange_seq="3", event_id="e3", price=float("nan"))),  # malformed
    ]


def test_pipeline_scenario_counts_events_and_latency():
    pipeline, hist = _pipeline_with_histogram()
    registry = registry_for(MetricSources(stats=pipeline.stats, latency=hist))

    pipeline.process_batch(_day_batch(NOW_NS - 2_000_000))
    samples = _scrape(registry)

    assert pipeline.stats.fills == 2
    assert _get(samples, "execution_events_total", type="fill") == 2
    assert _get(samples, "execution_events_total", type="order") == 1
    assert _get(samples, "execution_events_total", type="duplicate") == 1
    assert _get(samples, "execution_events_total", type="dead_letter") == 1
    assert _get(samples, "execution_events_total", type="overfill") == 0
    assert _get(samples, "position_delta_latency_ms_count") == 2
    buckets = sorted((float(dict(labels)["le"]), v) for (name, labels), v in samples.items() if name == "position_delta_latency_ms_bucket")
    counts = [v for _, v in buckets]
    assert len(buckets) == len(LATENCY_MS_BOUNDS) + 1 and buckets[-1] == (math.inf, 2)
    assert counts == sorted(counts)
    assert _get(samples, "position_delta_latency_ms_sum") > 0


def test_counters_only_grow_between_scrapes():
    pipeline, hist = _pipeline_with_histogram()
    registry = registry_for(MetricSources(stats=pipeline.stats, latency=hist))
    pipeline.process_batch(_day_batch(NOW_NS))
    first = _scrape(registry)

    pipeline.process_batch([(NOW_NS, "SDEAL", stock_deal(exchange_seq="4", event_id="e4"))])
    second = _scrape(registry)

    assert _get(second, "execution_events_total", type="fill") == 3
    assert all(second[key] >= value for key, value in first.items() if key[0].endswith(("_total", "_count", "_bucket")))


def test_callback_gap_and_connection_from_heartbeat_with_fixed_clock():
    hb = Heartbeat(NOW_NS - 2_500_000_000, ConnectionState.RECONNECTING, NOW_NS - 10**9, 7)
    registry = registry_for(MetricSources(heartbeat=lambda: hb, clock=lambda: NOW_NS))

    samples = _scrape(registry)

    assert _get(samples, "callback_gap_seconds") == pytest.approx(2.5)
    assert _get(samples, "connection_up") == 0
    assert {state: _get(samples, "connection_state", state=state) for state in ("up", "reconnecting", "down", "unknown")} == {
        "up": 0, "reconnecting": 1, "down": 0, "unknown": 0}
    assert _get(samples, "queue_depth", queue="raw") == 7  # the heartbeat's, when no raw_queue_depth is given


def test_callback_gap_is_zero_before_any_callback():
    hb = Heartbeat(0, ConnectionState.UP, NOW_NS, 0)
    registry = registry_for(MetricSources(heartbeat=lambda: hb, clock=lambda: NOW_NS))

    samples = _scrape(registry)

    assert _get(samples, "callback_gap_seconds") == 0
    assert _get(samples, "connection_up") == 1


def test_halt_state_is_one_while_halted_and_zero_after_clear():
    halt = HaltState(clock=lambda: NOW_NS)
    registry = registry_for(MetricSources(halt=halt.status, orders_working=lambda: 4))

    halt.enter("reconcile failed")
    halted = _scrape(registry)
    halt.clear("operator")
    cleared = _scrape(registry)

    assert _get(halted, "halt_state") == 1
    assert _get(cleared, "halt_state") == 0
    assert _get(cleared, "orders_working") == 4


def _correction(quantity):
    return Correction(f"C:A:2890:{NOW_NS}:0", "A", "momo", "2890", "STK", "2890", "Cash", quantity, "26.85", "poll", NOW_NS)


def test_reconciliation_metrics_from_hand_built_results():
    metrics = ReconcileMetrics(deadline_ms=1000)
    registry = registry_for(MetricSources(reconcile=metrics))
    found = [Discrepancy("A", "2330", 1000, 3000), Discrepancy("A", "2890", 0, 500), Discrepancy("A", "2891", 200, 0)]

    metrics.record(ReconcileResult("startup", ("A",), NOW_NS, 40.0, discrepancies=[Discrepancy("A", "2330", 0, 9000)]))
    metrics.record(ReconcileResult("poll", ("A",), NOW_NS, 80.0, discrepancies=found, corrections=[_correction(2000)]))
    metrics.record(ReconcileResult("poll", ("A",), NOW_NS, 5.0, error="TimeoutError: list_positions"))
    metrics.record(ReconcileResult("poll", ("A",), NOW_NS, 1500.0, halted=True))
    samples = _scrape(registry)

    assert _get(samples, "reconciliation_mismatches_total", kind="quantity") == 1
    assert _get(samples, "reconciliation_mismatches_total", kind="missing_ours") == 1  # the opening check's is carried, not counted
    assert _get(samples, "reconciliation_mismatches_total", kind="missing_broker") == 1
    assert _get(samples, "reconciliation_corrections_total") == 1
    assert _get(samples, "reconciliation_failures_total") == 2  # the error and the one past the deadline
    assert _get(samples, "reconciliation_last_mismatch_quantity") == 0  # the last check compared clean
    assert _get(samples, "reconciliation_duration_ms_count") == 4
    assert _get(samples, "reconciliation_duration_ms_sum") == pytest.approx(1625.0)
    assert _get(samples, "reconciliation_duration_ms_bucket", le="100.0") == 3


def test_last_mismatch_quantity_is_the_largest_difference_and_survives_a_failed_check():
    metrics = ReconcileMetrics(deadline_ms=1000)
    registry = registry_for(MetricSources(reconcile=metrics))

    found = [Discrepancy("A", "2330", 1000, 3000), Discrepancy("A", "2890", 700, 0)]
    metrics.record(ReconcileResult("poll", ("A",), NOW_NS, 10.0, discrepancies=found))
    metrics.record(ReconcileResult("poll", ("A",), NOW_NS, 10.0, error="ConnectionError: down"))

    assert _get(_scrape(registry), "reconciliation_last_mismatch_quantity") == 2000


def _pnl(account, symbol, diff):
    return PnlDiscrepancy(account, symbol, Decimal(0), Decimal(diff), Decimal(diff), Decimal(100))


def test_pnl_mismatch_gauge_per_account_from_the_last_full_check_and_pnl_counted_by_kind():
    # Arrange
    metrics = ReconcileMetrics(deadline_ms=1000)
    registry = registry_for(MetricSources(reconcile=metrics))
    before = _scrape(registry)

    # Act: a full check finds 2 positions over 100 TWD on S (largest 1500.25), F clean but 3 TWD off;
    # then a check of one symbol (no gauge), a failed check (nothing), and the opening check of a
    # restart (a PnL difference on a position both sides hold counts there too)
    metrics.record(ReconcileResult("poll", ("S", "F"), NOW_NS, 10.0,
                                   pnl_discrepancies=[_pnl("S", "2330", "1500.25"), _pnl("S", "2890", "-250")],
                                   pnl_max_diff_twd={"S": Decimal("1500.25"), "F": Decimal("3.00")}))
    metrics.record(ReconcileResult("confirm", ("S",), NOW_NS, 10.0))
    metrics.record(ReconcileResult("poll", ("S", "F"), NOW_NS, 10.0, error="TimeoutError: list_positions"))
    first = _scrape(registry)
    metrics.record(ReconcileResult("startup", ("S", "F"), NOW_NS, 10.0, pnl_discrepancies=[_pnl("F", "TXFL6", "400")],
                                   pnl_max_diff_twd={"S": Decimal("0"), "F": Decimal("400")}))
    second = _scrape(registry)

    # Assert
    assert not [k for k in before if k[0] == "reconciliation_pnl_mismatch_twd"]  # no sample before a check compared
    assert _get(before, "reconciliation_mismatches_total", kind="pnl") == 0
    assert _get(first, "reconciliation_pnl_mismatch_twd", account="S") == 1500.25
    assert _get(first, "reconciliation_pnl_mismatch_twd", account="F") == 3.0
    assert _get(first, "reconciliation_mismatches_total", kind="pnl") == 2
    assert _get(second, "reconciliation_pnl_mismatch_twd", account="S") == 0
    assert _get(second, "reconciliation_pnl_mismatch_twd", account="F") == 400
    assert _get(second, "reconciliation_mismatches_total", kind="pnl") == 3
    assert _get(second, "reconciliation_mismatches_total", kind="quantity") == 0


def test_gateway_recorder_and_queue_metrics():
    gateway = GatewayStats({"portfolio": 30, "order": 2}, 1, 0, 2, 0.5, 3.0, 0.2, {"portfolio": 12, "order": 1}, None)
    recorder = {"queued": 5, "spool_rows": 300, "spool_bytes": 4096, "spool_oldest_age_s": 12.5, "rows_written": 9000}
    registry = registry_for(MetricSources(gateway_stats=lambda: gateway, recorder_stats=lambda: recorder, raw_queue_depth=lambda: 3))

    samples = _scrape(registry)

    assert _get(samples, "broker_query_budget_used", group="portfolio") == 12
    assert _get(samples, "broker_query_budget_used", group="order") == 1
    assert _get(samples, "broker_bans_total") == 2
    assert _get(samples, "queue_depth", queue="raw") == 3
    assert _get(samples, "queue_depth", queue="recorder") == 5
    assert _get(samples, "recorder_spool_rows") == 300
    assert _get(samples, "recorder_spool_bytes") == 4096
    assert _get(samples, "recorder_spool_oldest_age_seconds") == 12.5
    assert _get(samples, "recorder_rows_written_total") == 9000


def test_raising_or_broken_sources_leave_the_rest_of_the_scrape():
    def boom():
        raise RuntimeError("source down")

    pipeline = Pipeline(SETTINGS)
    pipeline.process_batch([(NOW_NS, "SDEAL", stock_deal())])
    registry = registry_for(MetricSources(
        stats=pipeline.stats, heartbeat=boom, gateway_stats=boom, halt=boom, orders_working=boom,
        recorder_stats=lambda: {"queued": 1},  # missing the spool keys
        raw_queue_depth=lambda: 2,
    ))

    samples = _scrape(registry)

    assert _get(samples, "execution_events_total", type="fill") == 1
    assert _get(samples, "queue_depth", queue="raw") == 2
    assert _get(samples, "queue_depth", queue="recorder") == 1
    left_out = {"callback_gap_seconds", "connection_up", "halt_state", "orders_working", "broker_bans_total", "recorder_spool_rows"}
    assert not _names(samples) & left_out


def test_no_sources_scrape_is_empty_and_registry_is_never_the_global_one():
    registry = registry_for(MetricSources(recorder_stats=lambda: None, gateway_stats=lambda: None))  # e.g. recorder disabled

    assert registry is not REGISTRY
    assert _scrape(registry) == {}


def test_http_server_answers_on_loopback_only():
    pipeline = Pipeline(SETTINGS)
    pipeline.process_batch([(NOW_NS, "SDEAL", stock_deal())])
    server = start_server(registry_for(MetricSources(stats=pipeline.stats)))
    url = server.metrics_url
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = resp.read().decode()
            ctype = resp.headers["Content-Type"]
    finally:
        stop_server(server)

    host, port = server.server_address[:2]
    assert host == "127.0.0.1" and port > 0
    assert url == f"http://127.0.0.1:{port}/metrics"
    assert ctype.startswith("text/plain")
    assert 'execution_events_total{type="fill"} 1.0' in body


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_metrics_server_refuses_non_loopback_hosts(host):
    with pytest.raises(ValueError, match="loopback"):
        start_server(registry_for(MetricSources()), host=host)


def test_positions_and_pnl_per_account_and_strategy_after_a_known_day():
    # Arrange: momo buys 2 lots of 2890 at 26.85, sells 1 at 27.00, marked at 27.50; an
    # unattributed lot of 2330 at 600 (no mark). Discount 1: fees floor(price x shares x 0.1425%).
    pipeline = Pipeline(parse_settings({"runtime": {"gc_freeze_after_start": False, "switch_interval_us": 0},
                                        "strategies": {"tags": {"MOMO": "momo"}}}))
    registry = registry_for(MetricSources(positions=pipeline.snapshot))
    pipeline.process_batch([
        (NOW_NS, "SORDER", stock_order(quantity=3, custom_field="MOMO")),
        (NOW_NS, "SDEAL", stock_deal(exchange_seq="1", event_id="e1", quantity=2, custom_field="MOMO")),
        (NOW_NS, "SDEAL", stock_deal(exchange_seq="2", event_id="e2", action="Sell", price=27.0, quantity=1, custom_field="MOMO")),
        (NOW_NS, "SDEAL", stock_deal(exchange_seq="3", event_id="e3", code="2330", price=600, trade_id="other", ordno="Z0001")),
    ])
    pipeline.store.set_mark("2890", "27.5")

    # Act
    samples = _scrape(registry)

    # Assert
    momo = {"account": "9A95-1234567", "strategy": "momo"}
    other = {"account": "9A95-1234567", "strategy": "unassigned"}
    assert _get(samples, "execstate_positions_open", **momo) == 1
    assert _get(samples, "execstate_realized_pnl_twd", **momo) == 150  # (27.00 - 26.85) x 1000
    assert _get(samples, "execstate_unrealized_pnl_twd", **momo) == 650  # (27.50 - 26.85) x 1000
    assert _get(samples, "execstate_fees_twd", **momo) == 76 + 38  # floor(53,700 x 0.1425%) + floor(27,000 x 0.1425%)
    assert _get(samples, "execstate_taxes_twd", **momo) == 40  # floor(27,000 x 0.15%): a cash day trade
    assert _get(samples, "execstate_positions_open", **other) == 1
    assert _get(samples, "execstate_unrealized_pnl_twd", **other) == 0  # no mark
    assert _get(samples, "execstate_fees_twd", **other) == 855  # 600,000 x 0.1425%
    assert not any("symbol" in dict(labels) for _, labels in samples)  # never per symbol


def test_positions_closed_flat_count_zero_open_but_keep_their_pnl():
    pipeline = Pipeline(SETTINGS)
    registry = registry_for(MetricSources(positions=pipeline.snapshot))
    pipeline.process_batch([
        (NOW_NS, "SDEAL", stock_deal(exchange_seq="1", event_id="e1")),
        (NOW_NS, "SDEAL", stock_deal(exchange_seq="2", event_id="e2", action="Sell", price=27.85)),
    ])

    samples = _scrape(registry)

    key = {"account": "9A95-1234567", "strategy": "unassigned"}
    assert _get(samples, "execstate_positions_open", **key) == 0
    assert _get(samples, "execstate_realized_pnl_twd", **key) == 1000  # (27.85 - 26.85) x 1000


def test_alerts_firing_gauge_by_alert_name():
    from execstate.telemetry.alerts import AlertEvaluator, AlertInputs, rules_for

    evaluator = AlertEvaluator(rules_for(SETTINGS.alerts))
    registry = registry_for(MetricSources(alerts=evaluator.firing_by_name))
    evaluator.evaluate(AlertInputs(halted=True, corrections_recent=1), NOW_NS / 1e9)

    samples = _scrape(registry)

    assert _get(samples, "execstate_alerts_firing", alert="ExecstateHalted") == 1
    assert _get(samples, "execstate_alerts_firing", alert="ExecstateReconciliationMismatch") == 1
    assert _get(samples, "execstate_alerts_firing", alert="ExecstateConnectionDown") == 0
