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

from whystream.config import Settings, mask_secrets
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
    redis_url: Optional[str] = typer.Option(None, help="Redis URL without a password [WHYSTREAM_REDIS_URL]"),
    clickhouse_dsn: Optional[str] = typer.Option(None, help="chdb:///path or http://host:8123, without a password "
                                                 "[WHYSTREAM_CLICKHOUSE_DSN]"),
    topic_prefix: Optional[str] = typer.Option(None, help="Prefix for every topic name [WHYSTREAM_TOPIC_PREFIX]"),
    registry: Optional[Path] = typer.Option(None, help="Model registry directory [WHYSTREAM_REGISTRY]"),
    home: Optional[Path] = typer.Option(None, help="Working directory for the embedded stack [WHYSTREAM_HOME, ./var]"),
):
    ctx.obj = Settings.load(broker=broker, redis_url=redis_url, clickhouse_dsn=clickhouse_dsn,
                            topic_prefix=topic_prefix, registry=registry, home=home)


def progress_bar() -> Progress:
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


@app.command()
def train(ctx: typer.Context, name: str = typer.Option("fraud", help="Model name"),
          rows: int = typer.Option(200_000, help="Training rows"),
          trees: int = typer.Option(300), leaves: int = typer.Option(31), seed: int = typer.Option(7),
          redact: str = typer.Option("", help="FEATURE,... whose values never appear in this model's explanations")):
    """Train the LightGBM fraud model on synthetic transactions and register it."""
    from whystream.jobs.models.registry import ModelRegistry
    from whystream.jobs.models.train import train_model

    model = train_model(ModelRegistry(settings_of(ctx).registry), name=name, n_train=rows, seed=seed,
                        num_trees=trees, num_leaves=leaves, redact=tuple(parse_features(redact)))
    console.print(f"registered [bold]{model.name}[/] version [bold]{model.version}[/] "
                  f"(AUC {model.metrics.get('auc', float('nan')):.3f}, threshold {model.threshold:.4f}) in {model.path}")
    _announce(settings_of(ctx), model, "CHAMPION")


def _announce(settings: Settings, model, role: str, promoted: bool = False) -> None:
    """Tell the workers over `models` (jobs/models/model_events.py); without a broker, say what that means."""
    from whystream.errors import ConfigError
    from whystream.jobs.models.model_events import announce, model_event

    try:
        announce(settings, model_event(model, role, promoted))
    except ConfigError as exc:  # no broker configured or reachable: the registry alone still works
        console.print(f"[yellow]not announced on `models` ({exc}): running workers load {model.name}@"
                      f"{model.version} when its first event arrives[/]", highlight=False)
        return
    console.print(f"announced {model.name}@{model.version} as {role.lower()} on {settings.topic('models')}",
                  highlight=False)


@app.command()
def register(ctx: typer.Context,
             name: str = typer.Argument(..., help="Model name (producers send it as model_name)"),
             model_file: str = typer.Argument(..., help="LightGBM text model (Booster.save_model), or an MLflow "
                                                        "model URI (models:/NAME/VERSION, runs:/...) with whystream[mlflow]"),
             reference: Path = typer.Option(..., help="Held-out rows, Parquet or CSV, one column per feature (>= 1,000 rows)"),
             threshold: Optional[float] = typer.Option(None, help="What decisions are taken against (required for binary)"),
             reason_codes: Optional[Path] = typer.Option(None, help="CSV (feature,code,text) or JSON reason-code table"),
             adverse_when_lower: bool = typer.Option(False, "--adverse-when-lower",
                                                     help="A lower score is the adverse outcome (default: higher)"),
             redact: str = typer.Option("", help="FEATURE,... whose values never appear in explanations "
                                                 "(attributions stay)"),
             challenger_of: Optional[str] = typer.Option(None, help="Register as the challenger of this (live) "
                                                                    "model: a version of NAME that workers explain "
                                                                    "in the shadow of its champion")):
    """Register your own LightGBM model, with its SHAP reference (and reason codes)."""
    from whystream.jobs.models.register import describe, register_model
    from whystream.jobs.models.registry import ModelRegistry

    if challenger_of is not None and challenger_of != name:
        raise WhystreamError(f"--challenger-of {challenger_of}: a challenger is a version of the model it "
                             f"challenges; register it as {challenger_of} (`whystream register {challenger_of} "
                             f"... --challenger-of {challenger_of}`)")
    model = register_model(ModelRegistry(settings_of(ctx).registry), name, model_file, reference, threshold,
                           reason_codes, -1 if adverse_when_lower else 1, redact=parse_features(redact),
                           challenger=challenger_of is not None)
    for label, value in describe(model):
        console.print(f"{label:>15}: {value}", highlight=False, soft_wrap=True)
    _announce(settings_of(ctx), model, "CHALLENGER" if challenger_of else "CHAMPION")


