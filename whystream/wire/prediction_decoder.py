"""PredictionEvents decoded a whole batch at a time, straight into columns.

`PredictionDecoder.decode(values, stratum_key)` makes one compiled pass
(numba) over the concatenated message bytes and fills per-event columns:
prediction_id, decision and stratum (as text), event_time, score, threshold,
priority, decision_class (NO_CLASS for null), the model each event names (a slot in the decoder's model tables)
and the feature matrix in that model's column order. No per-event Python
object is made but the three strings.

The Avro binary encoding read here (schemas/PredictionEvent.avsc, version 3,
and version 2, which is version 3 without the trailing decision_class, so
that producers still writing version 2 keep the fast path; behind the
single-object header C3 01 + 8-byte fingerprint):
- long: zigzag varint; string: long length, then UTF-8 bytes; double: 8 bytes
  little-endian; boolean: one byte, 0 or 1;
- map: blocks of (long count, count x (string key, value)) ended by a zero
  count (a negative count is followed by the block's size in bytes);
- union ["null", "double"] / ["null", "int"]: long branch index, then the branch's value
  (an int is a zigzag varint like a long).

The fast path only accepts what it can judge exactly as the full decoder
(SingleObjectCodec) and the Validator would; each event is marked
- OK: decoded and valid: a registered model (looked up in the tables), every
  feature name one of the model's (matched in the model's order first: the
  next name is tried first, then all of them), finite values, a non-blank
  ASCII prediction_id, finite score and threshold, a decision and segment in
  valid UTF-8 without NUL (`_utf8_text`, Python's strict decoder's rule);
- NO_MODEL: its model (name, version) is not in the tables yet; the caller
  loads it (or not) and decodes again;
- SLOW: anything else: another writer schema (e.g. version 1), any doubt about
  the bytes, a non-ASCII prediction_id, text that is not valid UTF-8 or holds a
  NUL, negative map block counts, a negative or
  out-of-int decision_class, a problem the Validator reports. The caller runs the full decoder and the Validator on
  these, message by message, so errors and dead-letter reasons are exactly
  theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from whystream.wire.avro_read import (
    _ascii_text,
    _double,
    _long,
    _same,
    _same_words,
    _string,
    _utf8_text,
    _word,
    packed_words,
    word_padding,
)

OK, SLOW, NO_MODEL = 0, 1, 2
NO_CLASS = -1  # decision_class null
SEPARATOR = "\x00"  # between the text fields in the decoder's text output (never inside one: NUL means SLOW)


@dataclass
class Decoded:
    """Columns of one decoded batch, one row per message (rows not OK hold junk)."""

    status: np.ndarray  # int8: OK, SLOW, NO_MODEL
    slot: np.ndarray  # int32: the model's slot in the decoder's tables (-1 if unknown)
    X: np.ndarray  # float64 [n, widest model]: features in model column order, NaN = missing
    event_time: np.ndarray  # int64 ms
    score: np.ndarray
    threshold: np.ndarray
    priority: np.ndarray  # bool
    decision_class: np.ndarray  # int64; NO_CLASS for null
    prediction_ids: list[str]
    decisions: list[str]
    strata: list[str]
    model_at: np.ndarray  # int64 [n, 4]: byte ranges (start, end) of model_name and model_version in `data`
    data: bytes  # the concatenated messages (then a few bytes of padding)


@njit(nogil=True, cache=True)
def _decode(buf, words, starts, ends, fingerprint, previous, blob, model_names, model_versions, feature_names,
            feature_words, model_features, stratum_key, status, slot, X, event_time, score, threshold, priority, decision_class, model_at, text):
    """Fill the columns of messages buf[starts[i]:ends[i]]; returns the length of `text` used.
    `words`: buf as uint64 (padded, avro_read.word_padding): feature names and values, most of
    an event's bytes, are read eight bytes at a time."""
    bits = np.zeros(1, dtype=np.uint64)
    value = bits.view(np.float64)
    n_models = model_names.shape[0]
    has_stratum = stratum_key.shape[0] > 0
    t = 0
    for i in range(starts.shape[0]):
        p, end = starts[i], ends[i]
        status[i] = SLOW
        slot[i] = -1
        t_row = t
        # Header: magic and the current schema's fingerprint.
        if end - p < 10 or buf[p] != 0xC3 or buf[p + 1] != 0x01:
            text[t:t + 3] = 0
            t += 3
            continue
        same, old = True, previous[8] == 1  # the current schema's fingerprint; version 2's (no decision_class)
        for k in range(8):
            if buf[p + 2 + k] != fingerprint[k]:
                same = False
            if buf[p + 2 + k] != previous[k]:
                old = False
        same = same or old
        p += 10
        # prediction_id, model_name, model_version, event_time
        id_start, id_stop = _string(buf, p, end)
        if not same or id_stop < 0 or not _ascii_text(buf, id_start, id_stop):
            text[t:t + 3] = 0
            t += 3
            continue
        blank = True
        for k in range(id_start, id_stop):
            if buf[k] > 0x20:
                blank = False
        name_start, name_stop = _string(buf, id_stop, end)
        if blank or name_stop < 0:
            text[t:t + 3] = 0
            t += 3
            continue
        version_start, version_stop = _string(buf, name_stop, end)
        if version_stop < 0:
            text[t:t + 3] = 0
            t += 3
            continue
        model_at[i, 0], model_at[i, 1], model_at[i, 2], model_at[i, 3] = name_start, name_stop, version_start, version_stop
        when, p = _long(buf, version_stop, end)
        if p < 0:
            text[t:t + 3] = 0
            t += 3
            continue
        m = -1
        for s in range(n_models):
            if (_same(buf, name_start, name_stop, blob, model_names[s, 0], model_names[s, 1])
                    and _same(buf, version_start, version_stop, blob, model_versions[s, 0], model_versions[s, 1])):
                m = s
                break
        if m < 0:
            status[i] = NO_MODEL
            text[t:t + 3] = 0
            t += 3
            continue
        # features: map of name -> union {null, double}
        first, n_features = model_features[m, 0], model_features[m, 1]
        good = True
        expected = 0
        while good:
            count, p = _long(buf, p, end)
            if p < 0 or count < 0:
                good = False
                break
            if count == 0:
                break
            for _ in range(count):
                key_start, key_stop = _string(buf, p, end)
                if key_stop < 0:
                    good = False
                    break
                column = -1
                f = first + expected
                if expected < n_features and _same_words(words, key_start, key_stop,
                                                         feature_names[f, 1] - feature_names[f, 0], feature_words[f]):
                    column = expected
                else:
                    for j in range(n_features):
                        if _same(buf, key_start, key_stop, blob, feature_names[first + j, 0], feature_names[first + j, 1]):
                            column = j
                            break
                if column < 0:
                    good = False
                    break
                expected = column + 1
                branch, p = _long(buf, key_stop, end)
                if p < 0:
                    good = False
                    break
                if branch == 0:
                    X[i, column] = np.nan
                elif branch == 1 and p + 8 <= end:
                    bits[0] = _word(words, p)
                    v = value[0]
                    p += 8
                    if not np.isfinite(v):
                        good = False
                        break
                    X[i, column] = v
                else:
                    good = False
                    break
        if not good or p + 8 > end:
            text[t:t + 3] = 0
            t += 3
            continue
        # score, decision, threshold
        s_value = _double(buf, p, bits, value)
        decision_start, decision_stop = _string(buf, p + 8, end)
        if decision_stop < 0 or decision_stop + 8 > end or not _utf8_text(buf, decision_start, decision_stop):
            text[t:t + 3] = 0
            t += 3
            continue
        th_value = _double(buf, decision_stop, bits, value)
        p = decision_stop + 8
        if not (np.isfinite(s_value) and np.isfinite(th_value)):
            text[t:t + 3] = 0
            t += 3
            continue
        # segment: map of string -> string; the stratum is the (last) value under stratum_key
        stratum_start, stratum_stop = 0, 0
        while good:
            count, p = _long(buf, p, end)
            if p < 0 or count < 0:
                good = False
                break
            if count == 0:
                break
            for _ in range(count):
                key_start, key_stop = _string(buf, p, end)
                if key_stop < 0:
                    good = False
                    break
                value_start, value_stop = _string(buf, key_stop, end)
                if (value_stop < 0 or not _utf8_text(buf, key_start, key_stop)
                        or not _utf8_text(buf, value_start, value_stop)):
                    good = False
                    break
                p = value_stop
                if has_stratum and _same(buf, key_start, key_stop, stratum_key, 0, stratum_key.shape[0]):
                    stratum_start, stratum_stop = value_start, value_stop
        # priority, decision_class (union null / int; version 2 has none), and nothing after it
        if not good or p >= end or buf[p] > 1:
            text[t:t + 3] = 0
            t += 3
            continue
        flag = buf[p]
        cls = np.int64(NO_CLASS)
        if old:
            branch, p = np.int64(0), p + 1
        else:
            branch, p = _long(buf, p + 1, end)
        if p >= 0 and branch == 1:
            cls, p = _long(buf, p, end)
            if cls < 0 or cls > 2147483647:
                p = -1
        elif branch != 0:
            p = -1
        if p != end:
            text[t:t + 3] = 0
            t += 3
            continue
        status[i] = OK
        slot[i] = m
        event_time[i] = when
        score[i] = s_value
        threshold[i] = th_value
        priority[i] = flag == 1
        decision_class[i] = cls
        t = t_row
        for k in range(id_start, id_stop):
            text[t] = buf[k]
            t += 1
        text[t] = 0
        t += 1
        for k in range(decision_start, decision_stop):
            text[t] = buf[k]
            t += 1
        text[t] = 0
        t += 1
        for k in range(stratum_start, stratum_stop):
            text[t] = buf[k]
            t += 1
        text[t] = 0
        t += 1
    return t


