"""`whystream verify`: recompute stored explanations from their decisions and say
whether they match, for auditors who must show that an explanation is reproducible.

For each explanation in ClickHouse (`explanations FINAL`, read-only):

1. the inputs: the feature values stored with it; where some were redacted (left
   out by policy, `redacted_features`) they cannot be recomputed from the row alone,
   so the original PredictionEvent is read back from `predictions` (found by its key,
   the prediction_id, from just before its event time). `from_topic` reads the event
   for every explanation and also checks the stored values against it;
2. the model: the registered version named by the explanation (whystream/models/registry.py);
   a version the registry no longer has, or cannot load, is reported as such;
3. the recomputation, with the explainer the explanation names: exact TreeSHAP for
   LIVE and CACHE (the cache holds TreeSHAP values), Saabas for FALLBACK, each for the
   stored `explained_class` of a multiclass model (streams/attribution.py);
4. the comparison, within TOLERANCE: every feature's attribution, the base value, the
   raw score, and additivity (stored base value + stored attributions = recomputed raw
   score).

Nothing is written anywhere: ClickHouse is opened as the other readers open it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from whystream.jobs.clickhouse.sql import DEFAULT_DATABASE, ident, lit, one_line, rows
from whystream.kafka.reader import find_by_key
from whystream.wire.codecs import topic_codec

TOLERANCE = 1e-9
FETCH_CHUNK = 500  # prediction_ids per query
MATCH, MISMATCH, NOT_FOUND, UNVERIFIABLE, MODEL_UNAVAILABLE = (
    "MATCH", "MISMATCH", "NOT FOUND", "UNVERIFIABLE", "MODEL UNAVAILABLE")


@dataclass
class Stored:
    prediction_id: str
    model_name: str
    model_version: str
    event_time_ms: int
    base_value: float
    raw_score: float
    features: list[str]
    values: list[float | None]
    shap: list[float]
    source: str
    explained_class: int | None
    redacted: list[str]


@dataclass
class Verdict:
    prediction_id: str
    status: str
    detail: str = ""
    stored: Stored | None = None
    inputs: str = ""  # "stored values" or "predictions topic"
    recomputed_shap: list[float] = field(default_factory=list)
    max_shap_diff: float | None = None
    worst_feature: str = ""
    base_diff: float | None = None
    raw_diff: float | None = None
    additivity: float | None = None


def _float(value) -> float:
    # through the sink's query port, non-finite numbers come as None / "inf"
    return float("nan") if value is None else float(value)


def fetch(client, prediction_ids: list[str], database: str = DEFAULT_DATABASE) -> dict[str, list[Stored]]:
    """The stored explanations of these ids (one per model name and id, as FINAL keeps them)."""
    found: dict[str, list[Stored]] = {}
    for begin in range(0, len(prediction_ids), FETCH_CHUNK):  # an IN list of any length would pass max_query_size
        _fetch_into(found, client, prediction_ids[begin:begin + FETCH_CHUNK], database)
    return found


def _fetch_into(found: dict[str, list[Stored]], client, prediction_ids: list[str], database: str) -> None:
    for r in rows(client, f"""
            SELECT prediction_id, model_name, model_version, toUnixTimestamp64Milli(event_time) AS event_time_ms,
                   base_value, raw_score, attributions.feature AS features, attributions.value AS vals,
                   attributions.shap AS shap, source, explained_class, redacted_features
            FROM {ident(database)}.explanations FINAL
            WHERE prediction_id IN ({", ".join(lit(i) for i in prediction_ids)})
            ORDER BY prediction_id, model_name"""):
        found.setdefault(r["prediction_id"], []).append(Stored(
            r["prediction_id"], r["model_name"], r["model_version"], int(r["event_time_ms"]), _float(r["base_value"]),
            _float(r["raw_score"]), list(r["features"]), [None if v is None else float(v) for v in r["vals"]],
            [_float(v) for v in r["shap"]], r["source"],
            None if r["explained_class"] is None else int(r["explained_class"]), list(r["redacted_features"])))


def sample_ids(client, n: int, model: str | None = None, since_ms: int | None = None, seed: int = 0,
               database: str = DEFAULT_DATABASE) -> list[str]:
    """`n` prediction_ids drawn at random (reproducibly for a seed) from the stored explanations."""
    conditions = []
    if model:
        conditions.append(f"model_name = {lit(model)}")
    if since_ms is not None:
        conditions.append(f"event_time >= fromUnixTimestamp64Milli({int(since_ms)}, 'UTC')")
    where = " AND ".join(conditions)
    return [r["prediction_id"] for r in rows(client, f"""
        SELECT DISTINCT prediction_id FROM {ident(database)}.explanations {"WHERE " + where if where else ""}
        ORDER BY cityHash64(prediction_id, {int(seed)}) LIMIT {int(n)}""")]


def topic_inputs(settings, stored: list[Stored]) -> tuple[dict[str, dict], str | None]:
    """({prediction_id: decoded PredictionEvent}, None), or ({}, why the topic could not be read)."""
    if not stored:
        return {}, None
    if not settings.broker:
        return {}, "no broker configured (WHYSTREAM_BROKER)"
    topic = settings.topic("predictions")
    wanted = {s.prediction_id.encode(): s.event_time_ms for s in stored}
    try:
        raw = find_by_key(settings, topic, wanted)
    except Exception as exc:  # KafkaException: broker or topic unreachable
        return {}, f"cannot read {topic}: {one_line(exc)}"
    codec = topic_codec(settings, "predictions")
    events = {}
    for key, value in raw.items():
        try:
            event = codec.decode(value)
        except Exception:
            continue
        if event.get("prediction_id") == key.decode():
            events[event["prediction_id"]] = event
    return events, None


class Verifier:
    """Recomputes stored explanations; models and explainers loaded once per version."""

    def __init__(self, registry, tolerance: float = TOLERANCE):
        self.registry = registry
        self.tolerance = tolerance
        self._explainers: dict[tuple[str, str], object] = {}

    def explainer(self, name: str, version: str):
        """The version's ModelExplainer; WhystreamError-like text (str) when it cannot be loaded."""
        key = (name, version)
        if key not in self._explainers:
            from whystream.models.explainer import ModelExplainer

            try:
                self._explainers[key] = ModelExplainer(self.registry.load(name, version))
            except Exception as exc:  # ModelNotFound, a damaged model file, a kernel that cannot be built
                self._explainers[key] = f"cannot load {name} {version} from the registry: {one_line(exc)}"
        return self._explainers[key]

    def verify(self, stored: Stored, event: dict | None = None, topic_error: str | None = None) -> Verdict:
        """Recompute one stored explanation, from `event` (its PredictionEvent) when given."""
        verdict = Verdict(stored.prediction_id, MATCH, stored=stored)
        explainer = self.explainer(stored.model_name, stored.model_version)
        if isinstance(explainer, str):
            verdict.status, verdict.detail = MODEL_UNAVAILABLE, explainer
            return verdict
        names = explainer.model.feature_names
        if stored.features != names:
            verdict.status, verdict.detail = MISMATCH, "the stored features are not the model version's features"
            return verdict
        x = np.array([np.nan if v is None else v for v in stored.values], dtype=float)
        if event is not None and event.get("model_version") != stored.model_version:
            verdict.status = MISMATCH
            verdict.detail = (f"the decision's event names model version {event.get('model_version')}, "
                              f"the explanation {stored.model_version}")
            return verdict
        if event is not None:
            verdict.inputs = "predictions topic"
            from_event = np.array([np.nan if event["features"].get(f) is None else event["features"][f]
                                   for f in names], dtype=float)
            shown = [j for j, f in enumerate(names) if f not in stored.redacted]
            differ = [names[j] for j in shown if not _same(x[j], from_event[j])]
            x = from_event
            if differ:
                verdict.status = MISMATCH
                verdict.detail = f"stored value(s) of {', '.join(differ[:5])} differ from the decision's event"
        elif stored.redacted:
            verdict.status = UNVERIFIABLE
            verdict.detail = (f"value(s) of {', '.join(stored.redacted[:5])} redacted by policy: the stored row "
                              f"cannot be recomputed alone, and the decision's event was not found on the "
                              f"predictions topic ({topic_error or 'not there any more: retention'})")
            return verdict
        else:
            verdict.inputs = "stored values"
        self._compare(verdict, explainer, x, stored)
        return verdict

    def _compare(self, verdict: Verdict, explainer, x: np.ndarray, stored: Stored) -> None:
        from whystream.wire.prediction_decoder import NO_CLASS

        X = x.reshape(1, -1)
        klass = stored.explained_class
        if klass is not None and not 0 <= klass < (explainer.n_outputs if explainer.n_outputs > 1 else 0):
            verdict.status = MISMATCH
            verdict.detail = f"explained_class {klass} is not a class of this {explainer.model.kind.objective} model"
            return
        # no class stored: a single-output model, or an ExplanationEvent v1 of a multiclass one (the top class)
        classes = explainer.classes(X, np.array([NO_CLASS if klass is None else klass], dtype=np.int64))
        if stored.source == "FALLBACK":
            shap, raw = explainer.fallback(X, classes)
        else:  # LIVE, and CACHE (the shared cache holds live TreeSHAP values)
            shap, raw = explainer.live(X, classes)
        base = float(explainer.base_values(classes)[0])
        shap, raw = shap[0], float(raw[0])
        stored_shap = np.array(stored.shap, dtype=float)
        diffs = np.abs(stored_shap - shap)
        diffs[np.isnan(diffs)] = np.inf
        worst = int(np.argmax(diffs))
        verdict.recomputed_shap = [float(v) for v in shap]
        verdict.max_shap_diff = float(diffs[worst])
        verdict.worst_feature = stored.features[worst] if diffs[worst] > 0 else ""
        verdict.base_diff = _diff(stored.base_value, base)
        verdict.raw_diff = _diff(stored.raw_score, raw)
        verdict.additivity = _diff(stored.base_value + float(stored_shap.sum()), raw)
        scale = max(1.0, abs(raw))
        failed = [what for what, d, tol in (("attributions", verdict.max_shap_diff, self.tolerance),
                                            ("base value", verdict.base_diff, self.tolerance),
                                            ("raw score", verdict.raw_diff, self.tolerance * scale),
                                            ("additivity", verdict.additivity, self.tolerance * scale))
                  if not d <= tol]
        if failed:
            verdict.status = MISMATCH
            verdict.detail = "; ".join(filter(None, [verdict.detail, ", ".join(failed) + " differ"]))


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _diff(a: float, b: float) -> float:
    d = abs(a - b)
    return math.inf if math.isnan(d) else d


