"""The query port's memory for a large answer: streamed block by block (as
the port answers now) against the same rows materialised as Python objects
and encoded at once (as it did before issue 24), each in a fresh process, the peak of its
resident memory above its level before the query (sampled every 5 ms).

    python -m bench.query_port_memory [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

PROBE = """
import json, sys, threading, time, psutil
from functools import partial
from whystream.jobs.clickhouse.connection import parse_dsn
from whystream.jobs.clickhouse.guard import QueryLimits, ReadOnlyQueries, open_read_only_client
from whystream.jobs.clickhouse.query_port import _encoded_rows, _jsonable
mode, rows, dsn = sys.argv[1], int(sys.argv[2]), sys.argv[3]
limits = QueryLimits(max_result_rows=10**8, max_result_bytes=2**34, max_reply_bytes=2**34)
guard = ReadOnlyQueries(partial(open_read_only_client, parse_dsn(dsn), None, limits), limits)
guard.query("SELECT number FROM numbers(100000)", encode=_encoded_rows)  # warm up
me, peak, done = psutil.Process(), [0], threading.Event()
base = me.memory_info().rss
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], me.memory_info().rss - base)
        time.sleep(0.005)
threading.Thread(target=sample, daemon=True).start()
sql = f"SELECT number, toString(number) AS s FROM numbers({rows})"
started = time.perf_counter()
if mode == "streamed":
    size = sum(map(len, guard.query(sql, encode=_encoded_rows).encoded))
else:
    size = len(json.dumps({"rows": [_jsonable(list(r)) for r in guard.client.query(sql).result_rows]}))
seconds = time.perf_counter() - started
done.set(); time.sleep(0.02)
print(json.dumps({"mode": mode, "rows": rows, "json_bytes": size, "peak_rss_above_base": peak[0], "seconds": seconds}))
"""


def measure(mode: str, rows: int) -> dict:
    with tempfile.TemporaryDirectory() as home:
        out = subprocess.run([sys.executable, "-c", PROBE, mode, str(rows), f"chdb://{home}/chdb"],
                             capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = 300_000 if args.quick else 1_000_000
    results = [measure(mode, rows) for mode in ("streamed", "materialised")]
    for r in results:
        print(f"{r['mode']:>12}: {r['rows']:,} rows, answer {r['json_bytes'] / 2**20:.1f} MiB JSON, peak RSS "
              f"+{r['peak_rss_above_base'] / 2**20:.0f} MiB ({r['peak_rss_above_base'] / r['json_bytes']:.1f}x the "
              f"answer), {r['seconds']:.1f} s")
    ratio = results[1]["peak_rss_above_base"] / max(results[0]["peak_rss_above_base"], 1)
    print(f"materialised / streamed peak: {ratio:.1f}x")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"results": results, "materialised_over_streamed": ratio}, out, indent=2)


if __name__ == "__main__":
    main()
