"""Inputs a real stream carries sooner or later, handed to the engine in process on
the real embedded stack (broker read back, real Redis or none at all): each ends
explained, sampled or dead-lettered with a reason, never as an exception."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from support.events import NOW, as_messages, make_records, message
from whystream.infra.stack import free_port
from whystream.kafka.messages import RawMessage
from whystream.kafka.reader import read_all
from whystream.streams.assembly import build_engine
from whystream.streams.engine import EngineConfig
from whystream.streams.event_time import EventTimeRule
from whystream.streams.sampling.config import SamplingConfig
from whystream.streams.sampling.reservoirs import OTHER

MB = 1024 * 1024


def config(**sampling):
    return EngineConfig(SamplingConfig(**{"new_version_events": 0, **sampling}))


def letters(settings):
    return read_all(settings, settings.topic("predictions.dlq"), "DeadLetter")


def explanations(settings):
    return read_all(settings, settings.topic("explanations"), "ExplanationEvent")


def without_redis(settings):
    return settings.with_(redis_url=f"redis://127.0.0.1:{free_port()}/0")  # nobody listens there


def test_a_message_larger_than_the_dlq_accepts_is_dead_lettered_with_a_capped_original(engine_settings, small_model):
    huge = b"\x00" + bytes(range(256)) * (3 * MB // 256)  # 3 MB of garbage: UNDECODABLE
    good = make_records(small_model, 1)[0]
    # The default cap; then a cap beyond the producer's 1 MB limit, refused by produce(): the dead letter shrinks.
    for offset, cap in ((10, EngineConfig().dlq_original_cap), (11, 8 * MB)):
        engine = build_engine(engine_settings, EngineConfig(SamplingConfig(new_version_events=0), dlq_original_cap=cap))
        engine.process([RawMessage(huge, b"k", "predictions", 1, offset), message(good, 2, offset)])
        engine.close()
    found = {d["offset"]: d for d in letters(engine_settings)}
    assert set(found) == {10, 11}
    for letter in found.values():
        assert letter["reason_code"] == "UNDECODABLE"
        assert letter["original_size"] == len(huge) and letter["original_truncated"] is True
        assert 0 < len(letter["original"]) < MB and huge.startswith(letter["original"])
    assert len(found[10]["original"]) == EngineConfig().dlq_original_cap
    assert len(found[11]["original"]) == len(huge) // 4  # shrunk once after MSG_SIZE_TOO_LARGE
    assert good["prediction_id"] in {e["prediction_id"] for e in explanations(engine_settings)} or \
        good["decision"] == "approve"


def test_a_small_message_keeps_all_its_bytes(engine_settings):
    engine = build_engine(engine_settings, config())
    engine.process([RawMessage(b"\x00garbage", None, "predictions", 0, 3)])
    engine.close()
    [letter] = letters(engine_settings)
    assert (letter["original"], letter["original_size"], letter["original_truncated"]) == (b"\x00garbage", 8, False)


def test_versions_that_cannot_be_served_are_dead_lettered_and_quarantined(broken_registry, small_model, caplog):
    settings, bad_version, rf = broken_registry
    good = make_records(small_model, 60, run_id="q")
    corrupt = [{**r, "prediction_id": f"c-{i}", "model_version": bad_version} for i, r in enumerate(good[:20])]
    forest = [{**r, "prediction_id": f"f-{i}", "model_name": "forest", "model_version": rf.version}
              for i, r in enumerate(good[20:40])]
    engine = build_engine(settings, config())
    clock = [0.0]
    engine.validator.quarantine.clock = lambda: clock[0]
    mixed = [x for pair in zip(corrupt, forest, good[40:]) for x in pair]
    with caplog.at_level(logging.WARNING, logger="whystream.validate"):
        for start in range(0, len(mixed), 10):  # several batches: the versions stay quarantined, not reloaded
            engine.process([message(r, 0, start + i) for i, r in enumerate(mixed[start:start + 10])])
    attempts = [r.getMessage() for r in caplog.records if "quarantined" in r.getMessage()]
    assert len(attempts) == 2, attempts  # one load attempt per version, not one per event or batch
    dead = letters(settings)
    assert {d["prediction_id"] for d in dead} == {r["prediction_id"] for r in corrupt + forest}
    assert {d["reason_code"] for d in dead} == {"MODEL_UNAVAILABLE"}
    by_model = {d["prediction_id"][0]: d["reason"] for d in dead}
    assert "random forest" in by_model["f"] and "UnsupportedModel" in by_model["f"]
    assert bad_version in by_model["c"] and "LightGBMError" in by_model["c"]
    assert engine.metrics.quarantined._value.get() == 2

    # The corrupt version is repaired; after the back-off its events are explained again.
    shutil.copy(small_model.path / "model.txt", settings.registry / small_model.name / bad_version / "model.txt")
    retry = [{**r, "prediction_id": f"c2-{i}", "decision": "decline"} for i, r in enumerate(corrupt)]
    engine.process([message(r, 1, i) for i, r in enumerate(retry)])  # still held: dead-lettered again
    clock[0] += engine.config.quarantine_s
    again = [{**r, "prediction_id": f"c3-{i}"} for i, r in enumerate(retry)]
    engine.process([message(r, 1, 100 + i) for i, r in enumerate(again)])
    engine.close()
    assert {d["prediction_id"] for d in letters(settings)} >= {r["prediction_id"] for r in retry}
    explained = {e["prediction_id"] for e in explanations(settings)}
    assert {r["prediction_id"] for r in again} <= explained
    assert not {r["prediction_id"] for r in again} & {d["prediction_id"] for d in letters(settings)}


def test_event_times_not_to_be_trusted_are_dead_lettered(engine_settings, small_model):
    base = make_records(small_model, 6, run_id="t")
    times = {
        "year-3000": 32_503_680_000_000,
        "microseconds": NOW * 1000,
        "seconds": NOW // 1000,
        "ten-minutes-ahead": NOW + 600_000,
        "four-minutes-ahead": NOW + 240_000,  # within the default 5 minutes: accepted
        "an-hour-late": NOW - 3_600_000,  # late is fine
    }
    records = [{**r, "prediction_id": name, "event_time": t, "decision": "decline"}
               for r, (name, t) in zip(base, times.items())]
    engine = build_engine(engine_settings, config())
    engine.process([message(r, 0, i) for i, r in enumerate(records)])
    # Without a broker timestamp the worker's clock is the reference.
    engine.process([message({**records[3], "prediction_id": "ahead-of-clock"}, 0, 9, timestamp=-1)], now_ms=NOW)
    engine.close()
    dead = {d["prediction_id"]: d for d in letters(engine_settings)}
    assert set(dead) == {"year-3000", "microseconds", "seconds", "ten-minutes-ahead", "ahead-of-clock"}
    assert {d["reason_code"] for d in dead.values()} == {"EVENT_TIME"}
    assert "milliseconds" in dead["microseconds"]["reason"] and "milliseconds" in dead["seconds"]["reason"]
    assert "600 s ahead of the message's broker timestamp" in dead["ten-minutes-ahead"]["reason"]
    assert "worker clock" in dead["ahead-of-clock"]["reason"]
    assert {e["prediction_id"] for e in explanations(engine_settings)} == {"four-minutes-ahead", "an-hour-late"}


def test_the_skew_is_configurable():
    rule = EventTimeRule(max_ahead_ms=1000)
    assert rule.bad(np.array([NOW + 1000, NOW + 1001]), np.array([NOW, NOW]), 0).tolist() == [False, True]


def test_duplicates_in_a_batch_are_published_once_and_counted_once_without_redis(engine_settings, small_model):
    records = make_records(small_model, 400, run_id="dup")
    for i, r in enumerate(records):
        r["event_time"] = NOW - 60_000 + i
    twice = [r for r in records for _ in range(2)]  # every decision sent twice, back to back
    engine = build_engine(without_redis(engine_settings), config(budget=5))
    assert not engine.store.available
    engine.process([message(r, (i // 2) % 2, i) for i, r in enumerate(twice)], now_ms=NOW)  # copies: same partition
    engine.tick(now_ms=NOW + 10**6)  # idle: every window closes
    engine.close()
    published = explanations(engine_settings)
    ids = [e["prediction_id"] for e in published]
    assert len(ids) == len(set(ids))
    priority = {r["prediction_id"] for r in records if r["decision"] != "approve" or r["priority"]
                or abs(r["score"] - r["threshold"]) <= 0.02}
    assert priority <= set(ids)
    sampled = [e for e in published if e["sampling_reason"] == "RESERVOIR"]
    assert sampled and sum(e["inclusion_weight"] for e in sampled) == pytest.approx(len(records) - len(priority))
    assert engine.metrics.duplicates._value.get() >= len(priority)


def test_decision_labels_are_compared_without_case_and_unknown_ones_counted(engine_settings, small_model, caplog):
    records = make_records(small_model, 30, run_id="lab")
    labels = ["DECLINE", "Review", "APPROVE", "maybe", "maybe", "Maybe"] * 5
    shouty = [{**r, "decision": label, "priority": False, "score": 0.0, "threshold": 0.5}
              for r, label in zip(records, labels)]
    engine = build_engine(engine_settings, config())
    with caplog.at_level(logging.WARNING, logger="whystream.labels"):
        engine.process([message(r, 0, i) for i, r in enumerate(shouty)])
    engine.close()
    adverse = {r["prediction_id"] for r in shouty if r["decision"].lower() in ("decline", "review")}
    explained = {e["prediction_id"]: e for e in explanations(engine_settings)}
    assert adverse <= set(explained) and {explained[i]["sampling_reason"] for i in adverse} == {"ADVERSE"}
    exposition = engine.metrics.exposition().decode()
    assert 'whystream_unknown_decisions_total{label="maybe"} 15.0' in exposition
    assert "approve" not in exposition.split("whystream_unknown_decisions_total")[-1]
    assert sum("'maybe'" in r.getMessage() for r in caplog.records) == 1  # warned once
    top = explained[next(iter(adverse))]["top_reasons"]
    assert all(a["shap"] > 0 for a in top)  # an adverse decision's reasons push toward a higher score


def test_strata_beyond_the_cap_pool_as_other_and_weights_still_add_up(engine_settings, small_model):
    records = make_records(small_model, 300, run_id="str")
    candidates = []
    for i, r in enumerate(records):
        r.update(decision="approve", priority=False, score=0.0, threshold=0.5, event_time=NOW - 60_000 + i,
                 segment={"channel": f"id-{i}"})  # a producer that puts an id into the stratum
        candidates.append(r)
    engine = build_engine(engine_settings, config(budget=3, max_strata=4))
    engine.process([message(r, 0, i) for i, r in enumerate(candidates)], now_ms=NOW)
    engine.tick(now_ms=NOW + 10**6)
    engine.close()
    sampled = explanations(engine_settings)
    strata = {e["stratum"] for e in sampled}
    assert OTHER in strata and len(strata) <= 5
    assert sum(e["inclusion_weight"] for e in sampled) == pytest.approx(len(candidates))


def test_reservoir_samples_never_take_the_latency_fallback(engine_settings, small_model):
    records = make_records(small_model, 1500, run_id="lat")
    for i, r in enumerate(records):
        r["event_time"] = NOW - 60_000 + i
    engine = build_engine(engine_settings, EngineConfig(SamplingConfig(new_version_events=0, budget=10),
                                                  latency_budget_ms=0.0))  # every batch is over budget
    engine.process(as_messages(records), now_ms=NOW)
    engine.tick(now_ms=NOW + 10**6)
    engine.close()
    published = explanations(engine_settings)
    by_reason = {}
    for e in published:
        by_reason.setdefault(e["sampling_reason"] == "RESERVOIR", set()).add(e["source"])
    assert by_reason[True] == {"LIVE"}  # samples waited for TreeSHAP
    assert by_reason[False] == {"FALLBACK"}  # priority decisions took the fallback, and say so
