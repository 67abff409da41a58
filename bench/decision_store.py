"""Benchmark: the decision store's write cost on the sink, and its bytes per decision.

In a child process with a fresh chDB directory (one chDB per process):
- `explanations`: the sink without the store: ExplanationEvents of a 39-feature
  model (as bench/sink.py makes them) through `Sink.process` (batch decoder,
  duplicate filter, ledger, claims, the table and every materialized view);
- `decisions`: the store: PredictionEvents of the demo's fraud model (its 39
  features, the generator `make demo` streams, a day of event times) through
  `Sink.process` with the store on (decode, the workers' checks, the ledger,
  claims, `decisions`);
alternating over the rounds, batches of 5,000 of one partition as run_sink
cuts them. Then the stored decisions are merged (OPTIMIZE FINAL) and their
compressed and uncompressed bytes read from system.parts: bytes per decision,
and what a year of 10 million decisions a day takes. Before the merge, the drift
views over every decision (`input_drift_all`, `decision_drift_all`: plain views
that read the window's decisions, migration 076) are timed over all the stored
decisions: what a window of that many decisions costs to read.

The sink's cost with the store, for a stream of D decisions of which a share e
is explained: D·e / explanations_rate + D / decisions_rate seconds, against
D·e / explanations_rate without it; printed for e = 10% (about what the demo's
workers explain with the default budget) and the measured rates.

    python bench/decision_store.py [--events 100000] [--rounds 2] [--quick] [--json PATH]
    python -m bench --only decision_store
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

BATCH, PER_DAY, EXPLAINED_SHARE = 5000, 10_000_000, 0.10
READ_REPEATS = 3  # reads of the drift views over every stored decision


def child(args) -> dict:
    from bench.input_views import model as bench_model
    from bench.sink import N_FEATURES, make_events
    from whystream.config import Settings
    from whystream.jobs.clickhouse import connection as ch
    from whystream.jobs.clickhouse import references as model_reference
    from whystream.jobs.clickhouse.sql import rows
    from whystream.jobs.simulation.generator import TransactionGenerator
    from whystream.jobs.simulation.produce import prediction_events
    from whystream.jobs.simulation.train import train_model
    from whystream.jobs.sink.sink import Sink
    from whystream.kafka.messages import RawMessage
    from whystream.models.registry import ModelRegistry
    from whystream.wire.codecs import codec_for

    registry = ModelRegistry(args.dir.parent / "registry")
    fraud = train_model(registry, n_train=5_000, num_trees=10, num_leaves=15, progress=False)  # the demo's features
    first = int(time.time() * 1000) - 86_400_000
    records = [r for chunk in prediction_events(fraud, TransactionGenerator(5), 0, args.events + BATCH, "bench", 5,
                                                replay=(first, 86_400_000 / (args.events + BATCH)))
               for r in chunk]
    codec = codec_for("PredictionEvent")
    now = int(time.time() * 1000)
    predictions = [RawMessage(codec.encode(r), None, "predictions", i % 4, i, now) for i, r in enumerate(records)]
    model = bench_model(N_FEATURES)
    explained = [RawMessage(v, None, "explanations", i % 4, i) for i, v in enumerate(make_events(model,
                                                                                             args.events + BATCH))]
    settings = Settings(clickhouse_dsn=f"chdb://{args.dir}")

    def batches(messages):
        timed = messages[BATCH:]
        parts = [[m for m in timed if m.partition == p] for p in range(4)]
        return messages[:BATCH], [part[b:b + BATCH] for part in parts for b in range(0, len(part), BATCH)]

    ways = {"explanations": (explained, "explanations"), "decisions": (predictions, "decisions")}
    rates: dict[str, list[float]] = {w: [] for w in ways}
    sizes = {}
    for r in range(args.rounds):
        for way in list(ways) if r % 2 == 0 else reversed(list(ways)):
            messages, table = ways[way]
            warm, timed = batches(messages)
            database = f"bench_{way}_{r}"
            setup = ch.connect(settings, database)
            model_reference.register_reference(setup, model, database)
            sink = Sink(settings, database, registry=registry, topic_id=lambda t: "bench-topic-id",
                        decisions=way == "decisions")
            sink.process(warm)
            t0 = time.perf_counter()
            for batch in timed:
                sink.process(batch)
            rates[way].append(sum(map(len, timed)) / (time.perf_counter() - t0))
            stored = rows(setup, f"SELECT count() AS n FROM {database}.{table}")[0]["n"]
            assert stored == len(messages), f"{way}: {stored} rows stored of {len(messages)}"
            if way == "decisions" and not sizes:
                reads = drift_reads(setup, fraud, database, first, now, READ_REPEATS)
                setup.command(f"OPTIMIZE TABLE {database}.decisions FINAL")
                sizes = rows(setup, f"""
                    SELECT sum(data_compressed_bytes) AS compressed, sum(data_uncompressed_bytes) AS uncompressed,
                           sum(rows) AS n FROM system.parts
                    WHERE database = '{database}' AND table = 'decisions' AND active""")[0]
            setup.command(f"DROP DATABASE {database} SYNC")
    per = {k: float(sizes[k]) / float(sizes["n"]) for k in ("compressed", "uncompressed")}
    result_reads = {name: {"median_ms": round(statistics.median(t) * 1000, 1),
                           "decisions_per_s": round(len(predictions) / statistics.median(t))}
                    for name, t in reads.items()}
    result = {"benchmark": "decision_store", "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "events": args.events, "batch": BATCH, "rounds": args.rounds, "features": len(fraud.feature_names),
              "prediction_bytes_mean": round(sum(len(m.value) for m in predictions) / len(predictions)),
              "explanations_rows_per_s": round(statistics.median(rates["explanations"])),
              "decisions_rows_per_s": round(statistics.median(rates["decisions"])),
              "bytes_per_decision": round(per["compressed"], 1),
              "uncompressed_bytes_per_decision": round(per["uncompressed"], 1),
              "reads_over_every_decision": result_reads}
    e, x, d = EXPLAINED_SHARE, result["explanations_rows_per_s"], result["decisions_rows_per_s"]
    result["explained_share"] = e
    result["sink_time_with_store_vs_without"] = round((e / x + 1 / d) / (e / x), 2)
    result["year_of_10M_a_day_GiB"] = round(per["compressed"] * PER_DAY * 365 / 2**30, 1)
    return result


def drift_reads(client, fraud, database: str, first_ms: int, now_ms: int, repeat: int) -> dict[str, list[float]]:
    """Seconds per read of input_drift_all and decision_drift_all (migration 076) over every stored
    decision: the views read the window's decisions, not per-minute sums."""
    from whystream.jobs.analytics import input_drift
    from whystream.jobs.clickhouse import references as model_reference

    model_reference.register_reference(client, fraud, database)
    spent: dict[str, list[float]] = {"input_drift_all": [], "decision_drift_all": []}
    for _ in range(repeat):
        for name in spent:
            began = time.perf_counter()
            found = getattr(input_drift, name)(client, fraud.name, first_ms - 60_000, now_ms + 60_000, database)
            spent[name].append(time.perf_counter() - began)
            assert found, f"{name}: no rows"
    return spent


