"""Avro contracts: every schema round-trips in both wire formats, old writers
are readable by the current reader, and garbage only ever raises DecodeError."""

from __future__ import annotations

import functools
import io
import json

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support import REPO
from whystream.errors import DecodeError
from whystream.wire.codecs import (
    SCHEMA_NAMES,
    ConfluentCodec,
    SingleObjectCodec,
    load_schema,
    schema_fingerprint,
)

PREDICTION = {
    "prediction_id": "p-1", "model_name": "fraud", "model_version": "0123456789ab",
    "event_time": 1_700_000_000_123, "features": {"amount": 12.5, "device_age_days": None},
    "score": 0.93, "decision": "decline", "threshold": 0.5,
    "segment": {"country": "GB", "channel": "ecom"}, "priority": True, "decision_class": None,
}
EXPLANATION = {
    "prediction_id": "p-1", "model_name": "fraud", "model_version": "0123456789ab",
    "explainer": "whystream-treeshap", "explainer_version": "1", "event_time": 1_700_000_000_123,
    "explained_at": 1_700_000_000_200, "output_space": "raw_margin", "base_value": -4.2, "raw_score": 1.3,
    "attributions": [{"feature": "amount", "value": 12.5, "shap": 5.0}, {"feature": "x", "value": None, "shap": 0.5}],
    "top_reasons": [{"feature": "amount", "value": 12.5, "shap": 5.0}], "score": 0.93, "decision": "decline",
    "threshold": 0.5, "sampling_reason": "ADVERSE", "inclusion_weight": 1.0, "stratum": "ecom",
    "source": "LIVE", "redis_available": False, "latency_ms": 77.0, "worker": "host:1", "explained_class": 2,
    "principal_reasons": [{"code": "R01", "text": "Amount unusually high", "feature": "amount", "value": 12.5,
                           "shap": 5.0}],
    "reason_codes_version": "a1b2c3d4e5f6", "redacted_features": ["x"],
    "role": "CHALLENGER", "champion_prediction_id": "p-0", "request_id": "r-9",
    "adverse_reasons": [{"feature": "amount", "value": 12.5, "shap": 5.0}], "requested_by": "case-tool",
    "received_at": 1_700_000_000_150, "model_score": 0.942, "score_mismatch": True, "features_source": "store",
}
V4_DEFAULTS = {"adverse_reasons": [], "requested_by": None, "received_at": None, "model_score": None,
               "score_mismatch": False, "features_source": None}
DEAD_LETTER = {
    "reason_code": "UNDECODABLE", "reason": "bad", "original": b"\x00\x01", "original_size": 2,
    "original_truncated": False, "original_key": None,
    "topic": "predictions", "partition": 3, "offset": 42, "prediction_id": None,
    "failed_at": 1_700_000_000_000, "worker": "w", "topic_id": "AaJN3irTeuCK4ZDTTh2rpQ",
}
ALERT = {
    "alert_id": "a", "model_name": "fraud", "model_version": "v", "feature": "amount",
    "window_start": 1, "window_end": 2, "statistic": "psi", "value": 0.4, "threshold": 0.2,
    "reference": "registry:v", "raised_at": 3, "fallback_share": 0.25, "effective_n": 812.5,
}
MODEL_REGISTERED = {
    "name": "fraud", "version": "0123456789ab", "objective": "binary", "registry": "/srv/models/fraud/0123456789ab",
    "role": "CHALLENGER", "challenger_of": "fraud", "promoted": False, "registered_at": 1_700_000_000_000,
    "registered_by": "ml@host",
}
EXPLAIN_REQUEST = {"prediction_id": "p-1", "requested_by": "disputes", "request_id": "r-1"}
EXPLAIN_ERROR = {
    "request_id": "r-1", "prediction_id": "p-1", "requested_by": "disputes", "error_code": "UNKNOWN_DECISION",
    "message": "no recent decision", "original": b"", "answered_at": 1_700_000_000_001, "worker": "w",
}
SAMPLING_CHECKPOINT = {"partition": 3, "kind": "COMMIT", "offset": 120, "live_from": 480,
                       "written_at": 1_700_000_000_002, "worker": "w", "topic_id": "AaJN3irTeuCK4ZDTTh2rpQ",
                       "since": [{"topic": "explanations", "partition": 1, "offset": 77}]}
