"""`whystream demo` (what `make demo` runs): the whole path on the embedded stack.

Starts a fresh embedded stack, trains and registers the fraud model (once; the
registry persists in var/registry), starts a worker and a ClickHouse sink with
its drift monitor, produces a seeded stream (a fast replay of the last 20
minutes, drift injected into one feature halfway, a few malformed messages
mixed in), follows the worker's /metrics with progress bars, prints a few
decoded explanations, then the drift table, the alert and the HTML report.

It explains what it shows where it first shows it (what priority, sampled and
fallback mean), showcases exact explanations (LIVE or CACHE, never the
fallback), and says that its event times are a replay: latency from event time
measures how old the replayed events were, so the demo reports latency from broker
receipt (each explanation's `received_at`, the Kafka timestamp of its decision) beside
it; so does the report. Piped or logged
(stdout not a terminal) it prints whole lines: progress every few seconds instead
of bars, nothing cut to the width of a terminal.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from whystream.config import Settings
from whystream.errors import WhystreamError
from whystream.infra.stack import EmbeddedStack, free_port
from whystream.jobs.clickhouse.connection import parse_dsn
from whystream.jobs.clickhouse.query_port import advertised_port, open_query_client
from whystream.jobs.clickhouse.sql import rows
from whystream.jobs.simulation.generator import DriftSpec
from whystream.jobs.simulation.produce import produce
from whystream.jobs.simulation.train import train_model
from whystream.kafka.clients import producer
from whystream.kafka.reader import message_count, read_all
from whystream.models.registry import ModelRegistry

MALFORMED = [b"not avro", b"\xc3\x01" + b"\x00" * 8, b""]
REPLAY_SECONDS = 20 * 60  # event times span the last 20 minutes: drift shows in minute buckets
DEFAULT_DRIFT = "amount:60@25000"  # amount's attributions move; nothing else's much
DRIFT_WINDOW = "10m"  # the drifted second half of the replay


class Process:
    """A whystream command in a child process, logging to a file."""

    def __init__(self, name: str, args: list[str], settings: Settings, log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.log = open(self.log_path, "wb")
        env = {**os.environ, **settings.as_env(), "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "whystream", *args], env=env,
                                        stdout=self.log, stderr=subprocess.STDOUT)

    def check(self) -> None:
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace").splitlines()[-5:]
            raise WhystreamError(f"{self.name} exited ({self.process.returncode}): {' | '.join(tail)}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def scrape(port: int) -> dict[str, float]:
    """The worker's metrics as {name{labels}: value}; empty while it starts."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}"] = sample.value
    return values


def total(metrics: dict[str, float], prefix: str, where: str = "") -> float:
    return sum(v for k, v in metrics.items() if k.startswith(prefix + "{") and where in k)


LEGEND = ("priority: adverse, near-threshold, producer-flagged and new-version decisions, always explained "
          "(weight 1); sampled: a weighted random sample of the rest (reservoir); fallback: an approximate "
          "explanation (Saabas path attribution) used only when exact TreeSHAP fails or a batch's latency budget "
          "is spent; such explanations say source FALLBACK and are left out of the drift statistics")
EXACT = ("LIVE", "CACHE")  # exact TreeSHAP: computed now, or an identical feature vector's from the cache


def heading(console: Console, text: str) -> None:
    """A rule with a title on a terminal; elsewhere one whole line (a rule cuts a long title)."""
    if console.is_terminal:
        console.rule(text)
    else:
        console.print(f"── {text} ──", soft_wrap=True, highlight=False)


def showcase(explained: list[dict]) -> list[dict]:
    """Two adverse and two sampled decisions, each explained exactly (LIVE or CACHE)."""
    exact = [e for e in explained if e["source"] in EXACT]
    return ([e for e in exact if e["sampling_reason"] == "ADVERSE"][:2]
            + [e for e in exact if e["sampling_reason"] == "RESERVOIR"][:2])


