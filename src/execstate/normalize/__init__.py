"""Normalize: raw Shioaji events -> immutable OrderEvent / FillEvent (deduped, attributed)."""
