"""Bring your own model, end to end on the embedded stack: models of every LightGBM
objective registered with the real CLI, PredictionEvents sent by
examples/produce_predictions.py (confluent-kafka, fastavro and the .avsc only), a
real `whystream worker` explaining them, the explanations decoded from the topic
with the .avsc alone, and stored in ClickHouse where the auditor's queries of docs/cookbook.md
find the principal reasons. Bad events (a class out of range, a version the
explainer cannot serve) go to the dead-letter topic and the worker carries on."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import fastavro
import lightgbm as lgb
import numpy as np
import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form
from test_worker import Worker

from support import REPO
from support.cli import cli, write_csv
from support.docs import cookbook
from support.objective_models import FEATURES, N_CLASSES, OBJECTIVES, make_rows, train
from whystream.jobs.clickhouse.sql import rows as query_rows
from whystream.jobs.sink import explanation_rows
from whystream.kafka.reader import read_all, scan
from whystream.models.registry import ModelRegistry

pytestmark = pytest.mark.integration
ROOT = REPO
CODES = {"amount": ("AMT", "Amount of the application"), "tenure": ("TEN", "Length of relationship"),
         "utilisation": ("UTL", "Credit utilisation"), "velocity": ("VEL", "Number of recent applications")}
TOL = 1e-6


def avsc_decoder(name: str):
    """Decode single-object encoded `name` events with the .avsc file and fastavro alone."""
    schema = fastavro.parse_schema(json.loads((ROOT / "schemas" / f"{name}.avsc").read_text()))
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))

    def decode(value: bytes) -> dict:
        assert value[:2] == b"\xc3\x01" and value[2:10] == fp
        return fastavro.schemaless_reader(io.BytesIO(value[10:]), schema)
    return decode


@pytest.fixture(scope="module")
def byo_registry(tmp_path_factory):
    """A registry holding a model of every objective (through `whystream register`), and a
    version with linear trees put there behind the CLI's back."""
    root = tmp_path_factory.mktemp("byo-stream")
    registry = root / "registry"
    reference = write_csv(root / "reference.csv", make_rows(1200, 21))
    (root / "codes.csv").write_text("feature,code,text\n" + "".join(f"{f},{c},{t}\n" for f, (c, t) in CODES.items()))
    boosters = {}
    for objective in OBJECTIVES:
        boosters[objective] = booster = train(objective)
        booster.save_model(str(root / f"{objective}.txt"))
        args = ["register", objective, str(root / f"{objective}.txt"), "--reference", str(reference),
                "--reason-codes", str(root / "codes.csv")]
        if objective == "binary":
            args += ["--threshold", "0.5"]
        code, out = cli(registry, *args)
        assert code == 0, out
    # A version the kernel cannot explain, copied in by hand (what `register` refuses).
    good = ModelRegistry(registry).load("regression")
    linear = root / "registry" / "regression" / "linear0000ab"
    shutil.copytree(good.path, linear)
    X = np.nan_to_num(make_rows(500, 2))
    lgb.train(dict(objective="regression", linear_tree=True, verbose=-1, num_threads=1),
              lgb.Dataset(X, X[:, 1], feature_name=FEATURES), num_boost_round=3).save_model(str(linear / "model.txt"))
    meta = json.loads((linear / "meta.json").read_text())
    (linear / "meta.json").write_text(json.dumps({**meta, "version": "linear0000ab"}))
    return registry, boosters


def decisions(registry: Path, boosters: dict) -> tuple[list[dict], dict]:
    """Events for every objective (always explained: priority), and what each must be explained as."""
    rows = make_rows(40, 77)
    events, expected = [], {}
    reg = ModelRegistry(registry)
    for objective in OBJECTIVES:
        model, booster = reg.load(objective), boosters[objective]
        for i in range(4):
            x = rows[(OBJECTIVES.index(objective) * 4 + i) % len(rows)]
            raw = np.asarray(booster.predict(x[None, :], raw_score=True)).reshape(-1)
            decision_class = (i % N_CLASSES) if model.kind.multiclass and i < 2 else None
            pid = f"{objective}-{i}"
            events.append({"model": objective, "version": model.version, "prediction_id": pid,
                           "features": {f: (None if np.isnan(v) else float(v)) for f, v in zip(FEATURES, x)},
                           "score": float(np.max(booster.predict(x[None, :]))), "decision": "decline" if i % 2 == 0
                           else "approve", "threshold": 0.5, "priority": True, "decision_class": decision_class})
            klass = decision_class if decision_class is not None else (int(np.argmax(raw)) if len(raw) > 1 else None)
            expected[pid] = (model, x, klass, raw[klass or 0])
    bad = [
        {"model": "multiclass", "version": reg.load("multiclass").version, "prediction_id": "bad-class",
         "features": {}, "score": 0.4, "decision": "decline", "threshold": 0.5, "decision_class": N_CLASSES},
        {"model": "binary", "version": reg.load("binary").version, "prediction_id": "class-for-binary",
         "features": {}, "score": 0.4, "decision": "decline", "threshold": 0.5, "decision_class": 1},
        {"model": "regression", "version": "linear0000ab", "prediction_id": "linear", "features": {},
         "score": 0.4, "decision": "decline", "threshold": 0.5},
    ]
    return events + bad, expected


