"""The worker's Prometheus metrics (served at /metrics by the worker's web server).

Each Metrics object has its own registry, so several engines in one process
(tests) do not collide.
"""

from __future__ import annotations

from typing import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.consumed = Counter("whystream_events_consumed", "Prediction messages consumed", registry=r)
        self.explained = Counter("whystream_explained", "Explanations published, by sampling reason and source",
                                 ["reason", "source"], registry=r)
        self.duplicates = Counter("whystream_duplicates_skipped", "Explanations not republished: the prediction_id "
                                  "was already explained (redelivery)", registry=r)
        self.dead_letters = Counter("whystream_dead_letters", "Messages sent to the dead-letter topic, by reason",
                                    ["reason"], registry=r)
        self.cache_hits = Counter("whystream_cache_hits", "Explanations served from the shared cache", registry=r)
        self.fallbacks = Counter("whystream_fallbacks", "Explanations computed by the approximate fallback",
                                 registry=r)
        self.latency = Histogram("whystream_explanation_latency_seconds", "Event time to explanation published",
                                 buckets=LATENCY_BUCKETS_S, registry=r)
        self.lag = Gauge("whystream_consumer_lag", "Messages behind the end of the predictions topic, by partition",
                         ["partition"], registry=r)
        self.unknown_decisions = Counter("whystream_unknown_decisions", "Events whose decision label is neither "
                                         "adverse nor known (compared case-insensitively)", ["label"], registry=r)
        self.quarantined = Gauge("whystream_models_quarantined", "Model versions that cannot be served now "
                                 "(their events are dead-lettered as MODEL_UNAVAILABLE)", registry=r)
        self.replay_stalled = Gauge("whystream_replay_stalled_partitions", "Assigned partitions held back: what was "
                                    "published of their replay could not be read back yet (retried)", registry=r)
        self.redis_up = Gauge("whystream_redis_available", "1 while the shared Redis answers", registry=r)
        self.open_windows = Gauge("whystream_reservoir_open_windows", "Reservoir windows not yet closed", registry=r)
        self.score_checked = Counter("whystream_score_checked", "Explained decisions whose producer score was "
                                     "checked against the model's own", ["model", "version"], registry=r)
        self.score_mismatch = Counter("whystream_score_mismatch", "Explained decisions whose producer score is off "
                                      "the model version's own score of the features by more than the tolerance "
                                      "(WHYSTREAM_SCORE_TOLERANCE)", ["model", "version"], registry=r)
        self.held_items = Gauge("whystream_reservoir_held_events", "Sampled events waiting for their window to close",
                                registry=r)

        # The control plane (streams/control/plane.py, streams/control/shadow.py)
        self.kernel_built = Gauge("whystream_model_kernel_built_at", "When (epoch s) this worker built a version's "
                                  "TreeSHAP kernels, and why: models-topic (before its first event) or first-event",
                                  ["model", "version", "by"], registry=r)
        self.explain_requests = Counter("whystream_explain_requests", "Explain requests by outcome: answered, error, "
                                        "duplicate (answered before)", ["outcome"], registry=r)
        self.shadowed = Counter("whystream_shadow_explanations", "Challenger explanations published", registry=r)
        self.shadow_dropped = Counter("whystream_shadow_dropped", "Champion explanations not shadowed: the shadow "
                                      "queue was full (ingest never waits for the challenger)", registry=r)
        self.redriven = Counter("whystream_redriven_dead_letters", "UNKNOWN_VERSION dead letters sent back once "
                                "their version was announced on `models`", registry=r)

    def count_scores(self, model, mismatches) -> None:
        """The score check of explained rows of `model` (mismatches: per row)."""
        self.score_checked.labels(model.name, model.version).inc(len(mismatches))
        if mismatches.any():
            self.score_mismatch.labels(model.name, model.version).inc(int(mismatches.sum()))

    def exposition(self, names: Iterable[str] = ()) -> bytes:
        """The text Prometheus scrapes; with `names` (its `name[]` parameters), only those samples'
        families: a poller that wants one counter does not pay for every histogram."""
        names = list(names)
        return generate_latest(self.registry.restricted_registry(names) if names else self.registry)