EXAMPLES = {"PredictionEvent": PREDICTION, "ExplanationEvent": EXPLANATION, "DeadLetter": DEAD_LETTER,
            "DriftAlert": ALERT, "ModelRegistered": MODEL_REGISTERED, "ExplainRequest": EXPLAIN_REQUEST,
            "ExplainError": EXPLAIN_ERROR, "SamplingCheckpoint": SAMPLING_CHECKPOINT}


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_single_object_round_trip(name):
    codec = SingleObjectCodec(name)
    data = codec.encode(EXAMPLES[name])
    assert data[:2] == b"\xc3\x01" and data[2:10] == schema_fingerprint(load_schema(name))
    assert codec.decode(data) == EXAMPLES[name]


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_confluent_wire_format_round_trip(name):
    codec = ConfluentCodec(name, "mock://whystream-tests", f"topic-{name}")
    data = codec.encode(EXAMPLES[name])
    assert data[0] == 0 and len(data) > 5
    assert codec.decode(data) == EXAMPLES[name]


def test_fingerprint_matches_the_avro_spec_example():
    # The Avro specification's CRC-64-AVRO fingerprint of "int" is 0x7275d51a3f395c8f.
    assert schema_fingerprint("int") == (0x7275D51A3F395C8F).to_bytes(8, "little")


def test_a_reader_on_the_current_schema_reads_events_written_with_version_1():
    old = json.loads((REPO / "schemas/history/PredictionEvent.v1.avsc").read_text())
    v1_record = {k: v for k, v in PREDICTION.items() if k not in ("segment", "priority")}
    buffer = io.BytesIO()
    buffer.write(b"\xc3\x01" + schema_fingerprint(old))
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(old), v1_record)
    decoded = SingleObjectCodec("PredictionEvent").decode(buffer.getvalue())
    assert decoded == {**v1_record, "segment": {}, "priority": False, "decision_class": None}


HISTORY = REPO / "schemas/history"
# (schema, previous version's file, the fields it lacks and what the current reader fills in,
#  fields renamed since: current name -> previous name, resolved through the current field's aliases)
PREVIOUS = [
    ("PredictionEvent", "PredictionEvent.v2.avsc", {"decision_class": None}, {}),
    ("ExplanationEvent", "ExplanationEvent.v2.avsc",
     {"role": "CHAMPION", "champion_prediction_id": None, "request_id": None, **V4_DEFAULTS},
     {"redis_available": "cached"}),
    ("ExplanationEvent", "ExplanationEvent.v3.avsc", V4_DEFAULTS, {}),
    ("DeadLetter", "DeadLetter.v1.avsc", {"original_size": -1, "original_truncated": False, "topic_id": None}, {}),
    ("DeadLetter", "DeadLetter.v2.avsc", {"topic_id": None}, {}),
    ("DriftAlert", "DriftAlert.v1.avsc", {"fallback_share": 0.0, "effective_n": 0.0}, {}),
    ("SamplingCheckpoint", "SamplingCheckpoint.v1.avsc", {"topic_id": None, "since": []}, {}),
]


@pytest.mark.parametrize("name, old_file, added, renamed", PREVIOUS)
def test_new_readers_read_what_the_previous_version_wrote(name, old_file, added, renamed):
    old = json.loads((HISTORY / old_file).read_text())
    current = {k: v for k, v in EXAMPLES[name].items() if k not in added}
    buffer = io.BytesIO()
    buffer.write(b"\xc3\x01" + schema_fingerprint(old))
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(old), {renamed.get(k, k): v for k, v in current.items()})
    assert SingleObjectCodec(name).decode(buffer.getvalue()) == {**current, **added}