def report(r: dict) -> str:
    reads = [f"  {name} over all {r['events'] + r['batch']:,} stored decisions: {q['median_ms']:,} ms median "
             f"({q['decisions_per_s']:,} decisions/s)" for name, q in r.get("reads_over_every_decision", {}).items()]
    return "\n".join([
        f"decision store benchmark: {r['events']:,} decisions of the demo's {r['features']}-feature fraud model "
        f"({r['prediction_bytes_mean']} bytes of Avro each), batches of {r['batch']:,}, median of {r['rounds']} "
        f"rounds ({r['machine']})",
        f"  sink without the store (ExplanationEvents, 39 attributions): {r['explanations_rows_per_s']:>10,} rows/s",
        f"  the store (PredictionEvents into decisions):                 {r['decisions_rows_per_s']:>10,} rows/s",
        f"  sink time with the store / without, {r['explained_share']:.0%} of decisions explained: "
        f"{r['sink_time_with_store_vs_without']}x",
        f"  bytes per decision in ClickHouse: {r['bytes_per_decision']} compressed "
        f"({r['uncompressed_bytes_per_decision']} uncompressed)",
        f"  a year of 10 million decisions a day: {r['year_of_10M_a_day_GiB']:,} GiB compressed",
    ] + reads)


def main(argv: list[str] | None = None) -> dict:
    from bench.results import main_in_child

    return main_in_child("decision_store", __doc__, child, report, argv)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