def verify_ids(client, settings, registry, prediction_ids: list[str], *, from_topic: bool = False,
               database: str = DEFAULT_DATABASE, tolerance: float = TOLERANCE, progress=None) -> list[Verdict]:
    """A Verdict per stored explanation of these ids (NOT FOUND for ids without one)."""
    stored = fetch(client, prediction_ids, database)
    flat = [s for pid in prediction_ids for s in stored.get(pid, [])]
    needing = [s for s in flat if from_topic or s.redacted]
    events, topic_error = topic_inputs(settings, needing)
    verifier = Verifier(registry, tolerance)
    out = []
    for pid in prediction_ids:
        if pid not in stored:
            out.append(Verdict(pid, NOT_FOUND, "no explanation with this prediction_id in ClickHouse"))
        for s in stored.get(pid, []):
            event = events.get(pid) if (from_topic or s.redacted) else None
            verdict = verifier.verify(s, event, topic_error)
            if from_topic and event is None and verdict.status == MATCH:
                verdict.detail = f"event not found on the predictions topic ({topic_error or 'retention'}); " \
                                 "verified from the stored values"
            out.append(verdict)
            if progress:
                progress()
    return out


def exit_code(verdicts: list[Verdict]) -> int:
    """0: every explanation matches; 1: some mismatch; 3: none mismatch but some could not be verified."""
    statuses = {v.status for v in verdicts}
    if MISMATCH in statuses:
        return 1
    return 0 if statuses <= {MATCH} and verdicts else 3


