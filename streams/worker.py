"""`whystream worker`: the Faust app that turns `predictions` into `explanations`.

One agent takes raw messages in batches without acknowledging them
(`stream.noack_take`), hands each batch to the Engine on a single engine
thread (CPU-bound work never blocks the event loop; TreeSHAP itself fans out
over all cores), then acknowledges every message except the first candidate
of each still-open reservoir window. Faust commits up to the first
unacknowledged offset of a partition, so a crash replays exactly the open
windows: nothing that was due is lost, and replayed priority events are
recognised by prediction_id and not published twice.

The web server serves /metrics (Prometheus), /health and /explain/{id}.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import faust
from confluent_kafka.admin import AdminClient

from whystream.config import Settings
from whystream.streams.engine import Engine, EngineConfig
from whystream.streams.validate import RawMessage

log = logging.getLogger("whystream.worker")


class AckKeeper:
    """Faust events held unacknowledged because a reservoir window still needs them."""

    def __init__(self):
        self.held: dict[tuple[int, int], faust.types.EventT] = {}
        self.position: dict[int, int] = {}  # next offset to read, per partition (for lag)

    def settle(self, events, holds: dict[int, set[int]]) -> None:
        for event in events:
            p, o = event.message.partition, event.message.offset
            self.position[p] = max(self.position.get(p, 0), o + 1)
            if o in holds.get(p, ()):
                self.held[(p, o)] = event
            else:
                event.ack()
        for (p, o), event in list(self.held.items()):
            if p in holds and o not in holds[p]:
                event.ack()
                del self.held[(p, o)]

    def partitions(self) -> set[int]:
        return {p for p, _ in self.held}

    def forget(self, partitions) -> None:
        """Revoked partitions: their held events are another worker's business now."""
        for key in [k for k in self.held if k[0] in partitions]:
            del self.held[key]
        for p in partitions:
            self.position.pop(p, None)


def create_app(settings: Settings, config: EngineConfig | None = None, web_port: int = 6066,
               batch_size: int = 2000, batch_wait_s: float = 0.05, session_timeout_s: float = 6.0) -> faust.App:
    engine = Engine(settings, config)
    topic_name = settings.topic("predictions")
    datadir = settings.home / "faust" / str(web_port)  # one per worker on a host
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.topic_prefix}whystream-worker",  # the consumer group
        broker=f"kafka://{settings.require('broker')}",
        datadir=str(datadir),
        web_port=web_port,
        web_host="127.0.0.1",
        web_bind="0.0.0.0",
        stream_wait_empty=False,  # held events must not block a rebalance
        broker_session_timeout=session_timeout_s,
        broker_heartbeat_interval=min(3.0, session_timeout_s / 3),
        broker_commit_interval=1.0,
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
    )
    app.engine = engine
    topic = app.topic(topic_name, value_serializer="raw", key_serializer="raw")
    engine_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whystream-engine")
    keeper = AckKeeper()

    async def on_engine(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(engine_thread, fn, *args)

    @app.agent(topic)
    async def explain(stream):
        async for events in stream.noack_take(batch_size, within=batch_wait_s):
            messages = [RawMessage(e.message.value, e.message.key, e.message.topic, e.message.partition,
                                   e.message.offset) for e in events]
            await on_engine(engine.process, messages)
            holds = await on_engine(engine.held_offsets, {m.partition for m in messages} | keeper.partitions())
            keeper.settle(events, holds)

    @app.timer(1.0)
    async def close_idle_windows():
        await on_engine(engine.tick)
        keeper.settle([], await on_engine(engine.held_offsets, keeper.partitions()))
        for tp in app.consumer.assignment():
            highwater = app.consumer.highwater(tp)
            if highwater is not None and tp.partition in keeper.position:
                engine.metrics.lag.labels(str(tp.partition)).set(max(highwater - keeper.position[tp.partition], 0))

    @app.on_partitions_revoked.connect
    async def on_revoked(app, revoked, **kwargs):
        partitions = {tp.partition for tp in revoked if tp.topic == topic_name}
        keeper.forget(partitions)
        await on_engine(engine.revoke, partitions)

    @app.page("/metrics")
    async def metrics(web, request):
        return web.bytes(engine.metrics.exposition(), content_type="text/plain; version=0.0.4")

    @app.page("/health")
    async def health(web, request):
        checks = await on_engine(health_checks, engine)
        return web.json(checks, status=200 if all(c["ok"] for c in checks.values()) else 503)

    @app.page("/explain/{prediction_id}")
    async def explain_one(web, request, prediction_id):
        explanation = await on_engine(engine.explain_on_demand, prediction_id)
        if explanation is None:
            return web.json({"error": f"no recent decision with prediction_id {prediction_id!r}"}, status=404)
        return web.json(explanation)

    return app


def health_checks(engine: Engine) -> dict:
    """Whether the broker, Redis and the model registry are reachable, each with a detail."""
    checks = {}
    try:
        AdminClient(engine.settings.kafka()).list_topics(timeout=2)
        checks["broker"] = {"ok": True, "detail": engine.settings.broker}
    except Exception as exc:
        checks["broker"] = {"ok": False, "detail": str(exc)}
    up = engine.store.ping()
    checks["redis"] = {"ok": up, "detail": "reachable" if up else "unreachable: explaining without cache and dedup"}
    models = engine.registry.models() if engine.registry.root.exists() else []
    checks["registry"] = {"ok": bool(models), "detail": ", ".join(models) or f"no models in {engine.registry.root}"}
    return checks


def run_worker(settings: Settings, config: EngineConfig | None = None, web_port: int = 6066,
               loglevel: str = "warning", **app_options) -> None:
    """Run a worker until SIGINT/SIGTERM."""
    from faust.worker import Worker

    app = create_app(settings, config, web_port=web_port, **app_options)
    Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
