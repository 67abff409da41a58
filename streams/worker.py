"""`whystream worker`: the Faust app that turns `predictions` into `explanations`.

Faust runs the process (worker lifecycle, signals, logging) and its web server
(/metrics for Prometheus, /health, /explain/{id}). Messages do not go through
Faust's per-event stream machinery, which tops out near 10k events/s: the app
starts without Faust's Kafka client, and the data plane is the `Ingest` loop
(streams/ingest.py) on a thread of its own, with a confluent-kafka consumer.

The control plane (streams/control/: `models`, `explain-requests`, the
challenger's shadow) runs as Faust agents on the app's event loop, fed by
confluent-kafka readers on executor threads, beside the data plane and never
in its way.
"""

from __future__ import annotations

import asyncio
import logging

import faust
import mode
from faust.app.base import BootStrategy

from whystream.config import Settings
from whystream.kafka.clients import admin, check_broker
from whystream.streams.assembly import build_engine
from whystream.streams.control.plane import ControlPlane
from whystream.streams.control.plane import app_id as control_app_id
from whystream.streams.engine import Engine, EngineConfig
from whystream.streams.ingest import Ingest
from whystream.streams.web_access import FAUST_PAGES_OFF, WebAccess

log = logging.getLogger("whystream.worker")


class _WithoutFaustKafka(BootStrategy):
    """Start the app's web server (and sensors), not its Kafka consumer and producer."""

    enable_kafka = False


# /explain requests served at once (each reads the topic and may run TreeSHAP); more wait.
EXPLAIN_CONCURRENCY = 4
EXPLAIN_WAIT_S = 10.0


def create_app(settings: Settings, config: EngineConfig | None = None, web_port: int = 6066,
               batch_size: int = 5000, session_timeout_s: float = 6.0,
               access: WebAccess | None = None, archive=None) -> faust.App:
    """The worker's Faust app; `archive` (prediction_id -> encoded PredictionEvent or None): the decision
    store explain on demand falls back to (streams/on_demand.py)."""
    access = access or WebAccess()
    # A wrong CA, a refused login or no broker ends the worker here, in one line.
    check_broker(settings.kafka_config, settings.require("broker"))
    engine = build_engine(settings, config)
    engine.on_demand.archive = archive
    ingest = Ingest(engine, batch_size=batch_size, session_timeout_s=session_timeout_s, tune_gc=True)
    datadir = settings.home / "faust" / str(web_port)  # one per worker on a host
    datadir.parent.mkdir(parents=True, exist_ok=True)

    class WorkerApp(faust.App):
        BootStrategy = _WithoutFaustKafka

    # Faust opens no Kafka connection here (_WithoutFaustKafka: no producer, consumer or
    # conductor; the tests check that a TLS-only broker sees no plaintext client), so it
    # gets no TLS/SASL settings; every Kafka client is confluent-kafka, from whystream/kafka/clients.py.
    app = WorkerApp(
        control_app_id(settings),  # never the data plane's consumer group: Faust joining it would break it
        broker="kafka://" + settings.require("broker").replace(",", ";"),  # Faust separates servers by ;
        datadir=str(datadir),
        web_port=web_port,
        web_host=access.advertised_host,
        web_bind=access.bind,
        **FAUST_PAGES_OFF,  # /router/, /table/, ...: only our pages are served
    )
    app.engine, app.ingest = engine, ingest
    app.control = ControlPlane(app, engine, ingest)  # Faust agents on `models`, `explain-requests`, the shadow

    async def with_engine(fn, *args):
        def locked():
            with ingest.lock:
                return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(None, locked)

    @app.service
    class IngestService(mode.Service):
        async def on_start(self) -> None:
            ingest.start()
            self.add_future(self._watch())

        async def _watch(self) -> None:
            while ingest.thread.is_alive():
                await asyncio.sleep(0.5)
            if ingest.crashed is not None and not ingest.stopping.is_set():
                await app.crash(ingest.crashed)

        async def on_stop(self) -> None:
            await asyncio.get_running_loop().run_in_executor(None, ingest.stop)

    @app.page("/metrics")
    async def metrics(web, request):
        return web.bytes(engine.metrics.exposition(request.query.getall("name[]", [])),
                         content_type="text/plain; version=0.0.4")

    health = HealthChecks(engine)

    @app.page("/health")
    async def health_page(web, request):
        checks = await asyncio.get_running_loop().run_in_executor(None, health.run)
        return web.json(checks, status=200 if all(c["ok"] for c in checks.values()) else 503)

    explaining = asyncio.Semaphore(EXPLAIN_CONCURRENCY)

    @app.page("/explain/{prediction_id}")
    async def explain_one(web, request, prediction_id):
        if not access.may_explain(request.headers.get("Authorization")):
            return web.json({"error": "missing or wrong bearer token"}, status=401,
                            headers={"WWW-Authenticate": "Bearer"})
        try:
            await asyncio.wait_for(explaining.acquire(), EXPLAIN_WAIT_S)
        except asyncio.TimeoutError:
            return web.json({"error": "busy explaining; try again"}, status=503, headers={"Retry-After": "1"})
        try:
            loop = asyncio.get_running_loop()
            published, raw, source = await loop.run_in_executor(None, engine.on_demand.find, prediction_id)
            explanation = published or (await with_engine(engine.on_demand.compute, prediction_id, raw, source)
                                        if raw else None)
        finally:
            explaining.release()
        if explanation is None:
            return web.json({"error": f"no decision with prediction_id {prediction_id[:200]!r} within reach"},
                            status=404)
        return web.json(explanation)

    return app


class HealthChecks:
    """Whether the broker, Redis and the model registry are reachable, each with
    a detail that names no address or secret. One admin client serves every check."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._admin = None

    def run(self) -> dict:
        engine, checks = self.engine, {}
        try:
            if self._admin is None:
                self._admin = admin(engine.settings)
            self._admin.list_topics(timeout=2)
            checks["broker"] = {"ok": True, "detail": "reachable"}
        except Exception as exc:
            checks["broker"] = {"ok": False, "detail": f"unreachable ({type(exc).__name__})"}
        up = engine.store.ping()
        checks["redis"] = {"ok": up, "detail": "reachable" if up else "unreachable: explaining without cache and dedup"}
        models = engine.registry.models() if engine.registry.root.exists() else []
        checks["registry"] = {"ok": bool(models), "detail": f"{len(models)} models" if models else "no models"}
        return checks


def run_worker(settings: Settings, config: EngineConfig | None = None, web_port: int = 6066,
               loglevel: str = "warning", **app_options) -> None:
    """Run a worker until SIGINT/SIGTERM."""
    from faust.worker import Worker

    app = create_app(settings, config, web_port=web_port, **app_options)
    worker = Worker(app, loglevel=loglevel, quiet=True)
    if not worker.stdout.isatty():
        # Faust's startup spinner hides and shows the cursor without asking whether stdout is a
        # terminal (faust/utils/terminal/spinners.py: Spinner.begin): escape codes in a log file.
        worker.spinner = None
    worker.execute_from_commandline()
