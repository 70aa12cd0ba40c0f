"""BucketHistogram: Prometheus `le` buckets, cumulative snapshots, agreement with prometheus_client."""

import math

import pytest
from prometheus_client import CollectorRegistry, Histogram

from execstate.telemetry.histogram import LATENCY_MS_BOUNDS, BucketHistogram


def test_value_equal_to_a_bound_counts_in_that_bucket():
    hist = BucketHistogram((1, 5, 10))

    hist.observe(5)

    assert hist.snapshot()[0] == [(1.0, 0), (5.0, 1), (10.0, 1), (math.inf, 1)]


def test_snapshot_is_cumulative_with_inf_sum_and_count():
    hist = BucketHistogram((1, 5, 10))

    for v in (0.5, 0.9, 3, 7, 12, 1000):
        hist.observe(v)
    buckets, total, count = hist.snapshot()

    assert buckets == [(1.0, 2), (5.0, 3), (10.0, 4), (math.inf, 6)]
    assert total == pytest.approx(1023.4)
    assert count == 6 == hist.count


def test_empty_histogram_has_zero_buckets():
    buckets, total, count = BucketHistogram(LATENCY_MS_BOUNDS).snapshot()

    assert [c for _, c in buckets] == [0] * (len(LATENCY_MS_BOUNDS) + 1)
    assert (total, count) == (0.0, 0)


@pytest.mark.parametrize("bounds", [(), (5, 1), (1, 1), (1, math.inf), (math.nan,)])
def test_bad_bounds_are_refused(bounds):
    with pytest.raises(ValueError):
        BucketHistogram(bounds)


def test_buckets_agree_with_prometheus_client_histogram():
    values = [0.0, 0.05, 0.07, 0.1, 0.3, 1, 1.0000001, 9.99, 10, 10.5, 999, 1000, 5000]
    ours = BucketHistogram(LATENCY_MS_BOUNDS)
    registry = CollectorRegistry()
    theirs = Histogram("x_ms", "x", buckets=LATENCY_MS_BOUNDS, registry=registry)

    for v in values:
        ours.observe(v)
        theirs.observe(v)

    expected = {float(s.labels["le"]): s.value for s in registry.collect().__next__().samples if s.name == "x_ms_bucket"}
    assert {le: float(c) for le, c in ours.snapshot()[0]} == expected
