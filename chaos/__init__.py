"""Chaos scenarios: faults of a live trading day against the simulated broker (`make chaos`)."""
