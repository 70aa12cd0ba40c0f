"""execstate: execution events and position state for Shioaji (SinoPac) traders.

Stages (one package each, data flows one way):
bridge -> normalize -> positions -> (bus, record, reconcile). `app` wires them.
"""

__version__ = "0.1.0"
