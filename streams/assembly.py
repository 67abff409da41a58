"""An Engine and the collaborators it is given, made from Settings.

The engine (streams/engine.py) handles batches; what it reads and writes beyond
its own memory is made here, once per worker, and passed in (`EngineParts`): the
model registry, the codecs of `predictions` and `explanations`, one idempotent
producer behind a confirming Publisher for explanations, dead letters and
sampling checkpoints, the two Redis clients (the batch path's, and one of its own
for the background writes of event locations, so a slow write never switches
dedup and the cache off for the batch path: streams/store.py's retry pause), the
replay guard that reads the output topics back, and the reader of `predictions`
that explain-on-demand uses.
"""

from __future__ import annotations

import os
import socket

from whystream.config import Settings
from whystream.kafka.clients import producer
from whystream.kafka.dead_letters import DeadLetterWriter
from whystream.kafka.publisher import Publisher
from whystream.kafka.reader import OffsetReader
from whystream.models.registry import ModelRegistry
from whystream.streams.checkpointing.checkpoints import Checkpoints
from whystream.streams.checkpointing.replay_guard import ReplayGuard
from whystream.streams.engine import Engine, EngineConfig, EngineParts
from whystream.streams.metrics import Metrics
from whystream.streams.store import RedisStore
from whystream.wire.codecs import topic_codec


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def build_engine(settings: Settings, config: EngineConfig | None = None, metrics: Metrics | None = None,
                 store: RedisStore | None = None) -> Engine:
    """A worker's engine on the broker, Redis and registry of `settings`; `store` (tests): one
    Redis client for both uses instead of two."""
    config = config or EngineConfig()
    worker = worker_id()
    publisher = Publisher(producer(settings, "explanations"))
    parts = EngineParts(
        worker=worker,
        registry=ModelRegistry(settings.registry),
        predictions=topic_codec(settings, "predictions"),
        explanations=topic_codec(settings, "explanations"),
        publisher=publisher,
        dead_letters=DeadLetterWriter(publisher, topic_codec(settings, "predictions.dlq"),
                                      settings.topic("predictions.dlq"), worker, config.dlq_original_cap),
        checkpoints=Checkpoints(publisher, topic_codec(settings, "sampling-checkpoints"),
                                settings.topic("sampling-checkpoints"), worker),
        store=store or RedisStore(settings.redis_url),
        location_store=store or RedisStore(settings.redis_url),
        replay_guard=ReplayGuard(settings),
        predictions_reader=OffsetReader(settings, settings.topic("predictions")))
    return Engine(settings, parts, config, metrics)
