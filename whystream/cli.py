"""The `whystream` command line.

Connection flags (before the command) override WHYSTREAM_* variables, which
override the connection file of a running `whystream up`. Errors a user can
cause end in one line naming the setting, never a traceback.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from whystream.config import Settings
from whystream.errors import WhystreamError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Explain a live stream of model decisions.")
console = Console()


def settings_of(ctx: typer.Context) -> Settings:
    return ctx.obj


@app.callback()
def connections(
    ctx: typer.Context,
    broker: Optional[str] = typer.Option(None, help="Kafka bootstrap servers [WHYSTREAM_BROKER]"),
    redis_url: Optional[str] = typer.Option(None, help="Redis URL [WHYSTREAM_REDIS_URL]"),
    clickhouse_dsn: Optional[str] = typer.Option(None, help="chdb:///path or http://host:8123 [WHYSTREAM_CLICKHOUSE_DSN]"),
    topic_prefix: Optional[str] = typer.Option(None, help="Prefix for every topic name [WHYSTREAM_TOPIC_PREFIX]"),
    registry: Optional[Path] = typer.Option(None, help="Model registry directory [WHYSTREAM_REGISTRY]"),
    home: Optional[Path] = typer.Option(None, help="Working directory for the embedded stack [WHYSTREAM_HOME, ./var]"),
):
    ctx.obj = Settings.load(broker=broker, redis_url=redis_url, clickhouse_dsn=clickhouse_dsn,
                            topic_prefix=topic_prefix, registry=registry, home=home)


def progress_bar(description: str, total: int | None) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console,
                    transient=False)


def with_rate(progress: Progress, task, began: float):
    """A progress callback that also shows events per second."""
    def advance(n: int) -> None:
        progress.advance(task, n)
        done = progress.tasks[task].completed
        progress.update(task, rate=f"{done / max(time.monotonic() - began, 1e-9):,.0f}/s")
    return advance


@app.command()
def up(ctx: typer.Context, partitions: int = typer.Option(4, help="Partitions per topic")):
    """Start the embedded stack (Tansu broker, redis-server, chDB) until Ctrl-C."""
    from whystream.infra.stack import EmbeddedStack

    home = settings_of(ctx).home
    stack = EmbeddedStack(home, partitions=partitions)
    stack.start()
    for key, value in stack.env().items():
        console.print(f"{key}={value}", highlight=False, soft_wrap=True)
    console.print(f"[dim]# embedded stack up; other whystream commands with --home {home} find it. Ctrl-C stops it.[/]")
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        while not stopping:
            dead = stack.dead_children()
            if dead:
                raise WhystreamError(f"embedded stack: {', '.join(dead)} exited; see {home}/logs")
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
        console.print("[dim]# embedded stack stopped[/]")


@app.command()
def train(ctx: typer.Context, name: str = typer.Option("fraud", help="Model name"),
          rows: int = typer.Option(200_000, help="Training rows"),
          trees: int = typer.Option(300), leaves: int = typer.Option(31), seed: int = typer.Option(7)):
    """Train the LightGBM fraud model on synthetic transactions and register it."""
    from whystream.jobs.registry import ModelRegistry
    from whystream.jobs.train import train_model

    model = train_model(ModelRegistry(settings_of(ctx).registry), name=name, n_train=rows, seed=seed,
                        num_trees=trees, num_leaves=leaves)
    console.print(f"registered [bold]{model.name}[/] version [bold]{model.version}[/] "
                  f"(AUC {model.metrics.get('auc', float('nan')):.3f}, threshold {model.threshold:.4f}) in {model.path}")


@app.command()
def produce(ctx: typer.Context,
            count: int = typer.Option(50_000, help="Events to send"),
            rate: float = typer.Option(5_000, help="Events per second (0 = as fast as possible)"),
            model: str = typer.Option("fraud", help="Registered model name"),
            version: Optional[str] = typer.Option(None, help="Model version (default: latest)"),
            seed: int = typer.Option(1, help="Generator seed"),
            start: int = typer.Option(0, help="Index of the first event (to resume a seeded stream)"),
            drift: list[str] = typer.Option([], help="FEATURE:SHIFT@INDEX, repeatable: add SHIFT to FEATURE from event INDEX on"),
            run_id: Optional[str] = typer.Option(None, help="Prefix of prediction ids (default: from the clock)")):
    """Send scored card-transaction prediction events to `predictions`."""
    from whystream.jobs.generator import DriftSpec
    from whystream.jobs.produce import produce as run

    settings = settings_of(ctx)
    drifts = [DriftSpec.parse(d) for d in drift]
    with progress_bar("producing", count) as progress:
        task = progress.add_task("producing", total=count, rate="")
        report = run(settings, count, rate, model, version, seed, start, drifts, run_id,
                     progress=with_rate(progress, task, time.monotonic()))
    console.print(f"sent {report.sent:,} events to {report.topic} in {report.seconds:.1f}s "
                  f"({report.declined:,} declined, {report.flagged:,} flagged by the producer)")


@app.command()
def worker(ctx: typer.Context,
           web_port: int = typer.Option(6066, help="Port of the worker's web server (/metrics, /health, /explain/ID)"),
           batch: int = typer.Option(2000, help="Largest batch taken from the stream at once"),
           budget: int = typer.Option(20, help="Reservoir sample size k per partition, model version, stratum and window"),
           window: float = typer.Option(10.0, help="Reservoir window length in seconds of event time"),
           band: float = typer.Option(0.02, help="Scores within this distance of the threshold are always explained"),
           stratum: str = typer.Option("channel", help="Segment attribute used as sampling stratum"),
           new_version_events: int = typer.Option(200, help="First events of a never-seen model version that are always explained"),
           idle_close: float = typer.Option(5.0, help="Close a partition's windows after this many idle seconds"),
           latency_budget_ms: float = typer.Option(2000.0, help="Past this per batch, explain with the fallback"),
           loglevel: str = typer.Option("warning")):
    """Run a worker: consume `predictions`, publish `explanations` (scale out by running more)."""
    from whystream.streams.engine import EngineConfig
    from whystream.streams.sampling import SamplingConfig
    from whystream.streams.worker import run_worker

    settings = settings_of(ctx)
    settings.require("broker")
    sampling = SamplingConfig(budget=budget, window_ms=int(window * 1000), near_threshold_band=band,
                              stratum_key=stratum, new_version_events=new_version_events,
                              idle_close_ms=int(idle_close * 1000))
    run_worker(settings, EngineConfig(sampling, latency_budget_ms), web_port=web_port, loglevel=loglevel,
               batch_size=batch)


@app.command()
def explain(ctx: typer.Context, prediction_id: str):
    """Print the explanation of a recent decision as JSON (computed now if it was not sampled)."""
    import json

    from whystream.streams.engine import Engine

    engine = Engine(settings_of(ctx))
    explanation = engine.explain_on_demand(prediction_id)
    if explanation is None:
        raise WhystreamError(f"no recent decision with prediction_id {prediction_id!r} "
                             "(recent predictions are kept in Redis for 15 minutes)")
    print(json.dumps(explanation, indent=2))


def main() -> None:
    try:
        app()
    except WhystreamError as exc:
        print(f"whystream: error: {exc}", file=sys.stderr)  # one line, never wrapped
        sys.exit(2)
