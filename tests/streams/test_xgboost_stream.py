"""XGBoost, scikit-learn and CatBoost models end to end on the embedded stack: an XGBoost
multiclass model (native categorical splits, missing values), an XGBoost challenger to a
LightGBM champion, a scikit-learn RandomForest classifier (skops, explained in
probability), a HistGradientBoosting classifier (skops, margin) and a CatBoost classifier (.cbm), registered with the real CLI; PredictionEvents sent by examples/produce_predictions.py;
a real `whystream worker` (which never imports xgboost: it reads the stored LightGBM
text) explains them; the explanations, decoded from the topic with the
.avsc alone, are XGBoost's own margins and pred_contribs (within float32), the champion's
LightGBM SHAP, the forest's probability and shap TreeExplainer values, CatBoost's
RawFormulaVal and ShapValues;
stored in ClickHouse (chDB) by the real sink with every decision in the store, `verify`
recomputes every one, and each family's attribution drift (against its registered reference) and
input drift (from every stored decision) are computed as `whystream drift` computes them."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import shap
import skops.io as sio
from catboost import CatBoostClassifier, Pool
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from test_byo_stream import avsc_decoder
from test_worker import Worker

from support import REPO
from support.cli import cli, write_csv
from support.objective_models import FEATURES, make_rows, target
from support.objective_models import train as train_lightgbm
from support.xgboost_models import own
from support.xgboost_models import train as train_xgboost
from whystream.jobs.analytics import drift_source, drift_sql, verify
from whystream.jobs.sink.sink import Sink
from whystream.kafka.messages import RawMessage
from whystream.kafka.reader import read_all, scan
from whystream.models.events import announce, model_event
from whystream.models.registry import ModelRegistry

pytestmark = pytest.mark.integration
F32 = 2.0 ** -24
ROUNDS = 12


@pytest.fixture
def registered(engine_settings, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    reference = write_csv(root / "reference.csv", make_rows(1000, 21))
    boosters = {"credit": train_lightgbm("binary"), "credit~xgb": train_xgboost("binary", rounds=ROUNDS),
                "tiers": train_xgboost("softprob", rounds=ROUNDS)}
    boosters["credit"].save_model(str(root / "credit.txt"))
    boosters["credit~xgb"].save_model(str(root / "credit.ubj"))
    boosters["tiers"].save_model(str(root / "tiers.json"))
    X = make_rows(1200, 3)
    boosters["forest"] = RandomForestClassifier(10, max_depth=5, random_state=0).fit(
        pd.DataFrame(X, columns=FEATURES), target("binary", X, 4))
    sio.dump(boosters["forest"], root / "forest.skops")
    boosters["hgb"] = HistGradientBoostingClassifier(max_iter=15, max_leaf_nodes=8, random_state=0).fit(
        pd.DataFrame(X, columns=FEATURES), target("binary", X, 6))
    sio.dump(boosters["hgb"], root / "hgb.skops")
    boosters["cat"] = CatBoostClassifier(iterations=15, depth=4, verbose=0, random_seed=0, thread_count=1,
                                         allow_writing_files=False).fit(
        pd.DataFrame(X, columns=FEATURES), target("binary", X, 5))
    boosters["cat"].save_model(str(root / "cat.cbm"))
    registry = root / "registry"
    for argv in (["forest", str(root / "forest.skops"), "--threshold", "0.5"],
                 ["cat", str(root / "cat.cbm"), "--threshold", "0.5"],
                 ["hgb", str(root / "hgb.skops"), "--threshold", "0.5"],
                 ["credit", str(root / "credit.txt"), "--threshold", "0.5"],
                 ["credit", str(root / "credit.ubj"), "--threshold", "0.5", "--challenger-of", "credit"],
                 ["tiers", str(root / "tiers.json")]):
        code, out = cli(registry, "register", *argv, "--reference", str(reference))
        assert code == 0, out
    return engine_settings.with_(registry=registry), boosters


def test_xgboost_models_and_an_xgboost_challenger_through_a_real_worker(registered, tmp_path, db):
    settings, boosters = registered
    registry = ModelRegistry(settings.registry)
    champion, tiers, forest, cat, hgb = (registry.load(n) for n in ("credit", "tiers", "forest", "cat", "hgb"))
    challenger = registry.load("credit", registry.challenger("credit"))
    assert (champion.family, challenger.family, tiers.family, forest.family, cat.family, hgb.family) == (
        "lightgbm", "xgboost", "xgboost", "sklearn", "catboost", "sklearn")
    rows = make_rows(28, 77)
    events = []
    for i, x in enumerate(rows):
        model = champion if i < 8 else tiers if i < 16 else forest if i < 20 else cat if i < 24 else hgb
        events.append({"model": model.name, "version": model.version, "prediction_id": f"{model.name}-{i}",
                       "features": {f: (None if np.isnan(v) else float(v)) for f, v in zip(FEATURES, x)},
                       "score": 0.7, "decision": "decline" if i % 2 else "approve", "threshold": 0.5,
                       "priority": True, "decision_class": (i % 3) if model is tiers and i % 4 == 0 else None})
    worker = Worker(settings, tmp_path, "--latency-budget-ms", "120000")  # live TreeSHAP even on a loaded machine
    try:
        worker.wait_ready(180)
        announce(settings, model_event(challenger, "CHALLENGER"))
        time.sleep(2)  # the worker builds the challenger's kernels on the announcement
        path = tmp_path / "decisions.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in events))
        sent = subprocess.run([sys.executable, str(REPO / "examples" / "produce_predictions.py"), "--broker",
                               settings.broker, "--topic", settings.topic("predictions"), "--events", str(path)],
                              capture_output=True, text=True, timeout=120)
        assert sent.returncode == 0, sent.stderr
        decode = avsc_decoder("ExplanationEvent")
        found: dict = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(found) < len(events) + 8:  # + the 8 shadows
            found = {e["prediction_id"]: e for e in map(decode, (m.value() for m in scan(
                settings, settings.topic("explanations"), 10)))}
            time.sleep(0.5)
        assert worker.process.poll() is None, "the worker died"
        maps = open(f"/proc/{worker.process.pid}/maps").read()
        dead = read_all(settings, settings.topic("predictions.dlq"), "DeadLetter")
        as_the_sink_reads_them = read_all(settings, settings.topic("explanations"), "ExplanationEvent")
        assert len(found) == len(events) + 8, (sorted(found), dead, worker.get("/metrics")[1].decode()[-3000:])
    finally:
        worker.kill()
    assert len(found) == len(events) + 8, sorted(found)
    # XGBoost's library never loaded by the worker (scikit-learn may be: LightGBM imports it when installed)
    assert "lightgbm" in maps and "xgboost" not in maps

    by_id = {e["prediction_id"]: (i, e) for i, e in enumerate(events)}
    raw_xgb, contrib_xgb = own(boosters["credit~xgb"], rows[:8])
    raw_tiers, contrib_tiers = own(boosters["tiers"], rows[8:16])
    forest_rows = pd.DataFrame(rows[16:20], columns=FEATURES)
    cat_rows = pd.DataFrame(rows[20:24], columns=FEATURES)
    hgb_rows = pd.DataFrame(rows[24:], columns=FEATURES)
    hgb_raw = boosters["hgb"].decision_function(hgb_rows)
    hgb_explainer = shap.TreeExplainer(boosters["hgb"])
    hgb_shap = np.asarray(hgb_explainer.shap_values(hgb_rows))
    cat_raw = boosters["cat"].predict(cat_rows, prediction_type="RawFormulaVal")
    cat_shap = boosters["cat"].get_feature_importance(Pool(cat_rows), type="ShapValues")
    proba = boosters["forest"].predict_proba(forest_rows)[:, 1]
    explainer = shap.TreeExplainer(boosters["forest"])
    forest_shap = np.asarray(explainer.shap_values(forest_rows))[:, :, 1]
    lgb_contrib = boosters["credit"].predict(rows[:8], pred_contrib=True)
    for pid, e in found.items():
        assert e["source"] == "LIVE", (pid, e["source"])
        by_feature = {a["feature"]: a["shap"] for a in e["attributions"]}
        phi = np.array([by_feature[f] for f in FEATURES] + [e["base_value"]])
        if e["role"] == "CHALLENGER":  # the XGBoost challenger, in the champion's shadow
            i, _ = by_id[e["champion_prediction_id"]]
            assert pid == f"{e['champion_prediction_id']}~{challenger.version}" and e["output_space"] == "raw_margin"
            expected_raw, expected = raw_xgb[i, 0], contrib_xgb[i, 0]
        elif e["model_name"] == "forest":  # the forest: the probability and shap's values, in probability space
            i, _ = by_id[pid]
            assert e["output_space"] == "probability" and abs(e["raw_score"] - proba[i - 16]) <= 1e-12
            np.testing.assert_allclose(phi, [*forest_shap[i - 16], explainer.expected_value[1]], rtol=0, atol=1e-9)
            continue
        elif e["model_name"] == "cat":  # CatBoost: its empty leaves count 2^-30 where CatBoost skips them
            i, _ = by_id[pid]
            assert e["output_space"] == "raw_margin" and abs(e["raw_score"] - cat_raw[i - 20]) <= 1e-12
            np.testing.assert_allclose(phi, cat_shap[i - 20], rtol=0, atol=1e-7)
            continue
        elif e["model_name"] == "hgb":  # HistGradientBoosting: its margin and shap's values (missing values too)
            i, _ = by_id[pid]
            assert e["output_space"] == "raw_margin" and abs(e["raw_score"] - hgb_raw[i - 24]) <= 1e-12
            np.testing.assert_allclose(phi, [*hgb_shap[i - 24], float(np.ravel(hgb_explainer.expected_value)[0])],
                                       rtol=0, atol=1e-9)
            continue
        elif e["model_name"] == "credit":  # the LightGBM champion: exact
            i, _ = by_id[pid]
            np.testing.assert_allclose(phi, lgb_contrib[i], rtol=0, atol=1e-9)
            continue
        else:  # the XGBoost multiclass champion, for the class asked for or its top class
            i, event = by_id[pid]
            klass = event["decision_class"] if event["decision_class"] is not None else int(np.argmax(raw_tiers[i - 8]))
            assert e["explained_class"] == klass and e["output_space"] == "softmax_logit"
            expected_raw, expected = raw_tiers[i - 8, klass], contrib_tiers[i - 8, klass]
        # XGBoost adds ROUNDS trees and its base score in float32 (whystream/models/reference.py: check_own)
        bound = 1e-6 + (ROUNDS + 1) * F32 * max(1.0, float(np.abs(expected).sum()))
        assert abs(e["raw_score"] - expected_raw) <= bound and np.abs(phi - expected).max() <= bound, (
            pid, e["raw_score"], expected_raw, phi, expected, e["explained_class"], e["base_value"])
        assert abs(e["base_value"] + phi[:-1].sum() - e["raw_score"]) <= 1e-9 * max(1, abs(e["raw_score"]))

    # principal reasons of the XGBoost model's adverse decisions; stored in ClickHouse as the sink does, and
    # every explanation (XGBoost champion and shadows alike) recomputed by `whystream verify` from the registry
    declined = [e for e in found.values() if e["model_name"] == "tiers" and e["decision"] == "decline"]
    assert declined and all(e["principal_reasons"] for e in declined)
    for e in declined:
        toward = [r["feature"] for r in e["top_reasons"] if r["shap"] > 0][:4]
        assert [r["feature"] for r in e["principal_reasons"]] == toward
    # stored by the real sink (explanations, and every decision in the store), recomputed by `whystream verify`
    client, database = db
    Sink(settings, database, decisions=True).process(
        [RawMessage(m.value(), m.key(), m.topic(), m.partition(), m.offset())
         for topic in ("predictions", "explanations") for m in scan(settings, settings.topic(topic))])
    verdicts = verify.verify_ids(client, settings, registry, sorted(found), database=database)
    assert len(verdicts) == len(found) and {x.status for x in verdicts} == {verify.MATCH}, verdicts
    # drift for every family: attribution drift against each version's registered reference, input drift from
    # every stored decision, as `whystream drift` reads them
    start, end = window_around(e["event_time"] for e in found.values())
    for name in ("credit", "tiers", "forest", "cat", "hgb"):
        attribution = drift_sql.feature_drift(client, name, start, end, database)
        assert {r["feature"] for r in attribution} == set(FEATURES), name
        assert all(r["n"] > 0 and np.isfinite(r["psi"]) and r["reference_mean_abs_shap"] > 0 for r in attribution), (
            name, attribution)
        inputs = drift_source.input_rows(client, name, start, end, database)
        decided = {e["version"] for e in events if e["model"] == name}  # the challenger only shadows: its sample
        assert {(r["model_version"], r["source"]) for r in inputs} == {
            (r["model_version"], drift_source.ALL if r["model_version"] in decided else drift_source.SAMPLE)
            for r in attribution}, (name, inputs)
        counted = {r["feature"]: r["n"] for r in inputs if r["source"] == drift_source.ALL}
        assert counted == {f: sum(1 for e in events if e["model"] == name) for f in FEATURES}, (name, counted)


def window_around(event_times) -> tuple[int, int]:
    """A drift window (epoch ms) from a minute before the first event time to a minute after the last."""
    ms = [int(t.timestamp() * 1000) if hasattr(t, "timestamp") else int(t) for t in event_times]
    return min(ms) - 60_000, max(ms) + 60_000
