"""`whystream compare / sink / sql / drift / verify`: the ClickHouse commands (`report` and `console`:
console.py)."""

from __future__ import annotations

import signal
import time
from typing import Optional

import typer
from rich.console import Console

from whystream.cli.common import console, model_name, parse_duration, parse_features, progress_bar, settings_of
from whystream.cli.output import (
    Format,
    emit,
    format_option,
    output_format,
    print_json,
    print_line,
    print_table,
    stderr_console,
    unique_names,
)
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

    client = _clickhouse_reader(settings_of(ctx), database)
    name = model_name(name, clickhouse_models(client, database, with_explanations=True), f"ClickHouse ({database})")
    found = comparison(client, name, database)
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
        print_table(table)  # fitted to a terminal, whole in a pipe


def _log_to(target: Console) -> None:
    """Log records to `target`: rich's columns on a terminal; in a pipe or a log file one
    plain line per record (rich would wrap them at 80 columns)."""
    import logging

    from rich.logging import RichHandler

    root = logging.getLogger()
    if not root.handlers:
        if target.is_terminal:
            root.addHandler(RichHandler(console=target, show_path=False, rich_tracebacks=False))
        else:
            plain = logging.StreamHandler(target.file)
            plain.setFormatter(logging.Formatter("[%(asctime)s] [%(levelname)s] %(name)s: %(message)s"))
            root.addHandler(plain)
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


@commands.command()
def sql(ctx: typer.Context, query: str = typer.Argument(..., help="One read query: SELECT or WITH, or EXPLAIN of one"),
        database: str = typer.Option("whystream", help="Default database for unqualified table names"),
        max_rows: int = typer.Option(200, help="Rows a table shows at most (csv and json print every row)"),
        fmt: Optional[Format] = typer.Option(None, "--format", "-f", case_sensitive=False,
                                             help="table (default, for people), csv or json (for programs); "
                                                  "a trailing FORMAT CSV/JSON clause is answered the same way")):
    """Run one read query against whystream's ClickHouse and print the result.

    ClickHouse's own parser decides what the statement is (see SECURITY.md): one
    read query, no file, network or host access, on a read-only session with the
    operator's limits (WHYSTREAM_SQL_*)."""
    query, fmt = output_format(query, fmt)
    result = _clickhouse_reader(settings_of(ctx), database, schema=False).query(query)
    names = unique_names(result.column_names)
    rows = result.result_rows if fmt != Format.table else result.result_rows[:max_rows]
    emit([dict(zip(names, row)) for row in rows], fmt, names)
    if fmt == Format.table:
        more = len(result.result_rows) - max_rows
        print_line(f"{len(result.result_rows):,} rows" + (f" ({more:,} not shown; --max-rows or --format csv)"
                                                         if more > 0 else ""))


def clickhouse_models(client, database: str, with_explanations: bool = False) -> list[str]:
    """Models ClickHouse knows: with a registered reference (the drift views need one), and
    with `with_explanations` also those with stored explanations."""
    from whystream.jobs.analytics.drift_sql import monitored_models
    from whystream.jobs.clickhouse.sql import ident, rows

    known = set(monitored_models(client, database))
    if with_explanations:
        known |= {r["model_name"] for r in rows(
            client, f"SELECT DISTINCT model_name FROM {ident(database)}.explanations")}
    return sorted(known)


