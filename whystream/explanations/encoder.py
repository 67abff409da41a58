"""ExplanationEvents encoded a whole batch at a time, straight from arrays.

`ExplanationEncoder.encode(...)` takes what `build_explanations` takes (plus
the explained_at it would read from the clock) and returns, per row, the
single-object encoded ExplanationEvent: byte for byte what
`SingleObjectCodec("ExplanationEvent").encode(build_explanations(...)[i])`
writes (tests/core/wire/test_batch_codec.py checks it), without the per-event dicts,
the per-attribution dicts and the generic Avro writer. One compiled pass
writes every event: the attributions in model order, the top reasons (the
features that pushed toward the decision taken, strongest first, at most
TOP_REASONS, the same selection as `records.top_reasons`), for adverse
decisions the first MAX_PRINCIPAL_REASONS of those as principal reasons with
their pre-encoded code and text, the adverse reasons (toward the adverse
outcome, for every decision: the top reasons again for an adverse one), the
score check's model_score and score_mismatch, the broker's received_at, and
the fields around them.

Avro binary as written by fastavro: long = zigzag varint; string = long
length + UTF-8; double = 8 bytes little-endian; boolean = 1 byte; enum = long
symbol index; union = long branch index + value; array = long count + items +
0, or a lone 0 when empty.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from whystream.explanations.records import TOP_REASONS, redact_values, toward_sign
from whystream.models.reason_codes import MAX_PRINCIPAL_REASONS
from whystream.wire.avro_write import _put_bytes, _put_double, _put_long, avro_long
from whystream.wire.codecs import load_schema


_SHORT_LENGTHS = [avro_long(n) for n in range(256)]  # the length prefixes of short strings, made once


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    n = len(data)
    return (_SHORT_LENGTHS[n] if n < 256 else avro_long(n)) + data


def _string_array(texts: list[str]) -> bytes:
    """An Avro array of strings: one block of all items, then the closing 0."""
    return (avro_long(len(texts)) + b"".join(map(_string, texts)) if texts else b"") + b"\0"


def _texts(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The Avro string encodings (length + bytes) of `texts`, concatenated, and their offsets."""
    encoded = [_string(t) for t in texts]
    ends = np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)))
    blob = b"".join(encoded)
    return (np.frombuffer(blob, dtype=np.uint8) if blob else np.zeros(1, dtype=np.uint8),
            np.concatenate(([0], ends)).astype(np.int64))


@njit(nogil=True, cache=True, inline="always")
def _put_feature(out, o, names, name_at, j, x, s, cell, cell_bytes):
    o = _put_bytes(out, o, names, name_at[j], name_at[j + 1])
    if np.isnan(x):
        out[o] = 0  # union branch 0: null
        o += 1
    else:
        out[o] = 2  # union branch 1: double
        o = _put_double(out, o + 1, x, cell, cell_bytes)
    return _put_double(out, o, s, cell, cell_bytes)


@njit(nogil=True, cache=True, inline="always")
def _pick(shap, i, sign, top, top_n):
    """The largest attributions toward `sign`, ties in model order, only positive ones, into top; how many."""
    F = shap.shape[1]
    m = 0
    while m < top_n:
        best = -1
        for j in range(F):
            toward = sign * shap[i, j]
            if not toward > 0:
                continue
            taken = False
            for q in range(m):
                if top[q] == j:
                    taken = True
            if not taken and (best < 0 or toward > sign * shap[i, best]):
                best = j
        if best < 0:
            break
        top[m] = best
        m += 1
    return m


@njit(nogil=True, cache=True, inline="always")
def _put_reasons(out, o, names, name_at, top, m, X, shap, i, cell, cell_bytes):
    """An Avro array of m Reasons (features top[:m]) and its closing 0."""
    if m > 0:
        o = _put_long(out, o, m)
        for q in range(m):
            o = _put_feature(out, o, names, name_at, top[q], X[i, top[q]], shap[i, top[q]], cell, cell_bytes)
    out[o] = 0
    return o + 1


_PRINCIPAL = MAX_PRINCIPAL_REASONS
CHAMPION_TAIL = b"\x00\x00\x00"  # role CHAMPION, champion_prediction_id null, request_id null