def print_explanations(console: Console, explanations: list[dict]) -> None:
    """Each explanation as a header line and its top reasons."""
    for e in explanations:
        console.print(f"[bold]{e['decision']}[/] score {e['score']:.3f} · {e['sampling_reason'].lower()} "
                      f"(weight {e['inclusion_weight']:g}) · {e['source']} (exact TreeSHAP) · {e['prediction_id']}",
                      highlight=False)
        table = Table(show_header=False, box=None, padding=(0, 2))
        for r in e["top_reasons"][:3]:
            value = "missing" if r["value"] is None else f"{r['value']:.4g}"
            table.add_row(f"  {r['feature']}", value, f"{r['shap']:+.3f}")
        console.print(table)


def run_demo(home: Path, registry: Path, events: int, rate: float, drift: list[DriftSpec], console: Console) -> None:
    demo_home = home / "demo"
    shutil.rmtree(demo_home, ignore_errors=True)
    if not console.is_terminal:  # piped or logged: whole lines, never wrapped or cut at 80 columns
        console = Console(file=console.file, soft_wrap=True, highlight=False)
    heading(console, "whystream demo")
    with EmbeddedStack(demo_home) as settings:
        settings = settings.with_(registry=registry)
        console.print(f"embedded stack: Kafka (Tansu) {settings.broker}, Redis {settings.redis_url}, "
                      f"ClickHouse {settings.clickhouse_dsn}")
        models = ModelRegistry(registry)
        if "fraud" not in models.models():
            console.print("training the fraud model (once; kept in the registry)")
            train_model(models)
        model = models.load("fraud")
        console.print(f"model fraud@{model.version}: {len(model.feature_names)} features, "
                      f"threshold {model.threshold:.4f}, AUC {model.metrics.get('auc', float('nan')):.3f}")

        port = free_port()
        logs = demo_home / "logs"
        worker = Process("worker", ["worker", "--web-port", str(port), "--window", "60", "--budget", "50"],
                         settings, logs)
        sink = None
        try:
            follow(settings, worker, port, events, rate, drift, console)
            # The replay puts 20 minutes of event time into seconds, faster than any reservoir window
            # closes: the sink starts once the worker has caught up, so the monitor judges complete
            # minutes (in production the windows' end, before the reservoir window, sees to that).
            sink = Process("sink", ["sink", "--window", DRIFT_WINDOW, "--interval", "20", "--reservoir-window",
                                    "60"], settings, logs)
            explained = read_all(settings, settings.topic("explanations"), "ExplanationEvent")
            print_latency(explained, console)
            heading(console, "a few explanations from the `explanations` topic (top reasons: feature, value, SHAP)")
            print_explanations(console, showcase(explained))
            wait_for_sink(settings, sink, len(explained), console)
            show_drift(settings, sink, demo_home, drift, console)
        finally:
            worker.stop()
            if sink is not None:
                sink.stop()
        console.print(f"logs: {logs}. Decode the topics yourself with the .avsc files in schemas/.")


