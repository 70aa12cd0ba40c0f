"""Shared test set-up: make `tests/fixtures` importable (`from payloads import stock_deal`).

Tests run with `--import-mode=importlib` and without `__init__.py`, so fixture modules are
put on `sys.path` here rather than imported as a package.
"""

import sys
from pathlib import Path

_FIXTURES = str(Path(__file__).parent / "fixtures")
if _FIXTURES not in sys.path:
    sys.path.insert(0, _FIXTURES)