@njit(nogil=True, cache=True)
def _encode(header, head, output_space, tail, names, name_at, ids, id_at, decisions, decision_at, strata, stratum_at,
            event_time, explained_at, base_value, raw, X, shap, sign, adverse, score, threshold, reason, weight, source,
            redis_available, top_n, classes, codes, code_at, codes_version, up, received_at, model_score, mismatch,
            out, ends):
    cell = np.zeros(1, dtype=np.float64)
    cell_bytes = cell.view(np.uint8)
    n, F = X.shape
    top = np.empty(top_n, dtype=np.int64)
    o = 0
    for i in range(n):
        o = _put_bytes(out, o, header, 0, header.shape[0])
        o = _put_bytes(out, o, ids, id_at[i], id_at[i + 1])
        o = _put_bytes(out, o, head, 0, head.shape[0])  # model name, version, explainer, explainer version
        o = _put_long(out, o, event_time[i])
        o = _put_long(out, o, explained_at)
        o = _put_bytes(out, o, output_space, 0, output_space.shape[0])
        o = _put_double(out, o, base_value[i], cell, cell_bytes)
        o = _put_double(out, o, raw[i], cell, cell_bytes)
        if F > 0:
            o = _put_long(out, o, F)
            for j in range(F):
                o = _put_feature(out, o, names, name_at, j, X[i, j], shap[i, j], cell, cell_bytes)
        out[o] = 0
        o += 1
        m = _pick(shap, i, sign[i], top, top_n)  # top reasons: toward the decision taken
        o = _put_reasons(out, o, names, name_at, top, m, X, shap, i, cell, cell_bytes)
        o = _put_double(out, o, score[i], cell, cell_bytes)
        o = _put_bytes(out, o, decisions, decision_at[i], decision_at[i + 1])
        o = _put_double(out, o, threshold[i], cell, cell_bytes)
        o = _put_long(out, o, reason[i])
        o = _put_double(out, o, weight[i], cell, cell_bytes)
        o = _put_bytes(out, o, strata, stratum_at[i], stratum_at[i + 1])
        o = _put_long(out, o, source[i])
        out[o] = 1 if redis_available else 0
        o += 1
        o = _put_double(out, o, float(explained_at - event_time[i]), cell, cell_bytes)  # latency_ms
        o = _put_bytes(out, o, tail, 0, tail.shape[0])  # worker
        if classes[i] < 0:  # explained_class: union branch 0 (null) or 1 (int)
            out[o] = 0
            o += 1
        else:
            out[o] = 2
            o = _put_long(out, o + 1, classes[i])
        p = min(m, _PRINCIPAL) if adverse[i] else 0
        if p > 0:  # principal reasons: code, text, then feature, value, shap like a reason
            o = _put_long(out, o, p)
            for q in range(p):
                o = _put_bytes(out, o, codes, code_at[top[q]], code_at[top[q] + 1])
                o = _put_feature(out, o, names, name_at, top[q], X[i, top[q]], shap[i, top[q]], cell, cell_bytes)
        out[o] = 0
        o += 1
        o = _put_bytes(out, o, codes_version, 0, codes_version.shape[0])  # reason_codes_version .. request_id
        # version 4: adverse_reasons (the top reasons again for an adverse decision), requested_by null
        if not adverse[i]:
            m = _pick(shap, i, up, top, top_n)
        o = _put_reasons(out, o, names, name_at, top, m, X, shap, i, cell, cell_bytes)
        out[o] = 0
        o += 1
        if received_at[i] < 0:  # received_at: union null / long
            out[o] = 0
            o += 1
        else:
            out[o] = 2
            o = _put_long(out, o + 1, received_at[i])
        if np.isnan(model_score[i]):  # model_score: union null / double
            out[o] = 0
            o += 1
        else:
            out[o] = 2
            o = _put_double(out, o + 1, model_score[i], cell, cell_bytes)
        out[o] = 1 if mismatch[i] else 0
        out[o + 1] = 0  # features_source null
        o += 2
        ends[i] = o


