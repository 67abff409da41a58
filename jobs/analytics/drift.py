"""The drift monitor: attribution drift in ClickHouse -> DriftAlert events.

Every `interval_seconds` the monitor evaluates a window of `window_seconds`
of every model version that has a reference (the `feature_drift` view) and
judges four statistics per feature with jobs/analytics/drift_rule.py: PSI and KS of the
attribution histogram against the reference histogram, the relative change
of weighted mean |SHAP| (`stability`) and the Wasserstein-1 distance, each
against a critical value from the window's effective sample size, floored by
a minimum effect size. Only exact (TreeSHAP) attributions are in the
aggregates; each alert says what share of the window's explanations was
fallback.

The window ends at the last complete minute before now minus the reservoir
window (`reservoir_window_seconds`, the workers' `--window`): priority
decisions are explained at once, their reservoir samples only when the
reservoir window closes, so a newer minute holds priority rows without the
sampled ones that balance them.

A feature is judged only with enough data in the window (a weighted count of
at least `min_weighted_n` and an effective sample size of `min_effective_n`).
Alerts are raised once per feature, statistic and episode: an episode opens
when the statistic goes over its threshold and ends once it has stayed under
it (judged) for a full window. Each alert is written to `drift_alerts` and
published to `drift-alerts` (schemas/DriftAlert.avsc).

Beside attribution drift, each window's score consistency is judged per
version (jobs/analytics/score_consistency.py): an alert with statistic
`score_mismatch` and feature `(score)` when more than `score_mismatch_rate` of
the decisions (estimated) had a producer score off the model's own.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from whystream.config import Settings
from whystream.jobs.analytics import score_consistency
from whystream.jobs.analytics.drift_rule import DriftRule, Judgement, number
from whystream.jobs.analytics.drift_sql import feature_drift, monitored_models
from whystream.jobs.clickhouse import connection as ch
from whystream.jobs.clickhouse.sql import DEFAULT_DATABASE, ident, ms_lit, one_line
from whystream.jobs.clickhouse.sql import rows as query_rows
from whystream.kafka.clients import producer
from whystream.wire.codecs import topic_codec

log = logging.getLogger("whystream.drift")

ALERT_COLUMNS = ["alert_id", "model_name", "model_version", "feature", "window_start", "window_end", "statistic",
                 "value", "threshold", "reference", "raised_at", "fallback_share", "weighted_n", "n", "effective_n"]
RESERVOIR_WINDOW_SECONDS = 10.0  # the workers' default --window (streams/sampling/: SamplingConfig.window_ms)


@dataclass
class Episode:
    alert_id: str
    start_ms: int
    last_above_ms: int


def wall_ms() -> int:
    """The clock, in epoch milliseconds."""
    return int(time.time() * 1000)


def drift_window(now_ms: int, window_ms: int, reservoir_window_ms: int) -> tuple[int, int]:
    """(start, end) in epoch ms of the window judged at `now_ms`: it ends at the last
    complete minute before now minus the reservoir window."""
    end = (int(now_ms) - int(reservoir_window_ms)) // 60_000 * 60_000
    return end - int(window_ms), end


# The columns of `whystream drift`'s table (whystream/cli/clickhouse.py renders drift_records in them).
TABLE_COLUMNS = ("version", "feature", "drift of", "PSI", "KS", "stability", "W1/ref", "value PSI", "missing (ref)",
                 "weighted n", "n eff", "alert")


def drift_records(judged: list[tuple[dict, list[Judgement]]]) -> list[dict]:
    """One record per version and feature, highest PSI first: every statistic whole, the
    statistics over their thresholds (`alerts`), `judged` false where there was too little data."""
    out = []
    for r, verdicts in sorted(judged, key=lambda rv: -(rv[0]["psi"] if rv[0]["psi"] is not None else -1)):
        out.append({"model_version": r["model_version"], "feature": r["feature"], "drift_of": "attributions",
                    "psi": r["psi"], "ks": r["ks"], "stability": r["stability"],
                    "wasserstein_rel": r["wasserstein_rel"], "value_psi": r.get("value_psi"),
                    "missing_rate": r.get("missing_rate"), "reference_missing": r.get("reference_missing"),
                    "input_source": r.get("input_source"),
                    "weighted_n": r["weighted_n"], "effective_n": r["effective_n"],
                    "fallback_share": r.get("fallback_share"), "judged": bool(verdicts),
                    "alerts": [j.statistic for j in verdicts if j.above],
                    "thresholds": {j.statistic: j.threshold for j in verdicts}})
    return out


class DriftMonitor:
    def __init__(self, settings: Settings, window_seconds: float = 300, interval_seconds: float = 30,
                 psi_threshold: float | None = None, stability_threshold: float | None = None,
                 per_feature_thresholds: dict | None = None, *, database: str = DEFAULT_DATABASE,
                 client=None, producer=None, publish: bool = True, models: list[str] | None = None,
                 min_weighted_n: float = 500.0, min_effective_n: float = 100.0,
                 min_reference_share: float = 0.01, alpha: float = 1e-4, ks_threshold: float | None = None,
                 wasserstein_threshold: float | None = None,
                 reservoir_window_seconds: float = RESERVOIR_WINDOW_SECONDS,
                 score_mismatch_rate: float = score_consistency.MAX_RATE):
        """Thresholds are minimum effect sizes (None: jobs/analytics/drift_rule.py's defaults);
        `per_feature_thresholds` maps a feature to one for every statistic or to
        {"psi": x, "ks": y, ...}. `client` is a clickhouse-connect client (default:
        connect with `settings`), `producer` a confluent-kafka Producer (default: one
        on `settings`' broker); `publish=False` writes alerts to ClickHouse only."""
        self.settings = settings
        self.window_ms = int(window_seconds * 1000)
        self.reservoir_window_ms = int(reservoir_window_seconds * 1000)
        self.interval_seconds = interval_seconds
        given = {"psi": psi_threshold, "stability": stability_threshold, "ks": ks_threshold,
                 "wasserstein": wasserstein_threshold}
        defaults = DriftRule().min_effect
        self.rule = DriftRule(alpha=alpha, min_effect={k: defaults[k] if v is None else float(v) for k, v in given.items()},
                              min_weighted_n=min_weighted_n, min_effective_n=min_effective_n,
                              min_reference_share=min_reference_share)
        self.per_feature = per_feature_thresholds or {}
        self.score_mismatch_rate = score_mismatch_rate
        self.database = ident(database)
        self._client = client
        self._producer = producer
        self.publish = publish
        self.models = models
        self.episodes: dict[tuple[str, str, str, str], Episode] = {}
        self._unwritten: list[dict] = []  # raised, not yet in drift_alerts
        self._unpublished: list[dict] = []  # raised, not yet on the drift-alerts topic
        self._restored = False
        self.topic = settings.topic("drift-alerts")
        self.codec = topic_codec(settings, "drift-alerts")

    # -- judging one feature_drift row

    def min_effect(self, feature: str) -> dict:
        """This feature's minimum effect sizes (its per-feature thresholds over the defaults)."""
        custom = self.per_feature.get(feature)
        if isinstance(custom, dict):
            return {**self.rule.min_effect, **{k: float(v) for k, v in custom.items()}}
        if custom is not None:
            return {k: float(custom) for k in self.rule.min_effect}
        return dict(self.rule.min_effect)

    def enough_data(self, row: dict) -> bool:
        return self.rule.enough_data(row)

    def judge_all(self, rows: list[dict]) -> list[tuple[dict, list[Judgement]]]:
        """Judge the feature_drift rows of one evaluation (all features of a version)."""
        totals: dict[str, float] = {}
        for row in rows:
            totals[row["model_version"]] = totals.get(row["model_version"], 0.0) + \
                (number(row.get("reference_mean_abs_shap")) or 0.0)
        return [(row, self.judge(row, totals[row["model_version"]])) for row in rows]

    def judge(self, row: dict, reference_total: float | None = None) -> list[Judgement]:
        """The statistics of one feature_drift row that can be judged, each with
        its threshold and whether it is over it. Empty without enough data.
        `reference_total` is the sum of reference mean |SHAP| over the version's
        features (default: this feature's, i.e. no share requirement)."""
        return self.rule.judge(row, reference_total, self.min_effect(row["feature"]))

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
        start, end = drift_window(now, self.window_ms, self.reservoir_window_ms)
        alerts = []
        for model in self.models or monitored_models(client, self.database):
            for row, judgements in self.judge_all(feature_drift(client, model, start, end, self.database)):
                for j in judgements:
                    self._judged(alerts, model, row, row["feature"], j, now, start, end)
            for row in score_consistency.score_consistency(client, model, start, end, self.database):
                j = score_consistency.judge(row, self.score_mismatch_rate)
                if j is not None:
                    self._judged(alerts, model, {**row, "effective_n": row["checked"], "n": row["checked"]},
                                 score_consistency.SCORE_FEATURE, j, now, start, end)
        for a in alerts:
            key = (a["model_name"], a["model_version"], a["feature"], a["statistic"])
            self.episodes[key] = Episode(a["alert_id"], now, now)
            log.warning("drift alert: %s %s feature %s %s=%.3f > %.3f (n_eff %.0f, %.1f%% fallback)",
                        a["model_name"], a["model_version"], a["feature"], a["statistic"], a["value"],
                        a["threshold"], a["effective_n"], 100 * a["fallback_share"])
            self._unwritten.append(a)
            if self.publish:
                self._unpublished.append(a)
        self._flush(client)
        return alerts

    def _judged(self, alerts: list, model: str, row: dict, feature: str, j: Judgement, now: int, start: int,
                end: int) -> None:
        """Open an episode (a new alert), keep one open, or close it after a full window under."""
        key = (model, row["model_version"], feature, j.statistic)
        episode = self.episodes.get(key)
        if j.above and episode is None:
            alerts.append({
                "alert_id": f"{model}:{row['model_version']}:{feature}:{j.statistic}:{now}", "model_name": model,
                "model_version": row["model_version"], "feature": feature, "window_start": start, "window_end": end,
                "statistic": j.statistic, "value": float(j.value), "threshold": float(j.threshold),
                "reference": f"registry:{row['model_version']}", "raised_at": now,
                "fallback_share": float(number(row.get("fallback_share")) or 0.0),
                "effective_n": float(row["effective_n"]), "weighted_n": float(row["weighted_n"]), "n": int(row["n"]),
            })
        elif j.above:
            episode.last_above_ms = now
        elif episode is not None and now - episode.last_above_ms >= self.window_ms:
            log.info("drift episode %s ended (%s %.3f under %.3f for a full window)",
                     episode.alert_id, j.statistic, j.value, j.threshold)
            del self.episodes[key]

    def _restore(self, client, now: int) -> None:
        """Episodes alerted within the last window before a restart stay open."""
        for r in query_rows(client, f"""
                SELECT alert_id, model_name, model_version, feature, statistic,
                       toUnixTimestamp64Milli(raised_at) AS raised_at_ms
                FROM {self.database}.drift_alerts FINAL
                WHERE raised_at >= {ms_lit(now - self.window_ms)} AND raised_at <= {ms_lit(now)}
                ORDER BY raised_at"""):
            key = (r["model_name"], r["model_version"], r["feature"], r["statistic"])
            self.episodes[key] = Episode(r["alert_id"], int(r["raised_at_ms"]), int(r["raised_at_ms"]))
        self._restored = True

    def _flush(self, client) -> None:
        """Write and publish the alerts not yet written/published (a failure
        leaves them pending for the next tick; the episode stays open)."""
        if self._unwritten:
            columns = [[a[c] for a in self._unwritten] for c in ALERT_COLUMNS]
            client.insert("drift_alerts", columns, database=self.database, column_names=ALERT_COLUMNS,
                          column_oriented=True)
            self._unwritten = []
        if self._unpublished:
            self._publish(self._unpublished)
            self._unpublished = []

    def _publish(self, alerts: list[dict]) -> None:
        if self._producer is None:
            self._producer = producer(self.settings, "alerts")
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
                log.warning("drift evaluation failed: %s", one_line(exc))
                self._client = None  # reconnect next time
            stop_event.wait(max(0.0, self.interval_seconds - (time.monotonic() - began)))

