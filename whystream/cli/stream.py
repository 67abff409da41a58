"""`whystream up / produce / worker / explain / demo`: the embedded stack, the stream and
the worker."""

from __future__ import annotations

import signal
import time
from typing import Optional

import typer

from whystream.cli.common import (
    console,
    parse_features,
    progress_bar,
    registered_model,
    settings_of,
    with_rate,
)
from whystream.cli.output import Format, emit, print_json
from whystream.errors import WhystreamError

commands = typer.Typer()


@commands.command()
def up(ctx: typer.Context, partitions: int = typer.Option(4, help="Partitions per topic")):
    """Start the embedded stack (Tansu broker, redis-server, chDB) until Ctrl-C."""
    from whystream.infra.stack import EmbeddedStack

    home = settings_of(ctx).home
    stopping = []  # Ctrl-C and SIGTERM both stop the stack, whenever they arrive
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(1))
    stack = EmbeddedStack(home, partitions=partitions)
    try:
        stack.start()
        for key, value in stack.settings.shown().items():
            console.print(f"{key}={value}", highlight=False, soft_wrap=True)
        console.print(f"[dim]# embedded stack up; other whystream commands with --home {home} find it. "
                      "Ctrl-C stops it.[/]")
        while not stopping:
            dead = stack.dead_children()
            if dead:
                raise WhystreamError(f"embedded stack: {', '.join(dead)} exited; see {home}/logs")
            time.sleep(0.2)
    finally:
        stack.stop()
        console.print("[dim]# embedded stack stopped[/]")


@commands.command()
def produce(ctx: typer.Context,
            count: int = typer.Option(50_000, help="Events to send"),
            rate: float = typer.Option(5_000, help="Events per second (0 = as fast as possible)"),
            model: Optional[str] = typer.Option(None, help="Registered model name (required unless the registry "
                                                           "holds exactly one model)"),
            version: Optional[str] = typer.Option(None, help="Model version (default: latest)"),
            seed: int = typer.Option(1, help="Generator seed"),
            start: int = typer.Option(0, help="Index of the first event (to resume a seeded stream)"),
            drift: list[str] = typer.Option([], help="FEATURE:SHIFT@INDEX, repeatable: add SHIFT to FEATURE from event INDEX on"),
            run_id: Optional[str] = typer.Option(None, help="Prefix of prediction ids (default: from the clock)"),
            replay: float = typer.Option(0.0, help="Spread event times over this many seconds ending now (replay history fast)")):
    """Send scored card-transaction prediction events to `predictions`."""
    from whystream.jobs.simulation.generator import DriftSpec
    from whystream.jobs.simulation.produce import produce as run

    settings = settings_of(ctx)
    model = registered_model(settings, model)
    drifts = [DriftSpec.parse(d) for d in drift]
    with progress_bar() as progress:
        task = progress.add_task("producing", total=count, rate="")
        report = run(settings, count, rate, model, version, seed, start, drifts, run_id,
                     progress=with_rate(progress, task, time.monotonic()), replay_seconds=replay)
    console.print(f"sent {report.sent:,} events to {report.topic} in {report.seconds:.1f}s "
                  f"({report.declined:,} declined, {report.flagged:,} flagged by the producer)")


