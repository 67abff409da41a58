"""The drift monitor: attribution drift in ClickHouse -> DriftAlert events.

Every `interval_seconds` the monitor evaluates the last `window_seconds` of
every model version that has a reference (the `feature_drift` view) and judges
two statistics per feature:

- `psi`: population stability index of the attribution histogram against the
  reference histogram;
- `stability`: |weighted mean |SHAP| - reference mean |SHAP|| / reference mean
  |SHAP|.

A feature is judged only with enough data in the window: a weighted count of
at least `min_weighted_n` and an effective sample size (Kish) of at least
`min_effective_n`, so a handful of heavily weighted explanations cannot raise
an alert. Stability is also judged only for features that carry at least
`min_reference_share` of the model's total reference mean |SHAP| (a relative
change of a feature the model barely uses is noise, not news), and only counts
as over its threshold when the change is also `stability_z` standard errors
away from the reference, counting the errors of both means: the window's
(from its effective n and its weighted spread, or the reference's spread if
that is larger: a window that missed a heavy tail's rare large values looks
falsely precise) and the reference's (the reference is a sample of a few
thousand rows; heavy-tailed attributions leave its mean uncertain by several
percent).

Alerts are raised once per feature, statistic and episode: an episode opens
when the statistic goes over its threshold and ends once it has stayed under
it (judged) for a full window. Each alert is written to `drift_alerts` and
published to `drift-alerts` (schemas/DriftAlert.avsc).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

from whystream.config import Settings
from whystream.jobs import clickhouse as ch
from whystream.jobs.drift_sql import feature_drift, monitored_models
from whystream.streams.codec import codec_for

log = logging.getLogger("whystream.drift")

ALERT_COLUMNS = ["alert_id", "model_name", "model_version", "feature", "window_start", "window_end", "statistic",
                 "value", "threshold", "reference", "raised_at", "weighted_n", "n"]


@dataclass
class Episode:
    alert_id: str
    start_ms: int
    last_above_ms: int


@dataclass(frozen=True)
class Judgement:
    statistic: str
    value: float
    threshold: float
    above: bool


def wall_ms() -> int:
    """The clock, in epoch milliseconds."""
    return int(time.time() * 1000)


class DriftMonitor:
    def __init__(self, settings: Settings, window_seconds: float = 300, interval_seconds: float = 30,
                 psi_threshold: float = 0.2, stability_threshold: float = 0.2,
                 per_feature_thresholds: dict | None = None, *, database: str = ch.DEFAULT_DATABASE,
                 client=None, producer=None, publish: bool = True, models: list[str] | None = None,
                 min_weighted_n: float = 500.0, min_effective_n: float = 200.0,
                 min_reference_share: float = 0.01, stability_z: float = 3.0):
        """`per_feature_thresholds` maps a feature to a threshold for both
        statistics or to {"psi": x, "stability": y}. `client` is a
        clickhouse-connect client (default: connect with `settings`), `producer`
        a confluent-kafka Producer (default: one on `settings`' broker);
        `publish=False` writes alerts to ClickHouse only."""
        self.settings = settings
        self.window_ms = int(window_seconds * 1000)
        self.interval_seconds = interval_seconds
        self.defaults = {"psi": psi_threshold, "stability": stability_threshold}
        self.per_feature = per_feature_thresholds or {}
        self.database = ch.ident(database)
        self._client = client
        self._producer = producer
        self.publish = publish
        self.models = models
        self.min_weighted_n = min_weighted_n
        self.min_effective_n = min_effective_n
        self.min_reference_share = min_reference_share
        self.stability_z = stability_z
        self.episodes: dict[tuple[str, str, str, str], Episode] = {}
        self._unwritten: list[tuple[dict, tuple[float, int]]] = []  # raised, not yet in drift_alerts
        self._unpublished: list[dict] = []  # raised, not yet on the drift-alerts topic
        self._restored = False
        self.topic = settings.topic("drift-alerts")
        self.codec = codec_for("DriftAlert", settings.schema_registry_url, self.topic)

    # -- judging one feature_drift row

    def threshold(self, feature: str, statistic: str) -> float:
        custom = self.per_feature.get(feature)
        if isinstance(custom, dict):
            return float(custom.get(statistic, self.defaults[statistic]))
        if custom is not None:
            return float(custom)
        return float(self.defaults[statistic])

    def enough_data(self, row: dict) -> bool:
        return (float(row.get("weighted_n") or 0) >= self.min_weighted_n
                and float(row.get("effective_n") or 0) >= self.min_effective_n)

    def judge_all(self, rows: list[dict]) -> list[tuple[dict, list[Judgement]]]:
        """Judge the feature_drift rows of one evaluation (all features of a version)."""
        totals: dict[str, float] = {}
        for row in rows:
            totals[row["model_version"]] = totals.get(row["model_version"], 0.0) + \
                (_number(row.get("reference_mean_abs_shap")) or 0.0)
        return [(row, self.judge(row, totals[row["model_version"]])) for row in rows]

    def judge(self, row: dict, reference_total: float | None = None) -> list[Judgement]:
        """The statistics of one feature_drift row that can be judged, each with
        its threshold and whether it is over it. Empty without enough data.
        `reference_total` is the sum of reference mean |SHAP| over the version's
        features (default: this feature's, i.e. no share requirement)."""
        if not self.enough_data(row):
            return []
        out = []
        psi = _number(row.get("psi"))
        if psi is not None:
            threshold = self.threshold(row["feature"], "psi")
            out.append(Judgement("psi", psi, threshold, psi > threshold))
        stability = _number(row.get("stability"))
        reference = _number(row.get("reference_mean_abs_shap")) or 0.0
        total = reference if reference_total is None else reference_total
        if stability is not None and reference > 0 and reference >= self.min_reference_share * total:
            threshold = self.threshold(row["feature"], "stability")
            mean_abs = float(row["mean_abs_shap"])
            variance = max(float(row.get("mean_sq_shap") or 0.0) - mean_abs * mean_abs, 0.0)
            # The reference mean is a sample mean too (a few thousand held-out rows): its error counts.
            n_reference = float(row.get("n_reference") or 0.0)  # 0: registered before the spread was kept
            reference_variance = max(float(row.get("reference_mean_sq_shap") or 0.0) - reference * reference, 0.0)
            reference_error = 0.0
            if n_reference > 0:
                reference_error = reference_variance / n_reference
                # A heavy-tailed attribution's window that happens to miss its rare large values has
                # both a low mean and a low spread, and would look precisely off: without drift the
                # window spreads like the reference, so its error is taken as at least that.
                variance = max(variance, reference_variance)
            stderr = math.sqrt(variance / max(float(row["effective_n"]), 1.0) + reference_error)
            significant = abs(mean_abs - reference) > self.stability_z * stderr
            out.append(Judgement("stability", stability, threshold, stability > threshold and significant))
        return out

    # -- one evaluation

    def client(self):
        if self._client is None:
            self._client = ch.connect(self.settings, self.database)
        return self._client

    def tick(self, now_ms: int | None = None) -> list[dict]:
        """Evaluate the window ending at `now_ms` (epoch ms, default the clock);
        return the DriftAlert records raised (new episodes only)."""
        now = wall_ms() if now_ms is None else int(now_ms)
        client = self.client()
        if not self._restored:
            self._restore(client, now)
        start = now - self.window_ms
        alerts, extras = [], []
        for model in self.models or monitored_models(client, self.database):
            for row, judgements in self.judge_all(feature_drift(client, model, start, now, self.database)):
                for j in judgements:
                    key = (model, row["model_version"], row["feature"], j.statistic)
                    episode = self.episodes.get(key)
                    if j.above and episode is None:
                        alert_id = f"{model}:{row['model_version']}:{row['feature']}:{j.statistic}:{now}"
                        alerts.append({
                            "alert_id": alert_id, "model_name": model, "model_version": row["model_version"],
                            "feature": row["feature"], "window_start": start, "window_end": now,
                            "statistic": j.statistic, "value": float(j.value), "threshold": float(j.threshold),
                            "reference": f"registry:{row['model_version']}", "raised_at": now,
                        })
                        extras.append((float(row["weighted_n"]), int(row["n"])))
                    elif j.above:
                        episode.last_above_ms = now
                    elif episode is not None and now - episode.last_above_ms >= self.window_ms:
                        log.info("drift episode %s ended (%s %.3f under %.3f for a full window)",
                                 episode.alert_id, j.statistic, j.value, j.threshold)
                        del self.episodes[key]
        for a, extra in zip(alerts, extras):
            key = (a["model_name"], a["model_version"], a["feature"], a["statistic"])
            self.episodes[key] = Episode(a["alert_id"], now, now)
            log.warning("drift alert: %s %s feature %s %s=%.3f > %.3f", a["model_name"], a["model_version"],
                        a["feature"], a["statistic"], a["value"], a["threshold"])
            self._unwritten.append((a, extra))
            if self.publish:
                self._unpublished.append(a)
        self._flush(client)
        return alerts

    def _restore(self, client, now: int) -> None:
        """Episodes alerted within the last window before a restart stay open."""
        for r in ch.rows(client, f"""
                SELECT alert_id, model_name, model_version, feature, statistic,
                       toUnixTimestamp64Milli(raised_at) AS raised_at_ms
                FROM {self.database}.drift_alerts FINAL
                WHERE raised_at >= {ch.ms_lit(now - self.window_ms)} AND raised_at <= {ch.ms_lit(now)}
                ORDER BY raised_at"""):
            key = (r["model_name"], r["model_version"], r["feature"], r["statistic"])
            self.episodes[key] = Episode(r["alert_id"], int(r["raised_at_ms"]), int(r["raised_at_ms"]))
        self._restored = True

    def _flush(self, client) -> None:
        """Write and publish the alerts not yet written/published (a failure
        leaves them pending for the next tick; the episode stays open)."""
        if self._unwritten:
            alerts = [a for a, _ in self._unwritten]
            columns = [[a[c] for a in alerts] for c in ALERT_COLUMNS[:-2]]
            columns += [[w for _, (w, _) in self._unwritten], [n for _, (_, n) in self._unwritten]]
            client.insert("drift_alerts", columns, database=self.database, column_names=ALERT_COLUMNS,
                          column_oriented=True)
            self._unwritten = []
        if self._unpublished:
            self._publish(self._unpublished)
            self._unpublished = []

    def _publish(self, alerts: list[dict]) -> None:
        if self._producer is None:
            from confluent_kafka import Producer

            self._producer = Producer(self.settings.kafka(**{"enable.idempotence": True, "linger.ms": 5}))
        failures = []

        def delivered(err, msg):
            if err is not None:
                failures.append(str(err))

        for a in alerts:
            self._producer.produce(self.topic, key=a["feature"].encode(),
                                   value=self.codec.encode(a), on_delivery=delivered)
        remaining = self._producer.flush(30)
        if failures or remaining:
            raise RuntimeError(f"publishing {len(alerts)} drift alerts to {self.topic} failed: "
                               f"{failures[:3] or f'{remaining} undelivered'}")

    # -- the loop

    def run(self, stop_event: threading.Event | None = None) -> None:
        """Tick every interval until `stop_event` is set; failures are logged and retried."""
        stop_event = stop_event or threading.Event()
        while not stop_event.is_set():
            began = time.monotonic()
            try:
                self.tick()
            except Exception as exc:
                log.warning("drift evaluation failed: %s", ch.one_line(exc))
                self._client = None  # reconnect next time
            stop_event.wait(max(0.0, self.interval_seconds - (time.monotonic() - began)))


def _number(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value