class ExplanationEncoder:
    """Single-object encoded ExplanationEvents for a batch of rows of one model."""

    def __init__(self, header: bytes, explainer: str):
        schema = {f["name"]: f["type"] for f in load_schema("ExplanationEvent")["fields"]}
        self._reasons = {s: i for i, s in enumerate(schema["sampling_reason"]["symbols"])}
        self._sources = {s: i for i, s in enumerate(schema["source"]["symbols"])}
        self.header = np.frombuffer(header, dtype=np.uint8)
        self.explainer = explainer
        self._names: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}
        self._codes: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def warm_up(self) -> None:
        """Load (or compile) the encoder now rather than on the first explanation."""
        empty_f, empty_i = np.zeros(0), np.zeros(0, dtype=np.int64)
        nothing = np.zeros(1, dtype=np.uint8)
        _encode(self.header, nothing, nothing, nothing, nothing, np.zeros(1, dtype=np.int64), nothing,
                np.zeros(1, dtype=np.int64), nothing, np.zeros(1, dtype=np.int64), nothing, np.zeros(1, dtype=np.int64),
                empty_i, 0, empty_f, empty_f, np.zeros((0, 0)), np.zeros((0, 0)), empty_f, np.zeros(0, dtype=np.bool_),
                empty_f, empty_f, empty_i, empty_f, empty_i, False, TOP_REASONS, empty_i, nothing,
                np.zeros(1, dtype=np.int64), nothing, 1.0, empty_i, empty_f, np.zeros(0, dtype=np.bool_), nothing,
                empty_i)

    def _feature_names(self, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        key = tuple(names)
        if key not in self._names:
            self._names[key] = _texts(names)
        return self._names[key]

    def _reason_codes(self, model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per feature the Avro encoding of (code, text), concatenated, with offsets; and the
        encoded reason_codes_version union. Made once per model version."""
        if model.version not in self._codes:
            pairs = model.reason_codes or tuple((f, f) for f in model.feature_names)
            blob, at = _texts([c for pair in pairs for c in pair])
            version = model.reason_codes_version
            encoded = b"\x00" if version is None else b"\x02" + _string(version)
            self._codes[model.version] = (blob, np.ascontiguousarray(at[::2]), np.frombuffer(encoded, dtype=np.uint8))
        return self._codes[model.version]

    def encode(self, model, records: list[dict], X: np.ndarray, attributions, reasons: list[str],
               weights: list[float], strata: list[str], *, adverse, explainer_version: str,
               redis_available: bool, worker: str, explained_at: int, redacted=frozenset(),
               model_scores=None, mismatches=None) -> list[bytes]:
        """The events `build_explanations` would make (with `explained_at`), encoded. `model_scores`
        (NaN: not recomputed) and `mismatches`: the score check's, per row (None: none made)."""
        n = len(records)
        if n == 0:
            return []
        X, redacted_names = redact_values(model.feature_names, X, redacted)
        X = np.ascontiguousarray(X, dtype=np.float64)
        shap = np.ascontiguousarray(attributions.shap, dtype=np.float64)
        names, name_at = self._feature_names(model.feature_names)
        ids, id_at = _texts([r["prediction_id"] for r in records])
        decisions, decision_at = _texts([r["decision"] for r in records])
        strata_blob, stratum_at = _texts(strata)
        head = np.frombuffer(_string(model.name) + _string(model.version) + _string(self.explainer)
                             + _string(explainer_version), dtype=np.uint8)
        output_space = np.frombuffer(_string(model.kind.output_space), dtype=np.uint8)
        tail = np.frombuffer(_string(worker), dtype=np.uint8)
        codes, code_at, codes_version = self._reason_codes(model)
        # the last fields, constant per model and worker: reason_codes_version, redacted_features, and (version 3)
        # role CHAMPION (enum index 0), champion_prediction_id and request_id null (union branch 0)
        codes_version = np.concatenate([codes_version, np.frombuffer(_string_array(redacted_names) + CHAMPION_TAIL,
                                                                     dtype=np.uint8)])
        widest = int(name_at[-1]) + 27 * X.shape[1]  # names, union branch, value and shap of every feature
        size = n * (len(self.header) + len(head) + len(output_space) + len(tail) + widest * 4 + len(codes)
                    + len(codes_version) + 170) + len(ids) + len(decisions) + len(strata_blob)
        adverse_rows = np.fromiter((r["decision"] in adverse for r in records), dtype=np.bool_, count=n)
        up, down = toward_sign(model, True), toward_sign(model, False)
        out = np.empty(size, dtype=np.uint8)
        ends = np.empty(n, dtype=np.int64)
        _encode(self.header, head, output_space, tail, names, name_at, ids, id_at, decisions, decision_at,
                strata_blob, stratum_at,
                np.fromiter((r["event_time"] for r in records), dtype=np.int64, count=n), int(explained_at),
                np.asarray(attributions.base_value, dtype=np.float64), np.asarray(attributions.raw, dtype=np.float64),
                X, shap, np.where(adverse_rows, up, down), adverse_rows,
                np.fromiter((r["score"] for r in records), dtype=np.float64, count=n),
                np.fromiter((r["threshold"] for r in records), dtype=np.float64, count=n),
                np.fromiter((self._reasons[r] for r in reasons), dtype=np.int64, count=n),
                np.asarray(weights, dtype=np.float64),
                np.fromiter((self._sources[s] for s in attributions.source), dtype=np.int64, count=n),
                bool(redis_available), TOP_REASONS, np.asarray(attributions.classes, dtype=np.int64), codes, code_at,
                codes_version, float(up),
                np.fromiter((-1 if r.get("received_at") is None else r["received_at"] for r in records),
                            dtype=np.int64, count=n),
                np.full(n, np.nan) if model_scores is None else np.asarray(model_scores, dtype=np.float64),
                np.zeros(n, dtype=np.bool_) if mismatches is None else np.asarray(mismatches, dtype=np.bool_),
                out, ends)
        data = out.tobytes()
        starts = [0, *ends[:-1].tolist()]
        return [data[a:b] for a, b in zip(starts, ends.tolist())]
