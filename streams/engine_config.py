"""What an `Engine` (streams/engine.py) is configured with (`EngineConfig`: sampling,
latency budget, redaction, event-time rule, dead-letter cap, score tolerance) and what it
is given (`EngineParts`: registry, codecs, publisher, Redis, replay guard; made from
Settings by streams/assembly.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from whystream.kafka.dead_letters import ORIGINAL_CAP, DeadLetterWriter
from whystream.kafka.publisher import Publisher
from whystream.kafka.reader import OffsetReader
from whystream.models.registry import ModelRegistry
from whystream.models.score_check import ScoreTolerance
from whystream.streams.checkpointing.checkpoints import Checkpoints
from whystream.streams.checkpointing.replay_guard import ReplayGuard
from whystream.streams.event_time import EventTimeRule
from whystream.streams.sampling.config import SamplingConfig
from whystream.streams.store import RedisStore
from whystream.wire.codecs import Codec


@dataclass
class EngineConfig:
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    latency_budget_ms: float = 2000.0  # for priority decisions; reservoir samples have no latency target
    redact: frozenset[str] = frozenset()  # --redact: on top of each model's own list
    event_time: EventTimeRule = field(default_factory=EventTimeRule)
    # Bytes of a dead message's value kept in its DeadLetter: with the reason and key it stays under the
    # producer's message.max.bytes (1 MB by default); a broker that still refuses it gets less.
    dlq_original_cap: int = ORIGINAL_CAP
    quarantine_s: float = 30.0  # first back-off before a version that failed to load is tried again
    # how far a producer's score may be off the model's own (WHYSTREAM_SCORE_TOLERANCE; models/score_check.py)
    score_tolerance: ScoreTolerance = field(default_factory=ScoreTolerance)


@dataclass
class EngineParts:
    """What the engine reads and writes beyond its own memory (made by streams/assembly.py)."""

    worker: str  # this process, named in every event it writes
    registry: ModelRegistry
    predictions: Codec
    explanations: Codec
    publisher: Publisher  # confirms every message: explanations, dead letters, checkpoints
    dead_letters: DeadLetterWriter  # to predictions.dlq, through the publisher
    checkpoints: Checkpoints  # to sampling-checkpoints, through the publisher
    store: RedisStore  # dedup, the explanation cache, version counters
    location_store: RedisStore  # the background writes of event locations (a client of their own)
    replay_guard: ReplayGuard  # what a replay must not publish again, read back from the outputs
    predictions_reader: OffsetReader  # explain on demand reads a decision back at its offset
