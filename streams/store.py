"""The shared Redis side of the engine: explanation cache, dedup of published
explanations, the recent-prediction store and per-version event counters.

Keys (the prefix is `whystream:` unless configured):

| key                                      | value                                   | TTL                 |
|------------------------------------------|-----------------------------------------|---------------------|
| `whystream:xcache:<version>:<hash hex>`  | cached attributions of one feature row  | explanation_ttl_s   |
| `whystream:published:<prediction_id>`    | the encoded ExplanationEvent published  | dedup_ttl_s         |
| `whystream:at:<prediction_id>`           | where the PredictionEvent is in `predictions`: partition (int32) and offset (int64), little-endian | prediction_ttl_s |
| `whystream:version-events:<version>`     | events seen of a model version (INCRBY; a worker stops counting once it is past `new_version_events`) | none |
| `whystream:answered:<request_id>`        | an ExplainRequest answered (streams/control/plane.py: answered once) | dedup_ttl_s |
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

The stream itself stays in Kafka: for an on-demand explanation the engine
reads the event back from `predictions` at the remembered location.

Connecting and failing are streams/redis_client.py's: every call here is a miss while Redis is
unavailable, never an error.
"""

from __future__ import annotations

import numpy as np

from whystream.streams.redis_client import ResilientRedis
from whystream.wire.packed_text import pack_utf8

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


class RedisStore(ResilientRedis):
    """Batch operations on the shared Redis; every failure degrades to a miss."""

    def __init__(self, redis_url: str | None, explanation_ttl_s: int = 86400, dedup_ttl_s: int = 86400,
                 prediction_ttl_s: int = 900, retry_after_s: float = 5.0, socket_timeout_s: float = 0.5,
                 prefix: str = "whystream:"):
        super().__init__(redis_url, retry_after_s, socket_timeout_s)
        self.explanation_ttl_s = int(explanation_ttl_s)
        self.dedup_ttl_s = int(dedup_ttl_s)
        self.prediction_ttl_s = int(prediction_ttl_s)
        self.prefix = prefix
        self._version_counts: dict[str, int] = {}  # fallback, and a floor should Redis lose its counters
        if self.client is not None and not self.cluster:
            self._set_with_ttls = self.client.register_script(_SET_WITH_TTLS)
            self._set_locations = self.client.register_script(_SET_LOCATIONS)
            self._exists_then_get = self.client.register_script(_EXISTS_THEN_GET)

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

    # -- the control plane (streams/control/plane.py) ---------------------------------------------------------------

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
        ids, lengths = pack_utf8(prediction_ids)
        lengths = lengths.astype("<u4")
        ends = np.cumsum(lengths, dtype=np.int64).tolist()
        prefix = self._key("at", "")
        calls = [([], [self.prediction_ttl_s, prefix, ids[ends[b - 1] if b else 0:ends[min(b + CHUNK, n) - 1]],
                       lengths[b:b + CHUNK].tobytes(), locations[b:b + CHUNK].tobytes()]) for b in range(0, n, CHUNK)]
        self._call(lambda: self._run_script(self._set_locations, calls), None)

    def note_read(self, read_to: dict[int, int]) -> None:
        """Record, per partition of `predictions`, the offset after the last message the data
        plane has read (and whose locations are remembered): explain on demand waits on it."""
        if read_to:
            self._call(lambda: self.client.hset(self._key("read", "predictions"),
                                                mapping={str(p): int(o) for p, o in read_to.items()}), None)

    def read_past(self, ends: dict[int, int]) -> bool | None:
        """Whether the data plane has read every partition up to `ends` (partition -> offset);
        None while Redis cannot tell."""
        read = self._call(lambda: self.client.hgetall(self._key("read", "predictions")), None)
        if read is None:
            return None
        read = {int(p): int(o) for p, o in read.items()}
        return all(read.get(p, 0) >= end for p, end in ends.items())

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