@app.command()
def promote(ctx: typer.Context, name: str = typer.Argument(..., help="Model name"),
            version: str = typer.Argument(..., help="The version (e.g. its challenger) to make the champion")):
    """Make VERSION the champion of NAME (its LATEST), and tell the workers over `models`."""
    from whystream.jobs.models.registry import ModelRegistry

    model = ModelRegistry(settings_of(ctx).registry).promote(name, version)
    console.print(f"{model.name}@{model.version} is the champion", highlight=False)
    _announce(settings_of(ctx), model, "CHAMPION", promoted=True)


@app.command()
def compare(ctx: typer.Context, name: str = typer.Argument(..., help="Model name"),
            features: int = typer.Option(10, help="Features shown per pair of versions"),
            database: str = typer.Option("whystream", help="ClickHouse database")):
    """Champion vs challenger on the same live decisions: top-reason agreement, score differences,
    per-feature mean attributions (ClickHouse views champion_challenger*)."""
    from rich.table import Table

    from whystream.jobs.analytics.compare import comparison

    found = comparison(_clickhouse_reader(settings_of(ctx), database), name, database)
    if not found.summaries:
        console.print(f"no decisions of [bold]{name}[/] explained by both a champion and a challenger yet "
                      "(`whystream register ... --challenger-of NAME`, then let the workers run)")
        return
    for s in found.summaries:
        console.print(f"[bold]{name}[/] champion {s['champion_version']} vs challenger {s['challenger_version']}: "
                      f"{s['decisions']:,} decisions, top reason agrees {s['top_reason_agreement']:.1%}, "
                      f"score difference (challenger - champion) mean {s['mean_score_difference']:+.4f}, "
                      f"mean |.| {s['mean_abs_score_difference']:.4f}, max |.| {s['max_abs_score_difference']:.4f}",
                      highlight=False)
        table = Table("feature", "champion mean SHAP", "challenger mean SHAP", "champion mean |SHAP|",
                      "challenger mean |SHAP|", box=None)
        shown = [f for f in found.features if (f["champion_version"], f["challenger_version"])
                 == (s["champion_version"], s["challenger_version"])][:features]
        for f in shown:
            table.add_row(f["feature"], f"{f['champion_mean_shap']:+.4f}", f"{f['challenger_mean_shap']:+.4f}",
                          f"{f['champion_mean_abs_shap']:.4f}", f"{f['challenger_mean_abs_shap']:.4f}")
        console.print(table)


@app.command()
def models(ctx: typer.Context, name: Optional[str] = typer.Argument(None, help="Show this model's latest version in detail"),
           version: Optional[str] = typer.Option(None, help="With NAME: this version instead of the latest")):
    """List registered models and versions, or show one version in detail."""
    from rich.table import Table

    from whystream.jobs.models.catalog import COLUMNS, model_rows
    from whystream.jobs.models.register import describe
    from whystream.jobs.models.registry import ModelRegistry

    registry = ModelRegistry(settings_of(ctx).registry)
    if name:
        for label, value in describe(registry.load(name, version)):
            console.print(f"{label:>15}: {value}", highlight=False, soft_wrap=True)
        console.print()
    rows = model_rows(registry, name)
    if not rows:
        console.print(f"no models in registry {registry.root}; `whystream register` or `whystream train` adds one")
        return
    table = Table(*COLUMNS)
    for row in rows:
        table.add_row(*row)
    Console(width=max(console.width, 140)).print(table)  # versions in full, also in a log file


