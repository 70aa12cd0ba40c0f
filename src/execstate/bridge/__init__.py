"""Bridge: Shioaji callbacks -> raw events on a queue; the raw-event journal; the simulated broker."""