def test_every_objective_end_to_end_through_a_real_worker(engine_settings, byo_registry, tmp_path, db):  # noqa: F811
    registry, boosters = byo_registry
    settings = engine_settings.with_(registry=registry)
    events, expected = decisions(registry, boosters)
    worker = Worker(settings, tmp_path)
    worker.wait_ready()
    path = tmp_path / "decisions.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    sent = subprocess.run([sys.executable, str(ROOT / "examples" / "produce_predictions.py"), "--broker",
                           settings.broker, "--topic", settings.topic("predictions"), "--events", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert sent.returncode == 0 and f"sent {len(events)} PredictionEvent(s)" in sent.stdout, sent.stderr

    raw_values: list[bytes] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(raw_values) < len(expected):
        raw_values = [m.value() for m in scan(settings, settings.topic("explanations"), 10)]
        time.sleep(0.5)
    dead = read_all(settings, settings.topic("predictions.dlq"), "DeadLetter")
    as_the_sink_reads_them = read_all(settings, settings.topic("explanations"), "ExplanationEvent")
    assert worker.process.poll() is None, "the worker died of its input"
    worker.kill()

    decode = avsc_decoder("ExplanationEvent")
    explained = {e["prediction_id"]: e for e in map(decode, raw_values)}
    assert set(explained) == set(expected)
    for pid, (model, x, klass, raw) in expected.items():
        e = explained[pid]
        shap = np.array([a["shap"] for a in e["attributions"]])
        assert e["output_space"] == model.kind.output_space and e["explained_class"] == klass, pid
        assert e["source"] == "LIVE" and abs(e["raw_score"] - raw) <= TOL * max(1, abs(raw)), pid
        assert abs(e["base_value"] + shap.sum() - e["raw_score"]) <= TOL * max(1, abs(raw)), pid
        assert e["reason_codes_version"] == model.reason_codes_version is not None
        if e["decision"] == "decline":
            toward = [r for r in e["top_reasons"] if r["shap"] > 0][:4]
            assert [r["feature"] for r in e["principal_reasons"]] == [r["feature"] for r in toward], pid
            assert all(r["code"] == CODES.get(r["feature"], (r["feature"],))[0] for r in e["principal_reasons"])
            shaps = [r["shap"] for r in e["principal_reasons"]]
            assert shaps == sorted(shaps, reverse=True) and all(s > 0 for s in shaps)
        else:
            assert e["principal_reasons"] == []
    assert any(e["principal_reasons"] for e in explained.values())
    assert {e["explained_class"] for e in explained.values()} >= set(range(N_CLASSES)) | {None}

    reasons = {d["prediction_id"]: (d["reason_code"], d["reason"]) for d in dead}
    assert reasons["bad-class"][0] == "BAD_CLASS" and "classes 0..2" in reasons["bad-class"][1]
    assert reasons["class-for-binary"][0] == "BAD_CLASS" and "single output" in reasons["class-for-binary"][1]
    assert reasons["linear"][0] == "MODEL_UNAVAILABLE" and "linear trees" in reasons["linear"][1]

    # ClickHouse keeps them; the cookbook's auditor queries (docs/cookbook.md) answer from the table.
    client, database = db
    explanation_rows.insert_explanations(client, as_the_sink_reads_them, database)
    adverse = next(pid for pid in sorted(explained) if len(explained[pid]["principal_reasons"]) > 1)
    one = query_rows(client, cookbook(database)["principal reasons of one decision"].replace(
        "the-prediction-id", adverse))
    assert [(r["rank"], r["code"], r["text"], r["feature"], r["shap"]) for r in one] == [
        (k + 1, p["code"], p["text"], p["feature"], p["shap"]) for k, p in enumerate(explained[adverse]["principal_reasons"])]
    day = query_rows(client, cookbook(database)["most frequent principal reasons of a day"])
    counts: dict = {}
    for e in explained.values():
        for k, p in enumerate(e["principal_reasons"]):
            key = (e["model_name"], p["code"])
            total, first = counts.get(key, (0, 0))
            counts[key] = (total + 1, first + (k == 0))
    expected_top = sorted(counts.items(), key=lambda kv: -kv[1][0])[:20]
    assert {(r["model_name"], r["code"]): (r["decisions"], r["as_first_reason"]) for r in day} == dict(expected_top) \
        or len(counts) > 20
    assert all(r["reason_codes_version"] for r in day)