@app.command()
def produce(ctx: typer.Context,
            count: int = typer.Option(50_000, help="Events to send"),
            rate: float = typer.Option(5_000, help="Events per second (0 = as fast as possible)"),
            model: str = typer.Option("fraud", help="Registered model name"),
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
    drifts = [DriftSpec.parse(d) for d in drift]
    with progress_bar() as progress:
        task = progress.add_task("producing", total=count, rate="")
        report = run(settings, count, rate, model, version, seed, start, drifts, run_id,
                     progress=with_rate(progress, task, time.monotonic()), replay_seconds=replay)
    console.print(f"sent {report.sent:,} events to {report.topic} in {report.seconds:.1f}s "
                  f"({report.declined:,} declined, {report.flagged:,} flagged by the producer)")


@app.command()
def worker(ctx: typer.Context,
           web_port: int = typer.Option(6066, help="Port of the worker's web server (/metrics, /health, /explain/ID)"),
           web_bind: str = typer.Option("127.0.0.1", help="Address the web server binds; beyond loopback "
                                        "/explain needs WHYSTREAM_API_TOKEN"),
           redact: str = typer.Option("", help="FEATURE,... whose values are left out of every explanation "
                                      "(attributions stay); added to the model's own list"),
           batch: int = typer.Option(2000, help="Largest batch taken from the stream at once"),
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
           dlq_original_cap: int = typer.Option(512 * 1024, help="Bytes of a bad message kept in its dead letter"),
           loglevel: str = typer.Option("warning")):
    """Run a worker: consume `predictions`, publish `explanations` (scale out by running more)."""
    from whystream.streams.engine import EngineConfig
    from whystream.streams.event_time import EventTimeRule
    from whystream.streams.sampling import SamplingConfig
    from whystream.streams.web_access import WebAccess
    from whystream.streams.worker import run_worker

    settings = settings_of(ctx)
    settings.require("broker")
    access = WebAccess.configure(web_bind)
    sampling = SamplingConfig(budget=budget, window_ms=int(window * 1000), near_threshold_band=band,
                              stratum_key=stratum, new_version_events=new_version_events,
                              idle_close_ms=int(idle_close * 1000), max_open_ms=int(max_open * 1000),
                              max_strata=max_strata)
    config = EngineConfig(sampling, latency_budget_ms, redact=parse_features(redact),
                          event_time=EventTimeRule(max_ahead_ms=int(max_skew * 1000)),
                          dlq_original_cap=dlq_original_cap)
    run_worker(settings, config,
               web_port=web_port, loglevel=loglevel, batch_size=batch, access=access)


def parse_features(text: str) -> frozenset[str]:
    return frozenset(f.strip() for f in text.split(",") if f.strip())


@app.command()
def explain(ctx: typer.Context, prediction_id: str,
            redact: str = typer.Option("", help="FEATURE,... whose values to leave out (on top of the model's list)")):
    """Print the explanation of a recent decision as JSON (computed now if it was not sampled)."""
    import json

    from whystream.kafka_config import check_broker
    from whystream.streams.engine import Engine, EngineConfig

    settings = settings_of(ctx)
    check_broker(settings.kafka_config, settings.require("broker"))  # a wrong CA ends here, in one line
    engine = Engine(settings, EngineConfig(redact=parse_features(redact)))
    explanation = engine.on_demand.explain(prediction_id)
    if explanation is None:
        raise WhystreamError(f"no recent decision with prediction_id {prediction_id!r} "
                             "(workers remember for 15 minutes where each prediction lies in `predictions`)")
    print(json.dumps(explanation, indent=2))


@app.command()
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


# ---------------------------------------------------------------- ClickHouse: sink, drift, sql, report

def parse_duration(text: str) -> int:
    """Seconds in "90", "90s", "5m", "1h" or "2d"."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text or "")
    if not m or float(m.group(1)) <= 0:
        raise WhystreamError(f"invalid duration {text!r}; use e.g. 300s, 5m, 1h or 2d")
    return int(float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)])


def _log_to(target: Console) -> None:
    import logging

    from rich.logging import RichHandler

    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(RichHandler(console=target, show_path=False, rich_tracebacks=False))
        root.setLevel(logging.INFO)
        logging.getLogger("whystream.clickhouse").setLevel(logging.WARNING)


@app.command()
def sink(ctx: typer.Context,
         batch_size: int = typer.Option(5000, help="Explanations per ClickHouse insert (at most)"),
         flush: float = typer.Option(1.0, help="Seconds a batch may wait before it is written anyway"),
         drift: bool = typer.Option(True, help="Run the drift monitor in this process too"),
         window: str = typer.Option("5m", help="Drift window (e.g. 300s, 5m)"),
         interval: float = typer.Option(30.0, help="Seconds between drift evaluations"),
         psi_threshold: float = typer.Option(0.2, help="Smallest PSI worth an alert (also above its critical value)"),
         stability_threshold: float = typer.Option(0.2, help="Smallest relative change of mean |SHAP| worth an alert"),
         ks_threshold: float = typer.Option(0.08, help="Smallest KS statistic worth an alert"),
         alpha: float = typer.Option(1e-4, help="False-alert probability per statistic, feature and window"),
         reservoir_window: float = typer.Option(10.0, help="The workers' --window: drift windows end this long "
                                                "before the last complete minute"),
         database: str = typer.Option("whystream", help="ClickHouse database")):
    """Write `explanations` into ClickHouse and raise drift alerts, until Ctrl-C.

    With an embedded (chDB) ClickHouse this process owns the directory; `whystream
    sql`, `drift` and `report` reach it through a query port on 127.0.0.1
    advertised in <home>/sink.port."""
    import threading

    from rich.live import Live
    from rich.text import Text

    from whystream.jobs.analytics import clickhouse as ch
    from whystream.jobs.analytics.drift import DriftMonitor
    from whystream.jobs.analytics.sink_consumer import run_sink

    settings = settings_of(ctx)
    window_seconds = parse_duration(window)
    settings.require("broker")
    ch.connect(settings, database).close()  # fails fast, in one line, on a bad DSN or a held directory
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    _log_to(console)
    server = None
    if ch.parse_dsn(settings.clickhouse_dsn).kind == "chdb":
        from whystream.jobs.analytics.query_port import QueryServer

        server = QueryServer(settings, database).start()
    monitor = None
    if drift:
        monitor = DriftMonitor(settings, window_seconds=window_seconds, interval_seconds=interval,
                               psi_threshold=psi_threshold, stability_threshold=stability_threshold,
                               ks_threshold=ks_threshold, alpha=alpha, reservoir_window_seconds=reservoir_window,
                               database=database)
        threading.Thread(target=monitor.run, args=(stop,), name="whystream-drift", daemon=True).start()
    where = f"query port 127.0.0.1:{server.port}" if server else mask_secrets(settings.clickhouse_dsn)
    console.print(f"[dim]# sink: {settings.topic('explanations')} -> {database} ({where}); Ctrl-C stops it[/]")
    live = Live(Text("waiting for explanations..."), console=console, refresh_per_second=4, transient=False)
    last_print = [0.0]

    def show(stats) -> None:
        line = stats.line() + (f"; {len(monitor.episodes)} drift episodes open" if monitor else "")
        if console.is_terminal:
            live.update(Text(line))
        elif time.monotonic() - last_print[0] >= 10:  # a log file gets a line every 10 s
            last_print[0] = time.monotonic()
            console.print(line, highlight=False)

    if console.is_terminal:
        live.start()
    try:
        stats = run_sink(settings, stop, batch_size=batch_size, flush_seconds=flush, progress=show,
                         database=database)
    finally:
        stop.set()
        live.stop()
        if server:
            server.stop()
    console.print(f"[dim]# sink stopped: {stats.line()}[/]")


def _clickhouse_reader(settings: Settings, database: str, schema: bool = True):
    """A read-only client (never migrates; runs only what the SQL guard passes); with
    `schema`, one line if whystream's tables are missing."""
    from whystream.jobs.analytics.clickhouse import require_schema
    from whystream.jobs.analytics.query_port import SinkQueryClient, open_query_client

    client = open_query_client(settings, database)
    if schema and not isinstance(client, SinkQueryClient):
        require_schema(client, database)
    return client


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)) and len(value) > 12:
        return "[" + ", ".join(_cell(v) for v in value[:12]) + f", ... ({len(value)})]"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    return str(value)


