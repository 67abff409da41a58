"""The worker's control plane: Faust agents on the low-rate control topics.

The data plane (`predictions` -> `explanations`) stays the confluent-kafka
batch loop of streams/worker.py. Beside it, on the Faust app's event loop:

- `models` (compacted, one partition): every worker reads the whole topic
  from its beginning at start and then follows it, with a consumer of its own
  that is assigned the partition (no consumer group: each worker must see
  every event, and a group would hand the partition to one of them). The
  `on_model` agent replays each ModelRegistered into the champion/challenger
  roles (whystream/models/events.py), builds the version's TreeSHAP kernels on an
  executor thread and installs them under the ingest lock (a dictionary
  insert), so the version's first event finds them ready; then one worker
  (a Redis mark per version) sends the version's UNKNOWN_VERSION dead
  letters back to `predictions` (whystream/kafka/redrive.py's idempotent replay), for versions
  announced in the last REDRIVE_WITHIN_S.
- `explain-requests`: read in the consumer group `<prefix>whystream-explain`
  (each request goes to one worker; not the data plane's group, and neither is
  the Faust app id, `<prefix>whystream-control`). The `answer` agent, at most
  EXPLAIN_CONCURRENCY requests at a time, answers each with an ON_DEMAND
  ExplanationEvent on `explanations` (request_id set; a reply for the requester,
  which the ClickHouse sink does not store) or an ExplainError on
  `explain-errors` (streams/on_demand.py does the finding and computing).
  A request whose decision is not found waits (REQUEST_PATIENCE_S at most)
  until the data plane has read what was on `predictions` when it was asked.
  Offsets are committed as soon as the requests before them are answered;
  a request delivered again (a replay after a crash, or sent twice) is
  answered once: answered ids are marked in Redis (and kept in memory).
- the challenger's shadow (streams/control/shadow.py): the `shadow` agent explains
  what the engine hands over with the challenger and publishes it.

Every blocking call (Kafka polls and flushes, Redis, TreeSHAP) runs on an
executor thread; the only one that takes the ingest lock is computing an
on-demand explanation (as the HTTP /explain does), so none of this ever
holds up ingest for longer than one explanation.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from whystream.errors import DecodeError
from whystream.kafka import redrive
from whystream.kafka.clients import consumer, producer
from whystream.kafka.publisher import Publisher
from whystream.models.events import ModelBook
from whystream.models.explainer import ModelExplainer
from whystream.streams.control.shadow import QUEUE_LIMIT, Shadow
from whystream.wire.codecs import topic_codec

log = logging.getLogger("whystream.control")
EXPLAIN_CONCURRENCY = 4  # explain requests answered at once (each may run TreeSHAP on an executor thread)
REQUEST_BATCH = 50  # requests fetched (and committed) together
REQUEST_PATIENCE_S = 30.0  # how long a request waits for its decision while the data plane has not read it
# A worker killed without leaving the group holds its request partitions this long (librdkafka's default: 45 s).
REQUEST_SESSION_TIMEOUT_MS = 6000
ORIGINAL_CAP = 64 * 1024  # bytes of a malformed request kept in its ExplainError
REMEMBERED_ANSWERS = 100_000  # request ids this worker answered, kept in memory besides Redis
# Dead letters are sent back for versions announced this recently (as long as the Redis mark that one
# worker does it lives): a worker replaying `models` at start does not scan the DLQ for every old version.
REDRIVE_WITHIN_S = 86_400


def app_id(settings) -> str:
    """The Faust app id: never the data plane's consumer group (`<prefix>whystream-worker`)."""
    return f"{settings.topic_prefix}whystream-control"


