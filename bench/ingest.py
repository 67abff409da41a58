"""Benchmark: how fast one worker ingests `predictions`, against a bare Faust agent.

On a fresh embedded stack (Tansu broker, redis-server) with a small model
trained into a temporary registry (20,000 rows, 50 trees), in one run:

1. ingest: N realistic PredictionEvents (whystream.jobs.simulation.produce, Avro
   single-object encoded, 39 features) are loaded into `predictions`, then
   read by
   (a) a bare Faust agent in a process of its own that only counts raw
       messages (`async for value in stream: count += 1`): events/s from its
       first to its last message;
   (b) a `whystream worker` process (decode, validate, sample, explain the
       priority events and the reservoir samples, publish, remember every
       event in Redis): events/s from `whystream_events_consumed_total` on its
       /metrics, CPU per event, peak resident memory, explanations per
       CPU-second;
   and the ratio b / a. --rounds times, each on a copy of the events under a
   topic prefix and Redis database of its own, alternating which goes first;
   the ratio reported is the median over rounds. With --against REV, (c) the
   worker of revision REV (a git worktree imported through PYTHONPATH, as
   bench/engine.py does) on a copy of its own in each round too: CPU per event
   of this checkout against REV's, measured side by side.
2. latency: a fresh worker on a fresh topic, warmed up for 2 s, under a steady
   --rate events/s whose event_time is the moment each is sent (lz4, linger
   5 ms, like `whystream produce`): p50/p99 from event_time to the priority
   decision's explanation arriving at a consumer of `explanations`, and to its
   explained_at; the worker's CPU, explanations per CPU-second and resident
   memory at that load, the broker's and Redis' CPU. Twice: with key =
   prediction_id (as `whystream produce` sends), and without a key (the
   producer's sticky partitioner then writes a quarter of the record batches:
   the embedded broker, Tansu 0.6, spends CPU in proportion to the batches a
   partition holds, and keyed small batches at 5,000/s saturate it within
   seconds; compare its CPU in the two lines). After each phase, the broker
   alone: the same load on another fresh topic, no worker, a bare consumer
   fetching as the worker does (the floor under the worker's latency).
   --latency-rounds times each (fresh worker and topics every time); the
   medians over rounds are the figures.
3. backlog (--backlog N, off by default: a few minutes for a million): N events
   queued before a fresh worker starts; its resident memory sampled every
   second while it works through them.

    python bench/ingest.py [--events 200000] [--rounds 3] [--latency-rounds 3] [--phases ingest,latency]
                           [--against REV] [--quick] [--backlog 1000000] [--json PATH]

Prints a table and writes JSON (default bench/results/ingest.json). The machine
is shared: compare the ratios, which are measured side by side in one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path


def run(args) -> dict:
    from bench.engine import checkout, remove_checkout, revision_of
    from bench.ingest_backlog import backlog
    from bench.ingest_events import encoded_events, load_topic
    from bench.ingest_latency import latency_round
    from bench.ingest_throughput import bare_faust, worker_ingest
    from bench.processes import StackCpu, WorkerProcess
    from whystream.infra.stack import EmbeddedStack
    from whystream.jobs.simulation.train import train_model
    from whystream.kafka.topics import ensure_topics
    from whystream.models.registry import ModelRegistry

    result: dict = {"benchmark": "ingest", "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                                                      f"Python {platform.python_version()}", "events": args.events}
    with tempfile.TemporaryDirectory(prefix="whystream-ingest-") as tmp:
        work = Path(tmp)
        stack = EmbeddedStack(work / "stack", write_env_file=False)
        base = stack.start()
        reference = None  # REV's checkout, with --against
        try:
            began = time.monotonic()
            if args.reference_model:
                model = ModelRegistry(args.reference_model).load("fraud")
                registry = Path(args.reference_model)
            else:
                registry = work / "registry"
                model = train_model(ModelRegistry(registry), n_train=20_000, num_trees=50, progress=False)
            result["model"] = {"version": model.version, "features": len(model.feature_names),
                               "trees": model.booster.num_trees(), "train_s": round(time.monotonic() - began, 1)}
            run_id = f"ingest{uuid.uuid4().hex[:4]}"
            began = time.monotonic()
            events = [e for chunk in encoded_events(model, args.events, run_id) for e in chunk]
            result["encode_s"] = round(time.monotonic() - began, 1)
            result["event_bytes_mean"] = round(sum(len(v) for _, v in events) / len(events))
            # One copy of the events per round, each under a topic prefix (and so consumer groups) of its own
            # and with a Redis database of its own (1-12): the same prediction_ids, but nothing published yet.
            redis_base = base.redis_url.rpartition("/")[0]
            ingest_rounds = args.rounds if "ingest" in args.phases else 0
            sides = ("bare", "worker", "reference") if args.against else ("bare", "worker")
            # A copy per round, and one more for the reference worker (its own consumer group and dedup marks).
            copies = len(sides) - 1
            rounds = [[base.with_(topic_prefix=f"b{uuid.uuid4().hex[:6]}.", registry=registry,
                                  redis_url=f"{redis_base}/{(copies * r + c) % 12 + 1}") for c in range(copies)]
                      for r in range(ingest_rounds)]
            began = time.monotonic()
            for settings in (s for copy in rounds for s in copy):
                ensure_topics(settings, partitions=4)
                load_topic(settings, [events])
            result["load_s"] = round(time.monotonic() - began, 1)
            if args.against:
                result["against"] = revision_of(args.against)
                reference = checkout(result["against"], work / "reference")
                check_imports_from(reference)
            warm_ups = [(None, 13)] + ([(reference, 14)] if reference is not None else [])
            for pythonpath, db in warm_ups if rounds else ():
                warm_up(base.with_(topic_prefix=f"w{uuid.uuid4().hex[:6]}.", registry=registry,
                                   redis_url=f"{redis_base}/{db}"), events[:WARM_UP_EVENTS], work, args.timeout,
                        pythonpath)
            del events

            stack_processes = {c.name: c.process.pid for c in stack.children}
            result["rounds"] = []
            worker = None
            try:
                for r, copy in enumerate(rounds):
                    outcome = {}
                    # Alternate the order, so that a drift in the machine's load hits every side alike.
                    for side in (sides if r % 2 == 0 else sides[::-1]):
                        print(f"round {r + 1}/{args.rounds}: {side} ...", file=sys.stderr)
                        key = "bare_faust" if side == "bare" else side
                        if side == "bare":
                            with StackCpu(stack_processes) as cpu:
                                outcome[key] = bare_faust(copy[0], args.events, work, timeout=args.timeout)
                        else:
                            if worker is not None:
                                worker.stop()
                            worker = WorkerProcess(copy[0] if side == "worker" else copy[1], work / f"{side}-{r}.log",
                                                   pythonpath=reference if side == "reference" else None)
                            worker.wait_ready()
                            with StackCpu(stack_processes) as cpu:
                                outcome[key] = worker_ingest(worker, args.events, timeout=args.timeout)
                        outcome[key]["stack_cores"] = cpu.cores
                        print(f"  {outcome[key]['events_per_s']:,} events/s", file=sys.stderr)
                    outcome["ratio"] = round(outcome["worker"]["events_per_s"] / outcome["bare_faust"]["events_per_s"],
                                             2)
                    if reference is not None:  # > 1: this checkout takes less CPU per event than REV
                        outcome["cpu_ratio_against"] = round(outcome["reference"]["cpu_us_per_event"]
                                                             / outcome["worker"]["cpu_us_per_event"], 2)
                    result["rounds"].append(outcome)
                if result["rounds"]:
                    result["ratio"] = round(statistics.median(o["ratio"] for o in result["rounds"]), 2)
                if reference is not None and result["rounds"]:
                    result["cpu_ratio_against"] = round(statistics.median(o["cpu_ratio_against"]
                                                                          for o in result["rounds"]), 2)
            finally:
                if worker is not None:
                    worker.stop()
            result["latency"] = []
            for keyed, db in ((True, 13), (False, 14)) if "latency" in args.phases else ():
                rounds_of = []
                for r in range(args.latency_rounds):
                    print(f"steady {args.rate:,.0f} events/s, {'keyed' if keyed else 'unkeyed'}, round {r + 1}/"
                          f"{args.latency_rounds} ...", file=sys.stderr)
                    settings = base.with_(topic_prefix=f"s{uuid.uuid4().hex[:6]}.", registry=registry,
                                          redis_url=f"{redis_base}/{db}")
                    rounds_of.append(latency_round(settings, model, args, stack_processes, keyed,
                                                   work / f"worker-steady-{'keyed' if keyed else 'unkeyed'}-{r}.log"))
                median = lambda xs: round(statistics.median(xs), 1)
                result["latency"].append({
                    "keyed": keyed, "rate": args.rate, "rounds": rounds_of,
                    "p50_ms": median([m["p50_ms"] for m in rounds_of]),
                    "p99_ms": median([m["p99_ms"] for m in rounds_of]),
                    "broker_only_p50_ms": median([m["broker_only"]["p50_ms"] for m in rounds_of]),
                    "broker_only_p99_ms": median([m["broker_only"]["p99_ms"] for m in rounds_of])})
            if args.backlog:
                print(f"backlog of {args.backlog:,} events ...", file=sys.stderr)
                backlog_settings = base.with_(topic_prefix=f"q{uuid.uuid4().hex[:6]}.", registry=registry,
                                              redis_url=f"{redis_base}/15")
                ensure_topics(backlog_settings, partitions=4)
                result["backlog"] = backlog(backlog_settings, model, args.backlog, work, timeout=args.backlog_timeout)
        finally:
            if args.keep_logs:
                for log in work.glob("*.log"):
                    target = Path(args.keep_logs) / log.name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(log.read_bytes())
            stack.stop()
            if reference is not None:
                remove_checkout(work / "reference")
    return result


def check_imports_from(path: Path) -> None:
    """A worker started with PYTHONPATH=path (outside any checkout, as WorkerProcess starts it)
    runs that revision's engine, not this checkout's."""
    found = subprocess.run([sys.executable, "-c", "import whystream.streams.engine as e; print(e.__file__)"],
                           env={**os.environ, "PYTHONPATH": str(path)}, capture_output=True, text=True, cwd=path.parent)
    if found.returncode != 0 or not found.stdout.strip().startswith(str(path)):
        raise SystemExit(f"the reference imports its engine from {found.stdout.strip() or found.stderr[-500:]}, "
                         f"not from {path}")


def report(r: dict) -> str:
    lines = [
        f"ingest benchmark: {r['events']:,} PredictionEvents ({r['event_bytes_mean']} bytes, "
        f"{r['model']['features']} features, {r['model']['trees']} trees) on the embedded broker ({r['machine']})",
        f"  {'round':<6}{'consumer':<32}{'events/s':>10}{'seconds':>9}{'CPU us/event':>14}{'peak RSS MiB':>14}"
        f"{'ratio':>8}",
    ]
    for k, o in enumerate(r["rounds"], 1):
        bare, worker = o["bare_faust"], o["worker"]
        lines += [
            f"  {k:<6}{'bare Faust agent (count only)':<32}{bare['events_per_s']:>10,}{bare['seconds']:>9}"
            f"{bare['cpu_us_per_event']:>14}{bare['peak_rss_mib']:>14}",
            f"  {k:<6}{'whystream worker':<32}{worker['events_per_s']:>10,}{worker['seconds']:>9}"
            f"{worker['cpu_us_per_event']:>14}{worker['peak_rss_mib']:>14}{o['ratio']:>7}x",
        ]
        if "reference" in o:
            ref = o["reference"]
            lines.append(f"  {k:<6}{'worker of ' + r['against']:<32}{ref['events_per_s']:>10,}{ref['seconds']:>9}"
                         f"{ref['cpu_us_per_event']:>14}{ref['peak_rss_mib']:>14}"
                         f"{round(ref['events_per_s'] / bare['events_per_s'], 2):>7}x")
    if r["rounds"]:
        worker = r["rounds"][-1]["worker"]
        stack = ", ".join(f"{name} {cores} cores" for name, cores in worker["stack_cores"].items())
        lines.append(f"  worker / bare Faust (median of rounds): {r['ratio']}x; while the worker ingests: {stack}; "
                     f"it explained {worker['explained']:,} ({worker['explanations_per_cpu_s']} explanations per "
                     f"worker CPU-second)")
        if "cpu_ratio_against" in r:
            lines.append(f"  CPU per event, {r['against']} / this checkout (median of rounds): {r['cpu_ratio_against']}x "
                         f"(rounds: {', '.join(str(o['cpu_ratio_against']) + 'x' for o in r['rounds'])})")
    for summary in r["latency"]:
        how = "keyed like `whystream produce`" if summary["keyed"] else "unkeyed"
        lines.append(f"  priority latency at {summary['rate']:,.0f} events/s ({how}, lz4, linger 5 ms), event_time -> "
                     f"read from `explanations`; broker only: the same load, no worker, a bare consumer reading "
                     f"`predictions`")
        for k, lat in enumerate(summary["rounds"], 1):
            floor = lat["broker_only"]
            lines += [
                f"    round {k}: {lat['seconds']}s, {lat['priority']:,} priority, {lat['reservoir']:,} sampled: "
                f"p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms; -> explained_at "
                f"p50 {lat['explained_at_p50_ms']} ms, p99 {lat['explained_at_p99_ms']} ms; broker only p50 "
                f"{floor['p50_ms']} ms, p99 {floor['p99_ms']} ms",
                f"      worker CPU {lat['worker_cpu_fraction']} cores, {lat['explanations_per_cpu_s']} "
                f"explanations per CPU-second, RSS {lat['rss_mib']} MiB; "
                + ", ".join(f"{name} {cores} cores" for name, cores in lat["stack_cores"].items()),
                "      p99 ms by second, worker:      " + " ".join(str(v) for v in lat["p99_ms_by_second"].values()),
                "      p99 ms by second, broker only: " + " ".join(str(v) for v in floor["p99_ms_by_second"].values()),
            ]
        lines.append(f"    median of rounds: p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms; broker only "
                     f"p50 {summary['broker_only_p50_ms']} ms, p99 {summary['broker_only_p99_ms']} ms")
    if "backlog" in r:
        b = r["backlog"]
        lines.append(f"  backlog {b['events']:,} queued: consumed {b['consumed']:,} at {b['events_per_s']} events/s; RSS "
                     f"median {b['rss_mib_median']} MiB, max first half {b['rss_mib_first_half_max']}, second half "
                     f"{b['rss_mib_second_half_max']}, peak {b['peak_rss_mib']} MiB")
    return "\n".join(lines)


WARM_UP_EVENTS = 2_000


def warm_up(settings, events, work: Path, timeout: float, pythonpath: Path | None = None) -> None:
    """One worker on a few events before the rounds, on a topic of its own: a fresh checkout
    compiles its numba kernels (decoder, encoder, TreeSHAP) on first use and caches them on
    disk; without this, round 1's worker pays the compilation inside its measured window
    (257 µs of CPU per event instead of ~11 measured once)."""
    from bench.ingest_events import load_topic
    from bench.ingest_throughput import worker_ingest
    from bench.processes import WorkerProcess
    from whystream.kafka.topics import ensure_topics

    print(f"warm-up: a worker on {len(events):,} events (numba's kernels compiled and cached outside the "
          "measured rounds) ...", file=sys.stderr)
    ensure_topics(settings, partitions=4)
    load_topic(settings, [events])
    worker = WorkerProcess(settings, work / "worker-warm-up.log", pythonpath=pythonpath)
    try:
        worker.wait_ready()
        worker_ingest(worker, len(events), timeout=timeout)
    finally:
        worker.stop()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events loaded for the ingest comparison")
    parser.add_argument("--quick", action="store_true",
                        help="50,000 events, one round and 8 s of steady load, for a first look")
    parser.add_argument("--rounds", type=int, default=3, choices=range(1, 13), metavar="1..12",
                        help="bare / worker measurements, alternating which goes first")
    parser.add_argument("--rate", type=float, default=5000.0, help="events/s of the steady latency phase")
    parser.add_argument("--latency-seconds", type=float, default=15.0, help="each steady phase (keyed, unkeyed)")
    parser.add_argument("--latency-rounds", type=int, default=3,
                        help="steady phases of each kind; p50/p99 reported as the median over them (the machine is "
                             "shared: one phase can land on a noisy neighbour's burst)")
    parser.add_argument("--phases", type=lambda v: set(v.split(",")), default={"ingest", "latency"},
                        help="comma-separated: ingest (the comparison with bare Faust), latency; "
                             "--backlog adds its own phase")
    parser.add_argument("--backlog", type=int, default=0, help="also measure RSS under this many queued events")
    parser.add_argument("--backlog-timeout", type=float, default=900.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="per ingest measurement")
    parser.add_argument("--against", help="git revision whose worker also ingests a copy in each round (CPU per "
                                          "event side by side)")
    parser.add_argument("--reference-model", help="registry holding a `fraud` model to use instead of training one")
    parser.add_argument("--keep-logs", help="copy the worker and Faust logs to this folder")
    parser.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "ingest.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.latency_seconds, args.rounds = min(args.events, 50_000), min(args.latency_seconds, 8.0), 1
        args.latency_rounds = 1
    from bench.results import publish

    result = run(args)
    publish(result, report(result), args.json)
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