@pytest.mark.parametrize("name, old_file, added, renamed", PREVIOUS)
def test_readers_of_the_previous_version_read_what_the_current_one_writes(name, old_file, added, renamed):
    old = fastavro.parse_schema(json.loads((HISTORY / old_file).read_text()))
    data = SingleObjectCodec(name).encode(EXAMPLES[name])
    record = fastavro.schemaless_reader(io.BytesIO(data[10:]), fastavro.parse_schema(load_schema(name)), old)
    millis = {k: int(v.timestamp() * 1000) if hasattr(v, "timestamp") else v for k, v in record.items()}
    # Avro aliases are the reader's: an old reader does not know a field's new name and reads its own
    # default for it (ExplanationEvent v2 readers see cached=true; docs/topics-and-schemas.md says so). The example's
    # renamed values differ from those defaults, so this checks the limit is what we document.
    defaults = {f["name"]: f.get("default") for f in json.loads((HISTORY / old_file).read_text())["fields"]}
    expected = {renamed.get(k, k): defaults[renamed[k]] if k in renamed else v
                for k, v in EXAMPLES[name].items() if k not in added}
    assert all(EXAMPLES[name][k] != defaults[old_name] for k, old_name in renamed.items())
    assert millis == expected


def test_explanations_of_version_1_read_cached_as_redis_available():
    old = json.loads((HISTORY / "ExplanationEvent.v1.avsc").read_text())
    v1_fields = {f["name"] for f in old["fields"]}
    record = {k: v for k, v in EXPLANATION.items() if k in v1_fields or k == "redis_available"}
    record["cached"] = record.pop("redis_available")
    buffer = io.BytesIO()
    buffer.write(b"\xc3\x01" + schema_fingerprint(old))
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(old), record)
    decoded = SingleObjectCodec("ExplanationEvent").decode(buffer.getvalue())
    assert decoded["redis_available"] is False and "cached" not in decoded and decoded["role"] == "CHAMPION"


def test_an_old_dead_letter_reader_cannot_read_the_new_reason_codes_but_any_later_one_falls_back():
    """DeadLetter v1's enum has no default: a v1 reader fails on MODEL_UNAVAILABLE / EVENT_TIME / BAD_CLASS
    (documented). v2's enum has one, so a v2 reader maps symbols added later to BAD_FIELD."""
    v1 = fastavro.parse_schema(json.loads((HISTORY / "DeadLetter.v1.avsc").read_text()))
    current = load_schema("DeadLetter")
    data = SingleObjectCodec("DeadLetter").encode({**DEAD_LETTER, "reason_code": "BAD_CLASS"})
    with pytest.raises(Exception):
        fastavro.schemaless_reader(io.BytesIO(data[10:]), fastavro.parse_schema(current), v1)
    later = json.loads(json.dumps(current))
    later["fields"][0]["type"]["symbols"].append("SOMETHING_NEW")
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(later), {**DEAD_LETTER, "reason_code": "SOMETHING_NEW"})
    buffer.seek(0)
    record = fastavro.schemaless_reader(buffer, fastavro.parse_schema(later), fastavro.parse_schema(current))
    assert record["reason_code"] == "BAD_FIELD"


def _history_schema(name: str) -> dict:
    return json.loads((HISTORY / name).read_text())


def _write_v1_dead_letter(record: dict) -> bytes:
    old = _history_schema("DeadLetter.v1.avsc")
    buffer = io.BytesIO(b"\xc3\x01" + schema_fingerprint(old))
    buffer.seek(0, io.SEEK_END)
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(old), record)
    return buffer.getvalue()


