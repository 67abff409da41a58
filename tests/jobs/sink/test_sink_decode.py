"""The sink's batch decoder (compiled, straight to RowBinary) against the per-message path
(fastavro dicts, explanation_rows.explanation_columns, sink_columns.encode_rows): the same rows, byte
for byte, and the same messages set aside with the same reasons, for any batch (hypothesis), with the same rows flagged as answers to explain requests."""

from __future__ import annotations

import math
import re
from unittest.mock import patch

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from whystream.jobs.sink import decoder as sink_decode
from whystream.jobs.sink import explanation_rows
from whystream.jobs.sink.columns import INSERT_COLUMNS
from whystream.jobs.sink.decoder import BatchDecoder
from whystream.jobs.sink.rows import decode_messages, is_answer
from whystream.kafka.messages import RawMessage
from whystream.wire.codecs import codec_for, load_schema

CODEC = codec_for("ExplanationEvent", None, "explanations")
DECODER = BatchDecoder(CODEC)
SCHEMA = {f["name"]: f for f in load_schema("ExplanationEvent")["fields"]}
REASONS = SCHEMA["sampling_reason"]["type"]["symbols"]
SOURCES = SCHEMA["source"]["type"]["symbols"]


def events(text, number, times, weight=None, ids=None):
    """ExplanationEvents drawn from these text, number, time (and inclusion weight, prediction_id
    text) strategies."""
    maybe = st.one_of(st.none(), number)
    attribution = st.fixed_dictionaries({"feature": text, "value": maybe, "shap": number})
    principal = st.fixed_dictionaries({"code": text, "text": text, "feature": text, "value": maybe, "shap": number})
    return st.fixed_dictionaries({
        "prediction_id": st.one_of(text if ids is None else ids, st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)),
        "model_name": text, "model_version": text, "explainer": text, "explainer_version": text,
        "event_time": times, "explained_at": times, "output_space": text,
        "base_value": number, "raw_score": number,
        "attributions": st.lists(attribution, max_size=6), "top_reasons": st.lists(attribution, max_size=3),
        "score": number, "decision": text, "threshold": number,
        "sampling_reason": st.sampled_from(REASONS), "inclusion_weight": number if weight is None else weight, "stratum": text,
        "source": st.sampled_from(SOURCES), "redis_available": st.booleans(), "latency_ms": number, "worker": text,
        "explained_class": st.one_of(st.none(), st.integers(-2**31, 2**31 - 1)),
        "principal_reasons": st.lists(principal, max_size=3),
        "reason_codes_version": st.one_of(st.none(), text),
        "redacted_features": st.lists(text, max_size=3),
        "role": st.sampled_from(SCHEMA["role"]["type"]["symbols"]),
        "champion_prediction_id": st.one_of(st.none(), text), "request_id": st.one_of(st.none(), text),
        "adverse_reasons": st.lists(attribution, max_size=3), "requested_by": st.one_of(st.none(), text),
        "received_at": st.one_of(st.none(), times), "model_score": maybe, "score_mismatch": st.booleans(),
        "features_source": st.one_of(st.none(), text),
    })


ordinary = st.floats(min_value=-1e6, max_value=1e6)
good_times = st.integers(0, 4_102_444_799_999)
# Events the compiled pass decodes itself (UTF-8 text, an ASCII prediction_id, finite numbers, times
# in range: checked below that it does), and events with anything in them (many of those take the
# per-message path: a non-ASCII or Unicode-blank prediction_id, a non-finite number, a bad time).
plain = events(st.text(alphabet=st.sampled_from("ab_- 0\té中😀"), max_size=12), ordinary, good_times,
               st.floats(min_value=1e-3, max_value=1e6), ids=st.text(alphabet=st.sampled_from("ab_- 0\t"), max_size=12))
anything = events(st.text(alphabet=st.sampled_from("ab_-é 0\t\u00a0\u3000😀"), max_size=12),
                  st.one_of(ordinary, ordinary, ordinary, st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0])),
                  st.one_of(good_times, st.integers(-10, 5_000_000_000_000)))
event = st.one_of(plain, anything)


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
    return {m.offset: (rows.row(i), rows.prediction_ids[i], rows.models[i], int(rows.event_time[i]),
                       bool(rows.answers[i])) for i, m in enumerate(rows.messages)}


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
    # the flag is the rule itself, whichever path read the row
    for i, m in enumerate(fast.messages):
        assert bool(fast.answers[i]) == is_answer(CODEC.decode(m.value))
    odd = fast.take([i for i in range(len(fast)) if i % 2])  # what the sink's filters do keeps the flags
    assert by_offset(odd) == {m.offset: by_offset(fast)[m.offset] for m in odd.messages}


@settings(max_examples=30, deadline=None)
@given(st.lists(plain, min_size=1, max_size=8))
def test_the_compiled_pass_decodes_plain_events_itself(drawn):
    """The property above compares the two paths only where the compiled pass decodes: it does for these."""
    messages = [message(CODEC.encode(e), i) for i, e in enumerate(drawn) if e["prediction_id"].strip()]
    with patch.object(sink_decode, "decode_messages", side_effect=AssertionError("fell back")):
        rows, aside = DECODER(messages, {"explanations": "id-1", "other.explanations": ""})
    assert len(rows) == len(messages) and not aside
    assert list(rows.answers) == [is_answer(e) for e in drawn if e["prediction_id"].strip()]


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


ORDINARY = {"prediction_id": "p1", "model_name": "m", "model_version": "v", "explainer": "x", "explainer_version": "1",
            "event_time": 1_700_000_000_000, "explained_at": 1_700_000_000_100, "output_space": "raw_margin",
            "base_value": -1.0, "raw_score": 0.5, "attributions": [{"feature": "a", "value": 2.0, "shap": 1.5}],
            "top_reasons": [], "score": 0.6, "decision": "decline", "threshold": 0.5, "sampling_reason": "ADVERSE",
            "inclusion_weight": 1.0, "stratum": "US", "source": "LIVE", "redis_available": True, "latency_ms": 100.0,
            "worker": "w"}


def test_answers_to_explain_requests_are_flagged_by_both_paths(monkeypatch):
    """ON_DEMAND or a non-empty request_id is an answer; an empty request_id is not. The
    compiled pass flags them itself (no fallback), as the per-message path does."""
    cases = [("ON_DEMAND", "r-1", True), ("ON_DEMAND", None, True), ("ADVERSE", "r-2", True),
             ("RESERVOIR", None, False), ("ADVERSE", "", False), ("NEW_VERSION", None, False)]
    messages = [RawMessage(CODEC.encode({**ORDINARY, "prediction_id": f"p{i}", "sampling_reason": reason,
                                         "request_id": rid}), None, "explanations", 0, i)
                for i, (reason, rid, _) in enumerate(cases)]
    calls = []
    monkeypatch.setattr(sink_decode, "decode_messages", lambda *a: calls.append(a) or decode_messages(*a))
    fast, _ = DECODER(messages, {"explanations": ""})
    slow, _ = decode_messages(messages, CODEC, {"explanations": ""})
    assert not calls
    expected = [answer for _, _, answer in cases]
    assert list(fast.answers) == expected and list(slow.answers) == expected
    assert list(fast.take([4, 0, 2]).answers) == [False, True, True]

