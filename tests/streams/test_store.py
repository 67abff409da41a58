"""RedisStore against real redis-server processes (no mocks): the stack's one
for the round trips (a unique key prefix per test), and private ones that the
outage tests stop, freeze and restart."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import time
import uuid
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import redis

from whystream.errors import WhystreamError
from whystream.infra.stack import Child, redis_binary, start_redis
from whystream.streams.attribution import feature_hash
from whystream.streams.redis_client import cluster_node_url
from whystream.streams.store import CHUNK, RedisStore


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}:"


@pytest.fixture(params=["single", "cluster"])
def redis_url(request, stack) -> str:
    """The round trips run against the stack's redis-server and a real 3-master Redis Cluster."""
    if request.param == "single":
        return stack.redis_url
    return f"redis+cluster://127.0.0.1:{request.getfixturevalue('redis_cluster')[0]}"


@pytest.fixture
def store(redis_url, prefix) -> RedisStore:
    return RedisStore(redis_url, explanation_ttl_s=3600, dedup_ttl_s=7200, prediction_ttl_s=900, prefix=prefix)


@pytest.fixture
def raw(redis_url):
    node = cluster_node_url(redis_url)
    client = redis.RedisCluster.from_url(node) if node else redis.Redis.from_url(redis_url)
    yield client
    client.close()


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "whystream.store" and r.levelno == logging.WARNING]


# -- feature_hash ------------------------------------------------------------------------------------------------


def test_feature_hash_is_stable_and_canonical():
    rows = np.array([[1.0, np.nan, -0.0], [1.0, np.nan, 0.0], [1.0, 2.0, 0.0]])
    odd_nan = np.frombuffer(np.uint64(0x7FF8_0000_DEAD_BEEF).tobytes(), dtype=np.float64)[0]
    assert np.isnan(odd_nan)
    hashes = feature_hash(rows)
    assert all(len(h) == 16 for h in hashes)
    assert hashes[0] == hashes[1]  # -0.0 == 0.0
    assert hashes[0] == feature_hash(np.array([[1.0, odd_nan, 0.0]]))[0]  # any NaN is NaN
    assert hashes[2] != hashes[0]
    assert feature_hash(rows[::-1].copy()[::-1]) == hashes  # memory layout does not matter
    assert feature_hash(np.asfortranarray(rows)) == hashes
    assert feature_hash(rows.astype(np.float32)) == hashes  # same values, same hash
    # Pinned: cached entries written by another worker (or release) must stay findable.
    assert hashes[2].hex() == feature_hash(np.array([[1.0, 2.0, 0.0]]))[0].hex() == _PINNED
    assert feature_hash(np.empty((0, 3))) == []
    with pytest.raises(ValueError):
        feature_hash(np.zeros(3))


_PINNED = "a4eab4797e7398c23ca1bed358348931"  # blake2b-128 of the row's little-endian float64 bytes

# -- round trips -------------------------------------------------------------------------------------------------


def test_cache_round_trip_and_ttl(store, raw, prefix):
    hashes = feature_hash(np.arange(12, dtype=np.float64).reshape(4, 3))
    assert store.available and store.outages == 0
    assert store.recall([], "v1", hashes) == ([], [None] * 4)
    store.record([], [], [("v1", hashes[0], b"a"), ("v1", hashes[1], b"b"), ("v1", hashes[2], b"\x00\xffc")])
    assert store.recall([], "v1", hashes) == ([], [b"a", b"b", b"\x00\xffc", None])
    assert store.recall([], "v2", hashes[:1]) == ([], [None])  # keyed by model version
    key = f"{prefix}xcache:v1:{hashes[0].hex()}"
    assert raw.get(key) == b"a"
    assert 3500 < raw.ttl(key) <= 3600
    assert store.recall([], "v1", []) == ([], [])
    store.record([], [], [])


def test_one_round_trip_answers_dedup_and_cache(store, raw, prefix):
    hashes = feature_hash(np.arange(6, dtype=np.float64).reshape(3, 2))
    store.record(["a", "c"], [b"ea", b"ec"], [("v", hashes[1], b"attributions-1"), ("w", hashes[2], b"other")])
    assert store.recall(["a", "b", "c"], "v", hashes) == ([True, False, True], [None, b"attributions-1", None])
    assert store.recall(["b"], "v", []) == ([False], [])
    # each kind keeps its own TTL, whichever side of the split in the script a key falls
    assert 7100 < raw.ttl(f"{prefix}published:c") <= 7200
    assert 3500 < raw.ttl(f"{prefix}xcache:w:{hashes[2].hex()}") <= 3600
    with pytest.raises(ValueError):
        store.record(["a"], [], [])