@app.command()
def sql(ctx: typer.Context, query: str = typer.Argument(..., help="One read query: SELECT or WITH, or EXPLAIN of one"),
        database: str = typer.Option("whystream", help="Default database for unqualified table names"),
        max_rows: int = typer.Option(200, help="Rows to print at most")):
    """Run one read query against whystream's ClickHouse and print the result.

    ClickHouse's own parser decides what the statement is (see SECURITY.md): one
    read query, no file, network or host access, on a read-only session with the
    operator's limits (WHYSTREAM_SQL_*)."""
    from rich.table import Table

    result = _clickhouse_reader(settings_of(ctx), database, schema=False).query(query)
    table = Table(*result.column_names, show_lines=False)
    for row in result.result_rows[:max_rows]:
        table.add_row(*(_cell(v) for v in row))
    console.print(table)
    more = len(result.result_rows) - max_rows
    console.print(f"[dim]{len(result.result_rows):,} rows" + (f" ({more:,} not shown)" if more > 0 else "") + "[/]")


@app.command(name="drift")
def drift_table(ctx: typer.Context, model: str = typer.Option("fraud", help="Registered model name"),
                window: str = typer.Option("5m", help="Window ending at the last complete minute (e.g. 300s, 5m, 1h)"),
                psi_threshold: float = typer.Option(0.2), stability_threshold: float = typer.Option(0.2),
                ks_threshold: float = typer.Option(0.08), alpha: float = typer.Option(1e-4),
                stratum: str = typer.Option("", help="Only this sampling stratum (default: all strata)"),
                reservoir_window: float = typer.Option(10.0, help="The workers' --window, in seconds"),
                database: str = typer.Option("whystream", help="ClickHouse database")):
    """Per-feature attribution drift of a model over the last window, against its reference."""
    from rich.table import Table

    from whystream.jobs.analytics import drift_sql, input_drift
    from whystream.jobs.analytics.drift import TABLE_COLUMNS, DriftMonitor, drift_window, table_rows, wall_ms

    settings = settings_of(ctx)
    seconds = parse_duration(window)
    start, end = drift_window(wall_ms(), seconds * 1000, int(reservoir_window * 1000))
    client = _clickhouse_reader(settings, database)
    found = drift_sql.feature_drift(client, model, start, end, database, stratum=stratum or None)
    if not found:
        console.print(f"no explanations of model [bold]{model}[/] with a registered reference in the last {window}")
        return
    # input drift (the data) beside attribution drift (the reasons)
    found = input_drift.beside(found, input_drift.input_drift(client, model, start, end, database))
    judged = DriftMonitor(settings, window_seconds=seconds, psi_threshold=psi_threshold, ks_threshold=ks_threshold,
                          stability_threshold=stability_threshold, alpha=alpha, publish=False).judge_all(found)
    versions = sorted({r["model_version"] for r in found})
    fallback = max(float(r["fallback_share"] or 0) for r in found)
    table = Table(title=f"{model}: attribution drift over the last {window}" + (f", stratum {stratum}" if stratum else "")
                  + f" (exact attributions; {fallback:.1%} of explanations were fallback)", show_lines=False)
    columns = [c for c in TABLE_COLUMNS if c != "version" or len(versions) > 1]
    for name in columns:
        table.add_column(name, justify="left" if name in ("version", "feature", "drift of", "alert") else "right",
                         no_wrap=name == "feature")
    for row in table_rows(judged):
        table.add_row(*(row[c] for c in columns))
    Console(width=max(console.width, 150)).print(table)  # narrower, rich would cut the numbers to "0.…"
    for d in input_drift.decision_drift(client, model, start, end, database):
        console.print(f"version {d['model_version']}: {input_drift.decision_line(d)}", highlight=False)
    for version, why in input_drift.unavailable(client, model, versions, database).items():
        console.print(f"version {version}: input drift unavailable: {why}", highlight=False)


