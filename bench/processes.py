"""The processes a benchmark measures: a `whystream worker` subprocess with its
/metrics, peak resident memory, CPU of the embedded stack's processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path


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
    def __init__(self, settings, log_path: Path, *flags: str, pythonpath: Path | None = None):
        """`pythonpath`: import whystream from there (another revision, bench.engine.checkout); the
        process then starts in the log's folder, since `python -m` puts its working directory
        (a checkout, often) ahead of PYTHONPATH."""
        from whystream.infra.stack import free_port

        self.port = free_port()
        self.log = open(log_path, "wb")
        env = {**os.environ, **settings.as_env(), "PYTHONUNBUFFERED": "1"}
        if pythonpath is not None:
            env["PYTHONPATH"] = str(pythonpath)
        self.process = subprocess.Popen([sys.executable, "-m", "whystream", "worker", "--web-port", str(self.port),
                                         *flags], env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        cwd=None if pythonpath is None else log_path.parent)
        # Only the two counters parse_metrics reads: the whole page costs the worker ~2 ms of CPU per
        # scrape, ~0.5 µs per event at the samplers' 10 scrapes a second (a cost of the benchmark's).
        self.metrics_url = (f"http://127.0.0.1:{self.port}/metrics"
                            "?name[]=whystream_events_consumed_total&name[]=whystream_explained_total")

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


def run_child(script: str, argv: list[str]) -> dict:
    """Run a benchmark script again as `script --child ARGV` and return the JSON its last
    line prints: chDB opens one directory per process, so the engine runs in a child."""
    child = subprocess.run([sys.executable, script, "--child", *argv], capture_output=True, text=True,
                           cwd=Path(__file__).resolve().parents[1])
    if child.returncode != 0:
        sys.stderr.write(child.stderr)
        raise SystemExit(f"benchmark child failed ({child.returncode})")
    return json.loads(child.stdout.strip().splitlines()[-1])
