"""The engine on the real embedded stack: real broker (topics read back), real
Redis, real model. Messages are handed to Engine.process directly; the Faust
transport around it is tested in test_worker.py."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter

import numpy as np
import pytest

from support.events import as_messages, make_records, on_the_topic
from whystream.kafka.messages import RawMessage
from whystream.kafka.reader import read_all
from whystream.streams.assembly import build_engine
from whystream.streams.engine import EngineConfig
from whystream.streams.sampling.config import SamplingConfig
from whystream.streams.store import RedisStore
from whystream.wire.codecs import codec_for


def explanations(settings):
    return read_all(settings, settings.topic("explanations"), "ExplanationEvent")


def config(**sampling):
    return EngineConfig(SamplingConfig(**{"new_version_events": 0, **sampling}))


def test_every_kind_of_bad_input_goes_to_the_dlq_with_its_reason(engine_settings, small_model):
    engine = build_engine(engine_settings, config())
    good = make_records(small_model, 1)[0]
    codec = codec_for("PredictionEvent")

    def variant(**changes):
        return {**good, **changes}

    feature = small_model.feature_names[0]
    bad = {
        "UNDECODABLE": b"\x00not avro at all",
        "MISSING_ID": codec.encode(variant(prediction_id=" ")),
        "UNKNOWN_MODEL": codec.encode(variant(model_name="nope")),
        "UNKNOWN_VERSION": codec.encode(variant(model_version="000000000000")),
        "UNKNOWN_FEATURE": codec.encode(variant(features={**good["features"], "shoe_size": 1.0})),
        "NON_FINITE_VALUE": codec.encode(variant(features={**good["features"], feature: math.inf})),
        "BAD_FIELD": codec.encode(variant(score=math.nan)),
    }
    messages = [RawMessage(v, b"k", "predictions", 2, 100 + i) for i, v in enumerate(bad.values())]
    engine.process(messages + as_messages([good], first_offset=500))
    engine.close()

    letters = read_all(engine_settings, engine_settings.topic("predictions.dlq"), "DeadLetter")
    by_code = {d["reason_code"]: d for d in letters}
    assert set(by_code) == set(bad)
    for i, (code, original) in enumerate(bad.items()):
        letter = by_code[code]
        assert letter["original"] == original
        assert (letter["topic"], letter["partition"], letter["offset"]) == ("predictions", 2, 100 + i)
        assert len(letter["reason"]) > 20
    assert "shoe_size" in by_code["UNKNOWN_FEATURE"]["reason"]
    assert feature in by_code["NON_FINITE_VALUE"]["reason"]
    assert by_code["MISSING_ID"]["prediction_id"] is None


def test_priority_decisions_are_explained_exactly_once_and_add_up(engine_settings, small_model):
    records = make_records(small_model, 3000)
    engine = build_engine(engine_settings, config(budget=5))
    engine.process(as_messages(records))
    engine.close()
    published = explanations(engine_settings)

    adverse = {r["prediction_id"] for r in records if r["decision"] in ("decline", "review")}
    flagged = {r["prediction_id"] for r in records if r["priority"]}
    priority_ids = {e["prediction_id"] for e in published if e["sampling_reason"] != "RESERVOIR"}
    assert adverse and adverse <= priority_ids and flagged <= priority_ids
    assert len(published) == len({e["prediction_id"] for e in published})

    by_id = {r["prediction_id"]: r for r in records}
    X = np.array([[by_id[e["prediction_id"]]["features"][f] if by_id[e["prediction_id"]]["features"][f] is not None
                   else np.nan for f in small_model.feature_names] for e in published])
    booster_raw = small_model.booster.predict(X, raw_score=True)
    for e, expected_raw in zip(published, booster_raw):
        assert e["source"] == "LIVE"
        total = e["base_value"] + sum(a["shap"] for a in e["attributions"])
        assert abs(total - e["raw_score"]) <= 1e-6
        assert abs(e["raw_score"] - expected_raw) <= 1e-6
        assert [a["feature"] for a in e["attributions"]] == small_model.feature_names
        assert e["explainer_version"] and e["model_version"] == small_model.version
        if e["sampling_reason"] != "RESERVOIR":
            assert e["inclusion_weight"] == 1.0


def test_reservoir_weights_sum_to_the_population_of_each_window(engine_settings, small_model):
    records = make_records(small_model, 2000)
    for i, r in enumerate(records):  # two 10 s windows
        r["event_time"] = 1_700_000_000_000 + (i * 10)
    engine = build_engine(engine_settings, config(budget=7))
    engine.process(as_messages(records))
    engine.tick(now_ms=10**13)  # everything idle: close all windows
    engine.close()
    sampled = [e for e in explanations(engine_settings) if e["sampling_reason"] == "RESERVOIR"]
    priority_ids = {r["prediction_id"] for r in records if r["decision"] != "approve" or r["priority"]
                    or abs(r["score"] - r["threshold"]) <= 0.02}
    candidates = len(records) - len(priority_ids)
    assert sampled
    assert sum(e["inclusion_weight"] for e in sampled) == pytest.approx(candidates)
    assert all(e["inclusion_weight"] >= 1 for e in sampled)
    assert not priority_ids & {e["prediction_id"] for e in sampled}


def test_redelivery_publishes_nothing_new_and_identical_features_hit_the_cache(engine_settings, small_model):
    records = make_records(small_model, 400)
    engine = build_engine(engine_settings, config())
    engine.process(as_messages(records))
    first = explanations(engine_settings)
    engine.process(as_messages(records))  # redelivered: same ids
    assert len(explanations(engine_settings)) == len(first)
    assert engine.metrics.duplicates._value.get() == len(first)

    copies = [{**r, "prediction_id": r["prediction_id"] + "-copy"} for r in records]
    engine.process(as_messages(copies, first_offset=1000))
    engine.close()
    copied = [e for e in explanations(engine_settings) if e["prediction_id"].endswith("-copy")]
    assert copied and all(e["source"] == "CACHE" for e in copied)
    originals = {e["prediction_id"]: e for e in first}
    for e in copied:
        original = originals[e["prediction_id"].removesuffix("-copy")]
        assert [a["shap"] for a in e["attributions"]] == [a["shap"] for a in original["attributions"]]


def test_without_redis_the_engine_keeps_explaining_and_says_so(engine_settings, small_model):
    from whystream.infra.stack import free_port

    settings = engine_settings.with_(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    engine = build_engine(settings, config(), store=RedisStore(settings.redis_url, socket_timeout_s=0.2))
    records = make_records(small_model, 300)
    engine.process(as_messages(records))
    engine.close()
    published = explanations(settings)
    assert published and all(e["redis_available"] is False and e["source"] == "LIVE" for e in published)
    assert b"whystream_redis_available 0.0" in engine.metrics.exposition()


def test_blown_latency_budget_uses_the_marked_fallback(engine_settings, small_model):
    engine = build_engine(engine_settings, EngineConfig(SamplingConfig(new_version_events=0), latency_budget_ms=0))
    engine.process(as_messages(make_records(small_model, 300)))
    engine.close()
    published = explanations(engine_settings)
    assert published and {e["source"] for e in published} == {"FALLBACK"}
    for e in published:  # an approximation, but still additive in the same space
        assert abs(e["base_value"] + sum(a["shap"] for a in e["attributions"]) - e["raw_score"]) <= 1e-6


def test_any_recent_decision_can_be_explained_on_demand(engine_settings, small_model):
    records = make_records(small_model, 300)
    engine = build_engine(engine_settings, config())
    messages = on_the_topic(engine_settings, records)
    engine.process(messages)
    published = {e["prediction_id"]: e for e in explanations(engine_settings)}
    not_sampled = [r for r in records if r["prediction_id"] not in published][:8]  # all partitions
    for record in not_sampled:  # read back from the topic at the location Redis remembered
        on_demand = engine.on_demand.explain(record["prediction_id"])
        assert on_demand["prediction_id"] == record["prediction_id"] and on_demand["score"] == record["score"]
        assert on_demand["sampling_reason"] == "ON_DEMAND" and on_demand["source"] in ("LIVE", "CACHE")
        assert abs(on_demand["base_value"] + sum(a["shap"] for a in on_demand["attributions"])
                   - on_demand["raw_score"]) <= 1e-6
    engine.store.remember_locations([not_sampled[0]["prediction_id"]], np.array([0]), np.array([10**9]))
    assert engine.on_demand.explain(not_sampled[0]["prediction_id"]) is None  # gone from the topic
    other = next(m for m in messages if m.key.decode() != not_sampled[1]["prediction_id"])
    engine.store.remember_locations([not_sampled[1]["prediction_id"]], np.array([other.partition]),
                                    np.array([other.offset]))
    assert engine.on_demand.explain(not_sampled[1]["prediction_id"]) is None  # never another decision's
    some_published = next(iter(published))
    assert engine.on_demand.explain(some_published)["prediction_id"] == some_published
    assert engine.on_demand.explain("never-seen") is None
    engine.close()


def test_a_request_for_a_decision_not_read_yet_waits_until_the_data_plane_has_read_it(engine_settings, small_model):
    """An explain request sent right after its decision (soak: 204 of 480 answered UNKNOWN_DECISION
    because the data plane had not read them yet) is answered once the workers have read what
    was on `predictions` when it was asked; an unknown id is refused once all is read."""
    records = make_records(small_model, 200)
    engine = build_engine(engine_settings, config())
    messages = on_the_topic(engine_settings, records)
    engine.process(messages[:100])
    target = messages[-1].key.decode()
    found = []
    asking = threading.Thread(target=lambda: found.append(engine.on_demand.find_once_read(target, 60.0)))
    asking.start()
    time.sleep(1.0)
    assert asking.is_alive()  # still waiting: the data plane has not read the rest
    engine.process(messages[100:])
    asking.join(60)
    (published, raw, source), = found
    assert source == "predictions" and codec_for("PredictionEvent").decode(raw)["prediction_id"] == target
    started = time.monotonic()
    assert engine.on_demand.find_once_read("never-seen", 60.0) == (None, None, None)
    assert time.monotonic() - started < 30  # everything read: refused without waiting out its patience
    on_the_topic(engine_settings, make_records(small_model, 1, seed=99, run_id="late"))  # on the topic, never read
    started = time.monotonic()
    assert engine.on_demand.find_once_read("never-seen", 1.0) == (None, None, None)
    assert time.monotonic() - started >= 1.0  # waited for the unread message, then gave up
    engine.close()


def test_top_reasons_point_toward_the_decision(engine_settings, small_model):
    engine = build_engine(engine_settings, config())
    engine.process(as_messages(make_records(small_model, 1000)))
    engine.close()
    reasons = Counter()
    for e in explanations(engine_settings):
        adverse = e["decision"] in ("decline", "review")
        shaps = [r["shap"] for r in e["top_reasons"]]
        assert all((s > 0) if adverse else (s < 0) for s in shaps)
        assert shaps == sorted(shaps, reverse=adverse)
        reasons[adverse] += 1
    assert reasons[True] and reasons[False]


def test_preloading_readies_the_latest_version_and_its_kernel_before_any_event(engine_settings, small_model):
    engine = build_engine(engine_settings, config())
    assert engine.preload_latest() == [f"{small_model.name}@{small_model.version}"]
    model = engine.validator.model(small_model.name, small_model.version)
    explainer = engine.attributor.explainer(model)
    assert engine.attributor.explainer(model) is explainer  # loaded once, by the preload
    features = make_records(small_model, 1)[0]["features"]  # and it explains as the registered booster predicts
    row = np.array([[np.nan if features[f] is None else features[f] for f in small_model.feature_names]])
    shap_values, raw = explainer.live(row)
    assert abs(shap_values.sum() + explainer.kernel.expected_value - raw[0]) <= 1e-6
    assert abs(raw[0] - small_model.booster.predict(row, raw_score=True)[0]) <= 1e-6
    engine.close()


def test_preloading_an_empty_registry_loads_nothing_and_does_not_fail(engine_settings, tmp_path):
    engine = build_engine(engine_settings.with_(registry=tmp_path / "empty"), config())
    assert engine.preload_latest() == []
    engine.close()


def test_connecting_the_publisher_without_a_broker_warns_and_carries_on(engine_settings, caplog):
    from whystream.infra.stack import free_port

    engine = build_engine(engine_settings.with_(broker=f"127.0.0.1:{free_port()}"), config())  # nothing listens there
    engine.connect_publisher(timeout=0.5)
    warnings = [r.getMessage() for r in caplog.records if r.name == "whystream.engine"]
    assert any("no metadata for" in w and "explanations" in w for w in warnings)
    engine.publisher.producer.purge()


def test_the_first_events_of_a_new_version_are_explained_across_batches_and_workers(engine_settings, small_model):
    records = make_records(small_model, 320)
    new_version = EngineConfig(SamplingConfig(new_version_events=100))
    first = build_engine(engine_settings, new_version)
    for b in range(0, 240, 80):  # the version is established during the second batch
        first.process(as_messages(records[b:b + 80], first_offset=b // 4))
    first.close()
    second = build_engine(engine_settings, new_version)  # another worker: the count is shared through Redis
    second.process(as_messages(records[240:], first_offset=60))
    second.close()
    reasons = {e["prediction_id"]: e["sampling_reason"] for e in explanations(engine_settings)}
    ids = [r["prediction_id"] for r in records]
    assert all(pid in reasons for pid in ids[:100])  # every one of the first 100 is explained
    assert {pid for pid, reason in reasons.items() if reason == "NEW_VERSION"} <= set(ids[:100])
    assert sum(reason == "NEW_VERSION" for reason in reasons.values()) > 50  # most of them for that reason
