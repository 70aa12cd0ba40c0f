"""Intent registry: which strategy placed which order.

Entry points: `IntentRegistry.register(order_id, strategy, symbol="", custom_field="")`,
`.resolve(order_id, custom_field) -> strategy id`, `.load(path)` / persistence to a JSONL file.

Attribution order: the order id registered at placement; else the order's `custom_field`
tag (<= 6 chars, carried by Shioaji on stock orders and deals, so it survives a restart)
mapped through the configured tags; else `"unassigned"`.
Invariant: a registration is appended to the file before `register` returns, so it survives
a crash; a corrupt line is skipped and counted, never fatal.
"""

from __future__ import annotations

import threading
from pathlib import Path

import msgspec

from execstate.domain.events import UNASSIGNED
from execstate.domain.payloads import open_append_only


class Intent(msgspec.Struct, frozen=True):
    order_id: str
    strategy: str
    symbol: str = ""
    custom_field: str = ""


class IntentRegistry:
    """Order id -> intent, plus custom_field tag -> strategy. Thread-safe registration."""

    def __init__(self, tags: dict[str, str] | None = None, path: Path | None = None) -> None:
        self._by_order: dict[str, Intent] = {}
        self._tags = dict(tags or {})
        self._path = path
        self._lock = threading.Lock()
        self.corrupt_lines = 0
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        decoder = msgspec.json.Decoder(Intent)
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                intent = decoder.decode(line)
            except msgspec.DecodeError:
                self.corrupt_lines += 1
                continue
            self._by_order[intent.order_id] = intent

    def register(self, order_id: str, strategy: str, symbol: str = "", custom_field: str = "") -> Intent:
        """Record that `strategy` placed order `order_id` (Shioaji's trade id)."""
        if not order_id:
            raise ValueError(f"order_id={order_id!r}: expected a non-empty trade id")
        if not strategy:
            raise ValueError(f"strategy={strategy!r}: expected a non-empty strategy id")
        intent = Intent(order_id, strategy, symbol, custom_field)
        with self._lock:
            if self._path is not None:
                with open_append_only(self._path) as fh:
                    fh.write(msgspec.json.encode(intent) + b"\n")
            self._by_order[order_id] = intent
        return intent

    def add_tag(self, tag: str, strategy: str) -> None:
        if not 0 < len(tag) <= 6:
            raise ValueError(f"tag={tag!r}: expected 1 to 6 characters (Shioaji's custom_field)")
        self._tags[tag] = strategy

    def get(self, order_id: str) -> Intent | None:
        return self._by_order.get(order_id)

    def resolve(self, order_id: str, custom_field: str = "") -> str:
        """The strategy that owns the order, or "unassigned"."""
        intent = self._by_order.get(order_id)
        if intent is not None:
            return intent.strategy
        if custom_field:
            return self._tags.get(custom_field, UNASSIGNED)
        return UNASSIGNED

    def __len__(self) -> int:
        return len(self._by_order)
