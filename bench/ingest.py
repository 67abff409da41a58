"""Benchmark: how fast one worker ingests `predictions`, against a bare Faust agent.

On a fresh embedded stack (Tansu broker, redis-server) with a small model
trained into a temporary registry (20,000 rows, 50 trees), in one run:

1. ingest: N realistic PredictionEvents (whystream.jobs.produce, Avro
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
   the ratio reported is the median over rounds.
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
                           [--quick] [--backlog 1000000] [--json PATH]

Prints a table and writes JSON (default bench/results/ingest.json). The machine
is shared: compare the ratios, which are measured side by side in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from whystream.streams.batch_encode import avro_long

BARE_FAUST_AGENT = r'''
import json, os, sys, time
import faust
from faust.worker import Worker

broker, topic, group, n, out, datadir = sys.argv[1:7]
n = int(n)
app = faust.App(group, broker=f"kafka://{broker}", datadir=datadir, web_enabled=False,
                broker_session_timeout=6.0, broker_heartbeat_interval=2.0, topic_allow_declare=False,
                topic_disable_leader=True, consumer_auto_offset_reset="earliest")
source = app.topic(topic, value_serializer="raw", key_serializer="raw")
state = {"count": 0}

@app.agent(source)
async def count(stream):
    async for value in stream:
        state["count"] += 1
        if state["count"] == 1:
            state["first"], state["cpu_first"] = time.time(), sum(os.times()[:2])
        if state["count"] == n:
            state["last"], state["cpu_last"] = time.time(), sum(os.times()[:2])
            with open(out + ".tmp", "w") as f:
                json.dump(state, f)
            os.replace(out + ".tmp", out)

Worker(app, loglevel="warning", quiet=True).execute_from_commandline()
'''


# -- events ---------------------------------------------------------------------------------------------------------

def _varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _event_time_span(value: bytes) -> tuple[int, int]:
    """Where event_time lies in a single-object encoded PredictionEvent (current schema): after
    three strings (prediction_id, model_name, model_version) in the body."""
    pos = 10
    for _ in range(3):
        length, pos = _varint(value, pos)
        pos += length >> 1
    _, end = _varint(value, pos)
    return pos, end


def with_event_time(value: bytes, event_time_ms: int) -> bytes:
    pos, end = _event_time_span(value)
    return value[:pos] + avro_long(event_time_ms) + value[end:]


def event_time_of(value: bytes) -> int:
    zigzag, _ = _varint(value, _event_time_span(value)[0])
    return (zigzag >> 1) ^ -(zigzag & 1)


def prediction_id_of(value: bytes) -> str:
    length, pos = _varint(value, 10)  # the body's first field
    return value[pos:pos + (length >> 1)].decode()


def encoded_events(model, count: int, run_id: str, seed: int = 1, start: int = 0):
    """Chunks of (key, value): realistic PredictionEvents, Avro single-object encoded."""
    from whystream.jobs.generator import TransactionGenerator
    from whystream.jobs.produce import prediction_events
    from whystream.streams.codec import codec_for

    encode = codec_for("PredictionEvent").encode
    for records in prediction_events(model, TransactionGenerator(seed), start, count, run_id, seed):
        yield [(r["prediction_id"].encode(), encode(r)) for r in records]


def load_topic(settings, chunks) -> int:
    """Produce (key, value) chunks as fast as the broker takes them."""
    from confluent_kafka import Producer

    topic = settings.topic("predictions")
    producer = Producer(settings.kafka(**{"linger.ms": 20, "compression.type": "lz4", "batch.size": 1_000_000,
                                          "queue.buffering.max.kbytes": 512 * 1024}))
    sent = 0
    for chunk in chunks:
        for key, value in chunk:
            while True:
                try:
                    producer.produce(topic, value=value, key=key)
                    break
                except BufferError:
                    producer.poll(0.05)
        sent += len(chunk)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("loading the predictions topic did not finish in 120 s")
    return sent


# -- processes --------------------------------------------------------------------------------------------------------

def _peak_rss(pid: int) -> int:
    """VmHWM: the peak resident set of a process, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class Sampler(threading.Thread):
    """Samples a process (RSS, CPU seconds) and, if given, a /metrics URL, every `interval` s."""

    def __init__(self, pid: int, metrics_url: str | None = None, interval: float = 0.1):
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process(pid)
        self.url, self.interval = metrics_url, interval
        self.samples: list[dict] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                sample = self.sample()
            except Exception:  # the process went away, or its web server is busy starting
                sample = None
            if sample:
                self.samples.append(sample)
            self._halt.wait(self.interval)

    def sample(self) -> dict:
        cpu = self.process.cpu_times()
        sample = {"t": time.time(), "rss": self.process.memory_info().rss, "cpu": cpu.user + cpu.system}
        if self.url:
            with urllib.request.urlopen(self.url, timeout=5) as response:
                sample.update(parse_metrics(response.read().decode()))
        return sample

    def stop(self) -> list[dict]:
        self._halt.set()
        self.join(10)
        return self.samples


