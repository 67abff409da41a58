"""The shared Redis side of the engine: explanation cache, dedup of published
explanations, the recent-prediction store and per-version event counters.

Keys (the prefix is `whystream:` unless configured):

| key                                      | value                                   | TTL                 |
|------------------------------------------|-----------------------------------------|---------------------|
| `whystream:xcache:<version>:<hash hex>`  | cached attributions of one feature row  | explanation_ttl_s   |
| `whystream:published:<prediction_id>`    | the encoded ExplanationEvent published  | dedup_ttl_s         |
| `whystream:at:<prediction_id>`           | where the PredictionEvent is in `predictions`: partition (int32) and offset (int64), little-endian | prediction_ttl_s |
| `whystream:version-events:<version>`     | events seen of a model version (INCRBY; a worker stops counting once it is past `new_version_events`) | none |
| `whystream:answered:<request_id>`        | an ExplainRequest answered (streams/control.py: answered once) | dedup_ttl_s |
| `whystream:redrive:<name>/<version>`     | the worker that sends this version's UNKNOWN_VERSION dead letters back (one worker does) | dedup_ttl_s |

Every call handles a whole batch in one round trip, and a batch of due events
needs two: `recall` before explaining (already published? cached?) and `record`
after publishing (published, and the fresh attributions cached). Both are small
Lua scripts (one EVALSHA per 1000 keys; several chunks go in one pipeline),
several times cheaper for the client than a pipeline of one command per key
(measured: about 2 us instead of 12 us of client CPU per key). The location of
every event, the one write per event, goes as three strings per 1000 events
(ids, their lengths, the locations packed by numpy) that the script takes
apart: 0.5 us of client CPU per event instead of 3 (`python bench/store.py`).
Needs EVAL, which every Redis since 2.6 has.

Connecting: `redis://[user:password@]host:port/db` (ACL user and password in the
URL), `rediss://...?ssl_ca_certs=/path/ca.pem` for TLS, and `redis+cluster://host:port`
(or `rediss+cluster://`) for a Redis Cluster, through redis-py's RedisCluster from
any one node. A cluster routes each key to the node owning its hash slot, and a Lua
script or multi-key command may only touch keys of one slot, so in cluster mode
every operation is a single-key command (SET, GET, EXISTS, INCRBY), sent in one
pipeline per batch that redis-py splits by node: no script, no multi-key command,
and the key names are the same as on a single Redis. It costs far more client CPU
than the scripts, which a single Redis keeps: measured with 2,000-event batches on a
3-master loopback cluster, 17 us per event to remember locations (0.3 us with the
script), 29 us per key to recall and 37 us to record (1.6 and 2.7 us): about 9% of a
core at 5,000 events/s. Grouping keys by hash tag to use scripts per slot would
cut it, at the price of concentrating data in few slots; not done.

The stream itself stays in Kafka: for an on-demand explanation the engine
reads the event back from `predictions` at the remembered location.

Redis is an optimisation, never a dependency: when it is unreachable, slow
(socket_timeout_s) or answers with an error, every call returns the "miss"
answer (None / False / nothing stored) instead of raising, `available` turns
False, one warning is logged per outage (logger `whystream.store`) and the next
attempt is made no sooner than retry_after_s later. `redis_url=None` means no
Redis at all: always unavailable, silently.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Callable, TypeVar
from urllib.parse import urlparse

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from whystream.errors import ConfigError

log = logging.getLogger("whystream.store")
T = TypeVar("T")

CHUNK = 1000  # keys per command: keeps each Lua call short (Redis runs scripts one at a time)

# SET KEYS[i] ARGV[i + 3] EX ttl: the first ARGV[1] keys with TTL ARGV[2], the rest with ARGV[3].
_SET_WITH_TTLS = """
local first, ttl_first, ttl_rest = tonumber(ARGV[1]), ARGV[2], ARGV[3]
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[i + 3], 'EX', i <= first and ttl_first or ttl_rest) end
return #KEYS
"""
# SET ARGV[2] .. id  location  EX ARGV[1] for each event. ARGV[3]: the ids, concatenated;
# ARGV[4]: their byte lengths (uint32 LE each); ARGV[5]: the locations, LOCATION bytes each.
_SET_LOCATIONS = """
local ttl, prefix, ids, lengths, locations = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local at = 1
for i = 1, #lengths / 4 do
  local n = struct.unpack('<I4', lengths, 4 * i - 3)
  redis.call('SET', prefix .. string.sub(ids, at, at + n - 1), string.sub(locations, 12 * i - 11, 12 * i), 'EX', ttl)
  at = at + n