def _joined(values: list[bytes]) -> tuple[np.ndarray, bytes]:
    """Each value's length, and the values end to end, padded for the kernel's word reads."""
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    return lengths, b"".join([*values, word_padding(int(lengths.sum()))])


class PredictionDecoder:
    """Batch decoder for single-object encoded PredictionEvents of the current schema.

    `fingerprint`: the 8 fingerprint bytes of the current writer schema; `previous`:
    those of version 2 (no decision_class), whose events are read as decision_class
    null (None: only the current schema takes the fast path). Models
    are added with `add_model` (the caller decides which exist); their feature
    names fix the column order of X for their events.
    """

    def __init__(self, fingerprint: bytes, previous: bytes | None = None):
        if len(fingerprint) != 8 or (previous is not None and len(previous) != 8):
            raise ValueError("fingerprints must be 8 bytes")
        self.fingerprint = np.frombuffer(fingerprint, dtype=np.uint8).copy()
        # (fingerprint, 0) or (version 2's fingerprint, 1): the kernel reads the flag
        self.previous = np.frombuffer((previous or bytes(8)) + bytes([previous is not None]), dtype=np.uint8).copy()
        self.models: list = []  # RegisteredModel per slot
        self._slots: dict[tuple[str, str], int] = {}
        self._tables()

    def add_model(self, name: str, version: str, model) -> int:
        """The slot of the model that events naming (name, version) use."""
        key = (name, version)
        if key not in self._slots:
            self._slots[key] = len(self.models)
            self.models.append(model)
            self._tables()
        return self._slots[key]

    def _tables(self) -> None:
        blob = bytearray()

        def put(text: str) -> tuple[int, int]:
            start = len(blob)
            blob.extend(text.encode("utf-8"))
            return start, len(blob)

        names, versions, features, per_model = [], [], [], []
        for (name, version), model in zip(self._slots, self.models):
            names.append(put(name))
            versions.append(put(version))
            per_model.append((len(features), len(model.feature_names)))
            features.extend(put(f) for f in model.feature_names)
        as_ranges = lambda pairs: np.asarray(pairs, dtype=np.int64).reshape(len(pairs), 2)
        self._blob = np.frombuffer(bytes(blob) or b"\x00", dtype=np.uint8)
        self._names, self._versions = as_ranges(names), as_ranges(versions)
        self._features, self._per_model = as_ranges(features), as_ranges(per_model)
        self._feature_words = packed_words([bytes(blob[a:b]) for a, b in features])
        self.width = max((len(m.feature_names) for m in self.models), default=0)

    def decode(self, values: list[bytes], stratum_key: str = "") -> Decoded:
        n = len(values)
        try:
            lengths, data = _joined(values)
        except TypeError:  # a value that is not bytes (None, say): the slow path rejects it
            values = [v if isinstance(v, (bytes, bytearray)) else b"" for v in values]
            lengths, data = _joined(values)
        ends = np.cumsum(lengths)
        starts = ends - lengths
        buf = np.frombuffer(data, dtype=np.uint8)
        status = np.empty(n, dtype=np.int8)
        slot = np.empty(n, dtype=np.int32)
        X = np.full((n, max(self.width, 1)), np.nan)
        event_time = np.zeros(n, dtype=np.int64)
        score, threshold = np.zeros(n), np.zeros(n)
        priority = np.zeros(n, dtype=bool)
        decision_class = np.full(n, NO_CLASS, dtype=np.int64)
        model_at = np.zeros((n, 4), dtype=np.int64)
        text = np.empty(len(data) + 3 * n, dtype=np.uint8)
        used = _decode(buf, buf.view(np.uint64), starts, ends, self.fingerprint, self.previous, self._blob, self._names,
                       self._versions, self._features, self._feature_words, self._per_model, np.frombuffer(stratum_key.encode(), dtype=np.uint8), status, slot, X,
                       event_time, score, threshold, priority, decision_class, model_at, text)
        fields = text[:used].tobytes().decode("utf-8").split(SEPARATOR)  # checked: valid UTF-8, no NUL
        return Decoded(status, slot, X, event_time, score, threshold, priority, decision_class,
                       fields[0:3 * n:3], fields[1:3 * n:3],
                       fields[2:3 * n:3], model_at, data)
