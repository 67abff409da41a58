"""Benchmark: the worker's one Redis write per event, against copying the event into Redis.

On a fresh redis-server, batches of 2,000 realistic PredictionEvents
(whystream.jobs.simulation.produce, Avro single-object encoded) are remembered for
explain on demand, alternating between
(a) the reference: the event's bytes under `prediction:<id>` with a TTL, one
    key and value per event through RedisStore's batch SET script (what the
    worker did before: the stream copied into Redis);
(b) `RedisStore.remember_locations`: only where the event lies in
    `predictions` (12 bytes), the batch packed into three strings.
Client CPU per event is what the worker's ingest thread pays (it holds the
GIL); wall time per event bounds the background writer; Redis memory per
event is what 15 minutes of stream cost.

    python bench/store.py [--batches 50] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def measure(write, batches: list[tuple[list[str], list[bytes]]], rounds: int) -> dict:
    cpu, wall = [], []
    n = sum(len(ids) for ids, _ in batches)
    for r in range(rounds):
        c0, w0 = time.process_time(), time.perf_counter()
        for k, (ids, values) in enumerate(batches):
            write([f"{pid}.{r}" for pid in ids], values, k)
        cpu.append((time.process_time() - c0) / n * 1e6)
        wall.append((time.perf_counter() - w0) / n * 1e6)
    return {"client_cpu_us_per_event": round(statistics.median(cpu), 2),
            "wall_us_per_event": round(statistics.median(wall), 2)}


def run(args) -> dict:
    import numpy as np
    import redis

    from bench.ingest_events import encoded_events
    from whystream.infra.stack import start_redis
    from whystream.jobs.simulation.train import train_model
    from whystream.models.registry import ModelRegistry
    from whystream.streams.store import RedisStore

    with tempfile.TemporaryDirectory(prefix="whystream-store-") as tmp:
        model = train_model(ModelRegistry(Path(tmp) / "registry"), n_train=5_000, num_trees=10, progress=False)
        events = [e for chunk in encoded_events(model, args.batches * 2000, "store") for e in chunk]
        batches = [([k.decode() for k, _ in events[b:b + 2000]], [v for _, v in events[b:b + 2000]])
                   for b in range(0, len(events), 2000)]
        partitions, offsets = np.arange(2000) % 4, np.arange(2000) + 10**9
        child, url = start_redis(Path(tmp))
        try:
            store = RedisStore(url, prediction_ttl_s=900)
            admin = redis.Redis.from_url(url)  # no short socket timeout: FLUSHDB of 300,000 keys takes a while
            used = lambda: int(admin.info("memory")["used_memory"])

            def copy_events(ids, values, k):  # as the worker did: SET key bytes EX ttl, batched in the Lua script
                keys, ttl = [store._key("prediction", pid) for pid in ids], store.prediction_ttl_s
                store._run_script(store._set_with_ttls, store._chunks(keys, len(keys), [ttl, ttl], values))

            def locations(ids, values, k):
                store.remember_locations(ids, partitions, offsets + 2000 * k)

            result = {"benchmark": "store", "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                      "events_per_round": len(events), "event_bytes_mean": round(np.mean([len(v) for _, v in events]))}
            for name, write in (("copy_events", copy_events), ("locations", locations)):
                admin.flushdb()
                before = used()
                result[name] = measure(write, batches, args.rounds)
                result[name]["redis_bytes_per_event"] = round((used() - before) / (len(events) * args.rounds))
            result["client_cpu_ratio"] = round(result["copy_events"]["client_cpu_us_per_event"]
                                               / result["locations"]["client_cpu_us_per_event"], 2)
            result["wall_ratio"] = round(result["copy_events"]["wall_us_per_event"]
                                         / result["locations"]["wall_us_per_event"], 2)
        finally:
            child.stop()
    return result


def report(r: dict) -> str:
    lines = [f"store benchmark: {r['events_per_round']:,} PredictionEvents ({r['event_bytes_mean']} bytes) "
             f"remembered in batches of 2,000 ({r['machine']})",
             f"  {'what is written per event':<40}{'client CPU us':>15}{'wall us':>10}{'Redis bytes':>13}"]
    for name, label in (("copy_events", "the event's bytes (reference)"),
                        ("locations", "its location in `predictions`")):
        m = r[name]
        lines.append(f"  {label:<40}{m['client_cpu_us_per_event']:>15}{m['wall_us_per_event']:>10}"
                     f"{m['redis_bytes_per_event']:>13}")
    lines.append(f"  reference / locations: client CPU {r['client_cpu_ratio']}x, wall {r['wall_ratio']}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=50, help="batches of 2,000 events per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10 batches, for a first look")
    parser.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "store.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches = min(args.batches, 10)
    from bench.results import publish
    result = run(args)
    publish(result, report(result), args.json)
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/store.py`: find bench.*
    main()
