"""`make bench`: every benchmark, each measured against its reference in the same run.

    python -m bench [--quick] [--only treeshap,families,ingest,store,drift_query,drift_power,input_views,sink,query_port_memory,decision_store]

Each benchmark prints its own table; the figures are collected in
bench/results/bench.json. Timings belong here, never in the tests.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

BENCHMARKS = ("treeshap", "families", "ingest", "store", "drift_query", "drift_power", "input_views", "sink", "query_port_memory", "decision_store")
RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller samples, for a first look")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    combined = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": args.quick}
    for name in args.only.split(","):
        print(f"\n=== {name} ===", flush=True)
        out = RESULTS / f"{name}.json"
        module = importlib.import_module(f"bench.{name}")
        module.main([*(["--quick"] if args.quick else []), "--json", str(out)])
        combined[name] = json.loads(out.read_text()) if out.exists() else None
    (RESULTS / "bench.json").write_text(json.dumps(combined, indent=2))
    print(f"\nall figures: {RESULTS / 'bench.json'}")


if __name__ == "__main__":
    main()