@commands.command(name="drift")
def drift_table(ctx: typer.Context,
                model: Optional[str] = typer.Option(None, help="Registered model name (required unless ClickHouse "
                                                               "holds exactly one model)"),
                window: str = typer.Option("5m", help="Window ending at the last complete minute (e.g. 300s, 5m, 1h)"),
                psi_threshold: float = typer.Option(0.2), stability_threshold: float = typer.Option(0.2),
                ks_threshold: float = typer.Option(0.08), alpha: float = typer.Option(1e-4),
                stratum: str = typer.Option("", help="Only this sampling stratum (default: all strata)"),
                reservoir_window: float = typer.Option(10.0, help="The workers' --window, in seconds"),
                database: str = typer.Option("whystream", help="ClickHouse database"),
                fmt: Format = format_option()):
    """Per-feature attribution drift of a model over the last window, against its reference.

    json: one object (model, window_start, window_end, features: one row per version and
    feature with every statistic, decisions: score and decline-rate drift per version). Input,
    score and decline-rate drift count all decisions where the decision store covers the
    window, else the sample: `input_source` / `source` say which ("all decisions", "sample")."""
    from whystream.jobs.analytics import drift_source, drift_sql, input_drift, score_consistency
    from whystream.jobs.analytics.drift import (
        TABLE_COLUMNS,
        DriftMonitor,
        drift_records,
        drift_window,
        wall_ms,
    )

    settings = settings_of(ctx)
    seconds = parse_duration(window)
    start, end = drift_window(wall_ms(), seconds * 1000, int(reservoir_window * 1000))
    client = _clickhouse_reader(settings, database)
    model = model_name(model, clickhouse_models(client, database), f"ClickHouse ({database}.model_reference)")
    found = drift_sql.feature_drift(client, model, start, end, database, stratum=stratum or None)
    # input drift (the data) beside attribution drift (the reasons): from all decisions where the store has them
    inputs = drift_source.input_rows(client, model, start, end, database) if found else []
    found = input_drift.beside(found, inputs) if found else []
    judged = DriftMonitor(settings, window_seconds=seconds, psi_threshold=psi_threshold, ks_threshold=ks_threshold,
                          stability_threshold=stability_threshold, alpha=alpha, publish=False).judge_all(found)
    features = drift_records(judged)
    versions = sorted({r["model_version"] for r in found})
    # score and decline rates: likewise from every stored decision where the store covers the window
    decisions = drift_source.decision_rows(client, model, start, end, database) if found else []
    scores = score_consistency.score_consistency(client, model, start, end, database) if found else []
    unavailable = input_drift.unavailable(client, model, versions, database) if found else {}
    if fmt == Format.json:
        print_json({"model": model, "window_start": _iso(start), "window_end": _iso(end), "stratum": stratum or None,
                    "features": features, "decisions": decisions, "input_drift_unavailable": unavailable,
                    "score_consistency": scores})
        return
    if fmt == Format.csv:
        emit(features, fmt)
        return
    if not found:
        print_line(f"no explanations of model {model} in the last {window} (window {_iso(start)} to {_iso(end)})")
        return
    fallback = max(float(r["fallback_share"] or 0) for r in found)
    columns = [c for c in TABLE_COLUMNS if c != "version" or len(versions) > 1]
    emit(features, fmt, columns, cells=drift_cell, right=[c for c in columns if c not in
                                                          ("version", "feature", "drift of", "alert")],
         title=f"{model}: attribution drift over the last {window}" + (f", stratum {stratum}" if stratum else "")
         + f" (exact TreeSHAP attributions only: {fallback:.1%} of explanations were fallback approximations, "
           "left out)")
    if inputs:
        print_line(drift_source.input_source_line(inputs))
    for d in decisions:
        print_line(f"version {d['model_version']} ({d['counted_over']}): {input_drift.decision_line(d)}")
    for version, why in unavailable.items():
        print_line(f"version {version}: input drift unavailable: {why}")
    for row in scores:
        print_line(f"version {row['model_version']}: {score_consistency.line(row)}")


def drift_cell(r: dict, column: str):
    from rich.text import Text

    from whystream.jobs.analytics.input_drift import missing_cell

    def text(value) -> str:
        return "-" if value is None else f"{float(value):.3f}"

    if column == "alert":
        return Text(", ".join(r["alerts"]), style="red bold") if r["judged"] else Text("too few", style="dim")
    return {"version": r["model_version"], "feature": r["feature"], "drift of": r["drift_of"], "PSI": text(r["psi"]),
            "KS": text(r["ks"]), "stability": text(r["stability"]), "W1/ref": text(r["wasserstein_rel"]),
            "value PSI": text(r["value_psi"]), "missing (ref)": missing_cell(r),
            "weighted n": f"{r['weighted_n']:,.0f}", "n eff": f"{r['effective_n']:,.0f}"}[column]