class ControlPlane:
    def __init__(self, app, engine, ingest):
        self.app, self.engine, self.ingest = app, engine, ingest
        settings = self.settings = engine.settings
        self.book = ModelBook()
        # Confirmed per message with back-off, as the engine publishes (whystream/kafka/publisher.py): an answer
        # or a shadow explanation outlives a broker hiccup. One executor thread publishes at a time.
        self.publisher = Publisher(producer(settings, "control"))
        self._publish_lock = threading.Lock()
        self.request_codec = topic_codec(settings, "explain-requests")
        self.error_codec = topic_codec(settings, "explain-errors")
        self.models_codec = topic_codec(settings, "models")
        self.answered: OrderedDict[str, None] = OrderedDict()
        self.in_flight: set[str] = set()
        self.models_channel = app.channel()
        self.requests_channel = app.channel()
        self.shadow_channel = app.channel()
        self._pending, self._pending_lock = 0, threading.Lock()  # hand-overs queued for the shadow agent
        self.shadow = engine.shadow = Shadow(engine, self.book, self._hand_over)
        self._loop: asyncio.AbstractEventLoop | None = None
        app.agent(self.models_channel, name="whystream.on_model")(self._on_model)
        app.agent(self.requests_channel, name="whystream.answer", concurrency=EXPLAIN_CONCURRENCY)(self._answer)
        app.agent(self.shadow_channel, name="whystream.shadow")(self._shadow)
        app.task(self._start)

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.app.flow_control.resume()  # Faust's consumer would; without it the channels never deliver
        self.app.add_future(self._follow_models())
        self.app.add_future(self._read_requests())

    async def _run(self, pool, fn, *args):
        return await self._loop.run_in_executor(pool, fn, *args)

    # -- models ---------------------------------------------------------------

    async def _follow_models(self) -> None:
        topic = self.settings.topic("models")
        pool = ThreadPoolExecutor(1, thread_name_prefix="whystream-models")
        models = consumer(self.settings, label="models", **{"fetch.wait.max.ms": 100})
        try:
            meta = await self._run(pool, lambda: models.list_topics(topic, timeout=10).topics.get(topic))
            partitions = sorted(meta.partitions) if meta is not None and meta.error is None else [0]
            models.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
            while not self.app.should_stop:
                for m in await self._run(pool, models.consume, 100, 0.5):
                    if m.error() is not None:
                        continue
                    try:
                        await self.models_channel.put(self.models_codec.decode(m.value()))
                    except DecodeError as exc:  # a writer we do not know: skip it, say so
                        log.warning("models[%d]@%d: %s", m.partition(), m.offset(), exc)
        finally:
            await self._run(pool, models.close)
            pool.shutdown(wait=False)

    async def _on_model(self, stream) -> None:
        async for event in stream:
            try:
                self.book.apply(event)
                roles = self.book.roles[event["name"]]
                if roles.champion is None:  # registered before `models` existed: the registry's LATEST is
                    roles.champion = await self._run(None, self._latest, event["name"])
                ready = await self._run(None, self._preload, event["name"], event["version"])
                if ready and time.time() * 1000 - event["registered_at"] < REDRIVE_WITHIN_S * 1000:
                    await self._run(None, self._redrive, event["name"], event["version"])
            except Exception:  # one bad version must not stop the agent
                log.exception("models: %s@%s", event.get("name"), event.get("version"))

    def _latest(self, name: str) -> str | None:
        try:
            return self.engine.registry.latest(name)
        except OSError:
            return None

    def _preload(self, name: str, version: str) -> bool:
        """Build the version's kernels off the ingest thread and install them. False: not servable here."""
        engine = self.engine
        try:
            model = engine.registry.load(name, version)
        except Exception as exc:  # not in this worker's registry (yet): its events are dead-lettered and say why
            log.warning("models: %s@%s announced but not loadable here: %s", name, version, exc)
            return False
        if engine.attributor.has(model):
            return True
        explainer = ModelExplainer(model)  # compiles and warms the kernels: seconds, outside the lock
        with self.ingest.lock:
            engine.install(model, explainer)
        engine.metrics.kernel_built.labels(name, version, "models-topic").set(time.time())
        log.info("models: %s@%s ready before its first event", name, version)
        return True

    def _redrive(self, name: str, version: str) -> None:
        """Send the version's UNKNOWN_VERSION dead letters back, from one worker (the one that marks it)."""
        if self.engine.store.mark("redrive", f"{name}/{version}", self.engine.worker) is False:
            return  # another worker does it (without Redis every worker does: the replay is idempotent)
        report = redrive.replay(self.settings, "UNKNOWN_VERSION", where=redrive.of_version(self.settings, name, version))
        if report.sent:
            self.engine.metrics.redriven.inc(report.sent)
            log.info("models: sent back %d UNKNOWN_VERSION dead letters of %s@%s", report.sent, name, version)

    # -- explain requests -----------------------------------------------------

    async def _read_requests(self) -> None:
        pool = ThreadPoolExecutor(1, thread_name_prefix="whystream-requests")
        requests = consumer(self.settings, "explain", **{
            "auto.offset.reset": "earliest", "fetch.wait.max.ms": 50,
            "session.timeout.ms": REQUEST_SESSION_TIMEOUT_MS, "heartbeat.interval.ms": REQUEST_SESSION_TIMEOUT_MS // 3})
        requests.subscribe([self.settings.topic("explain-requests")])
        try:
            while not self.app.should_stop:
                messages = [m for m in await self._run(pool, requests.consume, REQUEST_BATCH, 0.5)
                            if m.error() is None]
                if not messages:
                    continue
                done = [self._loop.create_future() for _ in messages]
                waiting: dict[int, list] = {}  # partition -> [(offset, answered)], in offset order
                for m, future in zip(messages, done):
                    waiting.setdefault(m.partition(), []).append((m.offset(), future))
                    await self.requests_channel.put((m.value() or b"", future))
                # Each answered stretch is committed as soon as it is answered, not with the whole batch:
                # a worker killed now asks its successor to answer again only what is in flight.
                for answered in asyncio.as_completed(done):
                    await answered
                    offsets = _answered_prefixes(self.settings.topic("explain-requests"), waiting)
                    try:
                        if offsets:
                            await self._run(pool, lambda: requests.commit(offsets=offsets, asynchronous=False))
                    except Exception as exc:  # redelivered later: answered ids are skipped
                        log.warning("explain-requests: commit failed: %s", exc)
        finally:
            await self._run(pool, requests.close)
            pool.shutdown(wait=False)

    async def _answer(self, stream) -> None:
        async for value, done in stream:
            try:
                await self._answer_one(value)
            except Exception:  # the request is lost to this worker's bug, not the agent
                log.exception("explain-requests: cannot answer")
            finally:
                if not done.done():
                    done.set_result(None)

    async def _answer_one(self, value: bytes) -> None:
        engine = self.engine
        try:
            request = self.request_codec.decode(value)
        except DecodeError as exc:
            await self._error({}, "MALFORMED_REQUEST", str(exc), value[:ORIGINAL_CAP])
            return
        rid, pid = request["request_id"], request["prediction_id"]
        if rid in self.in_flight or rid in self.answered:  # checked and claimed before any await: the
            engine.metrics.explain_requests.labels("duplicate").inc()  # same id twice in a batch is one answer
            return
        self.in_flight.add(rid)
        try:
            if await self._run(None, engine.store.marked, "answered", rid):  # answered by any worker, before
                engine.metrics.explain_requests.labels("duplicate").inc()
                return
            published, raw, source = await self._run(None, engine.on_demand.find_once_read, pid,
                                                      REQUEST_PATIENCE_S)
            explanation = published or (await self._run(None, self._compute, pid, raw, source) if raw else None)
            if explanation is None:
                await self._error(request, "UNKNOWN_DECISION",
                                  f"no decision with prediction_id {pid[:200]!r} within reach (never sent, "
                                  "invalid, older than the 15-minute location memory and not in the decision store, "
                                  f"or not read by the data plane within {REQUEST_PATIENCE_S:g} s of the request)")
            else:
                answer = {**explanation, "sampling_reason": "ON_DEMAND", "inclusion_weight": 1.0, "request_id": rid,
                          "requested_by": request["requested_by"]}
                await self._publish(self.settings.topic("explanations"),
                                    [(pid.encode(), engine.explanation_codec.encode(answer))])
                engine.metrics.explain_requests.labels("answered").inc()
            self._remember(rid)
        finally:
            self.in_flight.discard(rid)

    def _compute(self, pid: str, raw: bytes, source: str):
        with self.ingest.lock:
            return self.engine.on_demand.compute(pid, raw, source)

    async def _error(self, request: dict, code: str, message: str, original: bytes = b"") -> None:
        error = {"request_id": request.get("request_id", ""), "prediction_id": request.get("prediction_id", ""),
                 "requested_by": request.get("requested_by", ""), "error_code": code, "message": message[:1000],
                 "original": bytes(original), "answered_at": int(time.time() * 1000), "worker": self.engine.worker}
        await self._publish(self.settings.topic("explain-errors"),
                            [(error["request_id"].encode() or None, self.error_codec.encode(error))])
        self.engine.metrics.explain_requests.labels("error").inc()

    def _remember(self, rid: str) -> None:
        self.answered[rid] = None
        if len(self.answered) > REMEMBERED_ANSWERS:
            self.answered.popitem(last=False)
        self.engine.store.mark("answered", rid)  # after the broker confirmed the answer

    async def _publish(self, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
        """Produce (key, value)s and wait for the broker's confirmation (on an executor thread)."""
        def send():
            with self._publish_lock:
                for key, value in messages:
                    self.publisher.produce(topic, value, key)
                self.publisher.flush()
        await self._run(None, send)

    # -- the challenger's shadow ------------------------------------------------

    def _hand_over(self, work) -> bool:
        """On the ingest thread: queue `work` for the shadow agent; False (dropped) when QUEUE_LIMIT wait already."""
        with self._pending_lock:
            if self._loop is None or self._pending >= QUEUE_LIMIT:
                return False
            self._pending += 1
        asyncio.run_coroutine_threadsafe(self.shadow_channel.put(work), self._loop)  # never full: bounded above
        return True

    async def _shadow(self, stream) -> None:
        async for work in stream:
            with self._pending_lock:
                self._pending -= 1
            try:
                messages = await self._run(None, self.shadow.explain, work)
                await self._publish(self.settings.topic("explanations"), messages)
                self.engine.metrics.shadowed.inc(len(messages))
            except Exception:  # the challenger failing must not touch the champion's stream
                log.exception("shadow: %s@%s", work.champion.name, work.challenger_version)


def _answered_prefixes(topic: str, waiting: dict[int, list]) -> list[TopicPartition]:
    """The offsets to commit: per partition, past its requests answered without a gap (taken off `waiting`)."""
    offsets = []
    for partition, queue in waiting.items():
        last = None
        while queue and queue[0][1].done():
            last = queue.pop(0)[0]
        if last is not None:
            offsets.append(TopicPartition(topic, partition, last + 1))
    return offsets