def parse_metrics(text: str) -> dict:
    consumed = explained = 0.0
    for line in text.splitlines():
        if line.startswith("whystream_events_consumed_total"):
            consumed = float(line.split()[-1])
        elif line.startswith("whystream_explained_total{"):
            explained += float(line.split()[-1])
    return {"consumed": consumed, "explained": explained}


class StackCpu:
    """CPU (in cores) used by the broker and Redis while the block runs."""

    def __init__(self, pids: dict[str, int]):
        import psutil

        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.cores: dict[str, float] = {}

    def __enter__(self) -> "StackCpu":
        self._began = time.monotonic()
        self._cpu = {name: sum(p.cpu_times()[:2]) for name, p in self.processes.items()}
        return self

    def __exit__(self, *exc) -> None:
        seconds = time.monotonic() - self._began
        self.cores = {name: round((sum(p.cpu_times()[:2]) - self._cpu[name]) / seconds, 2)
                      for name, p in self.processes.items()}


class WorkerProcess:
    def __init__(self, settings, log_path: Path, *flags: str):
        from whystream.infra.stack import free_port

        self.port = free_port()
        self.log = open(log_path, "wb")
        env = {**os.environ, **settings.as_env(), "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "whystream", "worker", "--web-port", str(self.port),
                                         *flags], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.metrics_url = f"http://127.0.0.1:{self.port}/metrics"

    def metrics(self) -> dict:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return parse_metrics(response.read().decode())

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited ({self.process.returncode}); see {self.log.name}")
            try:
                self.metrics()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"worker not ready in {timeout:.0f}s; see {self.log.name}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


# -- phases ---------------------------------------------------------------------------------------------------------