@commands.command()
def worker(ctx: typer.Context,
           web_port: int = typer.Option(6066, help="Port of the worker's web server (/metrics, /health, /explain/ID)"),
           web_bind: str = typer.Option("127.0.0.1", help="Address the web server binds; beyond loopback "
                                        "/explain needs WHYSTREAM_API_TOKEN"),
           redact: str = typer.Option("", help="FEATURE,... whose values are left out of every explanation "
                                      "(attributions stay); added to the model's own list"),
           batch: int = typer.Option(5000, help="Largest batch taken from the stream at once (a worker catching "
                                     "up; one that keeps up takes what arrived meanwhile)"),
           budget: int = typer.Option(20, help="Reservoir sample size k per partition, model version, stratum and window"),
           window: float = typer.Option(10.0, help="Reservoir window length in seconds of event time"),
           band: float = typer.Option(0.02, help="Scores within this distance of the threshold are always explained"),
           stratum: str = typer.Option("channel", help="Segment attribute used as sampling stratum"),
           new_version_events: int = typer.Option(200, help="First events of a never-seen model version that are always explained"),
           idle_close: float = typer.Option(5.0, help="Close a partition's windows after this many idle seconds"),
           latency_budget_ms: float = typer.Option(2000.0, help="Past this per batch, explain priority decisions "
                                                   "with the fallback (reservoir samples always wait for TreeSHAP)"),
           max_skew: float = typer.Option(300.0, help="Dead-letter events whose time is more than this many "
                                          "seconds ahead of their broker timestamp"),
           max_open: float = typer.Option(30.0, help="Close a partition's windows once one has been open this "
                                          "many seconds of wall-clock time"),
           max_strata: int = typer.Option(50, help="Strata per partition, model version and window; the rest "
                                          "pool as `other`"),
           dedup_windows: int = typer.Option(8, help="Earlier windows of a partition in which a decision sent "
                                             "again is recognised (a crash replays that much of the partition)"),
           forget_idle: float = typer.Option(300.0, help="A partition without a candidate for this many seconds "
                                             "forgets the decisions it saw (its commit moves on)"),
           dlq_original_cap: int = typer.Option(512 * 1024, help="Bytes of a bad message kept in its dead letter"),
           loglevel: str = typer.Option("warning")):
    """Run a worker: consume `predictions`, publish `explanations` (scale out by running more)."""
    from whystream.jobs.clickhouse.decision_store import archive
    from whystream.models.score_check import ScoreTolerance
    from whystream.streams.engine import EngineConfig
    from whystream.streams.event_time import EventTimeRule
    from whystream.streams.sampling.config import SamplingConfig
    from whystream.streams.web_access import WebAccess
    from whystream.streams.worker import run_worker

    settings = settings_of(ctx)
    settings.require("broker")
    access = WebAccess.configure(web_bind, settings.environ)
    sampling = SamplingConfig(budget=budget, window_ms=int(window * 1000), near_threshold_band=band,
                              stratum_key=stratum, new_version_events=new_version_events,
                              idle_close_ms=int(idle_close * 1000), max_open_ms=int(max_open * 1000),
                              max_strata=max_strata, dedup_windows=dedup_windows,
                              forget_idle_ms=int(forget_idle * 1000))
    config = EngineConfig(sampling, latency_budget_ms, redact=parse_features(redact),
                          event_time=EventTimeRule(max_ahead_ms=int(max_skew * 1000)),
                          dlq_original_cap=dlq_original_cap,
                          score_tolerance=ScoreTolerance.from_env(settings.environ))
    run_worker(settings, config, web_port=web_port, loglevel=loglevel, batch_size=batch, access=access,
               archive=archive(settings))  # explain on demand falls back to the decision store


@commands.command()
def explain(ctx: typer.Context, prediction_id: str,
            redact: str = typer.Option("", help="FEATURE,... whose values to leave out (on top of the model's list)"),
            database: str = typer.Option("whystream", help="ClickHouse database of the decision store"),
            fmt: Format = typer.Option(Format.table, "--format", "-f", case_sensitive=False,
                                       help="table: for a person (score vs threshold, reasons, attributions "
                                            "sorted); csv: one row per feature (rank, value, SHAP, direction, "
                                            "reason code) after the explanation's own facts; json: the "
                                            "ExplanationEvent as published")):
    """Show the explanation of a decision: the published one, or computed now from the
    `predictions` topic or, past its retention, from the decision store (ClickHouse)."""
    from whystream.cli import explanation_view
    from whystream.jobs.clickhouse.decision_store import archive
    from whystream.jobs.clickhouse.query_port import open_query_client
    from whystream.kafka.clients import check_broker
    from whystream.streams.assembly import build_engine
    from whystream.streams.engine import EngineConfig

    settings = settings_of(ctx)
    check_broker(settings.kafka_config, settings.require("broker"))  # a wrong CA ends here, in one line
    engine = build_engine(settings, EngineConfig(redact=parse_features(redact)))
    if settings.clickhouse_dsn:  # a short-lived reader may open an embedded chDB itself
        engine.on_demand.archive = archive(settings, database, lambda: open_query_client(settings, database))
    explanation = engine.on_demand.explain(prediction_id)
    if explanation is None:
        raise WhystreamError(f"no decision with prediction_id {prediction_id!r} within reach: not published, not in "
                             "the last 15 minutes of `predictions` (where workers remember it lies), not in the "
                             "decision store (ClickHouse `decisions`: past its retention, never valid, or stored "
                             "with redacted features)")
    if fmt == Format.json:
        print_json(explanation)
    elif fmt == Format.csv:
        emit(explanation_view.rows(explanation), Format.csv, explanation_view.CSV_COLUMNS)
    else:
        explanation_view.show(explanation)


@commands.command()
def demo(ctx: typer.Context,
         events: int = typer.Option(50_000, help="Prediction events to stream"),
         rate: float = typer.Option(5_000, help="Events per second"),
         drift: list[str] = typer.Option([], help="FEATURE:SHIFT@INDEX to inject drift [amount:60@25000]")):
    """Run the whole path on a fresh embedded stack (what `make demo` runs)."""
    from whystream.jobs.demo import DEFAULT_DRIFT, run_demo
    from whystream.jobs.simulation.generator import DriftSpec

    settings = settings_of(ctx)
    run_demo(settings.home, settings.registry, events, rate, [DriftSpec.parse(d) for d in drift or [DEFAULT_DRIFT]],
             console)
