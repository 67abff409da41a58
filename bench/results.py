"""Where benchmarks put their figures: a table on stdout, JSON under bench/results/."""

from __future__ import annotations

import json
from pathlib import Path


def write(result: dict, path: Path) -> None:
    """Write a benchmark's figures as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def publish(result: dict, table: str, path: Path) -> None:
    """Print a benchmark's table and write its figures as JSON."""
    print(table)
    write(result, path)
    print(f"  wrote {path}")


def main_in_child(name: str, doc: str, child, report, argv: list[str] | None = None) -> dict:
    """The command line of a ClickHouse benchmark (`bench/<name>.py`: --events, --rounds,
    --quick, --json) that measures in a child process of its own, on a chDB folder of
    its own (`child(args)` -> figures), and publishes `report(figures)`."""
    import argparse
    import subprocess
    import sys
    import tempfile

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="20,000 events, one round")
    parser.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / f"{name}.json")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.rounds = min(args.events, 20_000), 1
    if args.child:
        args.child.write_text(json.dumps(child(args)))
        return {}
    with tempfile.TemporaryDirectory(prefix=f"whystream-{name.replace('_', '-')}-bench-") as tmp:
        out = Path(tmp) / "result.json"
        subprocess.run([sys.executable, "-m", f"bench.{name}", "--events", str(args.events), "--rounds",
                        str(args.rounds), "--child", str(out), "--dir", str(Path(tmp) / "chdb")],
                       check=True, cwd=Path(__file__).resolve().parents[1])
        result = json.loads(out.read_text())
    publish(result, report(result), args.json)
    return result
