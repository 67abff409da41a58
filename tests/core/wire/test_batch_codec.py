"""The batch decoder (whystream/wire/prediction_decoder.py) and encoder (whystream/explanations/encoder.py)
against the reference path they replace: fastavro through the codecs, the
Validator's rules one event at a time, and build_explanations. No stack needed."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import REPO
from whystream.errors import DecodeError, ModelNotFound
from whystream.explanations.encoder import ExplanationEncoder
from whystream.explanations.records import build_explanations
from whystream.kafka.messages import Inbound, RawMessage
from whystream.models.objectives import ModelKind
from whystream.streams.attribution import Attributions
from whystream.streams.validation import Validator
from whystream.treeshap import EXPLAINER_NAME
from whystream.wire.avro_read import _same_words, _utf8_text, _word, packed_words, word_padding
from whystream.wire.codecs import SingleObjectCodec, codec_for
from whystream.wire.prediction_decoder import OK, PredictionDecoder

FEATURES = ["amount", "hour_of_day", "card_present", "merchant_risk_score", "ip_risk_score", "déjà_vu"]
BINARY = ModelKind("binary", 1, "raw_margin")
MULTICLASS = ModelKind("multiclass", 3, "softmax_logit")


@dataclass
class FakeModel:
    name: str
    version: str
    feature_names: list[str] = field(default_factory=lambda: list(FEATURES))
    kind: ModelKind = BINARY
    adverse_direction: int = 1
    reason_codes: tuple = ()
    reason_codes_version: str | None = None

    def feature_index(self) -> dict[str, int]:
        return {f: i for i, f in enumerate(self.feature_names)}


class FakeRegistry:
    """What the Validator needs of a ModelRegistry: two models, one with fewer features."""

    def __init__(self):
        self.known = {("fraud", "v1"): FakeModel("fraud", "v1"), ("fraud", "v2"): FakeModel("fraud", "v2", FEATURES[:3]),
                      ("risk", "r1"): FakeModel("risk", "r1", FEATURES[::-1]),
                      ("tier", "t1"): FakeModel("tier", "t1", FEATURES[:4], MULTICLASS)}

    def load(self, name, version=None):
        if (name, version) not in self.known:
            raise ModelNotFound(f"no {name}@{version}")
        return self.known[(name, version)]

    def models(self):
        return sorted({name for name, _ in self.known})


PREDICTION = codec_for("PredictionEvent")

finite = st.floats(allow_nan=False, allow_infinity=False)
number = st.one_of(finite, finite, finite, st.sampled_from([math.nan, math.inf, -math.inf, -0.0]))  # mostly valid
text = st.one_of(st.text(max_size=12), st.sampled_from(["", " ", "\t\n", "p-1", "x\x00y", "\x1c"]))
plain = st.from_regex(r"[a-z]{1,8}-[0-9]{1,6}", fullmatch=True)


ascii_text = st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=12)


@st.composite
def records(draw, ordinary=False):
    """PredictionEvent records: `ordinary` ones are valid events of a known model, an ASCII
    prediction_id and UTF-8 text elsewhere (the fast path's business); the others may break any rule."""
    if ordinary:
        name, version = draw(st.sampled_from([("fraud", "v1"), ("fraud", "v2"), ("risk", "r1"), ("tier", "t1")]))
        names = draw(st.lists(st.sampled_from(FEATURES[:3] if version == "v2" else FEATURES[:4] if name == "tier"
                                              else FEATURES), max_size=8))
        decision_class = st.one_of(st.none(), st.integers(0, 2)) if name == "tier" else st.none()
        values, identifier, decision = st.one_of(st.none(), finite), plain, st.sampled_from(["approve", "décliné"])
        segment_value, score = st.one_of(st.sampled_from(["pos", "ecom", "", "España", "東京"]), ascii_text), finite
    else:
        name, version = draw(st.sampled_from([("fraud", "v1"), ("fraud", "v2"), ("risk", "r1"), ("fraud", "v9"),
                                              ("nope", "v1"), ("tier", "t1")]))
        decision_class = st.one_of(st.none(), st.integers(-2**31, 2**31 - 1), st.integers(-1, 4))
        names = draw(st.lists(st.sampled_from(FEATURES + ["shoe_size"]), max_size=8))
        values, identifier, decision = st.one_of(st.none(), number), st.one_of(plain, text), text
        segment_value, score = st.one_of(st.sampled_from(["pos", "ecom", ""]), text), number
    segment_keys = st.sampled_from(["channel", "country", "channel2", ""] + ([] if ordinary else ["chañnel"]))
    return {"prediction_id": draw(identifier), "model_name": name, "model_version": version,
            "event_time": draw(st.integers(-2**62, 2**62)), "features": {n: draw(values) for n in names},
            "score": draw(score), "decision": draw(decision), "threshold": draw(score),
            "segment": draw(st.dictionaries(segment_keys, segment_value, max_size=3)), "priority": draw(st.booleans()),
            "decision_class": draw(decision_class)}


def reference_split(validator: Validator, values: list[bytes], stratum_key: str):
    """The rules, one event at a time: full decode, _check, the row in the model's column order."""
    valid, dead = {}, []
    for i, value in enumerate(values):
        try:
            record = validator.codec.decode(value)
        except DecodeError:
            dead.append((i, "UNDECODABLE", None))
            continue
        problem = validator._check(record)
        if problem:
            dead.append((i, problem[0], record["prediction_id"].strip() or None))
            continue
        model = validator.model(record["model_name"], record["model_version"])
        index = model.feature_index()
        row = [math.nan] * len(index)
        for feature, v in record["features"].items():
            if v is not None:
                row[index[feature]] = v
        valid.setdefault(model.version, []).append(
            (i, record["prediction_id"], record["decision"], record["segment"].get(stratum_key, "") if stratum_key else "",
             record["event_time"], record["score"], record["threshold"], record["priority"],
             -1 if record["decision_class"] is None else record["decision_class"], row))
    return valid, dead


def batch_split(validator: Validator, values: list[bytes], stratum_key: str):
    inbound = Inbound.of([RawMessage(v, b"k", "predictions", 0, i) for i, v in enumerate(values)])
    batches, letters = validator.split(inbound, stratum_key)
    valid = {}
    for b in batches:
        valid[b.model.version] = [
            (int(b.index[j]), b.prediction_ids[j], b.decisions[j], b.strata[j], int(b.event_time[j]), float(b.score[j]),
             float(b.threshold[j]), bool(b.priority[j]), int(b.decision_class[j]), b.X[j].tolist())
            for j in range(len(b))]
    return valid, [(letter.message.offset, letter.reason_code, letter.prediction_id) for letter in letters]


def same(a, b) -> bool:
    """Equal, NaN equal to NaN (rows hold NaN for missing)."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def assert_same_split(values: list[bytes], stratum_key: str = "channel") -> None:
    validator = Validator(FakeRegistry(), PREDICTION)
    expected = reference_split(Validator(FakeRegistry(), PREDICTION), values, stratum_key)
    got = batch_split(validator, values, stratum_key)
    assert same(got[1], expected[1])
    assert set(got[0]) == set(expected[0])
    for version in expected[0]:
        assert same(got[0][version], expected[0][version]), version


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(records(ordinary=True), records()), min_size=1, max_size=12),
       st.sampled_from(["channel", "", "country"]))
def test_batches_of_random_events_split_exactly_as_one_at_a_time(events, stratum_key):
    assert_same_split([PREDICTION.encode(r) for r in events], stratum_key)


@settings(max_examples=40, deadline=None)
@given(st.lists(records(ordinary=True), min_size=1, max_size=8))
def test_ordinary_events_with_any_text_take_the_fast_path(events):
    """Accented decisions and segments (a country, a city) stay on the compiled pass."""
    decoder = PredictionDecoder(PREDICTION.header[2:])
    for (name, version), model in FakeRegistry().known.items():
        decoder.add_model(name, version, model)
    decoded = decoder.decode([PREDICTION.encode({**r, "event_time": 1_700_000_000_000}) for r in events], "country")
    assert (decoded.status == OK).all()
    assert decoded.strata == [r["segment"].get("country", "") for r in events]


def test_ordinary_events_take_the_fast_path():
    events = [{"prediction_id": f"p-{i}", "model_name": "fraud", "model_version": "v1", "event_time": 1_700_000_000_000 + i,
               "features": {f: (None if (i + j) % 5 == 0 else float(i * j)) for j, f in enumerate(FEATURES)},
               "score": 0.1, "decision": "approve", "threshold": 0.5, "segment": {"channel": "pos"}, "priority": False}
              for i in range(50)]
    events[7]["features"] = dict(reversed(list(events[7]["features"].items())))  # another key order
    decoder = PredictionDecoder(PREDICTION.header[2:])
    decoder.add_model("fraud", "v1", FakeModel("fraud", "v1"))
    decoded = decoder.decode([PREDICTION.encode(r) for r in events], "channel")
    assert (decoded.status == OK).all()
    assert decoded.prediction_ids == [r["prediction_id"] for r in events] and set(decoded.strata) == {"pos"}
    assert_same_split([PREDICTION.encode(r) for r in events])


@settings(max_examples=300, deadline=None)
@given(st.one_of(records(ordinary=True), records()), st.data())
def test_damaged_events_split_exactly_as_one_at_a_time(event, data):
    good = PREDICTION.encode(event)
    position = data.draw(st.integers(0, len(good) - 1))
    damage = data.draw(st.sampled_from(["flip", "cut", "extend"]))
    if damage == "flip":
        bad = good[:position] + bytes([data.draw(st.integers(0, 255))]) + good[position + 1:]
    elif damage == "cut":
        bad = good[:position]
    else:
        bad = good + data.draw(st.binary(min_size=1, max_size=4))
    assert_same_split([good, bad, good])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=5), st.booleans())
def test_random_bytes_split_exactly_as_one_at_a_time(tails, with_header):
    assert_same_split([(PREDICTION.header + t) if with_header else t for t in tails])


def test_events_of_an_older_schema_version_and_unknown_models_take_the_slow_path():
    import io
    import json

    import fastavro

    from whystream.wire.codecs import schema_fingerprint

    old = json.loads((REPO / "schemas/history/PredictionEvent.v1.avsc").read_text())
    v1 = {"prediction_id": "old-1", "model_name": "fraud", "model_version": "v1", "event_time": 5,
          "features": {"amount": 1.0}, "score": 0.9, "decision": "decline", "threshold": 0.5}
    buffer = io.BytesIO()
    buffer.write(b"\xc3\x01" + schema_fingerprint(old))
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(old), v1)
    current = PREDICTION.encode({**v1, "prediction_id": "new-1", "segment": {"channel": "atm"}, "priority": True})
    unknown = PREDICTION.encode({**v1, "model_version": "v404", "segment": {}, "priority": False})
    assert_same_split([buffer.getvalue(), current, unknown])


def test_a_value_that_is_not_bytes_is_a_dead_letter_not_an_error():
    good = PREDICTION.encode({"prediction_id": "p-1", "model_name": "fraud", "model_version": "v1", "event_time": 5,
                              "features": {}, "score": 0.1, "decision": "approve", "threshold": 0.5,
                              "segment": {}, "priority": False})
    batches, dead = Validator(FakeRegistry(), PREDICTION).split(
        Inbound.of([RawMessage(None, None, "t", 0, 0), RawMessage(good, None, "t", 0, 1)]))
    assert [d.reason_code for d in dead] == ["UNDECODABLE"] and batches[0].prediction_ids == ["p-1"]


def test_the_confluent_wire_format_goes_through_its_codec():
    codec = codec_for("PredictionEvent", "mock://batch-codec", "predictions")
    event = {"prediction_id": "c-1", "model_name": "fraud", "model_version": "v1", "event_time": 5,
             "features": {"amount": 1.0, "hour_of_day": None}, "score": 0.9, "decision": "decline",
             "threshold": 0.5, "segment": {"channel": "atm"}, "priority": False}
    validator = Validator(FakeRegistry(), codec)
    batches, dead = validator.split(Inbound.of([RawMessage(codec.encode(event), None, "t", 0, 0)]), "channel")
    assert not dead and batches[0].prediction_ids == ["c-1"] and batches[0].strata == ["atm"]
    assert batches[0].X[0, 0] == 1.0 and math.isnan(batches[0].X[0, 1])


# -- explanations -------------------------------------------------------------------------------------------------------

@st.composite
def explanation_batches(draw):
    names = draw(st.sampled_from([FEATURES, FEATURES[:1]]))
    kind = draw(st.sampled_from([BINARY, MULTICLASS, ModelKind("poisson", 1, "log_link")]))
    table = draw(st.one_of(st.none(), st.lists(st.tuples(text.filter(bool), text), min_size=len(names),
                                                max_size=len(names))))
    model = FakeModel(draw(st.sampled_from(["fraud", "rïsk"])), "v1", names, kind, draw(st.sampled_from([1, -1])),
                      tuple(table) if table else (), draw(st.sampled_from(["a1b2c3", "tåble"])) if table else None)
    n, F = draw(st.integers(1, 6)), len(model.feature_names)
    values = st.one_of(st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5]), st.floats(-1e6, 1e6, allow_nan=False))
    X = np.array(draw(st.lists(st.lists(st.one_of(values, st.just(math.nan)), min_size=F, max_size=F),
                               min_size=n, max_size=n)))
    shap = np.array(draw(st.lists(st.lists(values, min_size=F, max_size=F), min_size=n, max_size=n)))
    records = [{"prediction_id": draw(text), "event_time": draw(st.integers(0, 2**45)), "score": draw(finite),
                "decision": draw(st.sampled_from(["approve", "decline", "review", "ok ✓"])), "threshold": draw(finite),
                "received_at": draw(st.one_of(st.none(), st.integers(0, 2**45)))}
               for _ in range(n)]
    attributions = Attributions(shap, np.array(draw(st.lists(finite, min_size=n, max_size=n))),
                                np.array(draw(st.lists(st.sampled_from(["LIVE", "CACHE", "FALLBACK"]), min_size=n,
                                                       max_size=n)), dtype=object),
                                np.array(draw(st.lists(finite, min_size=n, max_size=n))),
                                np.array(draw(st.lists(st.integers(0, 2**31 - 1) if kind.multiclass else st.just(-1),
                                                       min_size=n, max_size=n)), dtype=np.int64))
    reasons = draw(st.lists(st.sampled_from(["ADVERSE", "NEAR_THRESHOLD", "FLAGGED", "NEW_VERSION", "RESERVOIR",
                                             "ON_DEMAND"]), min_size=n, max_size=n))
    weights = draw(st.lists(st.floats(1, 1e4), min_size=n, max_size=n))
    strata = draw(st.lists(st.sampled_from(["", "pos", "ecom", "ätm"]), min_size=n, max_size=n))
    scored = draw(st.booleans())  # the score check ran (version 4), or not
    checks = dict(model_scores=np.array(draw(st.lists(st.one_of(finite, st.just(math.nan)), min_size=n, max_size=n))),
                  mismatches=np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))) if scored else {}
    return model, records, X, attributions, reasons, weights, strata, checks


@settings(max_examples=300, deadline=None)
@given(explanation_batches(), st.booleans(), text)
def test_batch_encoded_explanations_are_the_bytes_of_the_codec(batch, redis_available, worker):
    import whystream.explanations.records as explanation

    model, records, X, attributions, reasons, weights, strata, checks = batch
    codec = codec_for("ExplanationEvent")
    assert isinstance(codec, SingleObjectCodec)
    common = dict(adverse=frozenset({"decline", "review"}), explainer_version="1.0.0", redis_available=redis_available,
                  worker=worker, **checks)
    explained_at = 1_800_000_000_500  # exact in binary: build_explanations reads it back from time.time()
    clock = explanation.time.time
    explanation.time.time = lambda: explained_at / 1000
    try:
        expected = [codec.encode(e) for e in build_explanations(model, records, X, attributions, reasons, weights,
                                                                strata, **common)]
    finally:
        explanation.time.time = clock
    got = ExplanationEncoder(codec.header, EXPLAINER_NAME).encode(model, records, X, attributions, reasons, weights,
                                                                   strata, explained_at=explained_at, **common)
    assert got == expected


def test_an_empty_batch_encodes_to_nothing():
    assert ExplanationEncoder(codec_for("ExplanationEvent").header, "x").encode(
        FakeModel("m", "v"), [], np.zeros((0, 6)), None, [], [], [], adverse=frozenset(), explainer_version="1",
        redis_available=False, worker="w", explained_at=0) == []


def _v2(record: dict) -> bytes:
    """A PredictionEvent as a producer still on version 2 (no decision_class) writes it."""
    import io
    import json

    import fastavro

    from whystream.wire.codecs import schema_fingerprint

    old = json.loads((REPO / "schemas/history/PredictionEvent.v2.avsc").read_text())
    buffer = io.BytesIO()
    buffer.write(b"\xc3\x01" + schema_fingerprint(old))
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(old), {k: v for k, v in record.items()
                                                                     if k != "decision_class"})
    return buffer.getvalue()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(records(ordinary=True), records()), min_size=1, max_size=8), st.data())
def test_version_2_events_split_exactly_as_one_at_a_time(events, data):
    values = [_v2(r) for r in events]
    if data.draw(st.booleans()):  # and damaged ones
        i = data.draw(st.integers(0, len(values) - 1))
        values[i] = values[i][:data.draw(st.integers(0, len(values[i])))]
    assert_same_split(values)


def test_ordinary_version_2_events_keep_the_fast_path():
    from whystream.wire.prediction_decoder import NO_CLASS

    events = [{"prediction_id": f"p-{i}", "model_name": "fraud", "model_version": "v1", "event_time": 5 + i,
               "features": {"amount": float(i)}, "score": 0.1, "decision": "approve", "threshold": 0.5,
               "segment": {"channel": "pos"}, "priority": i % 2 == 0} for i in range(20)]
    validator = Validator(FakeRegistry(), PREDICTION)
    validator.decoder.add_model("fraud", "v1", FakeModel("fraud", "v1"))
    decoded = validator.decoder.decode([_v2(r) for r in events], "channel")
    assert (decoded.status == OK).all() and (decoded.decision_class == NO_CLASS).all()
    assert decoded.priority.tolist() == [r["priority"] for r in events]
    current = validator.decoder.decode([PREDICTION.encode({**events[0], "decision_class": None})], "channel")
    assert (current.status == OK).all()


utf8_candidates = st.one_of(
    st.binary(max_size=12),
    st.text(max_size=8).map(lambda t: t.encode("utf-8", "surrogatepass")),  # valid, and lone surrogates
    st.lists(st.sampled_from([b"\xc0\x80", b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                              b"\xf0\x9f\x98", b"\xc3\xa9", b"a", b"\x00", b"\xe4\xb8\xad", b"\xff"]),
             max_size=5).map(b"".join))


@settings(max_examples=400, deadline=None)
@given(utf8_candidates)
def test_the_compiled_utf8_check_is_pythons_strict_decoder(data):
    """What the fast path keeps is exactly what fastavro (Python's strict UTF-8) reads, less NULs."""
    try:
        expected = "\x00" not in data.decode("utf-8")
    except UnicodeDecodeError:
        expected = False
    buf = np.frombuffer(b"#" + data + b"#", dtype=np.uint8)
    assert _utf8_text(buf, 1, 1 + len(data)) == expected


@settings(max_examples=300, deadline=None)
@given(buffer=st.binary(min_size=0, max_size=64), text=st.binary(max_size=40), data=st.data())
def test_the_compiled_word_reads_are_byte_reads(buffer, text, data):
    """`_word` is the 8 bytes at any position; `_same_words` is bytes equality, whatever the
    length (shorter than a word, a word, across words) and alignment."""
    padded = buffer + word_padding(len(buffer))
    words = np.frombuffer(padded, dtype=np.uint64)
    for q in range(len(buffer)):
        assert int(_word(words, q)) == int.from_bytes(padded[q:q + 8], "little")
    start = data.draw(st.integers(0, len(buffer)))
    stop = data.draw(st.integers(start, len(buffer)))
    if data.draw(st.booleans()):
        text = buffer[start:stop]  # equal half of the time
    packed = packed_words([text])[0]
    assert _same_words(words, start, stop, len(text), packed) == (buffer[start:stop] == text)
