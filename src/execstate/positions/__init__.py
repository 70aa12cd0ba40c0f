"""Positions: pure ledger and fee rules, and the single-writer store with lock-free reads."""
