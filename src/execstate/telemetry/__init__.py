"""Telemetry: counters and latency samples, Prometheus exposition, logging set-up."""
