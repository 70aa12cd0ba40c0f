"""Bounded memory of event keys already seen.

Entry point: `SeenKeys.add(key) -> bool` (True when new).

Invariant: at most `capacity` keys are kept; the oldest are forgotten first. Sized for a
trading day's events (a few million keys at ~100 bytes each), it never grows without bound.
"""

from __future__ import annotations

from collections.abc import Hashable


class SeenKeys:
    """Insertion-ordered set with a capacity; `add` is O(1)."""

    __slots__ = ("_keys", "capacity", "evicted")

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity={capacity!r}: expected a positive integer")
        self._keys: dict[Hashable, None] = {}
        self.capacity = capacity
        self.evicted = 0

    def __contains__(self, key: Hashable) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: Hashable) -> bool:
        """Remember `key`; return False if it was already remembered."""
        keys = self._keys
        if key in keys:
            return False
        keys[key] = None
        if len(keys) > self.capacity:
            del keys[next(iter(keys))]
            self.evicted += 1
        return True
