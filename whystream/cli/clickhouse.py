"""`whystream compare / sink / sql / drift / report / verify`: the ClickHouse commands."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from whystream.cli.common import console, parse_duration, parse_features, progress_bar, settings_of
from whystream.config import Settings
from whystream.config.secrets import mask_secrets
from whystream.errors import WhystreamError

commands = typer.Typer()


@commands.command()
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


def _log_to(target: Console) -> None:
    import logging

    from rich.logging import RichHandler

    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(RichHandler(console=target, show_path=False, rich_tracebacks=False))
        root.setLevel(logging.INFO)
        logging.getLogger("whystream.clickhouse").setLevel(logging.WARNING)


@commands.command()
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
         score_mismatch_rate: float = typer.Option(0.01, help="Alert when more than this share of decisions had a "
                                                   "producer score off the model's own (score_mismatch)"),
         decisions: bool = typer.Option(True, help="Store every valid decision of `predictions` in `decisions` "
                                        "(the decision store)"),
         redact: str = typer.Option("", help="FEATURE,... never stored in `decisions` (on top of each model's list)"),
         database: str = typer.Option("whystream", help="ClickHouse database")):
    """Write `explanations` into ClickHouse and raise drift alerts, until Ctrl-C.

    With an embedded (chDB) ClickHouse this process owns the directory; `whystream
    sql`, `drift` and `report` reach it through a query port on 127.0.0.1
    advertised in <home>/sink.port."""
    import threading

    from rich.live import Live
    from rich.text import Text

    from whystream.jobs.analytics.drift import DriftMonitor
    from whystream.jobs.clickhouse import connection as ch
    from whystream.jobs.sink.consumer import run_sink
    from whystream.jobs.sink.sink import Sink

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
        from whystream.jobs.clickhouse.query_port import QueryServer

        server = QueryServer(settings, database).start()
    monitor = None
    if drift:
        monitor = DriftMonitor(settings, window_seconds=window_seconds, interval_seconds=interval,
                               psi_threshold=psi_threshold, stability_threshold=stability_threshold,
                               ks_threshold=ks_threshold, alpha=alpha, reservoir_window_seconds=reservoir_window,
                               score_mismatch_rate=score_mismatch_rate, database=database)
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
                         sink=Sink(settings, database, stop_event=stop, decisions=decisions,
                                   redact=parse_features(redact)),
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
    from whystream.jobs.clickhouse.connection import require_schema
    from whystream.jobs.clickhouse.query_port import SinkQueryClient, open_query_client

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


@commands.command()
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


@commands.command(name="drift")
def drift_table(ctx: typer.Context, model: str = typer.Option("fraud", help="Registered model name"),
                window: str = typer.Option("5m", help="Window ending at the last complete minute (e.g. 300s, 5m, 1h)"),
                psi_threshold: float = typer.Option(0.2), stability_threshold: float = typer.Option(0.2),
                ks_threshold: float = typer.Option(0.08), alpha: float = typer.Option(1e-4),
                stratum: str = typer.Option("", help="Only this sampling stratum (default: all strata)"),
                reservoir_window: float = typer.Option(10.0, help="The workers' --window, in seconds"),
                database: str = typer.Option("whystream", help="ClickHouse database")):
    """Per-feature attribution drift of a model over the last window, against its reference."""
    from rich.table import Table

    from whystream.jobs.analytics import drift_sql, input_drift, score_consistency
    from whystream.jobs.analytics.drift import (
        TABLE_COLUMNS,
        DriftMonitor,
        drift_window,
        table_rows,
        wall_ms,
    )

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
    every = {d["model_version"]: d for d in input_drift.decision_drift_all(client, model, start, end, database)}
    for d in input_drift.decision_drift(client, model, start, end, database):
        d, whom = (every[d["model_version"]], f"all {every[d['model_version']]['n']:,} decisions") \
            if d["model_version"] in every else (d, "explanations, weighted")
        console.print(f"version {d['model_version']} ({whom}): {input_drift.decision_line(d)}", highlight=False)
    for version, why in input_drift.unavailable(client, model, versions, database).items():
        console.print(f"version {version}: input drift unavailable: {why}", highlight=False)
    for row in score_consistency.score_consistency(client, model, start, end, database):
        console.print(f"version {row['model_version']}: {score_consistency.line(row)}", highlight=False)


@commands.command()
def report(ctx: typer.Context, out: Path = typer.Option(Path("whystream-report.html"), help="HTML file to write"),
           model: str = typer.Option("fraud", help="Registered model name"),
           window: str = typer.Option("1h", help="Window for 'now' (histograms, drift)"),
           history: str = typer.Option("24h", help="Time span of the over-time charts"),
           database: str = typer.Option("whystream", help="ClickHouse database")):
    """Write a self-contained HTML report of a model's attributions.

    Attribution histograms now vs the reference for the top features, mean |SHAP|
    over time, coverage and latency, drift and alerts; opens offline."""
    from whystream.jobs.analytics.drift import wall_ms
    from whystream.jobs.analytics.report import build_report

    settings = settings_of(ctx)
    html = build_report(_clickhouse_reader(settings, database), model, wall_ms(), parse_duration(window),
                        parse_duration(history), database)
    out.write_text(html)
    console.print(f"wrote {out} ({len(html) / 1024:,.0f} KiB)")


@commands.command()
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
    from whystream.models.registry import ModelRegistry

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

