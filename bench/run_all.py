"""`make bench`: run every benchmark in its own process and print their tables.

Each benchmark compares against a baseline measured in the same run (see its docstring)
and writes its results to bench/results/<name>.json.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["callback_hold.py", "latency.py", "throughput.py", "startup_rebuild.py", "recorder.py", "metrics_overhead.py"]


def main() -> int:
    failed = []
    for name in BENCHES:
        print(f"\n=== {name} ===", flush=True)
        if subprocess.run([sys.executable, str(HERE / name)], cwd=HERE).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks that failed to run: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
