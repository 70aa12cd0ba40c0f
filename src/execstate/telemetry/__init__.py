"""Telemetry: counters and latency samples, Prometheus exposition, logging set-up, and the
loopback HTTP server (`http`: /metrics plus the read-only dashboard API described in `api`)."""
