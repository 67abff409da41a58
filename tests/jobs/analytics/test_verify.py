"""`whystream verify` on a real pipeline: PredictionEvents on the real broker, the real
engine explains them, the real sink writes them into chDB; then every stored
explanation is recomputed with its registered model version (jobs/analytics/verify.py)."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid

import numpy as np
import pytest
from typer.testing import CliRunner

from support.events import make_records, on_the_topic
from support.objective_models import FEATURES, N_CLASSES, make_rows, train
from whystream.cli import app
from whystream.jobs.analytics import verify as v
from whystream.jobs.sink import explanation_rows
from whystream.jobs.sink.sink import Sink
from whystream.kafka.messages import RawMessage
from whystream.kafka.reader import scan
from whystream.models.registry import ModelRegistry
from whystream.streams.assembly import build_engine
from whystream.streams.engine import EngineConfig
from whystream.streams.sampling.config import SamplingConfig
from whystream.wire.codecs import codec_for


def pipeline(settings, database, records, **engine) -> list[dict]:
    """Records -> `predictions` -> engine -> `explanations` -> sink -> ClickHouse; the explanations."""
    worker = build_engine(settings, EngineConfig(SamplingConfig(new_version_events=0, budget=5), **engine))
    worker.process(on_the_topic(settings, records))
    worker.close()
    raw = [RawMessage(m.value(), m.key(), m.topic(), m.partition(), m.offset())
           for m in scan(settings, settings.topic("explanations"), 30)]
    sink = Sink(settings, database)
    assert sink.process(raw) == len(raw) > 0
    sink.close()
    codec = codec_for("ExplanationEvent", None, settings.topic("explanations"))
    return [codec.decode(m.value) for m in raw]


def cli(settings, database, *args):
    flags = ["--clickhouse-dsn", settings.clickhouse_dsn, "--home", f"/tmp/verify-{uuid.uuid4().hex[:6]}",
             "--registry", str(settings.registry), "--broker", settings.broker,
             "--topic-prefix", settings.topic_prefix or ""]
    return CliRunner().invoke(app, [*flags, "verify", *args, "--database", database], env={"COLUMNS": "250"})


def retouched(event: dict, **changes) -> dict:
    """A stored explanation changed after the fact: the same id, written later (FINAL keeps it)."""
    return {**event, "explained_at": event["explained_at"] + 1000, **changes}


def test_live_explanations_match_and_tampering_is_found(engine_settings, small_model, db):
    client, database = db
    published = pipeline(engine_settings, database, make_records(small_model, 600, seed=41, run_id="verify"),
                         latency_budget_ms=600_000)  # no fallback on a busy machine: this test is about TreeSHAP
    assert {e["source"] for e in published} <= {"LIVE", "CACHE"}

    result = cli(engine_settings, database, "--sample", "25")
    assert result.exit_code == 0, result.output
    assert f"{min(25, len(published))} explanation(s) checked: {min(25, len(published))} match" in result.output

    target = published[0]
    result = cli(engine_settings, database, target["prediction_id"])
    assert result.exit_code == 0, result.output
    assert "per feature" in result.output and small_model.feature_names[0] in result.output
    result = cli(engine_settings, database, target["prediction_id"], "--format", "json")
    assert result.exit_code == 0, result.output
    [verdict] = json.loads(result.stdout)  # the progress bar and the summary went to stderr
    assert (verdict["prediction_id"], verdict["status"]) == (target["prediction_id"], v.MATCH)
    assert [f["feature"] for f in verdict["features"]] == small_model.feature_names
    assert verdict["max_shap_diff"] <= verdict["tolerance"]
    result = cli(engine_settings, database, "--sample", "5", "--format", "csv")
    assert result.exit_code == 0 and [r["status"] for r in csv.DictReader(io.StringIO(result.stdout))] == ["MATCH"] * 5
    result = cli(engine_settings, database, "--sample", "5", "--model", "nosuch")
    assert result.exit_code != 0 and "no model 'nosuch'" in str(result.exception)

    # one attribution nudged by 1e-6 in storage: found, named, non-zero exit
    attributions = [dict(a) for a in target["attributions"]]
    attributions[3]["shap"] += 1e-6
    explanation_rows.insert_explanations(client, [retouched(target, attributions=attributions)], database)
    result = cli(engine_settings, database, target["prediction_id"])
    assert result.exit_code == 1, result.output
    verdict = v.verify_ids(client, engine_settings, ModelRegistry(engine_settings.registry),
                           [target["prediction_id"]], database=database)[0]
    assert verdict.status == v.MISMATCH and verdict.worst_feature == attributions[3]["feature"]
    assert verdict.max_shap_diff == pytest.approx(1e-6, rel=1e-3) and "attributions" in verdict.detail

    # a stored value changed (the attributions left alone): its recomputed attributions differ
    third = published[2]
    values = [dict(a) for a in third["attributions"]]
    j = max((i for i, a in enumerate(values) if a["value"] is not None), key=lambda i: abs(values[i]["shap"]))
    values[j]["value"] = -1e12 if values[j]["value"] > 0 else 1e12
    explanation_rows.insert_explanations(client, [retouched(third, attributions=values)], database)
    result = cli(engine_settings, database, third["prediction_id"])
    assert result.exit_code == 1 and "MISMATCH" in result.output, result.output

    # and from the decision's event on the topic, the changed value itself is named
    other = published[1]
    values = [dict(a) for a in other["attributions"]]
    j = next(i for i, a in enumerate(values) if a["value"] is not None)
    values[j]["value"] += 1000.0
    explanation_rows.insert_explanations(client, [retouched(other, attributions=values)], database)
    verdict = v.verify_ids(client, engine_settings, ModelRegistry(engine_settings.registry),
                           [other["prediction_id"]], from_topic=True, database=database)[0]
    assert verdict.status == v.MISMATCH and values[j]["feature"] in verdict.detail
    assert verdict.inputs == "predictions topic"

    result = cli(engine_settings, database, "no-such-decision")
    assert result.exit_code == 3 and result.stdout == "" and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("whystream: error: no-such-decision: NOT FOUND")
    result = cli(engine_settings, database, "no-such-decision", "--format", "json")
    assert result.exit_code == 3 and json.loads(result.stdout)[0]["status"] == v.NOT_FOUND


def test_fallback_and_redacted_explanations(engine_settings, small_model, db):
    client, database = db
    hidden = small_model.feature_names[:2]
    published = pipeline(engine_settings, database, make_records(small_model, 300, seed=43, run_id="fallback"),
                         latency_budget_ms=0, redact=frozenset(hidden))
    fallback = [e for e in published if e["source"] == "FALLBACK"]
    assert fallback and all(e["redacted_features"] == hidden for e in published)
    ids = [e["prediction_id"] for e in published[:20]]
    found = v.verify_ids(client, engine_settings, ModelRegistry(engine_settings.registry), ids, database=database)
    assert [x.status for x in found] == [v.MATCH] * len(ids)
    assert {x.inputs for x in found} == {"predictions topic"}  # the redacted values came from the event
    assert {x.stored.source for x in found} >= {"FALLBACK"}

    # without the topic (another prefix: the events are not there) the stored rows cannot be recomputed alone
    elsewhere = engine_settings.with_(topic_prefix=f"gone{uuid.uuid4().hex[:6]}.")
    found = v.verify_ids(client, elsewhere, ModelRegistry(engine_settings.registry), ids[:3], database=database)
    assert [x.status for x in found] == [v.UNVERIFIABLE] * 3
    assert all("redacted" in x.detail and hidden[0] in x.detail for x in found)
    assert v.exit_code(found) == 3


def multiclass_records(model, n: int) -> list[dict]:
    rows = make_rows(n, 91)
    now = int(time.time() * 1000)
    return [{"prediction_id": f"mc-{uuid.uuid4().hex[:6]}-{i}", "model_name": model.name,
             "model_version": model.version, "event_time": now + i,
             "features": {f: None if np.isnan(x) else float(x) for f, x in zip(FEATURES, row)},
             "score": 0.5, "decision": "approve", "threshold": 0.5, "segment": {}, "priority": True,
             "decision_class": (i % N_CLASSES) if i % 2 else None} for i, row in enumerate(rows)]


def test_multiclass_explanations_are_recomputed_for_their_class(engine_settings, db, tmp_path):
    client, database = db
    registry = ModelRegistry(tmp_path / "registry")
    model = registry.register("classes", train("multiclass"), None, make_rows(1000, 5))
    settings = engine_settings.with_(registry=tmp_path / "registry")
    published = pipeline(settings, database, multiclass_records(model, 30), latency_budget_ms=600_000)
    assert {e["explained_class"] for e in published} == set(range(N_CLASSES))
    found = v.verify_ids(client, settings, registry, [e["prediction_id"] for e in published], database=database)
    assert [x.status for x in found] == [v.MATCH] * len(published)

    # the same explanation claimed for another class no longer matches
    event = published[0]
    explanation_rows.insert_explanations(client, [retouched(event, explained_class=(event["explained_class"] + 1) % N_CLASSES)],
                           database)
    again = v.verify_ids(client, settings, registry, [event["prediction_id"]], database=database)[0]
    assert again.status == v.MISMATCH
    explanation_rows.insert_explanations(client, [retouched(event, explained_at=event["explained_at"] + 5000,
                                              explained_class=N_CLASSES)], database)
    again = v.verify_ids(client, settings, registry, [event["prediction_id"]], database=database)[0]
    assert again.status == v.MISMATCH and f"explained_class {N_CLASSES} is not a class" in again.detail

    # a version the registry no longer holds: said plainly, not a traceback
    empty = ModelRegistry(tmp_path / "empty")
    gone = v.verify_ids(client, settings, empty, [published[1]["prediction_id"]], database=database)[0]
    assert gone.status == v.MODEL_UNAVAILABLE and "cannot load classes" in gone.detail
    result = cli(settings.with_(registry=tmp_path / "empty"), database, published[1]["prediction_id"])
    assert result.exit_code == 3 and "MODEL UNAVAILABLE" in result.output
