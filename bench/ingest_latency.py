"""Ingest phase 2: priority latency under a steady load, and the broker alone
under the same load (the floor under the worker's latency).
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

from bench.ingest_events import (
    encoded_events,
    event_time_of,
    prediction_id_of,
    with_event_time,
)
from bench.processes import Sampler, StackCpu, WorkerProcess


class Listener(threading.Thread):
    """Reads a topic from its current end, noting when each message arrives."""

    def __init__(self, settings, topic: str, **fetch_settings):
        super().__init__(daemon=True)
        from confluent_kafka import TopicPartition

        from whystream.kafka.clients import consumer
        from whystream.kafka.reader import partition_bounds

        self.topic = settings.topic(topic)
        self.consumer = consumer(settings, label="bench-listen", **{"fetch.error.backoff.ms": 5,
                                                                    **(fetch_settings or {"fetch.wait.max.ms": 5})})
        partitions = self.consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
        bounds = partition_bounds(settings, self.topic, partitions, timeout=10)  # not the watermark: Tansu's is short
        self.consumer.assign([TopicPartition(self.topic, p, end) for p, (_, end) in bounds.items()])
        self.received: list[tuple[float, bytes]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            first = self.consumer.poll(0.05)
            if first is None:
                continue
            now = time.time()  # taken at once, as the worker's loop does: no waiting for a fuller batch
            for message in [first, *self.consumer.consume(1999, timeout=0)]:
                if message.error() is None:
                    self.received.append((now, message.value()))

    def stop(self) -> list[tuple[float, bytes]]:
        self._halt.set()
        self.join(10)
        self.consumer.close()
        return self.received


def send_steady(settings, events: list[tuple[bytes, bytes]], rate: float, keyed: bool) -> tuple[float, float]:
    """Send the events at `rate`/s, a few every millisecond, each with event_time = its send time.
    Returns (wall-clock time of the first send, seconds it took)."""
    from whystream.kafka.clients import producer as kafka_producer

    producer = kafka_producer(settings, "bulk")  # as `whystream produce`
    topic = settings.topic("predictions")
    began, first_send = time.monotonic(), time.time()
    step = max(1, int(rate / 1000))
    for i in range(0, len(events), step):
        ahead = i / rate - (time.monotonic() - began)
        if ahead > 0:
            time.sleep(ahead)
        now_ms = int(time.time() * 1000)
        for key, value in events[i:i + step]:
            producer.produce(topic, value=with_event_time(value, now_ms), key=key if keyed else None)
        producer.poll(0)
    producer.flush(30)
    return first_send, time.monotonic() - began


def latency_summary(delays: list[tuple[float, float]], first_send: float) -> dict:
    """p50/p99/max of (event_time s, delay ms) pairs, and p99 per second of sending."""
    by_second: dict[int, list[float]] = {}
    for event_time, delay in delays:
        by_second.setdefault(int(event_time - first_send), []).append(delay)
    ms = [d for _, d in delays]
    q = lambda xs, p: round(float(_quantile(xs, p)), 1) if xs else None
    return {"p50_ms": q(ms, 0.5), "p99_ms": q(ms, 0.99), "max_ms": q(ms, 1.0),
            "p99_ms_by_second": {s: q(v, 0.99) for s, v in sorted(by_second.items())}}


def broker_floor(settings, model, rate: float, seconds: float, run_id: str, keyed: bool) -> dict:
    """The same load with no worker: event_time -> a bare consumer, fetching as the worker does, has it.
    What the broker alone costs; the worker's latency cannot be below it."""
    from whystream.streams.ingest import FETCH_SETTINGS

    count = int(rate * seconds)
    events = [e for chunk in encoded_events(model, count, run_id, seed=3) for e in chunk]
    listener = Listener(settings, "predictions", **FETCH_SETTINGS)
    listener.start()
    time.sleep(0.5)
    first_send, _ = send_steady(settings, events, rate, keyed)
    deadline = time.monotonic() + 30
    while len(listener.received) < count and time.monotonic() < deadline:  # (warm-up leftovers count too)
        time.sleep(0.2)
    received = [(at, v) for at, v in listener.stop() if prediction_id_of(v).startswith(run_id + "-")]
    delays = [(t / 1000, at * 1000 - t) for at, t in ((at, event_time_of(v)) for at, v in received)]
    return {"received": len(received), **latency_summary(delays, first_send)}


