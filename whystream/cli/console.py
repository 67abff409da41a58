"""`whystream console / report`: the views analysts and auditors read (jobs/console/), served
on loopback or written to one self-contained HTML file."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Optional

import typer

from whystream.cli.common import console, parse_duration, settings_of

commands = typer.Typer()


def _reader(settings, database: str):
    """A read-only ClickHouse client (the SQL guard, or a running sink's query port)."""
    from whystream.jobs.clickhouse.connection import require_schema
    from whystream.jobs.clickhouse.query_port import SinkQueryClient, open_query_client

    client = open_query_client(settings, database)
    if not isinstance(client, SinkQueryClient):
        require_schema(client, database)
    return client


class NowExplainer:
    """(client, prediction_id) -> the decision's explanation computed now, as `whystream explain ID`
    computes it (streams/on_demand.py: the published one, else the event from `predictions`, else
    from the decision store read through the console's own read-only client, explained by the
    registered version it was scored by); None where none can be. The engine (broker, Redis,
    registry) is built on first use: a console that is never asked needs no stack."""

    def __init__(self, settings, database: str):
        self.settings, self.database = settings, database
        self.engine = None
        self._lock = threading.Lock()

    def __call__(self, client, prediction_id: str) -> dict | None:
        from whystream.jobs.clickhouse.decision_store import archive
        from whystream.kafka.clients import check_broker
        from whystream.streams.assembly import build_engine
        from whystream.streams.engine import EngineConfig

        with self._lock:
            if self.engine is None:
                check_broker(self.settings.kafka_config, self.settings.require("broker"))
                self.engine = build_engine(self.settings, EngineConfig())
            self.engine.on_demand.archive = archive(self.settings, self.database, lambda: client)
            return self.engine.on_demand.explain(prediction_id)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()


@commands.command(name="console")
def console_command(ctx: typer.Context,
                    port: int = typer.Option(8050, help="Port to serve on (0: any free port)"),
                    bind: str = typer.Option("127.0.0.1", help="Address to bind; beyond loopback it needs "
                                             "WHYSTREAM_API_TOKEN in the environment"),
                    database: str = typer.Option("whystream", help="ClickHouse database")):
    """Serve the console: overview, drift, decision pages and champion vs challenger, until Ctrl-C.

    Reads ClickHouse read-only (through a running sink's query port on embedded chDB).

    With a broker (a running stack), a stored decision without an explanation gets "Explain now".

    Beyond 127.0.0.1 it needs WHYSTREAM_API_TOKEN: browsers log in at /login, scripts send a Bearer token."""
    from whystream.jobs.analytics.verify import verify_ids
    from whystream.jobs.console.access import ConsoleAccess
    from whystream.jobs.console.server import Console, ConsoleServer
    from whystream.models.registry import ModelRegistry
    from whystream.streams.web_access import WebAccess

    settings = settings_of(ctx)
    access = WebAccess.configure(bind, settings.environ, flag="--bind", exposes="the console (feature values, "
                                 "scores, reasons of every decision)")
    _reader(settings, database).close()  # one line now for a bad DSN, a held directory or no schema

    def verify(client, prediction_id: str):
        return verify_ids(client, settings, ModelRegistry(settings.registry), [prediction_id], database=database)

    explainer = NowExplainer(settings, database) if settings.broker else None
    server = ConsoleServer(Console(lambda: _reader(settings, database), database, verify, explainer=explainer),
                           ConsoleAccess(access.bind, port, access.token)).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    host = f"[{access.bind}]" if ":" in access.bind else access.bind
    console.print(f"console: http://{host}:{server.port}/ ({'token required' if access.token else 'no token'}); "
                  "Ctrl-C stops it", highlight=False)
    stop.wait()
    server.stop()
    if explainer is not None:
        explainer.close()


@commands.command()
def report(ctx: typer.Context, out: Path = typer.Option(Path("whystream-report.html"), help="HTML file to write"),
           model: Optional[str] = typer.Option(None, help="Model name (default: the one model ClickHouse holds)"),
           window: str = typer.Option("1h", help="Window for 'now' (histograms, drift, health)"),
           history: str = typer.Option("24h", help="Longest span of the over-time charts (fitted to the data)"),
           database: str = typer.Option("whystream", help="ClickHouse database")):
    """Write the console's views of one model into one self-contained HTML file.

    Overview (health, alerts, principal reasons, adverse decisions), drift (histograms with
    their bin ranges, statistics over time, strata, input drift), adverse decisions in full,
    champion vs challenger; Plotly charts with plotly.js inlined: opens offline and prints.
    An unknown model is an error (exit 2), and no file is written."""
    from whystream.jobs.analytics.drift import wall_ms
    from whystream.jobs.console.report import build_report

    html = build_report(_reader(settings_of(ctx), database), model, wall_ms(), parse_duration(window),
                        parse_duration(history), database)
    out.write_text(html)
    console.print(f"wrote {out} ({len(html) / 1024:,.0f} KiB)", highlight=False)