end
return #lengths / 4
"""
LOCATION = np.dtype([("partition", "<i4"), ("offset", "<i8")])  # 12 bytes, as _SET_LOCATIONS slices them
# Per key: EXISTS (1 or 0) for the first ARGV[1] keys, GET (the value, or nil) for the rest.
_EXISTS_THEN_GET = """
local first, out = tonumber(ARGV[1]), {}
for i = 1, #KEYS do out[i] = i <= first and redis.call('EXISTS', KEYS[i]) or redis.call('GET', KEYS[i]) end
return out
"""


def feature_hash(rows: np.ndarray) -> list[bytes]:
    """A stable 16-byte blake2b digest per float64 row of a 2-D array. Every NaN
    hashes alike, and -0.0 like 0.0, so equal feature vectors share a key."""
    X = np.asarray(rows, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"feature_hash expects a 2-D array of rows, got shape {X.shape}")
    X = np.where(np.isnan(X), np.nan, X) + 0.0  # canonical NaN; -0.0 + 0.0 == +0.0
    data = np.ascontiguousarray(X, dtype="<f8")
    view, width = memoryview(data.tobytes()), data.shape[1] * 8
    blake2b = hashlib.blake2b
    return [blake2b(view[i * width:(i + 1) * width], digest_size=16).digest() for i in range(data.shape[0])]


class RedisStore:
    """Batch operations on the shared Redis; every failure degrades to a miss."""

    def __init__(self, redis_url: str | None, explanation_ttl_s: int = 86400, dedup_ttl_s: int = 86400,
                 prediction_ttl_s: int = 900, retry_after_s: float = 5.0, socket_timeout_s: float = 0.5,
                 prefix: str = "whystream:"):
        self.url = redis_url
        self.explanation_ttl_s = int(explanation_ttl_s)
        self.dedup_ttl_s = int(dedup_ttl_s)
        self.prediction_ttl_s = int(prediction_ttl_s)
        self.retry_after_s = retry_after_s
        self.prefix = prefix
        self.available = False
        self.outages = 0
        self._lock = threading.Lock()
        self._next_try = 0.0
        self._version_counts: dict[str, int] = {}  # fallback, and a floor should Redis lose its counters
        self.client = None
        self.cluster = False
        self._connect = None  # cluster mode: makes the client (it needs the cluster up to learn the slots)
        if redis_url is None:
            return
        try:
            # No client-side retries (redis-py would retry 10 times with backoff by default):
            # a failed call is a miss now, and the next try comes retry_after_s later.
            options = dict(socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s,
                           retry=Retry(NoBackoff(), 0))
            node_url = cluster_node_url(redis_url)
            if node_url is not None:
                self.cluster = True
                self._connect = _cluster_factory(node_url, options)
            else:
                self.client = redis.Redis.from_url(redis_url, health_check_interval=0, **options)
        except ValueError as exc:  # a malformed URL is a configuration mistake, not an outage
            raise ConfigError("WHYSTREAM_REDIS_URL", f"not a usable Redis URL ({exc})") from None
        if not self.cluster:
            self._set_with_ttls = self.client.register_script(_SET_WITH_TTLS)
            self._set_locations = self.client.register_script(_SET_LOCATIONS)
            self._exists_then_get = self.client.register_script(_EXISTS_THEN_GET)
        self.available = True
        self._call(lambda: self.client.ping(), False)  # find out now; logs the warning if Redis is down at start

    # -- failure handling ---------------------------------------------------------------------------------------

    def _call(self, operation: Callable[[], T], miss: T) -> T:
        """Run one Redis operation, or return `miss` while Redis is (or turns out to be) unreachable."""
        if self.client is None and self._connect is None:
            return miss
        if not self.available:
            with self._lock:
                now = time.monotonic()
                if now < self._next_try:
                    return miss
                self._next_try = now + self.retry_after_s  # only this caller tries now; the others miss
        try:
            if self.client is None:
                self.client = self._connect()
            result = operation()
        except Exception as exc:  # redis errors, socket errors, and anything odd in between: never escape
            self._went_down(exc)
            return miss
        if not self.available:
            with self._lock:
                if not self.available:
                    self.available = True
                    log.info("Redis at %s is reachable again; shared cache and dedup are back", self._where())
        return result

    def ping(self) -> bool:
        """Whether Redis answers now (for the health endpoint; respects the retry pause)."""
        return bool(self._call(lambda: self.client.ping(), False))

    def _went_down(self, exc: Exception) -> None:
        with self._lock:
            self._next_try = time.monotonic() + self.retry_after_s
            if not self.available:
                return
            self.available = False
            self.outages += 1
        log.warning("Redis at %s is unavailable (%s: %s); carrying on without the shared cache and dedup, "
                    "retrying every %gs", self._where(), type(exc).__name__, exc, self.retry_after_s)
        if self.cluster:
            self.client = None  # made afresh once it is back: the slot map may have moved
            return
        try:
            self.client.connection_pool.disconnect()  # reconnect afresh once it is back
        except Exception:
            pass

    def _where(self) -> str:
        """host:port/db for messages (never the password)."""
        if self.cluster:
            parts = urlparse(self.url)
            return f"the cluster of {parts.hostname}:{parts.port or 6379}"
        kwargs = self.client.connection_pool.connection_kwargs if self.client else {}
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"

    def _per_key(self, commands) -> list:
        """Cluster mode: one single-key command per (method, key, *args), in one pipeline
        (redis-py sends each node its share)."""
        pipe = self.client.pipeline(transaction=False)
        for method, *args in commands:
            getattr(pipe, method)(*args)
        return pipe.execute()

    # -- batch helpers -----------------------------------------------------------------------------------------

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}:{name}"

    @staticmethod
    def _chunks(keys: list[str], first: int, shared: list, per_key: list = ()) -> list[tuple[list, list]]:
        """(keys, args) per CHUNK keys for a script that treats its first ARGV[1] keys apart:
        args are how many of this chunk's keys are among the first `first`, then `shared`,
        then this chunk's share of `per_key`."""
        return [(keys[b:b + CHUNK], [min(max(first - b, 0), CHUNK), *shared, *per_key[b:b + CHUNK]])
                for b in range(0, len(keys), CHUNK)]

    def _run_script(self, script, calls: list[tuple[list, list]]) -> list:
        """One script over several (keys, args) chunks. A single chunk (the usual
        case) is one EVALSHA; a pipeline would add a SCRIPT EXISTS round trip.
        redis-py reloads the script by itself after a Redis restart (NOSCRIPT)."""
        if len(calls) == 1:
            keys, args = calls[0]
            return [script(keys=keys, args=args)]
        pipe = self.client.pipeline(transaction=False)
        for keys, args in calls:
            script(keys=keys, args=args, client=pipe)
        return pipe.execute()

    def _cache_key(self, model_version: str, feature_hash: bytes) -> str:
        return self._key("xcache", f"{model_version}:{feature_hash.hex()}")

    # -- a batch's due events: dedup of published explanations and the explanation cache ------------------------

    def recall(self, prediction_ids: list[str], model_version: str,
               feature_hashes: list[bytes]) -> tuple[list[bool], list[bytes | None]]:
        """In one round trip: per id, was an explanation for it already published (by any
        worker)? Per feature hash, the cached attributions of this model version, or None."""
        n = len(prediction_ids)
        keys = [self._key("published", pid) for pid in prediction_ids]
        keys += [self._cache_key(model_version, digest) for digest in feature_hashes]
        if not keys:
            return [], []

        def read():
            if self.cluster:
                answers = self._per_key([("exists" if i < n else "get", key) for i, key in enumerate(keys)])
            else:
                chunks = self._run_script(self._exists_then_get, self._chunks(keys, n, []))
                answers = [answer for chunk in chunks for answer in chunk]
            return [bool(flag) for flag in answers[:n]], answers[n:]

        return self._call(read, ([False] * n, [None] * len(feature_hashes)))

    def record(self, prediction_ids: list[str], explanations: list[bytes],
               cached: list[tuple[str, bytes, bytes]] = ()) -> None:
        """In one round trip: remember each published id's encoded ExplanationEvent (dedup
        and on-demand lookups, dedup_ttl_s), and cache fresh attributions, given as
        (model_version, feature_hash, payload), for explanation_ttl_s."""
        if len(prediction_ids) != len(explanations):
            raise ValueError(f"{len(prediction_ids)} ids but {len(explanations)} explanations")
        keys = [self._key("published", pid) for pid in prediction_ids]
        keys += [self._cache_key(version, digest) for version, digest, _ in cached]
        if not keys:
            return
        values = [*explanations, *(payload for _, _, payload in cached)]
        if self.cluster:
            n, ttls = len(prediction_ids), (self.dedup_ttl_s, self.explanation_ttl_s)
            commands = [("set", key, value, ttls[i >= n]) for i, (key, value) in enumerate(zip(keys, values))]
            self._call(lambda: self._per_key(commands), None)
            return
        calls = self._chunks(keys, len(prediction_ids), [self.dedup_ttl_s, self.explanation_ttl_s], values)
        self._call(lambda: self._run_script(self._set_with_ttls, calls), None)

    # -- the control plane (streams/control.py) ---------------------------------------------------------------

    def mark(self, kind: str, name: str, value: str = "1") -> bool | None:
        """Set `whystream:<kind>:<name>` unless it is set (dedup_ttl_s): True if this call set it,
        False if it was set, None when Redis is unavailable."""
        return self._call(lambda: bool(self.client.set(self._key(kind, name), value, nx=True, ex=self.dedup_ttl_s)),
                          None)

    def marked(self, kind: str, name: str) -> bool | None:
        """Whether `whystream:<kind>:<name>` is set; None when Redis is unavailable."""
        return self._call(lambda: bool(self.client.exists(self._key(kind, name))), None)

    def published_explanation(self, prediction_id: str) -> bytes | None:
        return self._call(lambda: self.client.get(self._key("published", prediction_id)), None)

    # -- recent predictions (explain on demand) ----------------------------------------------------------------

    def remember_locations(self, prediction_ids: list[str], partitions: np.ndarray, offsets: np.ndarray) -> None:
        """Remember, for prediction_ttl_s, where each event lies in `predictions`."""
        n = len(prediction_ids)
        if not (n == len(partitions) == len(offsets)):
            raise ValueError(f"{n} ids but {len(partitions)} partitions and {len(offsets)} offsets")
        if not n:
            return
        locations = np.empty(n, dtype=LOCATION)
        locations["partition"], locations["offset"] = partitions, offsets
        if self.cluster:
            packed, size = locations.tobytes(), LOCATION.itemsize
            commands = [("set", self._key("at", pid), packed[size * i:size * (i + 1)], self.prediction_ttl_s)
                        for i, pid in enumerate(prediction_ids)]
            self._call(lambda: self._per_key(commands), None)
            return
        encoded = [pid.encode() for pid in prediction_ids]
        lengths = np.fromiter(map(len, encoded), dtype="<u4", count=n)
        prefix = self._key("at", "")
        calls = [([], [self.prediction_ttl_s, prefix, b"".join(encoded[b:b + CHUNK]), lengths[b:b + CHUNK].tobytes(),
                       locations[b:b + CHUNK].tobytes()]) for b in range(0, n, CHUNK)]
        self._call(lambda: self._run_script(self._set_locations, calls), None)

    def recall_location(self, prediction_id: str) -> tuple[int, int] | None:
        """(partition, offset) of a recent event in `predictions`, or None."""
        packed = self._call(lambda: self.client.get(self._key("at", prediction_id)), None)
        if packed is None or len(packed) != LOCATION.itemsize:
            return None
        location = np.frombuffer(packed, dtype=LOCATION)[0]
        return int(location["partition"]), int(location["offset"])

    # -- model version counters --------------------------------------------------------------------------------

    def note_version_events(self, model_version: str, n: int) -> int:
        """Count n more events of this model version; returns the count before them.
        Shared by all workers through Redis; while Redis is down a process-local
        count carries on from the last value seen (it also keeps a Redis that lost
        its counters from declaring an old version new again)."""
        n = int(n)
        after = self._call(lambda: self.client.incrby(self._key("version-events", model_version), n), None)
        with self._lock:
            local = self._version_counts.get(model_version, 0)
            before = local if after is None else max(int(after) - n, local)
            self._version_counts[model_version] = before + n
        return before


CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def cluster_node_url(url: str) -> str | None:
    """For a `redis+cluster://` / `rediss+cluster://` URL, the same URL with the plain
    scheme (the node to discover the cluster from); None for any other URL."""
    scheme, sep, rest = url.partition("://")
    plain = CLUSTER_SCHEMES.get(scheme.lower()) if sep else None
    return f"{plain}://{rest}" if plain else None


def _cluster_factory(node_url: str, options: dict) -> Callable[[], "redis.RedisCluster"]:
    """Makes a RedisCluster client, which learns the slot map from the node in the URL.
    Called on first use, so that a cluster down at start is an outage, not a crash."""
    parts = urlparse(node_url)
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0")
    if not parts.hostname:
        raise ValueError("no host to discover the cluster from")
    return lambda: redis.RedisCluster.from_url(node_url, cluster_error_retry_attempts=0, **options)