# ---------------------------------------------------------------- what `whystream verify` prints

RECORD_COLUMNS = ("prediction_id", "status", "detail", "model_name", "model_version", "source", "explained_class",
                  "inputs", "max_shap_diff", "worst_feature", "base_diff", "raw_diff", "additivity")


def verdict_record(verdict: Verdict, with_features: bool = False) -> dict:
    """A verdict as plain values (`--format csv|json`); with_features adds each feature's
    stored value, stored and recomputed attribution."""
    s = verdict.stored
    record = {"prediction_id": verdict.prediction_id, "status": verdict.status, "detail": verdict.detail,
              "model_name": s and s.model_name, "model_version": s and s.model_version, "source": s and s.source,
              "explained_class": s and s.explained_class, "inputs": verdict.inputs or None,
              "max_shap_diff": verdict.max_shap_diff, "worst_feature": verdict.worst_feature or None,
              "base_diff": verdict.base_diff, "raw_diff": verdict.raw_diff, "additivity": verdict.additivity,
              "tolerance": TOLERANCE}
    if with_features and s is not None and verdict.recomputed_shap:
        record["features"] = [{"feature": f, "stored_value": None if f in s.redacted else value,
                               "redacted": f in s.redacted, "stored_shap": stored, "recomputed_shap": again}
                              for f, value, stored, again in zip(s.features, s.values, s.shap,
                                                                   verdict.recomputed_shap)]
    return record


