"""Redis as deployments run it, with real redis-server processes: a 3-master
Redis Cluster (keys of one batch land on every master and no command spans hash
slots), an ACL user with a password in the URL, and TLS (`rediss://`) through a
real TLS terminator (the bundled redis-server is built without TLS)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import redis

from support import REPO
from support.tls import TlsProxy, make_certs
from whystream.infra.stack import start_redis
from whystream.streams.attribution import feature_hash
from whystream.streams.store import RedisStore

PASSWORD = "acl-Pa55-word"


def exercise(store: RedisStore, n: int = 300) -> None:
    """One worker's batch: locations, dedup marks and cache entries written, then read back."""
    ids = [f"id-{i}" for i in range(n)]
    hashes = feature_hash(np.arange(n, dtype=np.float64).reshape(n, 1))
    store.remember_locations(ids, np.arange(n) % 4, np.arange(n) * 10)
    store.record(ids[::2], [b"e%d" % i for i in range(0, n, 2)], [("v", h, b"c%d" % i) for i, h in enumerate(hashes)])
    published, cached = store.recall(ids, "v", hashes)
    assert store.available, "a command failed (CROSSSLOT, MOVED, NOPERM, ...) and the store degraded"
    assert published == [i % 2 == 0 for i in range(n)]
    assert cached == [b"c%d" % i for i in range(n)]
    assert store.recall_location(ids[-1]) == ((n - 1) % 4, (n - 1) * 10)
    assert store.published_explanation(ids[2]) == b"e2"
    assert store.note_version_events("v", 5) == 0 and store.note_version_events("v", 1) == 5


def test_a_batch_spreads_over_every_master_of_a_cluster(redis_cluster):
    store = RedisStore(f"redis+cluster://127.0.0.1:{redis_cluster[0]}", prefix="spread:")
    exercise(store)
    per_node = [redis.Redis(port=p).dbsize() for p in redis_cluster]
    assert all(n > 0 for n in per_node), per_node  # keys of one batch on all three masters
    # The scripts of a single Redis would span slots: pointed at one node as a plain Redis,
    # the store's batch fails (CROSSSLOT / MOVED) and it degrades, as it must without cluster mode.
    plain = RedisStore(f"redis://127.0.0.1:{redis_cluster[0]}/0", prefix="plain:")
    plain.record([f"x{i}" for i in range(50)], [b"e"] * 50)
    assert not plain.available


# The ACL rules infra/deployment/DEPLOYMENT.md gives: only whystream's keys, only the commands it sends.
SINGLE_ACL = ["~whystream:*", "+get", "+set", "+exists", "+incrby", "+evalsha", "+eval", "+script|load", "+ping"]
CLUSTER_ACL = ["~whystream:*", "+get", "+set", "+exists", "+incrby", "+ping", "+cluster|slots", "+command"]
DOCS = REPO / "infra" / "deployment" / "DEPLOYMENT.md"


def test_cluster_with_an_acl_user(redis_cluster):
    for port in redis_cluster:
        redis.Redis(port=port).execute_command("ACL", "SETUSER", "whystream-c", "on", f">{PASSWORD}", *CLUSTER_ACL)
    exercise(RedisStore(f"redis+cluster://whystream-c:{PASSWORD}@127.0.0.1:{redis_cluster[1]}"))
    assert " ".join(CLUSTER_ACL) in DOCS.read_text()


def test_acl_user_and_password_in_the_url(tmp_path, caplog):
    child, url = start_redis(tmp_path)
    try:
        admin = redis.Redis.from_url(url)
        # Only what whystream needs, only on its own keys; the default user is switched off.
        admin.execute_command("ACL", "SETUSER", "whystream", "on", f">{PASSWORD}", *SINGLE_ACL)
        admin.execute_command("ACL", "SETUSER", "default", "off")
        host = url.split("//", 1)[1]
        exercise(RedisStore(f"redis://whystream:{PASSWORD}@{host}"))
        assert " ".join(SINGLE_ACL) in DOCS.read_text()
        caplog.set_level(logging.WARNING, logger="whystream.store")
        wrong = RedisStore(f"redis://whystream:not-the-password@{host}")
        assert not wrong.available
        assert caplog.records and all(PASSWORD not in r.getMessage() and "not-the-password" not in r.getMessage()
                                      for r in caplog.records)
    finally:
        child.stop()


def test_tls_with_a_ca_in_the_url(tmp_path):
    child, url = start_redis(tmp_path)
    certs = make_certs(tmp_path / "certs")
    proxy = TlsProxy(certs, upstream=int(url.rsplit(":", 1)[1].split("/")[0])).start()
    try:
        exercise(RedisStore(f"rediss://127.0.0.1:{proxy.port}/0?ssl_ca_certs={certs.ca}"))
        assert proxy.handshakes >= 1
        untrusting = RedisStore(f"rediss://127.0.0.1:{proxy.port}/0?ssl_ca_certs={certs.other_ca}")
        assert not untrusting.available  # a certificate it cannot verify: no connection, a miss
        assert proxy.wait_until(lambda: proxy.untrusting >= 1), proxy.failures
    finally:
        proxy.stop()
        child.stop()


def test_cluster_url_with_a_database_is_a_config_error():
    from whystream.errors import ConfigError

    with pytest.raises(ConfigError, match="WHYSTREAM_REDIS_URL"):
        RedisStore("redis+cluster://127.0.0.1:7000/3")


def test_the_engine_dedups_caches_and_finds_events_through_a_cluster(engine_settings, small_model, redis_cluster):
    from test_engine import config, explanations, make_records, on_the_topic

    from whystream.streams.assembly import build_engine

    settings = engine_settings.with_(redis_url=f"redis+cluster://127.0.0.1:{redis_cluster[2]}")
    records = make_records(small_model, 400)
    engine = build_engine(settings, config())
    assert engine.store.cluster
    messages = on_the_topic(settings, records)
    engine.process(messages)
    first = explanations(settings)
    engine.process(messages)  # redelivered: every published id is recognised through the cluster
    assert len(explanations(settings)) == len(first) and engine.metrics.duplicates._value.get() == len(first)
    copies = [{**r, "prediction_id": r["prediction_id"] + "-copy"} for r in records]
    engine.process(on_the_topic(settings, copies))
    copied = [e for e in explanations(settings) if e["prediction_id"].endswith("-copy")]
    assert copied and all(e["source"] == "CACHE" for e in copied)
    published = {e["prediction_id"] for e in explanations(settings)}
    quiet = next(r for r in records if r["prediction_id"] not in published)
    assert engine.on_demand.explain(quiet["prediction_id"])["sampling_reason"] == "ON_DEMAND"
    assert engine.store.available and engine.store.outages == 0
    engine.close()
