"""Where benchmarks put their figures: a table on stdout, JSON under bench/results/."""

from __future__ import annotations

import json
from pathlib import Path


def publish(result: dict, table: str, path: Path) -> None:
    """Print a benchmark's table and write its figures as JSON."""
    print(table)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"  wrote {path}")