def test_batches_larger_than_one_chunk(store, raw, prefix):
    n = 2 * CHUNK + 17
    ids = [f"p{i}" for i in range(n)]
    store.remember_locations(ids, np.arange(n) % 4, np.arange(n) * 1000)
    hashes = feature_hash(np.arange(n, dtype=np.float64).reshape(n, 1))
    # published ids and cache entries straddle chunk boundaries in both calls
    store.record(ids[::2], [b"e"] * len(ids[::2]), [("v", h, str(i).encode()) for i, h in enumerate(hashes)])
    published, cached = store.recall(ids, "v", hashes)
    assert published == [i % 2 == 0 for i in range(n)]
    assert cached == [str(i).encode() for i in range(n)]
    assert 7100 < raw.ttl(f"{prefix}published:{ids[-1]}") <= 7200
    assert 3500 < raw.ttl(f"{prefix}xcache:v:{hashes[-1].hex()}") <= 3600
    assert store.recall_location(ids[-1]) == ((n - 1) % 4, (n - 1) * 1000)
    assert store.recall_location(ids[CHUNK]) == (CHUNK % 4, CHUNK * 1000)


def test_locations_of_non_ascii_ids_across_chunks(store):
    n = CHUNK + 5
    ids = [f"ü{i}" if i % 3 == 0 else f"p{i}" for i in range(n)]  # the ids' bytes are cut per chunk, not their characters
    store.remember_locations(ids, np.arange(n) % 4, np.arange(n) + 7)
    assert [store.recall_location(ids[i]) for i in (0, 1, CHUNK - 1, CHUNK, n - 1)] == [
        (i % 4, i + 7) for i in (0, 1, CHUNK - 1, CHUNK, n - 1)]


def test_dedup_and_published_lookup(store, raw, prefix):
    assert store.recall(["a", "b"], "v", []) == ([False, False], [])
    assert store.published_explanation("a") is None
    store.record(["a"], [b"explanation-of-a"])
    assert store.recall(["a", "b", "a"], "v", []) == ([True, False, True], [])
    assert store.published_explanation("a") == b"explanation-of-a"
    assert 7100 < raw.ttl(f"{prefix}published:a") <= 7200


def test_where_recent_predictions_lie(store, raw, prefix):
    ids = ["p1", "ünïcode-id", "", "p" * 300]  # byte lengths differ from character lengths
    store.remember_locations(ids, np.array([3, 0, 1, 2]), np.array([2**40 + 7, 0, 5, 9]))
    assert [store.recall_location(pid) for pid in ids] == [(3, 2**40 + 7), (0, 0), (1, 5), (2, 9)]
    assert store.recall_location("p3") is None
    assert 800 < raw.ttl(f"{prefix}at:p1") <= 900
    store.remember_locations([], np.array([]), np.array([]))
    with pytest.raises(ValueError):
        store.remember_locations(["p1"], np.array([]), np.array([1]))


def test_version_counter_is_shared(store, prefix):
    assert store.note_version_events("v9", 150) == 0
    assert store.note_version_events("v9", 100) == 150
    other_worker = RedisStore(store.url, prefix=prefix)
    assert other_worker.note_version_events("v9", 1) == 250
    assert store.note_version_events("v10", 5) == 0
    assert store.note_version_events("v9", 0) == 251


# -- no Redis, Redis down, Redis slow ----------------------------------------------------------------------------


def test_no_redis_configured(caplog):
    caplog.set_level(logging.INFO, logger="whystream.store")
    store = RedisStore(None)
    assert not store.available and store.outages == 0
    assert store.recall(["a"], "v", [b"x" * 16]) == ([False], [None])
    store.record(["a"], [b"e"], [("v", b"x" * 16, b"p")])
    assert store.published_explanation("a") is None
    store.remember_locations(["a"], np.array([0]), np.array([1]))
    assert store.recall_location("a") is None
    assert store.note_version_events("v", 3) == 0  # process-local count
    assert store.note_version_events("v", 3) == 3
    assert caplog.records == []


