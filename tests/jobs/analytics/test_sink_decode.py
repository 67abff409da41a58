"""The sink's batch decoder (compiled, straight to RowBinary) against the per-message path
(fastavro dicts, explanation_rows.explanation_columns, sink_columns.encode_rows): the same rows, byte
for byte, and the same messages set aside with the same reasons, for any batch (hypothesis)."""

from __future__ import annotations

import math
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from whystream.jobs.analytics import explanation_rows
from whystream.jobs.analytics.sink_columns import INSERT_COLUMNS
from whystream.jobs.analytics import sink_decode
from whystream.jobs.analytics.sink_decode import BatchDecoder
from whystream.jobs.analytics.sink_rows import decode_messages
from whystream.streams.codec import codec_for, load_schema
from whystream.streams.validate import RawMessage

CODEC = codec_for("ExplanationEvent", None, "explanations")
DECODER = BatchDecoder(CODEC)
SCHEMA = {f["name"]: f for f in load_schema("ExplanationEvent")["fields"]}
REASONS = SCHEMA["sampling_reason"]["type"]["symbols"]
SOURCES = SCHEMA["source"]["type"]["symbols"]

text = st.text(alphabet=st.sampled_from("ab_-é 0\t"), max_size=12)
ordinary = st.floats(min_value=-1e6, max_value=1e6)
number = st.one_of(ordinary, ordinary, ordinary, st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0]))
maybe = st.one_of(st.none(), number)
attribution = st.fixed_dictionaries({"feature": text, "value": maybe, "shap": number})
principal = st.fixed_dictionaries({"code": text, "text": text, "feature": text, "value": maybe, "shap": number})
times = st.one_of(st.integers(0, 4_102_444_799_999), st.integers(-10, 5_000_000_000_000))
event = st.fixed_dictionaries({
    "prediction_id": st.one_of(text, st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)),
    "model_name": text, "model_version": text, "explainer": text, "explainer_version": text,
    "event_time": times, "explained_at": times, "output_space": text,
    "base_value": number, "raw_score": number,
    "attributions": st.lists(attribution, max_size=6), "top_reasons": st.lists(attribution, max_size=3),
    "score": number, "decision": text, "threshold": number,
    "sampling_reason": st.sampled_from(REASONS), "inclusion_weight": number, "stratum": text,
    "source": st.sampled_from(SOURCES), "redis_available": st.booleans(), "latency_ms": number, "worker": text,
    "explained_class": st.one_of(st.none(), st.integers(-2**31, 2**31 - 1)),
    "principal_reasons": st.lists(principal, max_size=3),
    "reason_codes_version": st.one_of(st.none(), text),
    "redacted_features": st.lists(text, max_size=3),
    "role": st.sampled_from(SCHEMA["role"]["type"]["symbols"]),
    "champion_prediction_id": st.one_of(st.none(), text), "request_id": st.one_of(st.none(), text),
})


def message(draw_value, i: int) -> RawMessage:
    return RawMessage(draw_value, b"k", "explanations" if i % 3 else "other.explanations", i % 4, 1000 + i)


@st.composite
def batches(draw):
    values = []
    for e in draw(st.lists(event, max_size=12)):
        value = CODEC.encode(e)
        cut = draw(st.sampled_from(["whole"] * 6 + ["truncated", "extended", "garbage"]))
        if cut == "truncated":
            value = value[:draw(st.integers(0, len(value) - 1))]
        elif cut == "extended":
            value += b"\x00"
        elif cut == "garbage":
            value = draw(st.binary(max_size=40))
        values.append(value)
    return [message(v, i) for i, v in enumerate(values)]


def by_offset(rows):
    return {m.offset: (rows.row(i), rows.prediction_ids[i], rows.models[i], int(rows.event_time[i]))
            for i, m in enumerate(rows.messages)}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_batch_decoder_equals_the_per_message_path(messages):
    topic_ids = {"explanations": "id-1", "other.explanations": ""}
    fast, fast_aside = DECODER(messages, topic_ids)
    slow, slow_aside = decode_messages(messages, CODEC, topic_ids)
    assert by_offset(fast) == by_offset(slow)
    key = lambda letter: (letter.message.offset, letter.reason_code, re.sub(r" at 0x[0-9a-f]+", "", letter.reason),
                          letter.prediction_id)
    assert sorted(map(key, fast_aside)) == sorted(map(key, slow_aside))
    assert len(fast) + len(fast_aside) == len(messages)


def test_the_insert_columns_are_the_tables_in_order():
    assert INSERT_COLUMNS == [*explanation_rows.EXPLANATION_COLUMNS, "kafka_topic", "kafka_topic_id"]


def test_the_fast_path_takes_ordinary_events(monkeypatch):
    """Not everything falls back: ordinary events are decoded by the compiled pass alone."""
    e = {"prediction_id": "p1", "model_name": "m", "model_version": "v", "explainer": "x", "explainer_version": "1",
         "event_time": 1_700_000_000_000, "explained_at": 1_700_000_000_100, "output_space": "raw_margin",
         "base_value": -1.0, "raw_score": 0.5, "attributions": [{"feature": "a", "value": None, "shap": 1.5}],
         "top_reasons": [], "score": 0.6, "decision": "decline", "threshold": 0.5, "sampling_reason": "ADVERSE",
         "inclusion_weight": 1.0, "stratum": "US", "source": "LIVE", "redis_available": True, "latency_ms": 100.0,
         "worker": "w", "explained_class": 3, "principal_reasons": [], "reason_codes_version": "rc",
         "redacted_features": ["b"]}
    calls = []
    monkeypatch.setattr(sink_decode, "decode_messages", lambda *a: calls.append(a) or decode_messages(*a))
    rows, aside = DECODER([RawMessage(CODEC.encode(e), None, "explanations", 0, 5)], {"explanations": ""})
    assert len(rows) == 1 and not aside and not calls
    assert rows.prediction_ids == ["p1"] and rows.models == [("m", "v")]
    assert list(rows.event_time) == [1_700_000_000_000]