def follow(settings: Settings, worker: Process, port: int, events: int, rate: float, drift, console) -> None:
    """Produce the stream and show the worker's progress until it has caught up."""
    console.print(f"worker started, web server on http://127.0.0.1:{port} (/metrics, /health, /explain/ID)")
    while not scrape(port):
        worker.check()
        time.sleep(0.3)
    console.print(LEGEND, highlight=False)
    columns = (TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"))
    # On a terminal, bars; elsewhere the same figures as a whole line every few seconds.
    lines = PlainProgress(console) if not console.is_terminal else None
    with Progress(*columns, console=console, disable=lines is not None) as progress:
        produced = progress.add_task("produced", total=events, note="")
        consumed = progress.add_task("consumed by the worker", total=events + len(MALFORMED), note="")
        explained = progress.add_task("explained", total=None, note="")
        began = time.monotonic()

        def on_chunk(n: int) -> None:
            progress.advance(produced, n)
            progress.update(produced, note=f"{progress.tasks[produced].completed / (time.monotonic() - began):,.0f}/s")

        bad = producer(settings, "plain")
        for value in MALFORMED:  # a producer bug: these must end in the dead-letter topic
            bad.produce(settings.topic("predictions"), value, b"malformed")
        bad.flush(10)
        # The stream starts once the worker consumes (its dead letters are out): latency from broker
        # receipt then measures the engine, not the worker's start.
        ready_by = time.monotonic() + 120
        while total(scrape(port), "whystream_dead_letters_total") < len(MALFORMED) and time.monotonic() < ready_by:
            worker.check()
            time.sleep(0.3)
        began = time.monotonic()
        produce(settings, events, rate, drift=drift, progress=on_chunk, replay_seconds=REPLAY_SECONDS)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            worker.check()
            m = scrape(port)
            done = total(m, "whystream_events_consumed_total")
            priority = total(m, "whystream_explained_total") - total(m, "whystream_explained_total", "RESERVOIR")
            sampled = total(m, "whystream_explained_total", "RESERVOIR")
            progress.update(consumed, completed=done, note=f"dead letters {total(m, 'whystream_dead_letters_total'):.0f}")
            progress.update(explained, completed=priority + sampled,
                            note=f"priority {priority:,.0f} · sampled {sampled:,.0f} · cache hits "
                                 f"{total(m, 'whystream_cache_hits_total'):,.0f} · fallbacks {total(m, 'whystream_fallbacks_total'):,.0f}")
            finished = done >= events + len(MALFORMED) and total(m, "whystream_reservoir_open_windows") == 0
            if lines:
                lines.show(progress, force=finished)
            if finished:
                break
            time.sleep(0.5)
    console.print(f"topics now hold: predictions {message_count(settings, settings.topic('predictions')):,}, "
                  f"explanations {message_count(settings, settings.topic('explanations')):,}, "
                  f"predictions.dlq {message_count(settings, settings.topic('predictions.dlq')):,}")


class PlainProgress:
    """Progress as whole lines (`produced 25,000/50,000 (5,012/s); consumed by the worker ...`)
    every `every` seconds, for a pipe or a log file."""

    def __init__(self, console: Console, every: float = 5.0):
        self.console, self.every, self.last = console, every, 0.0

    def show(self, progress: Progress, force: bool = False) -> None:
        if not force and time.monotonic() - self.last < self.every:
            return
        self.last = time.monotonic()
        parts = []
        for task in progress.tasks:
            count = f"{task.completed:,.0f}" + (f"/{task.total:,.0f}" if task.total is not None else "")
            note = task.fields.get("note")
            parts.append(f"{task.description} {count}" + (f" ({note})" if note else ""))
        self.console.print("; ".join(parts), soft_wrap=True, highlight=False)


def print_latency(explained: list[dict], console: Console) -> None:
    """Explanation latency, labelled for what the demo is: a fast replay. From event time it
    measures the replay (event times spread over the last 20 minutes); from `received_at` (when
    the broker received the decision: its Kafka timestamp) it measures the engine."""
    priority = [e for e in explained if e["sampling_reason"] != "RESERVOIR"]  # explained at once, not at window end
    from_event = sorted(e["latency_ms"] for e in priority)
    from_receipt = sorted(as_ms(e["explained_at"]) - as_ms(e["received_at"]) for e in priority
                          if e.get("received_at") is not None)
    if not from_event:
        return
    heading(console, "explanation latency of priority decisions")
    if from_receipt:
        console.print(f"from broker receipt (received_at) to explained_at: p50 {pct(from_receipt, 50):,.0f} ms, "
                      f"p99 {pct(from_receipt, 99):,.0f} ms ({len(from_receipt):,} decisions)", highlight=False)
    console.print(f"from event time (a replay: event times span the last {REPLAY_SECONDS // 60} minutes, sent in "
                  f"seconds): p50 {pct(from_event, 50):,.0f} ms, p99 {pct(from_event, 99):,.0f} ms; this measures "
                  "how old the replayed events were, not the engine", highlight=False)


def pct(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def as_ms(value) -> int:
    """timestamp-millis as decoded (an int, or a datetime)."""
    return value if isinstance(value, int) else round(value.timestamp() * 1000)


def wait_for_sink(settings: Settings, sink: Process, expected: int, console: Console, timeout: float = 180) -> None:
    """Until ClickHouse holds every explanation on the topic."""
    deadline = time.monotonic() + timeout
    with console.status("sink writing explanations into ClickHouse") as status:
        while time.monotonic() < deadline:
            sink.check()
            written = 0
            # Until the sink advertises its query port it may be opening the chDB directory: opening it
            # here as well would fail (and chDB prints that failure to stderr).
            dsn = parse_dsn(settings.require("clickhouse_dsn"))
            if dsn.kind != "chdb" or advertised_port(settings, dsn) is not None:
                try:
                    written = rows(open_query_client(settings), "SELECT count() AS n FROM explanations")[0]["n"]
                except Exception:  # the sink is still starting
                    pass
            status.update(f"sink writing explanations into ClickHouse: {written:,} of {expected:,}")
            if written >= expected:
                console.print(f"ClickHouse holds all {written:,} explanations")
                return
            time.sleep(1)
    raise WhystreamError(f"the sink wrote fewer than {expected} explanations in {timeout:.0f}s; see {sink.log_path}")


def show_drift(settings: Settings, sink: Process, home: Path, drift, console: Console, timeout: float = 60) -> None:
    """The drift table of the last 5 minutes, the alerts raised, the report."""
    env = {**os.environ, **settings.as_env()}
    whystream = [sys.executable, "-m", "whystream"]
    injected = {d.feature for d in drift}
    deadline = time.monotonic() + timeout
    alerts: list[dict] = []
    with console.status(f"drift monitor evaluating the last {DRIFT_WINDOW}"):
        while time.monotonic() < deadline and not (injected and alerts):
            sink.check()
            time.sleep(2)
            alerts = read_all(settings, settings.topic("drift-alerts"), "DriftAlert", timeout=10)
    heading(console, f"attribution drift, last {DRIFT_WINDOW} (whystream drift --model fraud --window {DRIFT_WINDOW})")
    console.file.flush()
    command(whystream, ["drift", "--model", "fraud", "--window", DRIFT_WINDOW], env)
    heading(console, "alerts on the `drift-alerts` topic")
    for a in alerts:
        console.print(f"[red bold]{a['feature']}[/]: {a['statistic']} {a['value']:.3f} > {a['threshold']:g} "
                      f"(model {a['model_name']}@{a['model_version']}, against {a['reference']})")
    if not alerts:
        console.print("none" + (f" yet for {', '.join(sorted(injected))}" if injected else ""))
    missed = injected - {a["feature"] for a in alerts}
    if missed:
        console.print(f"[yellow]no alert for the injected drift in {', '.join(sorted(missed))} within {timeout:.0f}s[/]")
    report = home / "report.html"
    command(whystream, ["report", "--model", "fraud", "--out", str(report), "--window", "10m", "--history", "30m"], env,
            stdout=subprocess.DEVNULL)
    console.print(f"report: {report.resolve()} (open it in a browser; it needs no network). Its latency is measured "
                  "from broker receipt, not from the replay's event times")


def command(whystream: list[str], args: list[str], env: dict, **kwargs) -> None:
    """Run a whystream command the demo shows; one that fails fails the demo, in one line."""
    done = subprocess.run([*whystream, *args], env=env, check=False, **kwargs)
    if done.returncode != 0:
        raise WhystreamError(f"`whystream {' '.join(args)}` failed (exit {done.returncode}): see its error above")
