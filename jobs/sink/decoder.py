"""ExplanationEvents decoded a whole batch at a time, straight into ClickHouse's row format.

`BatchDecoder(codec)(messages, topic_ids)` makes one compiled pass (numba,
without the GIL) over the concatenated message bytes, following the op codes
of `columns.FIELDS`: every field is read from Avro, checked as
`rows.problem` checks it, and written as its RowBinary columns, so the
insert needs no Python object per value. Only the prediction_id, the model and
the event time come back to Python (the duplicate filter and the ledger use
them), and whether the row is an answer to an explain request
(`rows.is_answer`: sampling_reason ON_DEMAND or a non-empty request_id),
which the sink drops. The result is the `Rows` the per-message path (`rows.decode_messages`)
makes, byte for byte (tests/jobs/sink/test_sink_decode.py).

The Avro read here is the one whystream/wire/prediction_decoder.py reads (it reuses its
readers): single-object header C3 01 + the current schema's 8-byte
fingerprint; long = zigzag varint; string = long length + UTF-8; double = 8
bytes little-endian; boolean = 1 byte; enum = long index; union = long branch
+ value; array = blocks of (long count, items) ended by a zero count.

A message the fast path cannot judge exactly goes to the per-message path,
which decodes, checks and dead-letters it with the reference's own reasons:
another writer schema (an older version, the Confluent wire format), text that
is not valid UTF-8 or holds a NUL (whystream/wire/avro_read.py's `_utf8_text`: what Python's strict decoder
refuses is the reference's to dead-letter), a prediction_id that is not plain ASCII
(its blankness is `str.strip`'s, Unicode spaces included), a negative array block
count, or anything `problem` would object to. Any other UTF-8 text (accented
reason texts, feature names, strata) stays on the fast path.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from whystream.jobs.sink.columns import FIELDS, _text
from whystream.jobs.sink.rows import ANSWER_REASON, LATEST_MS, Rows, decode_messages
from whystream.kafka.messages import RawMessage
from whystream.wire.avro_read import _ascii_text, _double, _long, _string, _utf8_text
from whystream.wire.avro_write import _put_bytes, _put_varint
from whystream.wire.codecs import load_schema, schema_fingerprint

OPS = ("STR", "TIME", "DOUBLE", "WEIGHT", "ENUM", "BOOL", "NULL_INT", "NULL_STR", "STRS", "ATTRS", "REASONS",
       "POS", "TOPIC", "NULL_TIME", "NULL_DOUBLE")
(STR, TIME, DOUBLE, WEIGHT, ENUM, BOOL, NULL_INT, NULL_STR, STRS, ATTRS, REASONS, POS, TOPIC, NULL_TIME,
 NULL_DOUBLE) = range(len(OPS))
CAPTURED = ("prediction_id", "model_name", "model_version")  # text that comes back to Python
NO_MARK, NON_EMPTY = -1, 0  # marks[k]: the ENUM symbol index, or NON_EMPTY (a NULL_STR), that makes an answer
OK, SLOW = 0, 1


@njit(nogil=True, cache=True, inline="always")
def _put_int(out, q, v, size):
    u = np.uint64(v)
    for _ in range(size):
        out[q] = u & np.uint64(0xFF)
        u >>= np.uint64(8)
        q += 1
    return q


@njit(nogil=True, cache=True, inline="always")
def _finite_at(buf, p, bits, value):
    v = _double(buf, p, bits, value)
    return np.isfinite(v)


@njit(nogil=True, cache=True, inline="always")
def _blank(buf, a, b):
    for k in range(a, b):
        c = buf[k]
        if not (c == 0x20 or 0x09 <= c <= 0x0D or 0x1C <= c <= 0x1F):
            return False
    return True


@njit(nogil=True, cache=True)
def _records(buf, p, end, n_strings, scratch, bits, value):
    """Read an array of records (n_strings strings, a null/double value, a double shap) into
    scratch rows: string ranges, value position (-1: null), shap position. (count, p); p < 0: slow."""
    j = 0
    while True:
        count, p = _long(buf, p, end)
        if p < 0 or count < 0:
            return 0, -1
        if count == 0:
            return j, p
        for _ in range(count):
            if j >= scratch.shape[0]:
                return 0, -1
            for s in range(n_strings):
                a, b = _string(buf, p, end)
                if b < 0 or not _utf8_text(buf, a, b):
                    return 0, -1
                scratch[j, 2 * s], scratch[j, 2 * s + 1] = a, b
                p = b
            branch, p = _long(buf, p, end)
            if p < 0 or branch < 0 or branch > 1:
                return 0, -1
            scratch[j, 2 * n_strings] = -1
            if branch == 1:
                if p + 8 > end or not _finite_at(buf, p, bits, value):
                    return 0, -1
                scratch[j, 2 * n_strings] = p
                p += 8
            if p + 8 > end or not _finite_at(buf, p, bits, value):
                return 0, -1
            scratch[j, 2 * n_strings + 1] = p
            p += 8
            j += 1


@njit(nogil=True, cache=True)
def _put_records(out, q, buf, scratch, count, n_strings):
    """The records read by _records as RowBinary arrays: each string, then values, then shaps."""
    for s in range(n_strings):
        q = _put_varint(out, q, np.uint64(count))
        for j in range(count):
            a, b = scratch[j, 2 * s], scratch[j, 2 * s + 1]
            q = _put_varint(out, q, np.uint64(b - a))
            q = _put_bytes(out, q, buf, a, b)
    q = _put_varint(out, q, np.uint64(count))
    for j in range(count):
        at = scratch[j, 2 * n_strings]
        if at < 0:
            out[q] = 1
            q += 1
        else:
            out[q] = 0
            q = _put_bytes(out, q + 1, buf, at, at + 8)
    q = _put_varint(out, q, np.uint64(count))
    for j in range(count):
        at = scratch[j, 2 * n_strings + 1]
        q = _put_bytes(out, q, buf, at, at + 8)
    return q


@njit(nogil=True, cache=True)
def _transcode(buf, starts, ends, fingerprint, ops, captures_at, symbols, symbol_at, enum_first, partitions,
               offsets, topic_of, topics, topic_at, latest, marks, out, row_ends, status, captured, times, answers,
               scratch):
    bits = np.zeros(1, dtype=np.uint64)
    value = bits.view(np.float64)
    q = 0
    for i in range(starts.shape[0]):
        row_start = q
        status[i] = SLOW
        answers[i] = False
        p, end = starts[i], ends[i]
        good = end - p >= 10 and buf[p] == 0xC3 and buf[p + 1] == 0x01
        for k in range(8):
            if good and buf[p + 2 + k] != fingerprint[k]:
                good = False
        p += 10
        n_enum = 0
        for k in range(ops.shape[0]):
            if not good:
                break
            op = ops[k]
            if op == STR:
                a, b = _string(buf, p, end)
                if k == 0:  # the prediction_id: ASCII, so its blankness is str.strip's
                    text_ok = _ascii_text(buf, a, b) and not _blank(buf, a, b)
                else:
                    text_ok = _utf8_text(buf, a, b)
                if b < 0 or not text_ok:
                    good = False
                    break
                c = captures_at[k]
                if c >= 0:
                    captured[i, 2 * c], captured[i, 2 * c + 1] = a, b
                q = _put_bytes(out, _put_varint(out, q, np.uint64(b - a)), buf, a, b)
                p = b
            elif op == TIME:
                v, p = _long(buf, p, end)
                if p < 0 or v < 0 or v >= latest:
                    good = False
                    break
                if captures_at[k] >= 0:
                    times[i] = v
                q = _put_int(out, q, v, 8)
            elif op == DOUBLE or op == WEIGHT:
                if p + 8 > end:
                    good = False
                    break
                v = _double(buf, p, bits, value)
                if not np.isfinite(v) or (op == WEIGHT and v <= 0):
                    good = False
                    break
                q = _put_bytes(out, q, buf, p, p + 8)
                p += 8
            elif op == ENUM:
                index, p = _long(buf, p, end)
                first, last = enum_first[n_enum], enum_first[n_enum + 1]
                n_enum += 1
                if p < 0 or index < 0 or index >= last - first:
                    good = False
                    break
                if marks[k] == index:
                    answers[i] = True
                a, b = symbol_at[first + index, 0], symbol_at[first + index, 1]
                q = _put_bytes(out, _put_varint(out, q, np.uint64(b - a)), symbols, a, b)
            elif op == BOOL:
                if p >= end or buf[p] > 1:
                    good = False
                    break
                out[q] = buf[p]
                q += 1
                p += 1
            elif op == NULL_TIME or op == NULL_DOUBLE:
                branch, p = _long(buf, p, end)
                if p < 0 or branch < 0 or branch > 1:
                    good = False
                    break
                if branch == 0:
                    out[q] = 1
                    q += 1
                elif op == NULL_TIME:
                    v, p = _long(buf, p, end)
                    if p < 0 or v < 0 or v >= latest:
                        good = False
                        break
                    out[q] = 0
                    q = _put_int(out, q + 1, v, 8)
                else:
                    if p + 8 > end or not _finite_at(buf, p, bits, value):
                        good = False
                        break
                    out[q] = 0
                    q = _put_bytes(out, q + 1, buf, p, p + 8)
                    p += 8
            elif op == NULL_INT or op == NULL_STR:
                branch, p = _long(buf, p, end)
                if p < 0 or branch < 0 or branch > 1:
                    good = False
                    break
                if op == NULL_INT:
                    if branch == 0:
                        out[q] = 1
                        q += 1
                    else:
                        v, p = _long(buf, p, end)
                        if p < 0 or v < -2147483648 or v > 2147483647:
                            good = False
                            break
                        out[q] = 0
                        q = _put_int(out, q + 1, v, 4)
                elif branch == 0:
                    out[q] = 0  # '' for null
                    q += 1
                else:
                    a, b = _string(buf, p, end)
                    if b < 0 or not _utf8_text(buf, a, b):
                        good = False
                        break
                    if marks[k] == NON_EMPTY and b > a:
                        answers[i] = True
                    q = _put_bytes(out, _put_varint(out, q, np.uint64(b - a)), buf, a, b)
                    p = b
            elif op == STRS:
                j = 0
                while good:
                    count, p = _long(buf, p, end)
                    if p < 0 or count < 0:
                        good = False
                        break
                    if count == 0:
                        break
                    for _ in range(count):
                        a, b = _string(buf, p, end)
                        if b < 0 or j >= scratch.shape[0] or not _utf8_text(buf, a, b):
                            good = False
                            break
                        scratch[j, 0], scratch[j, 1] = a, b
                        p = b
                        j += 1
                if not good:
                    break
                q = _put_varint(out, q, np.uint64(j))
                for t in range(j):
                    a, b = scratch[t, 0], scratch[t, 1]
                    q = _put_bytes(out, _put_varint(out, q, np.uint64(b - a)), buf, a, b)
            elif op == ATTRS or op == REASONS:
                n_strings = 1 if op == ATTRS else 3
                count, p = _records(buf, p, end, n_strings, scratch, bits, value)
                if p < 0:
                    good = False
                    break
                q = _put_records(out, q, buf, scratch, count, n_strings)
            elif op == POS:
                q = _put_int(out, q, partitions[i], 4)
                q = _put_int(out, q, offsets[i], 8)
            elif op == TOPIC:
                t = topic_of[i]
                q = _put_bytes(out, q, topics, topic_at[t, 0], topic_at[t, 1])
        if good and p == end:
            status[i] = OK
        else:
            q = row_start
        row_ends[i] = q
    return q


def _ranges(texts: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    blob = b"".join(texts)
    ends = np.cumsum([len(t) for t in texts], dtype=np.int64)
    return (np.frombuffer(blob or b"\0", dtype=np.uint8).copy(),
            np.stack([ends - [len(t) for t in texts], ends], axis=1).astype(np.int64).reshape(len(texts), 2))


class BatchDecoder:
    """`(messages, topic_ids) -> (Rows, dead letters)` for single-object ExplanationEvents of the current schema."""

    def __init__(self, codec):
        self.codec = codec
        schema = load_schema("ExplanationEvent")
        self.fingerprint = np.frombuffer(schema_fingerprint(schema), dtype=np.uint8).copy()
        avro_fields = {f["name"]: f for f in schema["fields"]}
        ops, captures, marks, symbols, enum_first = [], [], [], [], [0]
        for name, op, _ in FIELDS:
            ops.append(OPS.index(op))
            captures.append(CAPTURED.index(name) if name in CAPTURED else (0 if name == "event_time" else -1))
            marks.append(avro_fields[name]["type"]["symbols"].index(ANSWER_REASON) if name == "sampling_reason"
                         else NON_EMPTY if name == "request_id" else NO_MARK)
            if op == "ENUM":
                symbols += [s.encode() for s in avro_fields[name]["type"]["symbols"]]
                enum_first.append(len(symbols))
        self.ops = np.asarray(ops, dtype=np.int64)
        self.captures = np.asarray(captures, dtype=np.int64)
        self.marks = np.asarray(marks, dtype=np.int64)
        self.symbols, self.symbol_at = _ranges(symbols)
        self.enum_first = np.asarray(enum_first, dtype=np.int64)

    def __call__(self, messages: list[RawMessage], topic_ids: dict[str, str]):
        n = len(messages)
        values = [m.value if isinstance(m.value, (bytes, bytearray)) else b"" for m in messages]
        data = b"".join(values)
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)
        ends = np.cumsum(lengths)
        names = sorted({m.topic for m in messages})
        topics, topic_at = _ranges([_text(t) + _text(topic_ids.get(t, "")) for t in names])
        index = {t: k for k, t in enumerate(names)}
        out = np.empty(len(data) + n * (512 + int(topic_at[:, 1].max(initial=0))), dtype=np.uint8)
        row_ends = np.zeros(n, dtype=np.int64)
        status = np.empty(n, dtype=np.int8)
        captured = np.zeros((n, 2 * len(CAPTURED)), dtype=np.int64)
        times = np.zeros(n, dtype=np.int64)
        answers = np.zeros(n, dtype=np.bool_)
        used = _transcode(np.frombuffer(data or b"\0", dtype=np.uint8), ends - lengths, ends, self.fingerprint,
                          self.ops, self.captures, self.symbols, self.symbol_at, self.enum_first,
                          np.fromiter((m.partition for m in messages), dtype=np.int64, count=n),
                          np.fromiter((m.offset for m in messages), dtype=np.int64, count=n),
                          np.fromiter((index[m.topic] for m in messages), dtype=np.int64, count=n),
                          topics, topic_at, LATEST_MS, self.marks, out, row_ends, status, captured, times,
                          answers, np.zeros((int(lengths.max(initial=0)) + 1, 8), dtype=np.int64))
        ok = np.flatnonzero(status == OK)
        text = [data[a:b] for a, b in captured[ok].reshape(-1, 2)]
        ids = [t.decode("ascii") for t in text[0::3]]  # ASCII: checked above
        models_seen: dict[bytes, tuple[str, str]] = {}
        models = [models_seen.setdefault(nm + b"\0" + v, (nm.decode("utf-8"), v.decode("utf-8")))
                  for nm, v in zip(text[1::3], text[2::3])]
        fast = Rows([messages[i] for i in ok], ids, models, times[ok], out[:used].tobytes(), row_ends[ok],
                    answers[ok])
        slow = [messages[i] for i in np.flatnonzero(status != OK)]
        if not slow:
            return fast, []
        rest, aside = decode_messages(slow, self.codec, topic_ids)
        return Rows(fast.messages + rest.messages, fast.prediction_ids + rest.prediction_ids,
                    fast.models + rest.models, np.concatenate([fast.event_time, rest.event_time]),
                    fast.payload + rest.payload, np.concatenate([fast.row_ends, rest.row_ends + used]),
                    np.concatenate([fast.answers, rest.answers])), aside