def test_dead_letters_of_version_1_read_with_unknown_size_and_not_truncated():
    v1_record = {k: v for k, v in DEAD_LETTER.items() if k not in ("original_size", "original_truncated", "topic_id")}
    decoded = SingleObjectCodec("DeadLetter").decode(_write_v1_dead_letter(v1_record))
    assert decoded == {**v1_record, "original_size": -1, "original_truncated": False, "topic_id": None}


def test_a_reader_on_dead_letter_version_1_reads_current_letters_of_the_old_reasons():
    """Old DLQ consumers keep working for the reasons they know; the new fields are skipped."""
    old = fastavro.parse_schema(_history_schema("DeadLetter.v1.avsc"))
    current = fastavro.parse_schema(load_schema("DeadLetter"))
    letter = {**DEAD_LETTER, "reason_code": "BAD_FIELD", "original_size": 5_000_000, "original_truncated": True}
    data = SingleObjectCodec("DeadLetter").encode(letter)
    read = fastavro.schemaless_reader(io.BytesIO(data[10:]), current, old)
    read["failed_at"] = round(read["failed_at"].timestamp() * 1000)
    assert read == {k: v for k, v in letter.items() if k not in ("original_size", "original_truncated", "topic_id")}
    # Version 1 has no enum default, so it cannot read the reasons added since (docs/topics-and-schemas.md: upgrade DLQ readers).
    with pytest.raises(fastavro.read.SchemaResolutionError):
        data = SingleObjectCodec("DeadLetter").encode({**letter, "reason_code": "MODEL_UNAVAILABLE"})
        fastavro.schemaless_reader(io.BytesIO(data[10:]), current, old)


def test_a_downstream_consumer_needs_only_the_avsc_files():
    """What docs/topics-and-schemas.md shows: decode an explanation with fastavro and the .avsc alone."""
    data = SingleObjectCodec("ExplanationEvent").encode(EXPLANATION)
    schema = fastavro.parse_schema(json.loads(
        (REPO / "schemas/ExplanationEvent.avsc").read_text()))
    assert data[:2] == b"\xc3\x01"
    record = fastavro.schemaless_reader(io.BytesIO(data[10:]), schema)
    assert record["prediction_id"] == "p-1" and record["attributions"][0]["shap"] == 5.0


@pytest.mark.parametrize("data, words", [
    (b"", "not Avro single-object"),
    (b"\x00\x00\x00\x00\x01hello", "not Avro single-object"),
    (b"\xc3\x01" + b"\xff" * 8 + b"body", "unknown schema fingerprint"),
])
def test_decode_errors_say_what_is_wrong(data, words):
    with pytest.raises(DecodeError, match=words):
        SingleObjectCodec("PredictionEvent").decode(data)


def test_truncated_and_padded_bodies_are_decode_errors():
    codec = SingleObjectCodec("PredictionEvent")
    good = codec.encode(PREDICTION)
    with pytest.raises(DecodeError, match="malformed"):
        codec.decode(good[:-3])
    with pytest.raises(DecodeError, match="trailing"):
        codec.decode(good + b"\x00")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_random_bytes_only_ever_raise_decode_error(tail, with_header):
    codec = SingleObjectCodec("PredictionEvent")
    data = (codec.header + tail) if with_header else tail
    try:
        record = codec.decode(data)
    except DecodeError:
        return
    assert set(record) == {f["name"] for f in load_schema("PredictionEvent")["fields"]}


@functools.cache
def fuzz_codec() -> ConfluentCodec:
    """One codec on confluent-kafka's in-memory registry, with the schema registered: id 1 exists."""
    codec = ConfluentCodec("PredictionEvent", "mock://whystream-fuzz", "fuzz")
    codec.encode(PREDICTION)
    return codec


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_in_confluent_format_only_raise_decode_error(tail):
    codec = fuzz_codec()
    try:
        codec.decode(b"\x00\x00\x00\x00\x01" + tail)
    except DecodeError:
        pass
