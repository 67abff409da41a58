"""Running real worker processes (`whystream worker`) in tests, streaming to them, killing
them, and reading what they published."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from confluent_kafka import Producer

from whystream.infra.stack import free_port
from whystream.jobs.simulation.generator import TransactionGenerator
from whystream.jobs.simulation.produce import prediction_events
from whystream.kafka.reader import read_all
from whystream.wire.codecs import codec_for

BAND = 0.02


class Worker:
    def __init__(self, settings, log_dir, *flags):
        self.port = free_port()
        self.log = open(log_dir / f"worker-{self.port}.log", "wb")
        env = {**os.environ, **settings.as_env(), "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, "-m", "whystream", "worker", "--web-port", str(self.port),
                "--new-version-events", "0", "--window", "2", "--idle-close", "3", "--budget", "5", *flags]
        self.process = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as response:
            return response.status, response.read()

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"worker exited: {self.log.name}"
            try:
                return self.get("/metrics")
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.3)
        raise AssertionError(f"worker not ready in {timeout}s; see {self.log.name}")

    def kill(self, sig=signal.SIGKILL):
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(30)


def records_for(model, count, seed, run_id):
    gen = TransactionGenerator(seed)
    return [r for chunk in prediction_events(model, gen, 0, count, run_id, seed) for r in chunk]


def send(settings, records, rate=0.0):
    codec = codec_for("PredictionEvent")
    producer = Producer(settings.kafka())
    began = time.monotonic()
    for i, r in enumerate(records):
        producer.produce(settings.topic("predictions"), codec.encode(r), r["prediction_id"].encode())
        if rate and i % 100 == 99:
            producer.poll(0)
            time.sleep(max(0.0, (i + 1) / rate - (time.monotonic() - began)))
    producer.flush(30)


def priority_ids(records):
    return {r["prediction_id"] for r in records
            if r["decision"] != "approve" or r["priority"] or abs(r["score"] - r["threshold"]) <= BAND}


def wait_quiet(settings, quiet_s=8.0, timeout=120):
    """Explanations read back once there are some and their count stopped growing for quiet_s
    (none yet is not quiet: a worker under load may take a while to start consuming)."""
    deadline = time.monotonic() + timeout
    last, since = 0, time.monotonic()
    while time.monotonic() < deadline:
        found = read_all(settings, settings.topic("explanations"), "ExplanationEvent")
        if len(found) != last:
            last, since = len(found), time.monotonic()
        elif last and time.monotonic() - since > quiet_s:
            return found
        time.sleep(1)
    raise AssertionError("explanations never settled")


def wait_explained(settings, timeout_s=90):
    deadline = time.monotonic() + timeout_s
    while not read_all(settings, settings.topic("explanations"), "ExplanationEvent", timeout=10):
        assert time.monotonic() < deadline, "nothing explained"
        time.sleep(0.5)


def stream_to_a_live_worker(settings, send_some, items, rate, head=300):
    """Send the first `head` items at once and, once the worker explains (it is consuming),
    the rest at `rate` per second on a thread, which is returned: a kill then lands mid-stream
    however long the worker took to start."""
    send_some(settings, items[:head], 0.0)
    wait_explained(settings)
    sender = threading.Thread(target=send_some, args=(settings, items[head:], rate))
    sender.start()
    return sender


def kill_mid_stream(settings, worker, log_dir, settle_s=1.0):
    """kill -9 `worker` once explanations flow (and `settle_s` more), and start its replacement."""
    wait_explained(settings)
    time.sleep(settle_s)
    worker.kill()  # kill -9 in the middle of the stream
    return Worker(settings, log_dir)


def dedup(explanations):
    return {e["prediction_id"]: e for e in explanations}
