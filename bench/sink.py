"""Benchmark: the sink's write path into chDB, batch decoder + pipeline against per-message decode.

A fresh chDB directory (in a child process: one chDB per process) gets a
39-feature model's reference, then the same ExplanationEvents (single-object
Avro, as the workers publish them: 39 attributions, 5 top reasons, uuid ids)
in batches of 5,000 of one partition (as run_sink cuts them), once per way of writing them, each into a database of
its own, alternating over the rounds:
- `main_path`: what the sink on main does per batch: fastavro decode of every
  message into a dict, explanation_rows.explanation_columns, one native insert
  (no set-aside checks, no ledger);
- `per_message`: this sink with its per-message path (decode into dicts,
  checks, RowBinary rows), on one thread;
- `columnar`: this sink with the compiled batch decoder, on one thread;
- `pipelined`: as run_sink runs it: the batch decoder on a thread of its
  own while the previous batch is written (SinkPipeline).
All four write the table and every materialized view; the three sink variants
also run the duplicate filter, the ledger and the claims.

    python bench/sink.py [--events 100000] [--rounds 2] [--quick] [--json PATH]
    python -m bench --only sink
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path

N_FEATURES, BATCH = 39, 5000
WAYS = ("main_path", "per_message", "columnar", "pipelined")


def make_events(model, n: int, seed: int = 11) -> list[bytes]:
    import numpy as np

    from whystream.wire.codecs import codec_for

    codec = codec_for("ExplanationEvent", None, "explanations")
    rng = np.random.default_rng(seed)
    now = int(time.time() * 1000) - 3_600_000
    shap = rng.laplace(size=(n, N_FEATURES)) * 0.2
    values = rng.normal(size=(n, N_FEATURES))
    out = []
    for i in range(n):
        order = np.argsort(-shap[i])[:5]
        adverse = i % 30 == 0
        out.append(codec.encode({
            "prediction_id": str(uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | i)),
            "model_name": model.name, "model_version": model.version, "explainer": "whystream-treeshap",
            "explainer_version": "1", "event_time": now + i, "explained_at": now + i + 40,
            "output_space": "raw_margin", "base_value": -2.0, "raw_score": float(-2.0 + shap[i].sum()),
            "attributions": [{"feature": f, "value": float(values[i, j]), "shap": float(shap[i, j])}
                             for j, f in enumerate(model.feature_names)],
            "top_reasons": [{"feature": model.feature_names[j], "value": float(values[i, j]),
                             "shap": float(shap[i, j])} for j in order],
            "score": 0.3, "decision": "decline" if adverse else "approve", "threshold": 0.5,
            "sampling_reason": "ADVERSE" if adverse else "RESERVOIR", "inclusion_weight": 1.0 if adverse else 12.5,
            "stratum": "US", "source": "LIVE", "redis_available": True, "latency_ms": 40.0, "worker": "bench-worker",
            "explained_class": None,
            "principal_reasons": [{"code": f"R{j}", "text": f"reason {j}", "feature": model.feature_names[j],
                                   "value": float(values[i, j]), "shap": float(shap[i, j])} for j in order[:4]]
            if adverse else [],
            "reason_codes_version": None, "redacted_features": [],
        }))
    return out


def child(args) -> dict:
    from bench.input_views import model as bench_model
    from whystream.config import Settings
    from whystream.jobs.clickhouse import connection as ch
    from whystream.jobs.clickhouse import references as model_reference
    from whystream.jobs.clickhouse.sql import rows
    from whystream.jobs.sink import explanation_rows
    from whystream.jobs.sink.decoder import BatchDecoder
    from whystream.jobs.sink.pipeline import SinkPipeline
    from whystream.jobs.sink.sink import Sink
    from whystream.kafka.messages import RawMessage
    from whystream.wire.codecs import codec_for

    model = bench_model(N_FEATURES)  # with an input reference: the input-drift views do their work too
    values = make_events(model, args.events + BATCH)
    messages = [RawMessage(v, None, "explanations", i % 4, i) for i, v in enumerate(values)]
    warm, timed = messages[:BATCH], messages[BATCH:]
    by_partition = [[m for m in timed if m.partition == p] for p in range(4)]  # as run_sink cuts them
    batches = [part[b:b + BATCH] for part in by_partition for b in range(0, len(part), BATCH)]
    settings = Settings(clickhouse_dsn=f"chdb://{args.dir}")
    codec = codec_for("ExplanationEvent", None, "explanations")

    def main_path(database):
        client = ch.connect(settings, database)

        def write(batch):
            events = [codec.decode(m.value) for m in batch]
            explanation_rows.insert_explanations(client, events, database, token=uuid.uuid4().hex,
                                   positions=[(m.partition, m.offset) for m in batch])
        return write, lambda: None

    def sink_way(database, columnar, pipelined):
        sink = Sink(settings, database, columnar=columnar, topic_id=lambda t: "bench-topic-id")
        if not pipelined:
            return sink.process, lambda: None
        pipeline = SinkPipeline(sink)
        return pipeline.push, lambda: (pipeline.drain(), pipeline.close())

    makers = {"main_path": main_path, "per_message": lambda db: sink_way(db, False, False),
              "columnar": lambda db: sink_way(db, True, False), "pipelined": lambda db: sink_way(db, True, True)}
    rates: dict[str, list[float]] = {way: [] for way in WAYS}
    for r in range(args.rounds):
        for way in WAYS if r % 2 == 0 else reversed(WAYS):
            database = f"bench_{way}_{r}"
            setup = ch.connect(settings, database)
            model_reference.register_reference(setup, model, database)
            write, finish = makers[way](database)
            write(warm)  # first insert, compiled decoder loaded: not timed
            finish()
            write, finish = makers[way](database)
            t0 = time.perf_counter()
            for batch in batches:
                write(batch)
            finish()
            rates[way].append(len(timed) / (time.perf_counter() - t0))
            stored = rows(setup, f"SELECT count() AS n FROM {database}.explanations")[0]["n"]
            assert stored == len(messages), f"{way}: {stored} rows stored of {len(messages)}"
            setup.command(f"DROP DATABASE {database} SYNC")
    decoder, decode_rates = BatchDecoder(codec), {"dicts": [], "batch_decoder": []}
    for _ in range(args.rounds):  # the decode step alone, no ClickHouse: what the batch decoder replaced
        t0 = time.perf_counter()
        for batch in batches:
            explanation_rows.explanation_columns([codec.decode(m.value) for m in batch], [(m.partition, m.offset) for m in batch])
        decode_rates["dicts"].append(len(timed) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for batch in batches:
            decoder(batch, {"explanations": "bench-topic-id"})
        decode_rates["batch_decoder"].append(len(timed) / (time.perf_counter() - t0))
    result = {"benchmark": "sink", "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "events": len(timed), "batch": BATCH, "features": N_FEATURES, "rounds": args.rounds,
              "event_bytes_mean": round(sum(map(len, values)) / len(values))}
    for way in WAYS:
        result[way] = {"rows_per_s": round(statistics.median(rates[way]))}
    for way in WAYS[1:]:
        result[f"{way}_vs_main_path"] = round(result[way]["rows_per_s"] / result["main_path"]["rows_per_s"], 2)
    result["decode_only"] = {k: round(statistics.median(v)) for k, v in decode_rates.items()}
    result["decode_only"]["ratio"] = round(result["decode_only"]["batch_decoder"] / result["decode_only"]["dicts"], 1)
    result["pipelined_vs_per_message"] = round(result["pipelined"]["rows_per_s"]
                                               / result["per_message"]["rows_per_s"], 2)
    return result


def report(r: dict) -> str:
    lines = [f"sink benchmark: {r['events']:,} ExplanationEvents of a {r['features']}-feature model "
             f"({r['event_bytes_mean']} bytes) into chDB, batches of {r['batch']:,}, median of {r['rounds']} "
             f"rounds ({r['machine']})",
             f"  {'write path':<58}{'rows/s':>10}{'x main':>8}"]
    labels = {"main_path": "main's sink: per-message decode into dicts, native insert",
              "per_message": "this sink, per-message path (checks, ledger, claims)",
              "columnar": "this sink, batch decoder into RowBinary, one thread",
              "pipelined": "this sink, batch decoder on its own thread (run_sink)"}
    for way in WAYS:
        ratio = "1.00" if way == "main_path" else f"{r[f'{way}_vs_main_path']:.2f}"
        lines.append(f"  {labels[way]:<58}{r[way]['rows_per_s']:>10,}{ratio:>8}")
    lines.append(f"  pipelined / per-message path: {r['pipelined_vs_per_message']}x")
    d = r["decode_only"]
    lines.append(f"  decode step alone (no ClickHouse): dicts + columns {d['dicts']:,}/s, batch decoder "
                 f"{d['batch_decoder']:,}/s: {d['ratio']}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    from bench.results import main_in_child

    return main_in_child("sink", __doc__, child, report, argv)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