def test_malformed_url_is_a_config_error():
    with pytest.raises(WhystreamError, match="WHYSTREAM_REDIS_URL"):
        RedisStore("http://not-redis:80")


def _free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_redis_on(port: int, home: Path) -> Child:
    """A redis-server on a given port (start_redis picks a free one; a restart must reuse it)."""
    log = home / "logs" / f"redis-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen([redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no", "--dir", str(home)], stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    child = Child("Redis", process, log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert child.alive(), child.last_log_lines()
        try:
            if redis.Redis(port=port, socket_timeout=0.5).ping():
                return child
        except redis.RedisError:
            time.sleep(0.05)
    child.stop()
    raise AssertionError(f"redis-server did not start on port {port}")


def _misses(store: RedisStore) -> None:
    """Every call answers a miss, fast, without raising."""
    started = time.monotonic()
    assert store.recall(["a", "b"], "v", [b"h" * 16, b"i" * 16]) == ([False, False], [None, None])
    store.record(["a"], [b"e"], [("v", b"h" * 16, b"p")])
    assert store.published_explanation("a") is None
    store.remember_locations(["a"], np.array([0]), np.array([1]))
    assert store.recall_location("a") is None
    assert time.monotonic() - started < 1.0  # no call waited on the dead server


def test_redis_down_then_back(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="whystream.store")
    child, url = start_redis(tmp_path)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    try:
        store = RedisStore(url, retry_after_s=0.3)
        store.record(["a"], [b"e"])
        assert store.note_version_events("v", 100) == 0
        assert store.available and store.recall(["a"], "v", []) == ([True], [])

        child.stop()
        for _ in range(3):
            _misses(store)
        assert not store.available and store.outages == 1
        assert len(warnings_of(caplog)) == 1 and "unavailable" in warnings_of(caplog)[0]
        assert store.note_version_events("v", 10) == 100  # carries on locally
        time.sleep(0.35)
        _misses(store)  # a retry that fails again is the same outage
        assert store.outages == 1 and len(warnings_of(caplog)) == 1

        child = _start_redis_on(port, tmp_path)  # same port; the new server starts empty
        time.sleep(0.35)  # retry_after_s
        assert store.recall(["a"], "v", []) == ([False], [])  # reachable, but the old server's keys are gone
        assert store.available and store.outages == 1
        store.record(["b"], [b"eb"])  # the Lua scripts are reloaded into the new server
        assert store.recall(["a", "b"], "v", []) == ([False, True], [])
        assert store.published_explanation("b") == b"eb"
        # the new server lost the counter: the local count keeps v from counting as new again
        assert store.note_version_events("v", 1) == 110
        assert any("reachable again" in r.getMessage() for r in caplog.records)

        child.stop()  # a second outage counts again
        _misses(store)
        assert store.outages == 2 and len(warnings_of(caplog)) == 2
    finally:
        child.stop()


def test_redis_down_at_start(caplog):
    caplog.set_level(logging.WARNING, logger="whystream.store")
    started = time.monotonic()
    store = RedisStore(f"redis://127.0.0.1:{_free_port()}/0", retry_after_s=60)
    assert not store.available and store.outages == 1
    _misses(store)
    assert time.monotonic() - started < 2.0
    assert len(warnings_of(caplog)) == 1


def test_frozen_redis_times_out(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="whystream.store")
    child, url = start_redis(tmp_path)
    try:
        store = RedisStore(url, retry_after_s=0.3, socket_timeout_s=0.2)
        store.remember_locations(["p"], np.array([1]), np.array([2]))
        child.process.send_signal(signal.SIGSTOP)  # alive, connected, but never answers
        started = time.monotonic()
        assert store.recall_location("p") is None
        assert time.monotonic() - started < 1.5  # one socket timeout, no client-side retries
        assert not store.available and store.outages == 1
        _misses(store)  # no further waits while the outage lasts
        child.process.send_signal(signal.SIGCONT)
        time.sleep(0.35)
        assert store.recall_location("p") == (1, 2)
        assert store.available and len(warnings_of(caplog)) == 1
    finally:
        child.process.send_signal(signal.SIGCONT)
        child.stop()
