"""The worker's web server and redaction, on real worker processes and the
real embedded stack: it binds loopback by default, refuses to open beyond
loopback without a token, wants the token on /explain, and redacted feature
values appear nowhere (topic, /explain, ClickHouse) while their attributions do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid

import numpy as np
import psutil
import pytest
from test_worker import Worker, dedup, records_for, send, wait_quiet

from whystream.jobs.clickhouse.sql import lit, rows
from whystream.jobs.sink import explanation_rows
from whystream.models.registry import ModelRegistry

pytestmark = pytest.mark.integration
TOKEN = "t0k3n-" + uuid.uuid4().hex


def _get(port: int, path: str, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _listening(pid: int, port: int) -> set[str]:
    return {c.laddr.ip for c in psutil.Process(pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def test_web_server_binds_loopback_and_guards_explain(engine_settings, small_model, tmp_path, monkeypatch):
    records = records_for(small_model, 300, seed=21, run_id="guarded")
    send(engine_settings, records)
    monkeypatch.setenv("WHYSTREAM_API_TOKEN", TOKEN)
    worker = Worker(engine_settings, tmp_path)
    try:
        worker.wait_ready()
        assert _listening(worker.process.pid, worker.port) == {"127.0.0.1"}
        published = dedup(wait_quiet(engine_settings, quiet_s=5))
        quiet = next(r["prediction_id"] for r in records if r["prediction_id"] not in published)

        for token in (None, "wrong-" + TOKEN, TOKEN[:-1]):
            status, body = _get(worker.port, f"/explain/{quiet}", token)
            assert status == 401 and b"features" not in body, token
        status, body = _get(worker.port, f"/explain/{quiet}", TOKEN)
        assert status == 200 and json.loads(body)["prediction_id"] == quiet

        # Faust's own pages (they list the app's routes and tables) are not served at all (issue 24).
        for page in ("/router/", "/table/", "/graph/", "/stats/", "/performance/"):
            assert _get(worker.port, page)[0] == 404, page
            assert _get(worker.port, page, TOKEN)[0] == 404, page
        # Prometheus and load balancers need no token, and learn no address or secret.
        assert _get(worker.port, "/metrics")[0] == 200
        status, body = _get(worker.port, "/health")
        assert status == 200 and set(json.loads(body)) == {"broker", "redis", "registry"}
        for secret in (engine_settings.broker, engine_settings.redis_url, TOKEN, str(engine_settings.registry)):
            assert secret.encode() not in body
    finally:
        worker.kill(signal.SIGTERM)


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", "192.0.2.10"])
def test_worker_refuses_to_serve_beyond_loopback_without_a_token(engine_settings, bind):
    env = {k: v for k, v in os.environ.items() if k != "WHYSTREAM_API_TOKEN"}
    result = subprocess.run([sys.executable, "-m", "whystream", "worker", "--web-bind", bind],
                            env={**env, **engine_settings.as_env()}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("whystream: error: WHYSTREAM_API_TOKEN:") and result.stderr.count("\n") == 1
    short = subprocess.run([sys.executable, "-m", "whystream", "worker", "--web-bind", bind],
                           env={**env, **engine_settings.as_env(), "WHYSTREAM_API_TOKEN": "short"},
                           capture_output=True, text=True, timeout=120)
    assert short.returncode == 2 and "at least 16 characters" in short.stderr


def test_redacted_values_appear_nowhere_but_attributions_stay(engine_settings, small_model, tmp_path, db):
    client, database = db
    registry = ModelRegistry(engine_settings.registry)
    # the two features that matter most, so that they also show up among the reasons
    strongest = np.argsort(-np.abs(small_model.reference_shap).mean(axis=0))
    by_model, by_worker = (small_model.feature_names[j] for j in strongest[:2])
    model = registry.register(small_model.name, small_model.booster, small_model.threshold,
                              np.zeros((50, len(small_model.feature_names))), redact=[by_model])
    assert model.version != small_model.version and model.redacted_features == {by_model}
    hidden = [f for f in model.feature_names if f in (by_model, by_worker)]  # model order

    records = records_for(model, 400, seed=22, run_id="redacted")
    assert all(any(r["features"].get(f) is not None for r in records) for f in hidden)  # nulls will be redactions
    send(engine_settings, records)
    worker = Worker(engine_settings, tmp_path, "--redact", by_worker)
    try:
        worker.wait_ready()
        published = wait_quiet(engine_settings, quiet_s=5)
        quiet = next(r["prediction_id"] for r in records if r["prediction_id"] not in dedup(published))
        status, body = _get(worker.port, f"/explain/{quiet}")
        on_demand = json.loads(body)
    finally:
        worker.kill(signal.SIGTERM)
    assert status == 200 and published

    sent = {r["prediction_id"]: r for r in records}
    for event in [*published, on_demand]:
        assert event["redacted_features"] == hidden
        values = {a["feature"]: a["value"] for a in event["attributions"]}
        assert all(values[f] is None for f in hidden)
        assert all(r["value"] is None for r in event["top_reasons"] + event["principal_reasons"]
                   if r["feature"] in hidden)
        shown = [f for f in model.feature_names if f not in hidden]
        assert values[shown[0]] == sent[event["prediction_id"]]["features"].get(shown[0])
        # the attributions of the redacted features are still there: the explanation still adds up
        total = event["base_value"] + sum(a["shap"] for a in event["attributions"])
        if event["source"] != "FALLBACK":
            assert total == pytest.approx(event["raw_score"], abs=1e-6)

    assert any(a["shap"] != 0 for e in published for a in e["attributions"] if a["feature"] in hidden)
    assert any(r["feature"] in hidden for e in published for r in e["principal_reasons"])  # the check above bit

    # `whystream explain --redact` blanks more, even in an explanation published before
    extra = model.feature_names[int(strongest[2])]
    cli = subprocess.run([sys.executable, "-m", "whystream", "explain", published[0]["prediction_id"],
                          "--redact", extra, "--format", "json"], env={**os.environ, **engine_settings.as_env()},
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    shown = json.loads(cli.stdout)
    assert shown["redacted_features"] == [f for f in model.feature_names if f in {*hidden, extra}]
    assert all(a["value"] is None for a in shown["attributions"] if a["feature"] in shown["redacted_features"])

    explanation_rows.insert_explanations(client, published, database)
    stored = rows(client, f"""
        SELECT countIf(v IS NOT NULL) AS leaked, count() AS n, any(r) AS redacted
        FROM (SELECT attributions.value AS vs, attributions.feature AS fs, redacted_features AS r
              FROM {database}.explanations)
        ARRAY JOIN vs AS v, fs AS f
        WHERE f IN {lit(hidden)}""")[0]
    assert stored["n"] == len(published) * len(hidden) and stored["leaked"] == 0
    assert list(stored["redacted"]) == hidden


def test_redacting_an_unknown_feature_is_refused(small_model, tmp_path):
    from whystream.errors import WhystreamError

    with pytest.raises(WhystreamError, match="not_a_feature"):
        ModelRegistry(tmp_path).register("m", small_model.booster, 0.5, np.zeros((5, len(small_model.feature_names))),
                                         redact=["not_a_feature"])
