"""Ingest phase 3: a backlog queued before a fresh worker starts, and its
resident memory while it works through it.
"""

from __future__ import annotations

import statistics
import time
import uuid
from pathlib import Path

from bench.ingest_events import encoded_events, load_topic
from bench.ingest_throughput import _rate
from bench.processes import Sampler, WorkerProcess, _peak_rss


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
