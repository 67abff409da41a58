"""The decision store stores exactly what the workers accept (hypothesis): for any batch of
PredictionEvents, valid or damaged in the ways producers damage them, the sink's decision
rows (jobs/sink/decisions.py) hold the same prediction_ids as the workers' Validator
(streams/validation.py) lets through, with the same event-time rule. Real registry, real
codecs; no broker or ClickHouse needed."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.events import NOW, make_records
from whystream.jobs.sink.decisions import DecisionDecoder
from whystream.kafka.messages import Inbound, RawMessage
from whystream.models.registry import ModelRegistry
from whystream.streams.event_time import EventTimeRule
from whystream.streams.validation import Validator
from whystream.wire.codecs import codec_for

CODEC = codec_for("PredictionEvent")
DAMAGE = ["none", "none", "none", "blank_id", "unknown_version", "unknown_model", "unknown_feature", "nan_feature",
          "inf_score", "class_on_binary", "seconds", "far_ahead", "undecodable"]


def damaged(record: dict, how: str):
    feature = next(iter(record["features"]))
    changes = {"blank_id": {"prediction_id": "  "}, "unknown_version": {"model_version": "000000000000"},
               "unknown_model": {"model_name": "nope"},
               "unknown_feature": {"features": {**record["features"], "shoe_size": 1.0}},
               "nan_feature": {"features": {**record["features"], feature: math.nan}},
               "inf_score": {"score": math.inf}, "class_on_binary": {"decision_class": 1},
               "seconds": {"event_time": record["event_time"] // 1000},
               "far_ahead": {"event_time": NOW + 3_600_000}}
    if how == "undecodable":
        return b"\x00not a prediction"
    return CODEC.encode({**record, **changes.get(how, {})})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 59), st.sampled_from(DAMAGE)), min_size=1, max_size=25))
def test_the_store_keeps_what_the_workers_accept(small_model, drawn):
    records = [{**r, "event_time": NOW - 1000} for r in make_records(small_model, 60, seed=27, run_id="v")]
    messages = [RawMessage(damaged(records[i], how), None, "predictions", 0, k, NOW)
                for k, (i, how) in enumerate(drawn)]
    registry = ModelRegistry(small_model.path.parent.parent)
    batches, _ = Validator(registry, CODEC, event_time=EventTimeRule()).split(Inbound.of(messages), "", NOW)
    accepted = sorted(pid for batch in batches for pid in batch.prediction_ids)
    stored = DecisionDecoder(CODEC, registry.load)(messages, {})
    assert sorted(stored.prediction_ids) == accepted
    assert len(accepted) == sum(how == "none" for _, how in drawn)  # every damage is one the workers refuse
