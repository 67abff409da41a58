"""The score check and the reasons on both sides, through the engine on the real stack
(broker, Redis, a registered model): a producer whose features were rescaled after
scoring (`amount` x 4 with the old scores, the issue's case) is caught by the metric and
the flag on each explanation; honest producers are not; every explanation names its
adverse reasons (approvals too) and when the broker received the decision."""

from __future__ import annotations

import numpy as np

from support.events import NOW, make_records, message
from whystream.kafka.reader import read_all
from whystream.streams.assembly import build_engine
from whystream.streams.engine import EngineConfig
from whystream.streams.sampling.config import SamplingConfig


def sample_value(metrics, name: str, **labels) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_a_producer_with_rescaled_features_is_caught_by_the_metric_and_the_flag(engine_settings, small_model):
    records = [{**r, "priority": True} for r in make_records(small_model, 400, seed=11, run_id="sc")]  # all explained
    rescaled = [{**r, "prediction_id": r["prediction_id"] + "-x4",
                 "features": {**r["features"], "amount": None if r["features"]["amount"] is None
                              else r["features"]["amount"] * 4}} for r in records[200:]]
    honest = records[:200]
    sent = honest + rescaled
    engine = build_engine(engine_settings, EngineConfig(SamplingConfig(new_version_events=0)))
    engine.process([message(r, i % 4, i // 4, NOW + i) for i, r in enumerate(sent)])
    engine.close()
    events = {e["prediction_id"]: e for e in read_all(engine_settings, engine_settings.topic("explanations"),
                                                      "ExplanationEvent")}
    assert set(events) == {r["prediction_id"] for r in sent}

    # what the registered model itself says of the features sent, computed apart from the worker
    names = small_model.feature_names
    X = np.array([[np.nan if r["features"][f] is None else r["features"][f] for f in names] for r in sent])
    own = small_model.booster.predict(X)
    expected = np.abs(own - np.array([r["score"] for r in sent])) > 1e-3
    flags = np.array([events[r["prediction_id"]]["score_mismatch"] for r in sent])
    np.testing.assert_allclose([events[r["prediction_id"]]["model_score"] for r in sent], own, rtol=0, atol=1e-9)
    assert not flags[:200].any()  # honest scores: never flagged
    assert flags[200:].sum() > 20  # the case: many rescaled decisions are off
    assert (flags == expected).all()
    labels = dict(model=small_model.name, version=small_model.version)
    assert sample_value(engine.metrics, "whystream_score_mismatch_total", **labels) == flags.sum()
    assert sample_value(engine.metrics, "whystream_score_checked_total", **labels) == len(sent)


def test_every_explanation_names_its_adverse_reasons_and_when_the_broker_received_it(engine_settings, small_model):
    records = [{**r, "priority": True} for r in make_records(small_model, 300, seed=12, run_id="ar")]
    engine = build_engine(engine_settings, EngineConfig(SamplingConfig(new_version_events=0)))
    engine.process([message(r, i % 4, i // 4, NOW + i) for i, r in enumerate(records)])
    engine.close()
    events = read_all(engine_settings, engine_settings.topic("explanations"), "ExplanationEvent")
    received = {r["prediction_id"]: NOW + i for i, r in enumerate(records)}
    approvals_with_risk = 0
    for e in events:
        assert e["received_at"] == received[e["prediction_id"]]
        toward_adverse = sorted((a for a in e["attributions"] if a["shap"] > 0), key=lambda a: -a["shap"])[:5]
        assert e["adverse_reasons"] == toward_adverse
        if e["decision"] in ("decline", "review"):
            assert e["adverse_reasons"] == e["top_reasons"]
        else:  # top_reasons keeps its meaning: toward approval
            assert all(a["shap"] < 0 for a in e["top_reasons"])
            approvals_with_risk += bool(e["adverse_reasons"])
    assert approvals_with_risk > 100