def _e(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def verdict_table(verdicts: list[Verdict]):
    from rich.table import Table

    table = Table(title=f"recomputed within {TOLERANCE:g}", show_lines=False)
    for name in ("prediction_id", "model", "version", "source", "class", "inputs", "max |Δ shap|", "feature",
                 "|Δ base|", "|Δ raw|", "additivity", "result"):
        table.add_column(name, justify="right" if name.startswith(("max", "|", "add")) else "left")
    colour = {MATCH: "green", MISMATCH: "red bold"}
    for v in verdicts:
        s = v.stored
        klass = "-" if s is None or s.explained_class is None else str(s.explained_class)
        result = f"[{colour.get(v.status, 'yellow')}]{v.status}[/]" + (f": {v.detail}" if v.detail else "")
        table.add_row(v.prediction_id, s.model_name if s else "-", s.model_version if s else "-",
                      s.source if s else "-", klass, v.inputs or "-", _e(v.max_shap_diff), v.worst_feature or "-",
                      _e(v.base_diff), _e(v.raw_diff), _e(v.additivity), result)
    return table


def feature_table(verdict: Verdict):
    from rich.table import Table

    s = verdict.stored
    table = Table(title=f"{verdict.prediction_id}: per feature", show_lines=False)
    for name in ("feature", "stored value", "stored shap", "recomputed shap", "|Δ|"):
        table.add_column(name, justify="left" if name == "feature" else "right")
    for f, value, stored, again in zip(s.features, s.values, s.shap, verdict.recomputed_shap):
        shown = "redacted" if f in s.redacted else ("missing" if value is None else f"{value:.6g}")
        diff = abs(stored - again)
        table.add_row(f, shown, f"{stored:.12g}", f"{again:.12g}",
                      f"[red bold]{diff:.1e}[/]" if not diff <= TOLERANCE else f"{diff:.1e}")
    return table


def summary(verdicts: list[Verdict]) -> str:
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v.status] = counts.get(v.status, 0) + 1
    parts = ", ".join(f"{n:,} {status.lower()}" for status, n in sorted(counts.items()))
    return f"{len(verdicts):,} explanation(s) checked: {parts}"