@app.command()
def report(ctx: typer.Context, out: Path = typer.Option(Path("whystream-report.html"), help="HTML file to write"),
           model: str = typer.Option("fraud", help="Registered model name"),
           window: str = typer.Option("1h", help="Window for 'now' (histograms, drift)"),
           history: str = typer.Option("24h", help="Time span of the over-time charts"),
           database: str = typer.Option("whystream", help="ClickHouse database")):
    """Write a self-contained HTML report of a model's attributions.

    Attribution histograms now vs the reference for the top features, mean |SHAP|
    over time, coverage and latency, drift and alerts; opens offline."""
    from whystream.jobs.analytics.attribution_report import build_report
    from whystream.jobs.analytics.drift import wall_ms

    settings = settings_of(ctx)
    html = build_report(_clickhouse_reader(settings, database), model, wall_ms(), parse_duration(window),
                        parse_duration(history), database)
    out.write_text(html)
    console.print(f"wrote {out} ({len(html) / 1024:,.0f} KiB)")


@app.command()
def verify(ctx: typer.Context,
           prediction_id: Optional[str] = typer.Argument(None, help="The decision whose stored explanation to check"),
           sample: int = typer.Option(0, help="Check N explanations drawn at random instead"),
           model: Optional[str] = typer.Option(None, help="With --sample: only this model"),
           since: str = typer.Option("", help="With --sample: only decisions of the last 90s, 5m, 1h, 2d..."),
           seed: int = typer.Option(0, help="With --sample: the draw (the same seed draws the same decisions)"),
           from_topic: bool = typer.Option(False, help="Recompute from the decision's event on `predictions` (and "
                                           "check the stored values against it), not from the stored values"),
           database: str = typer.Option("whystream", help="ClickHouse database")):
    """Recompute stored explanations with their registered model version and check them within 1e-9.

    Exit status 0: all match; 1: a mismatch; 3: not found or not verifiable (a redacted
    value whose event is gone, a version the registry cannot load)."""
    import time

    from whystream.jobs.analytics import verify as v
    from whystream.jobs.models.registry import ModelRegistry

    if (prediction_id is None) == (sample <= 0):
        raise WhystreamError("verify: give a PREDICTION_ID or --sample N (one of them)")
    settings = settings_of(ctx)
    client = _clickhouse_reader(settings, database)
    since_ms = int((time.time() - parse_duration(since)) * 1000) if since else None
    ids = [prediction_id] if prediction_id else v.sample_ids(client, sample, model, since_ms, seed, database)
    if not ids:
        console.print("no stored explanations to verify")
        raise typer.Exit(3)
    with progress_bar() as bar:
        task = bar.add_task("verifying", total=len(ids), rate="")
        verdicts = v.verify_ids(client, settings, ModelRegistry(settings.registry), ids, from_topic=from_topic,
                                database=database, progress=lambda: bar.advance(task))
    shown = verdicts if len(verdicts) <= 50 else [x for x in verdicts if x.status != v.MATCH]
    wide = Console(width=max(console.width, 170))  # narrower, rich would cut the figures
    if shown:
        wide.print(v.verdict_table(shown))
    if len(shown) < len(verdicts):
        console.print(f"[dim]{len(verdicts) - len(shown):,} matching explanations not listed[/]")
    if prediction_id and len(verdicts) == 1 and verdicts[0].recomputed_shap:
        wide.print(v.feature_table(verdicts[0]))
    console.print(v.summary(verdicts), highlight=False)
    raise typer.Exit(v.exit_code(verdicts))


