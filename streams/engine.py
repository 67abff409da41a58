"""The explanation engine, independent of how messages arrive.

`Engine.process(messages)` (or `process_inbound`, for a batch the transport
already holds as columns) takes one batch of raw prediction messages and:
1. decodes and validates them, the whole batch into columns at once
   (whystream/wire/prediction_decoder.py; anything unusual event by event through the
   codec); bad ones go to `predictions.dlq` with a reason (events of a model
   version that cannot be served, or with an event time not to be trusted,
   too), the original bytes capped at `dlq_original_cap`;
2. picks priority events (always explained) and feeds the rest to the
   reservoirs; windows that closed hand over their weighted sample;
3. explains (cache -> live TreeSHAP -> fallback; reservoir samples never
   fall back for latency), skipping prediction_ids already explained
   (redelivery, or twice in one batch), publishes ExplanationEvents (encoded
   straight from the arrays, whystream/explanations/encoder.py) and waits for the
   broker to confirm each of them (whystream/kafka/publisher.py); producer
   scores checked against the model's own (whystream/models/score_check.py);
4. remembers where every valid prediction lies in `predictions` (Redis, 15
   minutes; explain on demand reads it back from there), on a thread of its
   own while the next batch comes in;
5. tells the worker, per partition, where a commit must stay (`commit_points`:
   the start of the reservoirs' dedup horizon, streams/sampling/) and records
   on `sampling-checkpoints` what a replay from there needs (`checkpoint`, and
   before a wall-clock reset's samples go out: streams/checkpointing/);
   whatever explanation a message before the commit was due has been published.

A partition assigned with something to replay (`guard`) is first read back:
messages the previous worker handled only rebuild the reservoirs, the resets it
made are made again where it made them; the rest is handled as usual, skipping
what is on the broker already (streams/checkpointing/).

What the engine reads and writes beyond its own memory (registry, codecs, producer,
Redis, replay guard) is given to it (`EngineParts`, streams/assembly.py); it makes
only its in-memory state: validator, reservoirs, attributor, labels.

Per-event Python objects are few: the decoder's three strings (prediction_id,
decision, stratum); a record dict only for events explained or sampled.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from whystream.config import Settings
from whystream.explanations.encoder import ExplanationEncoder
from whystream.explanations.records import build_explanations
from whystream.kafka.messages import Inbound, RawMessage
from whystream.models.registry import RegisteredModel
from whystream.models.score_check import checked_scores
from whystream.streams.attribution import Attributor, cache_keys
from whystream.streams.checkpointing.checkpoints import ReadBackStarts
from whystream.streams.due import Candidates, Due, requested_classes
from whystream.streams.engine_config import EngineConfig, EngineParts  # noqa: F401 (imported from here too)
from whystream.streams.labels import DecisionLabels
from whystream.streams.metrics import Metrics
from whystream.streams.on_demand import OnDemand
from whystream.streams.quarantine import Quarantine
from whystream.streams.sampling.priority import NEW_VERSION, RESERVOIR, priority_reasons
from whystream.streams.sampling.reservoirs import Reservoirs
from whystream.streams.validation import ModelBatch, Validator
from whystream.treeshap import EXPLAINER_NAME, EXPLAINER_VERSION
from whystream.wire.codecs import SingleObjectCodec

log = logging.getLogger("whystream.engine")


class Engine:
    def __init__(self, settings: Settings, parts: EngineParts, config: EngineConfig | None = None,
                 metrics: Metrics | None = None):
        self.settings = settings
        self.config = config or EngineConfig()
        self.metrics = metrics or Metrics()
        self.worker, self.registry = parts.worker, parts.registry
        self.explanation_codec = parts.explanations
        self.publisher, self.dead_letters, self.checkpoints = parts.publisher, parts.dead_letters, parts.checkpoints
        self.store, self.location_store = parts.store, parts.location_store
        self.replay_guard = parts.replay_guard
        self.attributor = Attributor(self.config.latency_budget_ms)
        self._loading_s = 0.0  # time spent building explainers in this batch's validation
        # A version is usable once its explainer builds: one that cannot be explained is quarantined.
        self.validator = Validator(self.registry, parts.predictions, event_time=self.config.event_time,
                                   prepare=self._prepare, quarantine=Quarantine(first_s=self.config.quarantine_s))
        self.labels = DecisionLabels(self.config.sampling.adverse_decisions, self.config.sampling.known_decisions,
                                     self.metrics.unknown_decisions)
        # Explanations in single-object encoding are written straight from arrays (explanations/encoder.py).
        self._encoder = (ExplanationEncoder(self.explanation_codec.header, EXPLAINER_NAME)
                         if isinstance(self.explanation_codec, SingleObjectCodec) else None)
        if self._encoder is not None:
            self._encoder.warm_up()
        self.reservoirs = Reservoirs(self.config.sampling)
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whystream-remember")
        self._remembering: Future | None = None
        # Versions whose first new_version_events events have been seen (by any worker): the shared
        # count is not asked again, one Redis round trip less per batch.
        self._established: set[str] = set()
        self.on_demand = OnDemand(self, parts.predictions_reader)  # any recent decision, beside the batch path
        self._building_for = "first-event"  # why kernels are being built now (whystream_model_kernel_built_at)
        self.shadow = None  # the challenger's shadow (streams/control/shadow.py), set by the worker's control plane
        self.read_back = ReadBackStarts()  # what each COMMIT checkpoint's `since` says

    def _prepare(self, model: RegisteredModel) -> None:
        """Build a new version's explainer when the validator first meets it: a version whose
        kernels cannot be built is dead-lettered (MODEL_UNAVAILABLE, quarantined), never explained."""
        began = time.monotonic()
        try:
            if not self.attributor.has(model):
                self.attributor.explainer(model)
                self.metrics.kernel_built.labels(model.name, model.version, self._building_for).set(time.time())
        finally:
            self._loading_s += time.monotonic() - began

    def install(self, model: RegisteredModel, explainer) -> None:
        """Serve `model` with `explainer`, built beforehand off the ingest thread (the control
        plane, on a version announced on `models`): its first event finds both ready."""
        self.attributor.install(model, explainer)
        self.validator.install(model)

    def connect_publisher(self, timeout: float = 10.0) -> None:
        """Fetch the metadata of the topics the engine writes now: a producer's first send to a
        topic otherwise waits for it (measured: 0.9 s for the first batch on the embedded broker)."""
        for topic in ("explanations", "predictions.dlq"):
            try:
                self.publisher.producer.list_topics(self.settings.topic(topic), timeout=timeout)
            except Exception as exc:  # no broker yet: the consumer waits for it too; the first batch pays
                log.warning("no metadata for %s yet (%s)", self.settings.topic(topic), exc)

    def preload_latest(self) -> list[str]:
        """Load the latest version of every registered model and its TreeSHAP kernel now, so that
        the first events of the stream do not wait for them (1-2 s). Returns "name@version"s."""
        loaded = []
        self._building_for = "start"
        try:
            for name in self.registry.models():
                try:
                    model = self.validator.model(name, self.registry.load(name).version)
                    self.attributor.explainer(model)
                except Exception:  # a broken version must not keep the worker from starting; its events say why
                    log.exception("could not preload model %s", name)
                    continue
                loaded.append(f"{name}@{model.version}")
        finally:
            self._building_for = "first-event"
        return loaded

    # -- the batch step -------------------------------------------------------

    def process(self, messages: list[RawMessage], now_ms: int | None = None) -> None:
        """Handle one batch."""
        self.process_inbound(Inbound.of(messages), now_ms)

    def process_inbound(self, inbound: Inbound, now_ms: int | None = None) -> None:
        """`process` for a batch already in columns (what the worker's transport hands over)."""
        started = time.monotonic()
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        self.metrics.consumed.inc(len(inbound))
        self._loading_s = 0.0
        batches, dead = self.validator.split(inbound, self.config.sampling.stratum_key, now_ms)
        started += self._loading_s  # compiling a new version's kernels is not the batch's fault
        self.metrics.quarantined.set(len(self.validator.quarantine))
        handled = self._handled_before(inbound)
        if handled is not None:  # dead-lettered by the worker before the replay
            live_from = self.replay_guard.live_from
            dead = [letter for letter in dead if letter.message.offset >= live_from.get(letter.message.partition, -1)]
        self._dead_letters(dead)
        for batch in batches:
            self.labels.note(batch.decisions)
        due: dict[str, Due] = {}
        self._sample(batches, inbound, due, now_ms, handled)
        if self.replay_guard.active():  # a replayed reset past the partition's last candidate still applies
            for p, end in inbound.read_to.items():
                self.reservoirs.reached(p, end)
        self._close_windows(due, now_ms)
        self._explain_and_publish(due, started)
        self._remember(batches, inbound)
        if self.replay_guard.active():
            for p, end in inbound.read_to.items():
                if self.replay_guard.handled(p, end):
                    self.reservoirs.replay_done(p)

    def _handled_before(self, inbound: Inbound) -> np.ndarray | None:
        """Per message: whether the worker before a replay handled it already (None: nothing is)."""
        live_from = self.replay_guard.live_from
        if not live_from:
            return None
        handled = np.zeros(len(inbound), dtype=bool)
        for p, start in live_from.items():
            handled |= (inbound.partitions == p) & (inbound.offsets < start)
        return handled if handled.any() else None

    def _remember(self, batches: list[ModelBatch], inbound: Inbound) -> None:
        """Remember where the valid events lie (explain on demand) and how far each partition is
        read (`inbound.read_to`), on a thread of its own: the write overlaps the next batch. One batch in
        flight at a time."""
        if len(batches) == 1 and len(batches[0]) == len(inbound):
            ids, where = batches[0].prediction_ids, slice(None)
        else:
            ids = [pid for batch in batches for pid in batch.prediction_ids]
            where = np.concatenate([batch.index for batch in batches]) if batches else slice(0)
        self._remembered()
        if len(inbound):
            self._remembering = self._background.submit(self._remember_now, ids, inbound.partitions[where],
                                                         inbound.offsets[where], inbound.read_to)

    def _remember_now(self, ids, partitions, offsets, read_to: dict[int, int]) -> None:
        self.location_store.remember_locations(ids, partitions, offsets)
        self.location_store.note_read(read_to)  # after the locations: a reader that sees it finds them

    def _remembered(self) -> None:
        """Wait until the last batch's events are in Redis."""
        if self._remembering is not None:
            self._remembering.result()
            self._remembering = None

    def tick(self, now_ms: int | None = None) -> None:
        """Close windows of idle partitions (called on a timer when no batch arrives)."""
        due: dict[str, Due] = {}
        self._close_windows(due, now_ms if now_ms is not None else int(time.time() * 1000))
        self._explain_and_publish(due, time.monotonic())

    def guard(self, consumer, partitions) -> set[int]:
        """Partitions assigned: read back what was published of what will be replayed, resume their
        sampling where the worker before left it. Returns those not read back (not to be handled)."""
        guard = self.replay_guard
        stalled = guard.guard(consumer, partitions)
        self.dead_letters.topic_id = guard.topic_id
        for p in partitions:
            if p in stalled:
                continue
            self.read_back.resume(p, *guard.resumed[p])
            if guard.guarding(p):
                self.reservoirs.resume(p, guard.live_from[p], guard.resets[p])
        return stalled

    def commit_points(self, positions: dict[int, int]) -> dict[int, tuple[int, int]]:
        """Per partition (the offset after the last message handled): (the offset to commit,
        live_from: every message before it has been handled and its windows handed over)."""
        for p, position in positions.items():
            if not self.replay_guard.guarding(p):  # only this worker handles what comes from here on
                self.read_back.mark(p, position, self.replay_guard.floor, self.publisher.ends)
        return {p: (self.reservoirs.hold(p, position), self.reservoirs.frontier(p, position))
                for p, position in positions.items()}

    def checkpoint(self, points: dict[int, tuple[int, int]]) -> None:
        """Record commit points on `sampling-checkpoints` (confirmed): before they are committed."""
        self.checkpoints.record([(p, "COMMIT", offset, live_from, self.read_back.since(p, offset))
                                 for p, (offset, live_from) in points.items()], self.replay_guard.topic_id)

    def revoke(self, partitions) -> None:
        """Partitions moved to another worker: it rebuilds their windows from the committed offsets."""
        for p in partitions:
            self.reservoirs.drop_partition(p)
            self.read_back.drop(p)
        self.replay_guard.forget(partitions)

    # -- steps ----------------------------------------------------------------

    def _sample(self, batches: list[ModelBatch], inbound: Inbound, due: dict[str, Due], now_ms: int,
                handled: np.ndarray | None = None) -> None:
        """Priority events go to `due`; the rest are reservoir candidates, added
        once per partition in offset order across model versions, so that how
        the stream was cut into batches never changes a window's sample.
        `handled` (per message of inbound): handled before a replay, so only a candidate if it is one."""
        config = self.config.sampling
        hashes: list[np.ndarray] = []  # per batch, the candidates' u (Reservoirs.hashes), one compiled pass
        versions: list[np.ndarray] = []  # object arrays: selected per partition below without a Python loop
        strata: list[np.ndarray] = []
        placed = 0  # candidates so far
        picks: list[tuple[ModelBatch, np.ndarray]] = []
        unsampled: list[np.ndarray] = []  # positions in ids of rows fed to the reservoirs only to place windows
        for batch in batches:
            model, n = batch.model, len(batch)
            fresh = None if handled is None else ~handled[batch.index]  # rows not handled before the replay
            count = n if fresh is None else int(fresh.sum())
            if model.version in self._established:  # past its first events: no need to count further
                seen_before = config.new_version_events
            else:
                seen_before = self.store.note_version_events(model.version, count) if count else 0
                if seen_before + count >= config.new_version_events:
                    self._established.add(model.version)
            new_version = np.zeros(n, dtype=bool)
            new_version[slice(None) if fresh is None else fresh] = (
                np.arange(seen_before, seen_before + count) < config.new_version_events)
            reasons = priority_reasons(batch.decisions, batch.score, batch.threshold, batch.priority, new_version,
                                       config, band_scale=model.score_scale, near=model.has_threshold)
            chosen = reasons != None  # noqa: E711 (elementwise on an object array)
            target = due.setdefault(model.version, Due(model))
            for j in np.flatnonzero(chosen if fresh is None else chosen & fresh).tolist():
                target.add(batch.record(j), batch.X[j], reasons[j], 1.0, batch.strata[j])
            # Explained only for being among a version's first events (a count in Redis, which a replay
            # may see otherwise): still fed to the reservoirs, unsampled, so they place windows alike.
            only_new = reasons == NEW_VERSION if new_version.any() else None
            rest = np.flatnonzero(~chosen if only_new is None else ~chosen | only_new)
            if only_new is not None:
                unsampled.append(np.flatnonzero(only_new[rest]) + placed)
            hashes.append(self.reservoirs.hashes(batch.prediction_ids)[rest])
            strata.append(_objects(batch.strata)[rest])
            versions.append(np.full(len(rest), model.version, dtype=object))
            placed += len(rest)
            picks.append((batch, rest))
        if not placed:
            return
        u, versions, strata = np.concatenate(hashes), np.concatenate(versions), np.concatenate(strata)
        rows = np.concatenate([rest for _, rest in picks])
        which = np.concatenate([np.full(len(rest), k) for k, (_, rest) in enumerate(picks)])
        positions = np.concatenate([batch.index[rest] for batch, rest in picks])
        times = np.concatenate([batch.event_time[rest] for batch, rest in picks])
        partitions, offsets = inbound.partitions[positions], inbound.offsets[positions]
        items = Candidates([batch for batch, _ in picks], which, rows)
        sampled = np.ones(len(u), dtype=bool)
        if unsampled:
            sampled[np.concatenate(unsampled)] = False
        by_partition = np.lexsort((offsets, partitions))  # one sort for all partitions, offset order in each
        ordered = partitions[by_partition]
        cuts = [0, *((ordered[1:] != ordered[:-1]).nonzero()[0] + 1).tolist(), len(ordered)]
        for a, b in zip(cuts[:-1], cuts[1:]):
            partition, sel = int(ordered[a]), by_partition[a:b]
            self.reservoirs.add(partition, offsets[sel], u[sel], versions[sel].tolist(),
                                strata[sel].tolist(), times[sel], items.subset(sel), now_ms, sampled[sel])

    def _close_windows(self, due: dict[str, Due], now_ms: int) -> None:
        closed = self.reservoirs.close_due(now_ms)
        # A wall-clock reset is recorded before its samples go out: a replay must reset at the same offset.
        self.checkpoints.record([(r.partition, "FORGET" if r.forget else "RESET", r.offset, None, {})
                                 for r in self.reservoirs.take_resets()], self.replay_guard.topic_id)
        for window in closed:
            for (model, record, row, _), weight in window.selected:  # the window's stratum: maybe pooled OTHER
                due.setdefault(model.version, Due(model)).add(record, row, RESERVOIR, weight, window.stratum)
        self.metrics.open_windows.set(self.reservoirs.open_windows())
        self.metrics.held_items.set(self.reservoirs.held_items())

    def _explain_and_publish(self, due: dict[str, Due], started: float) -> None:
        topic = self.settings.topic("explanations")
        published_ids: list[str] = []
        published_values: list[bytes] = []
        fresh: list[tuple[str, bytes, bytes]] = []  # (model version, feature hash, attributions) for the cache
        now: set[str] = set()  # ids published by this call: the same id twice in a batch is published once
        # Replaying after a crash or rebalance: what is on the broker already counts as published.
        on_broker = self.replay_guard.explained if self.replay_guard.active() else ()
        for work in due.values():
            if not work.records:
                continue
            ids = [r["prediction_id"] for r in work.records]
            rows = np.asarray(work.rows)
            explainer = self.attributor.explainer(work.model)
            classes = explainer.classes(rows, requested_classes(explainer, work.records))
            hashes = cache_keys(explainer, rows, classes)
            already, cached = self.store.recall(ids, work.model.version, hashes)
            keep = []
            for i, seen in enumerate(already):
                if not seen and ids[i] not in now and ids[i] not in on_broker:
                    now.add(ids[i])
                    keep.append(i)
            self.metrics.duplicates.inc(len(ids) - len(keep))
            if not keep:
                continue
            X = rows[keep] if len(keep) < len(rows) else rows
            # priority decisions within the latency budget (else the fallback), reservoir samples always live
            in_time = np.fromiter((work.reasons[i] != RESERVOIR for i in keep), dtype=bool, count=len(keep))
            attributions = self.attributor.attribute_some_in_time(work.model, X, in_time, started,
                                                                  [cached[i] for i in keep], classes[keep])
            fresh.extend(attributions.cache_entries(work.model.version, [hashes[i] for i in keep]))
            records, reasons = [work.records[i] for i in keep], [work.reasons[i] for i in keep]
            weights, strata = [work.weights[i] for i in keep], [work.strata[i] for i in keep]
            model_scores, mismatches = self.check_scores(work.model, explainer, X, attributions, records)
            common = dict(adverse=self.labels, explainer_version=EXPLAINER_VERSION,
                          redis_available=self.store.available, worker=self.worker, redacted=self.redacted(work.model),
                          model_scores=model_scores, mismatches=mismatches)
            explained_at = int(time.time() * 1000)
            if self._encoder is not None:
                values = self._encoder.encode(work.model, records, X, attributions, reasons, weights, strata,
                                              explained_at=explained_at, **common)
            else:
                values = [self.explanation_codec.encode(event) for event in
                          build_explanations(work.model, records, X, attributions, reasons, weights, strata, **common)]
            for record, value in zip(records, values):
                self.publisher.produce(topic, value, record["prediction_id"].encode())
                published_ids.append(record["prediction_id"])
                published_values.append(value)
                self.metrics.latency.observe(max(explained_at - record["event_time"], 0) / 1000)
            if self.shadow is not None:  # hands the rows over and returns: never waits for the challenger
                self.shadow.offer(work.model, records, X, reasons, weights, strata)
            for (reason, source), count in Counter(zip(reasons, attributions.source)).items():
                self.metrics.explained.labels(reason, source).inc(count)
            self.metrics.cache_hits.inc(int(np.sum(attributions.source == "CACHE")))
            self.metrics.fallbacks.inc(int(np.sum(attributions.source == "FALLBACK")))
        self.publisher.flush()  # offsets are acknowledged only after the broker has every message
        self.store.record(published_ids, published_values, fresh)
        self.metrics.redis_up.set(1 if self.store.available else 0)

    def check_scores(self, model, explainer, X, attributions, records, count=True):
        """(model scores, mismatches) of explained rows (models/score_check.py); counted if `count`."""
        checked = checked_scores(self.config.score_tolerance, model, explainer, X, attributions, records)
        if count:
            self.metrics.count_scores(model, checked[1])
        return checked

    def _dead_letters(self, dead) -> None:
        """Dead letters out (confirmed with the batch's explanations), but those a replayed stretch
        published already."""
        guard = self.replay_guard
        for letter in dead:
            m = letter.message
            if guard.active() and (m.partition, m.offset) in guard.dead:
                self.metrics.duplicates.inc()
                continue
            self.dead_letters.write(letter)
            self.metrics.dead_letters.labels(letter.reason_code).inc()
            log.warning("dead letter %s at %s[%d]@%d: %s", letter.reason_code, m.topic, m.partition, m.offset,
                        letter.reason)

    def wait_for_locations(self) -> None:
        """Wait (from any thread) until the last batch's event locations are in Redis."""
        remembering = self._remembering
        if remembering is not None:
            remembering.result()

    def redacted(self, model) -> frozenset[str]:
        """Features whose values this worker leaves out of `model`'s explanations."""
        return model.redacted_features | self.config.redact

    def close(self) -> None:
        self._remembered()
        self.publisher.producer.flush(10)
        self.on_demand.close()


def _objects(strings: list[str]) -> np.ndarray:
    """A list of strings as a 1-d object array (never a 2-d one, whatever the strings)."""
    array = np.empty(len(strings), dtype=object)
    array[:] = strings
    return array

