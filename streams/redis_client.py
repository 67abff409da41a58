"""Redis as an optimisation, never a dependency: a client whose every failure is a miss.

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

Redis is an optimisation, never a dependency: when it is unreachable, slow
(socket_timeout_s) or answers with an error, every call returns the "miss"
answer (None / False / nothing stored) instead of raising, `available` turns
False, one warning is logged per outage (logger `whystream.store`) and the next
attempt is made no sooner than retry_after_s later. `redis_url=None` means no
Redis at all: always unavailable, silently.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, TypeVar
from urllib.parse import urlparse

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from whystream.errors import ConfigError

log = logging.getLogger("whystream.store")
T = TypeVar("T")


class ResilientRedis:
    """A Redis or Redis Cluster client (`redis_url`; None: no Redis at all) whose operations,
    run through `_call`, return a miss instead of raising while Redis is unreachable."""

    def __init__(self, redis_url: str | None, retry_after_s: float = 5.0, socket_timeout_s: float = 0.5):
        self.url = redis_url
        self.retry_after_s = retry_after_s
        self.available = False
        self.outages = 0
        self._lock = threading.Lock()
        self._next_try = 0.0
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