def steady_latency(settings, worker: WorkerProcess, model, rate: float, seconds: float, run_id: str,
                   stack_processes: dict[str, int] | None = None, keyed: bool = True) -> dict:
    """Send `rate` events/s for `seconds` with event_time = send time; latency of priority explanations.
    keyed: with key = prediction_id (as `whystream produce`), else without a key (the producer's
    sticky partitioner then fills one partition's batch at a time: a quarter of the record batches)."""
    from whystream.wire.codecs import codec_for

    count = int(rate * seconds)
    events = [e for chunk in encoded_events(model, count, run_id, seed=3) for e in chunk]
    listener = Listener(settings, "explanations")
    listener.start()
    time.sleep(0.5)
    consumed_before = worker.metrics()["consumed"]
    sampler = Sampler(worker.process.pid, worker.metrics_url, interval=0.5)
    sampler.start()
    with StackCpu(stack_processes or {}) as stack_cpu:
        first_send, sent_seconds = send_steady(settings, events, rate, keyed)
    decode = codec_for("ExplanationEvent").decode
    deadline = time.monotonic() + 60
    while worker.metrics()["consumed"] < consumed_before + count and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    samples = sampler.stop()
    received = listener.stop()
    arrival, explained = [], []
    counts = {"priority": 0, "reservoir": 0}
    for at, value in received:
        e = decode(value)
        if not e["prediction_id"].startswith(run_id + "-"):
            continue
        if e["sampling_reason"] == "RESERVOIR":
            counts["reservoir"] += 1
            continue
        counts["priority"] += 1
        arrival.append((e["event_time"] / 1000, at * 1000 - e["event_time"]))
        explained.append((e["event_time"] / 1000, e["explained_at"] - e["event_time"]))
    busy = [s for s in samples if s["t"] - samples[0]["t"] <= sent_seconds]
    cpu = busy[-1]["cpu"] - busy[0]["cpu"] if len(busy) > 1 else None
    expl = busy[-1]["explained"] - busy[0]["explained"] if len(busy) > 1 else None
    wall = busy[-1]["t"] - busy[0]["t"] if len(busy) > 1 else None
    to_explained = latency_summary(explained, first_send)
    return {"rate": rate, "keyed": keyed, "seconds": round(sent_seconds, 1), "sent": count, **counts,
            **latency_summary(arrival, first_send),
            "explained_at_p50_ms": to_explained["p50_ms"], "explained_at_p99_ms": to_explained["p99_ms"],
            "worker_cpu_fraction": round(cpu / wall, 3) if cpu and wall else None,
            "explanations_per_cpu_s": round(expl / cpu, 1) if cpu else None,
            "rss_mib": round(samples[-1]["rss"] / 2**20, 1) if samples else None, "stack_cores": stack_cpu.cores}


def latency_round(settings, model, args, stack_processes: dict[str, int], keyed: bool, log: Path) -> dict:
    """One steady phase with a fresh worker on fresh topics, then the same load with no worker."""
    from whystream.kafka.topics import ensure_topics

    ensure_topics(settings, partitions=4)
    worker = WorkerProcess(settings, log)
    try:
        worker.wait_ready()
        # Warm-up, not measured: the first connections, the first windows.
        steady_latency(settings, worker, model, args.rate, 2.0, f"warm{uuid.uuid4().hex[:4]}", keyed=keyed)
        measured = steady_latency(settings, worker, model, args.rate, args.latency_seconds,
                                  f"steady{uuid.uuid4().hex[:4]}", stack_processes, keyed)
    finally:
        worker.stop()
    # The broker alone, same load and as long, on a topic as fresh as the worker's was.
    floor_settings = settings.with_(topic_prefix=f"f{uuid.uuid4().hex[:6]}.")
    ensure_topics(floor_settings, partitions=4)
    broker_floor(floor_settings, model, args.rate, 2.0, f"warm{uuid.uuid4().hex[:4]}", keyed)
    measured["broker_only"] = broker_floor(floor_settings, model, args.rate, args.latency_seconds,
                                           f"floor{uuid.uuid4().hex[:4]}", keyed)
    return measured


def _quantile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]
