"""Ingest phase 1: a loaded `predictions` topic read by a bare Faust agent that
only counts messages, and by a `whystream worker` (see bench/ingest.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.processes import Sampler, WorkerProcess, _peak_rss

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
    """Events/s between the first sample with consumed > 0 and the first with consumed >= n; from
    the last sample before consumption began when both are one (a run read in a single batch)."""
    began = next(i for i, s in enumerate(samples) if s.get("consumed", 0) > 0)
    last = next(s for s in samples if s.get("consumed", 0) >= n)
    if last is samples[began]:
        if began == 0:
            raise RuntimeError(f"all {n:,} events were consumed before the first sample: too few to measure, "
                               "use more --events")
        began -= 1
    first = samples[began]
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
