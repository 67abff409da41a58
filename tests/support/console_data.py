"""One data set for the console's and the report's tests: a real LightGBM model ("credit",
registered with reason codes, a challenger beside it), twenty minutes of its decisions
explained by the real explainers (TreeSHAP, a few by the Saabas fallback) and sampled as the
workers sample (adverse decisions weight 1, one in three of the rest weight 3), `amount`
shifted in the second half, written to ClickHouse as the sink writes them, and the drift
monitor's alerts over it. Every decision was received by the broker 2 ms after its event
time (`received_at`); every 10th approval's producer score is 0.2 off the model's own (a
score mismatch); one approval was asked about by an auditor (an answer in `explain_answers`);
one decision is only in the decision store (`STORED_ONLY`), never explained."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from support.chdb import MINUTE_MS
from whystream.config import Settings
from whystream.explanations.records import build_explanations
from whystream.jobs.analytics.drift import DriftMonitor
from whystream.jobs.clickhouse import references
from whystream.jobs.sink import explanation_rows
from whystream.models.explainer import ModelExplainer
from whystream.models.reason_codes import load_reason_codes
from whystream.models.registry import ModelRegistry
from whystream.wire.prediction_decoder import NO_CLASS

FEATURES = ["amount", "tenure", "merchant_risk", "velocity", "age"]
CODES = {"amount": ("A01", "Transaction amount high for this account"), "tenure": ("T02", "Account is new"),
         "merchant_risk": ("M03", "Merchant category risk"), "velocity": ("V04", "Many transactions recently"),
         "age": ("G05", "Customer age band")}
MINUTES, PER_MINUTE, SHIFT = 20, 150, 1.5
RECEIPT_MS, OFF_BY = 2, 0.2  # broker receipt after the event time; a mismatched producer score's offset
STORED_ONLY, AUDITOR = "stored-only-001", "auditor@example.test"


@dataclass
class ConsoleData:
    model: object
    challenger: object
    registry: ModelRegistry
    database: str
    first_minute_ms: int
    end_ms: int
    events: list[dict] = field(default_factory=list)
    shadows: list[dict] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)
    answered: dict | None = None  # the explanation an auditor asked about (an approval)

    def exact_adverse(self) -> list[dict]:
        return [e for e in self.events if e["principal_reasons"] and e["source"] in ("LIVE", "CACHE")]


def rows_of(rng, n: int, shifted: bool) -> np.ndarray:
    X = np.column_stack([rng.lognormal(3, 0.6, n), rng.exponential(3, n), rng.uniform(0, 1, n),
                         rng.poisson(2, n).astype(float), rng.integers(18, 80, n).astype(float)])
    if shifted:
        X[:, 0] *= math.exp(SHIFT * 0.6)  # amount: the drifted feature
    return X


def train(registry: ModelRegistry, codes_path, seed: int, challenger: bool = False):
    import lightgbm as lgb

    rng = np.random.default_rng(seed)
    X = rows_of(rng, 4000, False)
    logit = 0.08 * (X[:, 0] - 25) - 0.3 * X[:, 1] + 2.5 * X[:, 2] + 0.4 * X[:, 3] - 2.5 + rng.normal(size=len(X))
    y = (logit > 0).astype(int)
    booster = lgb.train({"objective": "binary", "num_leaves": 7, "verbose": -1, "seed": seed, "deterministic": True,
                         "num_threads": 1}, lgb.Dataset(X[:3000], y[:3000], feature_name=FEATURES),
                        num_boost_round=15 if not challenger else 25)
    codes = load_reason_codes(codes_path, FEATURES)
    return registry.register("credit", booster, 0.5, X[3000:], reason_codes=codes, challenger=challenger)


def explain(model, explainer, X, records, reasons, weights, strata, sources, **extra) -> list[dict]:
    classes = np.full(len(X), NO_CLASS, dtype=np.int64)
    shap, raw = explainer.live(X, classes)
    fallback = np.array([s == "FALLBACK" for s in sources])
    if fallback.any():
        shap[fallback], raw[fallback] = explainer.fallback(X[fallback], classes[fallback])
    attributions = SimpleNamespace(shap=shap, raw=raw, classes=classes, source=sources,
                                   base_value=np.full(len(X), float(explainer.base_values(classes[:1])[0])))
    return build_explanations(model, records, X, attributions, reasons, weights, strata, adverse={"decline"},
                              explainer_version="test", redis_available=True, worker="test-worker", **extra)


def off(score: float) -> float:
    """A producer's score OFF_BY from the model's own that still approves (below the threshold, not below 0)."""
    return score + OFF_BY if score + OFF_BY < 0.5 else score - OFF_BY


def store_audit_and_decision(client, database: str, data: ConsoleData) -> None:
    """An auditor's answer about a mismatched approval (as the sink stores answers) and a decision that only
    the decision store holds."""
    data.answered = next(e for e in data.events if e["score_mismatch"] and e["adverse_reasons"])
    answer = dict(data.answered, request_id="req-0001", requested_by=AUDITOR, features_source="store",
                  sampling_reason="ON_DEMAND", explained_at=data.end_ms - MINUTE_MS)
    client.insert("explain_answers", explanation_rows.explanation_columns([answer]), database=database,
                  column_names=explanation_rows.EXPLANATION_COLUMNS, column_oriented=True)
    client.insert("decisions", [[STORED_ONLY, "credit", data.model.version, data.first_minute_ms + 1000,
                                 data.first_minute_ms + 1002, {"amount": 20.5, "tenure": 3.0, "merchant_risk": 0.4,
                                                               "velocity": 2.0, "age": 41.0},
                                 [], 0.12, "approve", 0.5, {"channel": "web"}, False, "predictions", "", 0, 7]],
                  database=database, column_names=["prediction_id", "model_name", "model_version", "event_time",
                                                   "received_at", "features", "redacted_features", "score",
                                                   "decision", "threshold", "segment", "priority", "kafka_topic",
                                                   "kafka_topic_id", "kafka_partition", "kafka_offset"])


def build(client, database: str, root, end_ms: int) -> ConsoleData:
    """The data set in `database`, its minutes ending at `end_ms` (a whole minute)."""
    root.mkdir(parents=True, exist_ok=True)
    codes_path = root / "codes.csv"
    codes_path.write_text("feature,code,text\n" + "".join(f"{f},{c},{t}\n" for f, (c, t) in CODES.items()))
    registry = ModelRegistry(root / "registry")
    model = train(registry, codes_path, seed=5)
    challenger = train(registry, codes_path, seed=6, challenger=True)
    references.register_reference(client, model, database)
    references.register_reference(client, challenger, database)  # as the sink does for every version it stores
    first = end_ms - MINUTES * MINUTE_MS
    data = ConsoleData(model, challenger, registry, database, first, end_ms)
    explainer, shadow = ModelExplainer(model), ModelExplainer(challenger)
    rng = np.random.default_rng(7)
    for m in range(MINUTES):
        X = rows_of(rng, PER_MINUTE, shifted=m >= MINUTES // 2)
        score = 1 / (1 + np.exp(-explainer.live(X)[1]))
        adverse = score >= 0.5
        keep = adverse | (rng.uniform(size=len(X)) < 1 / 3)
        idx = np.flatnonzero(keep)
        times = first + m * MINUTE_MS + np.sort(rng.integers(0, MINUTE_MS, len(idx)))
        records = [{"prediction_id": f"d{m:02d}-{i:03d}", "event_time": int(t), "received_at": int(t) + RECEIPT_MS,
                    "score": off(float(score[i])) if not adverse[i] and i % 10 == 3 else float(score[i]),
                    "decision": "decline" if adverse[i] else "approve", "threshold": 0.5} for i, t in zip(idx, times)]
        reasons = ["ADVERSE" if adverse[i] else "RESERVOIR" for i in idx]
        weights = [1.0 if adverse[i] else 3.0 for i in idx]
        strata = ["web" if i % 2 else "pos" for i in idx]
        sources = ["FALLBACK" if k % 25 == 7 else "CACHE" if k % 9 == 4 else "LIVE" for k in range(len(idx))]
        events = explain(model, explainer, X[idx], records, reasons, weights, strata, np.array(sources, dtype=object),
                         model_scores=score[idx], mismatches=[r["score"] != score[i] for r, i in zip(records, idx)])
        for e in events:  # explained a few dozen ms after the decision, as a live worker does
            e["latency_ms"] = float(20 + (hash(e["prediction_id"]) % 80))
            e["explained_at"] = e["event_time"] + int(e["latency_ms"])
        data.events += events
        challenger_score = 1 / (1 + np.exp(-shadow.live(X[idx])[1]))
        shadow_records = [dict(r, prediction_id=f"{r['prediction_id']}~{challenger.version}", score=float(p))
                          for r, p in zip(records, challenger_score)]
        shadows = explain(challenger, shadow, X[idx], shadow_records, reasons, weights, strata,
                          np.array(["LIVE"] * len(idx), dtype=object), role="CHALLENGER",
                          champion_prediction_ids=[r["prediction_id"] for r in records])
        for e, champion in zip(shadows, events):  # the shadow follows its champion's explanation
            e["latency_ms"] = champion["latency_ms"] + 5
            e["explained_at"] = champion["explained_at"] + 5
        data.shadows += shadows
    explanation_rows.insert_explanations(client, data.events + data.shadows, database)
    store_audit_and_decision(client, database, data)
    monitor = DriftMonitor(Settings(), window_seconds=300, database=database, client=client, publish=False,
                           models=["credit"], reservoir_window_seconds=0)
    for m in range(5, MINUTES + 1):
        data.alerts += monitor.tick(first + m * MINUTE_MS)
    return data
