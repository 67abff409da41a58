"""Explain on demand: the explanation of any recent decision, published or not.

`whystream explain ID` and the worker's `/explain/{id}` ask for it. It is apart
from the batch path (`engine.py`) because it runs on another thread, beside a
batch: finding the decision touches only Redis and the broker, and only
computing an explanation takes the engine's validator and attributor (the
worker holds its ingest lock for that step alone).

1. `find(id)`: the published explanation from Redis (blanked further by this
   reader's redaction list), else the PredictionEvent read back from
   `predictions` where Redis remembers it lies (15 minutes), else the decision
   from the decision store (`archive`, given by whoever composes the worker:
   ClickHouse's `decisions`, any decision within its retention), else nothing.
   `find_once_read(id)` (explain requests on Kafka) looks again once the data
   plane has read what was on `predictions` when it was asked: the workers
   record in Redis how far they have read each partition, after the locations.
2. `compute(id, raw)`: an ON_DEMAND explanation of that event, validated as
   the stream validates it, its producer score checked as the stream checks
   it; not published.

Every explanation it returns says where its feature values came from
(`features_source`: `explanations` for the published one, `predictions` for
one computed from the topic, `store` from the decision store); a computed one
is explained by the registered version the decision names.
"""

from __future__ import annotations

import time
from typing import Callable

from confluent_kafka import KafkaException

from whystream.explanations.records import build_explanations, redact_event
from whystream.kafka.messages import Inbound, RawMessage
from whystream.kafka.reader import OffsetReader, ReadTimeout, partition_bounds
from whystream.streams.attribution import cache_keys
from whystream.treeshap import EXPLAINER_VERSION

READ_POLL_S = 0.25  # how often a request for a decision not read yet looks again


class OnDemand:
    def __init__(self, engine, reader: OffsetReader, archive: Callable[[str], bytes | None] | None = None):
        self.engine = engine
        self.reader = reader  # of `predictions`: one, shared by every request
        self.archive = archive  # prediction_id -> its PredictionEvent (encoded) from the decision store, or None

    def explain(self, prediction_id: str) -> dict | None:
        """The explanation of any recent decision: the published one, or computed now."""
        published, raw, source = self.find(prediction_id)
        if published is not None or raw is None:
            return published
        return self.compute(prediction_id, raw, source)

    def find(self, prediction_id: str) -> tuple[dict | None, bytes | None, str | None]:
        """(its published explanation, None, None), else (None, the event, where it was read:
        `predictions` or `store`), else (None, None, None). Only Redis, the broker and the
        store: safe beside a running batch."""
        engine = self.engine
        engine.wait_for_locations()  # the last batch's locations first
        published = engine.store.published_explanation(prediction_id)
        if published is not None:
            event = redact_event(engine.explanation_codec.decode(published), engine.config.redact)
            return {**event, "features_source": "explanations"}, None, None
        location = engine.location_store.recall_location(prediction_id)
        raw = self.reader.read(*location) if location else None
        if raw is not None:
            return None, raw, "predictions"
        raw = self.archive(prediction_id) if self.archive is not None else None
        return (None, raw, "store") if raw is not None else (None, None, None)

    def find_once_read(self, prediction_id: str, patience_s: float) -> tuple[dict | None, bytes | None, str | None]:
        """find(); when nothing is found, find again once the data plane has read every message
        that was on `predictions` now (waiting at most `patience_s`): a request sent right after
        its decision is answered, not refused because the decision was still on its way. Without
        Redis (no locations, no read positions) or a broker, it does not wait."""
        found = self.find(prediction_id)
        if found != (None, None, None) or patience_s <= 0:
            return found
        try:
            bounds = partition_bounds(self.reader.settings, self.reader.topic, None, timeout=min(patience_s, 5.0),
                                      complete=True)
        except (KafkaException, ReadTimeout):
            return found
        ends = {p: end for p, (_, end) in bounds.items()}
        deadline = time.monotonic() + patience_s
        while self.engine.location_store.read_past(ends) is False and time.monotonic() < deadline:
            time.sleep(READ_POLL_S)
        return self.find(prediction_id)

    def compute(self, prediction_id: str, raw: bytes, source: str = "predictions") -> dict | None:
        """An ON_DEMAND explanation of the PredictionEvent `raw`, if it is valid and is `prediction_id`;
        `source`: where `raw` was read (its features_source)."""
        engine = self.engine
        batches, dead = engine.validator.split(Inbound.of([RawMessage(raw, None, "", -1, -1)]),
                                               engine.config.sampling.stratum_key)
        if dead or not batches or batches[0].prediction_ids[0] != prediction_id:
            return None
        batch = batches[0]
        explainer = engine.attributor.explainer(batch.model)
        classes = explainer.classes(batch.X, batch.decision_class)
        hashes = cache_keys(explainer, batch.X, classes)
        _, cached = engine.store.recall([], batch.model.version, hashes)
        attributions = engine.attributor.attribute(batch.model, batch.X, time.monotonic(), cached, classes)
        engine.store.record([], [], attributions.cache_entries(batch.model.version, hashes))
        record = batch.record(0)
        model_scores, mismatches = engine.check_scores(batch.model, explainer, batch.X, attributions, [record],
                                                          count=False)
        return build_explanations(batch.model, [record], batch.X, attributions, ["ON_DEMAND"], [1.0],
                                  [batch.strata[0]], adverse=engine.labels,
                                  explainer_version=EXPLAINER_VERSION, redis_available=engine.store.available,
                                  worker=engine.worker, redacted=engine.redacted(batch.model),
                                  model_scores=model_scores, mismatches=mismatches, features_source=source)[0]

    def close(self) -> None:
        self.reader.close()
