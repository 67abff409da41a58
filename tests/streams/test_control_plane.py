"""The control plane with real processes (`whystream worker`, the Tansu broker, redis-server):
a version announced on `models` is ready before its first event, parked dead letters
are sent back once their version is announced, explain requests are answered on the
topics exactly once, and a challenger's shadow explanations are exact."""

from __future__ import annotations

import re
import shutil
import time
import uuid

import numpy as np
import pytest
from confluent_kafka import Producer
from test_worker import Worker, records_for, send

from whystream.jobs.simulation.generator import TransactionGenerator
from whystream.jobs.simulation.train import train_model
from whystream.jobs.clickhouse.sql import rows as query_rows
from whystream.jobs.sink.sink import Sink
from whystream.kafka.messages import RawMessage
from whystream.kafka.reader import read_all, scan
from whystream.models.events import announce, model_event
from whystream.models.registry import ModelRegistry
from whystream.wire.codecs import codec_for

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(engine_settings):
    """engine_settings: fresh topics, an empty Redis database, a copy of the small model's registry."""
    return engine_settings


def another_version(settings, seed: int, challenger: bool = False, registry=None):
    """A second small fraud model (same features), registered in `registry` (default: the settings')."""
    scratch = ModelRegistry(settings.home / f"scratch-{uuid.uuid4().hex[:6]}")
    trained = train_model(scratch, n_train=6000, num_trees=30, num_leaves=15, seed=seed, progress=False)
    reference = TransactionGenerator(seed + 1).sample(1000).X
    target = registry or ModelRegistry(settings.registry)
    return target.register("fraud", trained.booster, trained.threshold, reference, challenger=challenger)


def kernel_built(worker) -> dict[tuple[str, str], float]:
    """whystream_model_kernel_built_at of the worker: (version, by) -> epoch seconds."""
    _, body = worker.get("/metrics")
    found = re.findall(r'whystream_model_kernel_built_at\{by="([^"]+)",model="[^"]+",version="([^"]+)"\} (\S+)',
                       body.decode())
    return {(version, by): float(value) for by, version, value in found}


