"""The one field -> column mapping of the sink: ExplanationEvent fields, in Avro order, to the
columns of `explanations`, and those columns as ClickHouse RowBinary.

FIELDS lists every field of schemas/ExplanationEvent.avsc in writer order with
how it is read (`op`) and the columns it fills; `decoder` turns it into
the op codes its compiled decoder runs, and the per-message path
(`rows.decode_messages`) writes the same columns from the decoded dicts
(`explanation_rows.explanation_columns`) with `encode_rows`. To add a field: append
it to the schema (with a default), to FIELDS and to explanation_columns, and
its column in a migration; the property test (tests/jobs/sink/test_sink_decode.py)
checks both paths still write the same bytes.

RowBinary (ClickHouse's row format): String = unsigned LEB128 length + bytes;
Float64, Int64, DateTime64(3) = 8 bytes little-endian; Int32 = 4; Bool = 1;
Nullable(T) = 1 byte (1 = NULL) then T unless NULL; Array(T) = LEB128 count
then the items. Nested columns are separate arrays.
"""

from __future__ import annotations

import struct

import numpy as np

from whystream.wire.avro_write import varint

# op: how a field is read from Avro. STR: string; TIME: long ms (0 .. 2100); DOUBLE: finite double;
# WEIGHT: finite double > 0; ENUM: symbol index (written as the symbol's text); BOOL; NULL_INT: union
# null/int; NULL_STR: union null/string ('' for null); STRS: array of strings; ATTRS: array of
# {feature, value: null/double, shap}; NULL_TIME: union null/long ms (0 .. 2100); NULL_DOUBLE: union
# null/finite double; REASONS: array of {code, text, feature, value, shap};
# POS and TOPIC read nothing: where the message was read (partition, offset; topic, topic id).
FIELDS = [
    ("prediction_id", "STR", ["prediction_id"]),
    ("model_name", "STR", ["model_name"]),
    ("model_version", "STR", ["model_version"]),
    ("explainer", "STR", ["explainer"]),
    ("explainer_version", "STR", ["explainer_version"]),
    ("event_time", "TIME", ["event_time"]),
    ("explained_at", "TIME", ["explained_at"]),
    ("output_space", "STR", ["output_space"]),
    ("base_value", "DOUBLE", ["base_value"]),
    ("raw_score", "DOUBLE", ["raw_score"]),
    ("attributions", "ATTRS", ["attributions.feature", "attributions.value", "attributions.shap"]),
    ("top_reasons", "ATTRS", ["top_reasons.feature", "top_reasons.value", "top_reasons.shap"]),
    ("score", "DOUBLE", ["score"]),
    ("decision", "STR", ["decision"]),
    ("threshold", "DOUBLE", ["threshold"]),
    ("sampling_reason", "ENUM", ["sampling_reason"]),
    ("inclusion_weight", "WEIGHT", ["inclusion_weight"]),
    ("stratum", "STR", ["stratum"]),
    ("source", "ENUM", ["source"]),
    ("redis_available", "BOOL", ["redis_available"]),  # `cached` before ExplanationEvent v3
    ("latency_ms", "DOUBLE", ["latency_ms"]),
    ("worker", "STR", ["worker"]),
    (None, "POS", ["kafka_partition", "kafka_offset"]),
    ("explained_class", "NULL_INT", ["explained_class"]),
    ("principal_reasons", "REASONS", ["principal_reasons.code", "principal_reasons.text", "principal_reasons.feature",
                                      "principal_reasons.value", "principal_reasons.shap"]),
    ("reason_codes_version", "NULL_STR", ["reason_codes_version"]),
    ("redacted_features", "STRS", ["redacted_features"]),
    ("role", "ENUM", ["role"]),
    ("champion_prediction_id", "NULL_STR", ["champion_prediction_id"]),
    ("request_id", "NULL_STR", ["request_id"]),
    ("adverse_reasons", "ATTRS", ["adverse_reasons.feature", "adverse_reasons.value", "adverse_reasons.shap"]),
    ("requested_by", "NULL_STR", ["requested_by"]),
    ("received_at", "NULL_TIME", ["received_at"]),
    ("model_score", "NULL_DOUBLE", ["model_score"]),
    ("score_mismatch", "BOOL", ["score_mismatch"]),
    ("features_source", "NULL_STR", ["features_source"]),
    (None, "TOPIC", ["kafka_topic", "kafka_topic_id"]),
]

INSERT_COLUMNS = [column for _, _, columns in FIELDS for column in columns]

# RowBinary type of each column, by the op that fills it.
_TYPES = {"STR": ["str"], "TIME": ["i64"], "DOUBLE": ["f64"], "WEIGHT": ["f64"], "ENUM": ["str"], "BOOL": ["bool"],
          "NULL_INT": ["ni32"], "NULL_TIME": ["ni64"], "NULL_DOUBLE": ["nf64"], "NULL_STR": ["str"], "STRS": ["astr"], "ATTRS": ["astr", "anf64", "af64"],
          "REASONS": ["astr", "astr", "astr", "anf64", "af64"], "POS": ["i32", "i64"], "TOPIC": ["str", "str"]}
COLUMN_TYPES = [t for _, op, _ in FIELDS for t in _TYPES[op]]


def _text(value: str) -> bytes:
    data = value.encode("utf-8")
    return varint(len(data)) + data


def _nullable_double(value) -> bytes:
    return b"\x01" if value is None else b"\x00" + struct.pack("<d", value)


_WRITE = {
    "str": _text,
    "i64": lambda v: struct.pack("<q", int(v)),
    "i32": lambda v: struct.pack("<i", int(v)),
    "f64": lambda v: struct.pack("<d", float(v)),
    "bool": lambda v: b"\x01" if v else b"\x00",
    "ni64": lambda v: b"\x01" if v is None else b"\x00" + struct.pack("<q", int(v)),
    "nf64": _nullable_double,
    "ni32": lambda v: b"\x01" if v is None else b"\x00" + struct.pack("<i", int(v)),
    "astr": lambda v: varint(len(v)) + b"".join(map(_text, v)),
    "af64": lambda v: varint(len(v)) + struct.pack(f"<{len(v)}d", *v),
    "anf64": lambda v: varint(len(v)) + b"".join(map(_nullable_double, v)),
}


def encode_rows(columns: list[list]) -> tuple[bytes, np.ndarray]:
    """Columns (INSERT_COLUMNS order) as RowBinary rows: (all rows, end of each row in the bytes)."""
    writers = [_WRITE[t] for t in COLUMN_TYPES]
    rows = [b"".join(write(value) for write, value in zip(writers, row)) for row in zip(*columns)]
    ends = np.cumsum(np.fromiter(map(len, rows), dtype=np.int64, count=len(rows)))
    return b"".join(rows), ends