# ---------------------------------------------------------------- dead letters

dlq_app = typer.Typer(help="Dead letters: by reason (`whystream dlq`), and sent back (`whystream dlq replay`)",
                      invoke_without_command=True)
app.add_typer(dlq_app, name="dlq")


@dlq_app.callback()
def dlq(ctx: typer.Context, since: str = typer.Option("", help="Only dead letters of the last 90s, 5m, 1h, 2d...")):
    """Dead letters in `predictions.dlq` by reason, with the newest reason of each."""
    if ctx.invoked_subcommand is not None:
        return
    import time

    from rich.table import Table

    from whystream.jobs.dlq import summary

    since_ms = int((time.time() - parse_duration(since)) * 1000) if since else None
    found = summary(settings_of(ctx), since_ms)
    if not found.counts:
        console.print("no dead letters")
        return
    table = Table("reason", "count", "newest reason", box=None)
    for code, count in found.counts.most_common():
        table.add_row(code, f"{count:,}", found.latest[code]["reason"][:160])
    console.print(table)


@dlq_app.command("replay")
def dlq_replay(ctx: typer.Context, reason: str = typer.Option(..., help="Reason code to send back, e.g. UNKNOWN_VERSION"),
               since: str = typer.Option("", help="Only dead letters of the last 90s, 5m, 1h, 2d...")):
    """Send the original bytes of these dead letters back to `predictions` (each one once, however often run)."""
    import time

    from whystream.jobs.dlq import replay

    since_ms = int((time.time() - parse_duration(since)) * 1000) if since else None
    report = replay(settings_of(ctx), reason.strip().upper(), since_ms)
    console.print(f"sent back {report.sent:,}; {report.already:,} sent back before; "
                  f"{report.truncated:,} truncated (too large for the DLQ: not sent)")


def main() -> None:
    try:
        app()
    except WhystreamError as exc:
        print(f"whystream: error: {mask_secrets(exc)}", file=sys.stderr)  # one line, never wrapped
        sys.exit(2)