def _iso(ms: int) -> str:
    from whystream.cli.output import utc_ms

    return utc_ms(ms)


@commands.command()
def verify(ctx: typer.Context,
           prediction_id: Optional[str] = typer.Argument(None, help="The decision whose stored explanation to check"),
           sample: int = typer.Option(0, help="Check N explanations drawn at random instead"),
           model: Optional[str] = typer.Option(None, help="With --sample: only this model"),
           since: str = typer.Option("", help="With --sample: only decisions of the last 90s, 5m, 1h, 2d..."),
           seed: int = typer.Option(0, help="With --sample: the draw (the same seed draws the same decisions)"),
           from_topic: bool = typer.Option(False, help="Recompute from the decision's event on `predictions` (and "
                                           "check the stored values against it), not from the stored values"),
           database: str = typer.Option("whystream", help="ClickHouse database"),
           fmt: Format = format_option()):
    """Recompute stored explanations with their registered model version and check them within 1e-9.

    Exit status 0: all match; 1: a mismatch; 3: not found or not verifiable (a redacted
    value whose event is gone, a version the registry cannot load); 2: an unknown --model.
    json: one object per explanation checked (with `features` for a single one)."""
    import time

    from whystream.jobs.analytics import verify as v
    from whystream.models.registry import ModelRegistry

    if (prediction_id is None) == (sample <= 0):
        raise WhystreamError("verify: give a PREDICTION_ID or --sample N (one of them)")
    settings = settings_of(ctx)
    client = _clickhouse_reader(settings, database)
    if model is not None:
        model_name(model, clickhouse_models(client, database, with_explanations=True), f"ClickHouse ({database})")
    since_ms = int((time.time() - parse_duration(since)) * 1000) if since else None
    ids = [prediction_id] if prediction_id else v.sample_ids(client, sample, model, since_ms, seed, database)
    if not ids:
        (print_line if fmt == Format.table else _note)("no stored explanations to verify")
        if fmt == Format.json:
            print_json([])
        raise typer.Exit(3)
    # progress on stderr (stdout holds the result), for a sample only
    with progress_bar(stderr_console(), disable=len(ids) == 1) as bar:
        task = bar.add_task("verifying", total=len(ids), rate="")
        verdicts = v.verify_ids(client, settings, ModelRegistry(settings.registry), ids, from_topic=from_topic,
                                database=database, progress=lambda: bar.advance(task))
    if fmt == Format.table and prediction_id and [x.status for x in verdicts] == [v.NOT_FOUND]:
        print_line(f"whystream: error: {prediction_id}: {v.NOT_FOUND} ({verdicts[0].detail}, database {database})",
                   stderr_console())  # one line, as for every unknown id
        raise typer.Exit(3)
    if fmt != Format.table:
        emit([v.verdict_record(x, with_features=len(verdicts) == 1) for x in verdicts], fmt,
             None if fmt == Format.json else v.RECORD_COLUMNS)
        _note(v.summary(verdicts))
        raise typer.Exit(v.exit_code(verdicts))
    shown = verdicts if len(verdicts) <= 50 else [x for x in verdicts if x.status != v.MATCH]
    if shown:
        print_table(v.verdict_table(shown))
    if len(shown) < len(verdicts):
        print_line(f"{len(verdicts) - len(shown):,} matching explanations not listed")
    if prediction_id and len(verdicts) == 1 and verdicts[0].recomputed_shap:
        print_table(v.feature_table(verdicts[0]))
    print_line(v.summary(verdicts))
    raise typer.Exit(v.exit_code(verdicts))


def _note(text: str) -> None:
    """A line beside csv or json output: on stderr, so stdout stays one document."""
    print_line(text, stderr_console())