def bare_faust(settings, n: int, work: Path, timeout: float) -> dict:
    """Events/s of a bare Faust agent that counts the raw messages of `predictions`."""
    out = work / f"bare-{uuid.uuid4().hex[:6]}.json"
    argv = [sys.executable, "-c", BARE_FAUST_AGENT, settings.broker, settings.topic("predictions"),
            f"bench-bare-{uuid.uuid4().hex[:8]}", str(n), str(out), str(work / "faust-bare")]
    log = open(work / "bare-faust.log", "wb")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not out.exists():
            if process.poll() is not None:
                raise RuntimeError(f"bare Faust agent exited ({process.returncode}); see {log.name}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"bare Faust agent did not count {n} messages in {timeout:.0f}s")
            time.sleep(0.05)
        state = json.loads(out.read_text())
        peak = _peak_rss(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    seconds, cpu = state["last"] - state["first"], state["cpu_last"] - state["cpu_first"]
    return {"events": n, "seconds": round(seconds, 3), "events_per_s": round((n - 1) / seconds),
            "cpu_s": round(cpu, 2), "cpu_us_per_event": round(cpu / (n - 1) * 1e6, 2),
            "peak_rss_mib": round(peak / 2**20, 1)}


def _rate(samples: list[dict], n: int) -> dict:
    """Events/s between the first sample with consumed > 0 and the first with consumed >= n."""
    first = next(s for s in samples if s.get("consumed", 0) > 0)
    last = next(s for s in samples if s.get("consumed", 0) >= n)
    seconds = last["t"] - first["t"]
    events = last["consumed"] - first["consumed"]
    cpu = last["cpu"] - first["cpu"]
    explained = last["explained"] - first["explained"]
    return {"events": n, "seconds": round(seconds, 3), "events_per_s": round(events / seconds) if seconds else None,
            "cpu_s": round(cpu, 2), "cpu_us_per_event": round(cpu / events * 1e6, 2) if events else None,
            "explained": int(last["explained"]),
            "explanations_per_cpu_s": round(explained / cpu, 1) if cpu else None}


def worker_ingest(worker: WorkerProcess, n: int, timeout: float) -> dict:
    sampler = Sampler(worker.process.pid, worker.metrics_url)
    sampler.start()
    deadline = time.monotonic() + timeout
    try:
        while not sampler.samples or sampler.samples[-1].get("consumed", 0) < n:
            if worker.process.poll() is not None:
                raise RuntimeError(f"worker exited ({worker.process.returncode}); see {worker.log.name}")
            if time.monotonic() > deadline:
                got = sampler.samples[-1].get("consumed") if sampler.samples else None
                raise RuntimeError(f"worker consumed {got} of {n} in {timeout:.0f}s; see {worker.log.name}")
            time.sleep(0.05)
    finally:
        samples = sampler.stop()
    result = _rate(samples, n)
    result["peak_rss_mib"] = round(_peak_rss(worker.process.pid) / 2**20, 1)
    return result


class Listener(threading.Thread):
    """Reads a topic from its current end, noting when each message arrives."""

    def __init__(self, settings, topic: str, **fetch_settings):
        super().__init__(daemon=True)
        from confluent_kafka import Consumer, TopicPartition

        self.topic = settings.topic(topic)
        self.consumer = Consumer(settings.kafka(**{"group.id": f"bench-listen-{uuid.uuid4().hex[:8]}",
                                                   "enable.auto.commit": False, "fetch.error.backoff.ms": 5,
                                                   **(fetch_settings or {"fetch.wait.max.ms": 5})}))
        partitions = self.consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
        ends = []
        for p in partitions:
            _, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)
            ends.append(TopicPartition(self.topic, p, high))
        self.consumer.assign(ends)
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
    from confluent_kafka import Producer

    producer = Producer(settings.kafka(**{"linger.ms": 5, "compression.type": "lz4"}))  # as `whystream produce`
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
    from whystream.streams.worker import FETCH_SETTINGS

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
    from whystream.streams.codec import codec_for

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
    from whystream.infra.stack import ensure_topics

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


def backlog(settings, model, n: int, work: Path, timeout: float) -> dict:
    """RSS over time of a fresh worker that starts with n events queued."""
    run_id = f"backlog{uuid.uuid4().hex[:4]}"
    began = time.monotonic()
    loaded = load_topic(settings, encoded_events(model, n, run_id, seed=5))
    load_s = time.monotonic() - began
    worker = WorkerProcess(settings, work / "worker-backlog.log")
    try:
        worker.wait_ready()
        sampler = Sampler(worker.process.pid, worker.metrics_url, interval=1.0)
        sampler.start()
        deadline = time.monotonic() + timeout
        while not sampler.samples or sampler.samples[-1].get("consumed", 0) < n:
            if worker.process.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        time.sleep(2)
        samples = sampler.stop()
        peak = _peak_rss(worker.process.pid)
    finally:
        worker.stop()
    t0 = samples[0]["t"]
    timeline = [{"s": round(s["t"] - t0, 1), "consumed": int(s.get("consumed", 0)), "rss_mib": round(s["rss"] / 2**20, 1)}
                for s in samples]
    working = [s for s in samples if 0 < s.get("consumed", 0) < n]
    rss = [s["rss"] / 2**20 for s in working] or [s["rss"] / 2**20 for s in samples]
    half = rss[len(rss) // 2:]
    rate = _rate(samples, n) if samples and samples[-1].get("consumed", 0) >= n else {}
    return {"events": loaded, "load_s": round(load_s, 1), "consumed": int(samples[-1].get("consumed", 0)),
            "events_per_s": rate.get("events_per_s"),
            "rss_mib_first_half_max": round(max(rss[:max(1, len(rss) // 2)]), 1),
            "rss_mib_second_half_max": round(max(half), 1) if half else None,
            "rss_mib_median": round(statistics.median(rss), 1), "peak_rss_mib": round(peak / 2**20, 1),
            "timeline": timeline}


# -- the run --------------------------------------------------------------------------------------------------------

def run(args) -> dict:
    from whystream.infra.stack import EmbeddedStack, ensure_topics
    from whystream.jobs.registry import ModelRegistry
    from whystream.jobs.train import train_model

    result: dict = {"benchmark": "ingest", "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                                                      f"Python {platform.python_version()}", "events": args.events}
    with tempfile.TemporaryDirectory(prefix="whystream-ingest-") as tmp:
        work = Path(tmp)
        stack = EmbeddedStack(work / "stack", write_env_file=False)
        base = stack.start()
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
            rounds = [base.with_(topic_prefix=f"b{uuid.uuid4().hex[:6]}.", registry=registry,
                                 redis_url=f"{redis_base}/{r % 12 + 1}") for r in range(ingest_rounds)]
            began = time.monotonic()
            for settings in rounds:
                ensure_topics(settings, partitions=4)
                load_topic(settings, [events])
            result["load_s"] = round(time.monotonic() - began, 1)
            del events

            stack_processes = {c.name: c.process.pid for c in stack.children}
            result["rounds"] = []
            worker = None
            try:
                for r, settings in enumerate(rounds):
                    if worker is not None:
                        worker.stop()
                    outcome = {}
                    # Alternate which goes first, so that a drift in the machine's load hits both alike.
                    for side in (("bare", "worker") if r % 2 == 0 else ("worker", "bare")):
                        print(f"round {r + 1}/{args.rounds}: {side} ...", file=sys.stderr)
                        if side == "bare":
                            with StackCpu(stack_processes) as cpu:
                                outcome["bare_faust"] = bare_faust(settings, args.events, work, timeout=args.timeout)
                            outcome["bare_faust"]["stack_cores"] = cpu.cores
                        else:
                            worker = WorkerProcess(settings, work / f"worker-{r}.log")
                            worker.wait_ready()
                            with StackCpu(stack_processes) as cpu:
                                outcome["worker"] = worker_ingest(worker, args.events, timeout=args.timeout)
                            outcome["worker"]["stack_cores"] = cpu.cores
                        print(f"  {outcome['bare_faust' if side == 'bare' else 'worker']['events_per_s']:,} events/s",
                              file=sys.stderr)
                    outcome["ratio"] = round(outcome["worker"]["events_per_s"] / outcome["bare_faust"]["events_per_s"],
                                             2)
                    result["rounds"].append(outcome)
                if result["rounds"]:
                    result["ratio"] = round(statistics.median(o["ratio"] for o in result["rounds"]), 2)
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
    return result


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
    if r["rounds"]:
        worker = r["rounds"][-1]["worker"]
        stack = ", ".join(f"{name} {cores} cores" for name, cores in worker["stack_cores"].items())
        lines.append(f"  worker / bare Faust (median of rounds): {r['ratio']}x; while the worker ingests: {stack}; "
                     f"it explained {worker['explained']:,} ({worker['explanations_per_cpu_s']} explanations per "
                     f"worker CPU-second)")
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
    parser.add_argument("--reference-model", help="registry holding a `fraud` model to use instead of training one")
    parser.add_argument("--keep-logs", help="copy the worker and Faust logs to this folder")
    parser.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "ingest.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.latency_seconds, args.rounds = min(args.events, 50_000), min(args.latency_seconds, 8.0), 1
        args.latency_rounds = 1
    result = run(args)
    publish(result, report(result), args.json)
    return result


def publish(result: dict, table: str, path: Path) -> None:
    """Print a benchmark's table and write its figures as JSON."""
    print(table)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"  wrote {path}")


if __name__ == "__main__":
    main()