def wait_for(what, condition, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def explanations(settings):
    return read_all(settings, settings.topic("explanations"), "ExplanationEvent", timeout=3)


def now_records(model, count, seed, run_id):
    records = records_for(model, count, seed=seed, run_id=run_id)
    now = int(time.time() * 1000)
    for r in records:
        r["event_time"] = now
    return records


def test_a_version_announced_on_models_is_ready_before_its_first_event(settings, small_model, tmp_path):
    worker = Worker(settings, tmp_path)
    try:
        worker.wait_ready()
        send(settings, now_records(small_model, 100, seed=4, run_id="warm"))  # the group joined, the clients warm
        wait_for("the warm-up's explanations", lambda: explanations(settings))
        announced, silent = another_version(settings, seed=21), another_version(settings, seed=22)
        announce(settings, model_event(announced))  # `silent` is only in the registry, as before this issue
        wait_for("the announced version's kernels", lambda: (announced.version, "models-topic") in kernel_built(worker))
        first_latency = {}
        for model, run in ((announced, "after"), (silent, "before")):
            sent_at = time.time()
            records = now_records(model, 200, seed=5, run_id=run)
            send(settings, records)
            found = wait_for(f"explanations of {run}", lambda: [e for e in explanations(settings)
                                                               if e["model_version"] == model.version
                                                               and e["sampling_reason"] != "RESERVOIR"])
            first_latency[run] = float(np.median([e["latency_ms"] for e in found]))
            built = kernel_built(worker)
            if run == "after":  # built when announced, before any event of it was sent
                assert built[(model.version, "models-topic")] < sent_at
                assert (model.version, "first-event") not in built
            else:  # built on the hot path, once its first event arrived
                assert built[(model.version, "first-event")] > sent_at
                assert (model.version, "models-topic") not in built
        print(f"\nfirst-event latency (ms, median of the first batch's priority explanations): kernel built on the first event "
              f"{first_latency['before']:.0f}, preloaded from `models` {first_latency['after']:.0f}")
    finally:
        worker.kill()


def test_parked_unknown_version_dead_letters_are_sent_back_once_it_is_announced(settings, tmp_path):
    elsewhere = ModelRegistry(tmp_path / "elsewhere")  # trained, not yet registered where the worker looks
    shutil.copytree(settings.registry, elsewhere.root)
    later = another_version(settings, seed=31, registry=elsewhere)
    worker = Worker(settings, tmp_path)
    try:
        worker.wait_ready()
        records = now_records(later, 60, seed=6, run_id="parked")
        send(settings, records)
        dlq_codec = codec_for("DeadLetter")
        letters = wait_for("the dead letters", lambda: (lambda got: got if len(got) >= 60 else None)(
            read_all(settings, settings.topic("predictions.dlq"), "DeadLetter", timeout=3)))
        assert {letter["reason_code"] for letter in letters} == {"UNKNOWN_VERSION"} and dlq_codec
        assert not [e for e in explanations(settings) if e["model_version"] == later.version]
        # Registered where the worker looks (the same content: the same version), then announced.
        registered = ModelRegistry(settings.registry).register("fraud", later.booster, later.threshold,
                                                               TransactionGenerator(32).sample(1000).X)
        assert registered.version == later.version
        announce(settings, model_event(registered))
        due = {r["prediction_id"] for r in records if r["decision"] != "approve" or r["priority"]
               or abs(r["score"] - r["threshold"]) <= 0.02}
        found = wait_for("the sent-back events' explanations", lambda: (lambda got: got if due <= got else None)(
            {e["prediction_id"] for e in explanations(settings) if e["model_version"] == later.version}), 120)
        assert due and due <= found <= {r["prediction_id"] for r in records}
        resent = read_all(settings, settings.topic("predictions"), "PredictionEvent", timeout=3)
        assert sum(1 for e in resent if e["model_version"] == later.version) == 2 * len(records)  # once each
    finally:
        worker.kill()


def test_explain_requests_are_answered_once_on_the_topics(settings, small_model, tmp_path, db):
    worker = Worker(settings, tmp_path)
    try:
        worker.wait_ready()
        records = now_records(small_model, 300, seed=7, run_id="ask")
        send(settings, records)
        published = wait_for("explanations", lambda: {e["prediction_id"]: e for e in explanations(settings)})
        unexplained = next(r for r in records if r["prediction_id"] not in published)
        explained = next(iter(published))
        codec = codec_for("ExplainRequest")
        producer = Producer(settings.kafka())
        asks = [("r-published", explained), ("r-computed", unexplained["prediction_id"]), ("r-unknown", "no-such-id"),
                ("r-published", explained)]  # the first request, delivered twice
        for rid, pid in asks:
            producer.produce(settings.topic("explain-requests"),
                             codec.encode({"prediction_id": pid, "requested_by": "test", "request_id": rid}),
                             rid.encode())
        producer.produce(settings.topic("explain-requests"), b"not a request", b"garbage")
        producer.flush(30)

        def answers():
            got = [e for e in explanations(settings) if e.get("request_id")]
            errors = read_all(settings, settings.topic("explain-errors"), "ExplainError", timeout=3)
            return (got, errors) if len(got) >= 2 and len(errors) >= 2 else None
        got, errors = wait_for("the answers", answers, 120)
        time.sleep(3)  # a second answer to the redelivered request would be here by now
        got = [e for e in explanations(settings) if e.get("request_id")]
        assert sorted(e["request_id"] for e in got) == ["r-computed", "r-published"]
        by_id = {e["request_id"]: e for e in got}
        assert all(e["sampling_reason"] == "ON_DEMAND" for e in got)
        assert by_id["r-published"]["prediction_id"] == explained
        assert by_id["r-published"]["attributions"] == published[explained]["attributions"]
        computed = by_id["r-computed"]
        assert computed["prediction_id"] == unexplained["prediction_id"]
        assert computed["base_value"] + sum(a["shap"] for a in computed["attributions"]) == pytest.approx(
            computed["raw_score"], abs=1e-6)
        errors = read_all(settings, settings.topic("explain-errors"), "ExplainError", timeout=3)
        assert sorted((e["error_code"], e["request_id"]) for e in errors) == [
            ("MALFORMED_REQUEST", ""), ("UNKNOWN_DECISION", "r-unknown")]
        assert next(e for e in errors if e["error_code"] == "MALFORMED_REQUEST")["original"] == b"not a request"
        assert {e["requested_by"] for e in got} == {"test"}  # as ExplainRequest.avsc promises
        assert by_id["r-published"]["features_source"] == "explanations"
        assert computed["features_source"] == "predictions"
    finally:
        worker.kill()
    # the sink keeps what was told to whom: the answers in their audit table, with the requester
    client, database = db
    messages = [RawMessage(m.value(), m.key(), m.topic(), m.partition(), m.offset())
                for m in scan(settings, settings.topic("explanations"))]
    sink = Sink(settings, database)
    sink.process(messages)
    audit = query_rows(client, f"""
        SELECT request_id, requested_by, prediction_id, model_version, source, features_source,
               toUnixTimestamp64Milli(explained_at) AS answered_at FROM {database}.explain_answers ORDER BY request_id""")
    assert [(r["request_id"], r["requested_by"], r["prediction_id"], r["features_source"]) for r in audit] == [
        ("r-computed", "test", unexplained["prediction_id"], "predictions"),
        ("r-published", "test", explained, "explanations")]
    assert {r["model_version"] for r in audit} == {small_model.version}
    assert [r["answered_at"] for r in audit] == [by_id["r-computed"]["explained_at"],
                                                 by_id["r-published"]["explained_at"]]
    assert query_rows(client, f"SELECT count() AS n FROM {database}.explanations WHERE request_id != ''")[0]["n"] == 0


def test_a_challengers_paired_explanations_are_exact(settings, small_model, tmp_path):
    challenger = another_version(settings, seed=41, challenger=True)
    registry = ModelRegistry(settings.registry)
    assert registry.challenger("fraud") == challenger.version and registry.latest("fraud") == small_model.version
    worker = Worker(settings, tmp_path)
    try:
        worker.wait_ready()
        announce(settings, model_event(challenger, "CHALLENGER"))
        wait_for("the challenger's kernels", lambda: (challenger.version, "models-topic") in kernel_built(worker))
        records = now_records(small_model, 300, seed=8, run_id="shadow")
        send(settings, records)

        def paired():
            found = explanations(settings)
            champions = {e["prediction_id"]: e for e in found if e["role"] == "CHAMPION"}
            shadows = [e for e in found if e["role"] == "CHALLENGER"]
            return (champions, shadows) if champions and len(shadows) >= len(champions) else None
        try:
            champions, shadows = wait_for("paired explanations", paired, 120)
        except AssertionError:
            print(worker.get("/metrics")[1].decode())
            raise
        assert {s["champion_prediction_id"] for s in shadows} == set(champions)
        assert len(shadows) == len(champions)  # one each
        by_id = {r["prediction_id"]: r for r in records}
        names = challenger.feature_names
        X = np.array([[np.nan if by_id[s["champion_prediction_id"]]["features"][f] is None
                       else by_id[s["champion_prediction_id"]]["features"][f] for f in names] for s in shadows])
        raw = challenger.booster.predict(X, raw_score=True)
        score = challenger.booster.predict(X)
        for s, r, p in zip(shadows, raw, score):
            assert s["model_version"] == challenger.version
            assert s["prediction_id"] == f"{s['champion_prediction_id']}~{challenger.version}"
            assert s["source"] == "LIVE" and s["raw_score"] == pytest.approx(r, abs=1e-9)
            assert s["base_value"] + sum(a["shap"] for a in s["attributions"]) == pytest.approx(r, abs=1e-6)
            assert s["score"] == pytest.approx(p) and s["threshold"] == pytest.approx(challenger.threshold)
            champion = champions[s["champion_prediction_id"]]
            assert s["decision"] == champion["decision"] and s["sampling_reason"] == champion["sampling_reason"]
        assert any(abs(s["raw_score"] - champions[s["champion_prediction_id"]]["raw_score"]) > 1e-3 for s in shadows)
    finally:
        worker.kill()
