"""Shared fixtures. `stack` starts the real embedded stack once per test session:
the Tansu broker, a redis-server and a chDB directory (see infra/stack.py).

Every test that starts the stack, or another process of its own (a Redis
Cluster, a worker, a TLS terminator), is marked `integration`, by the fixtures
it uses or by its module: `pytest -m "not integration"` is the unit suite."""

from __future__ import annotations

import itertools
import shutil
import uuid

import pytest
import redis

from support.browser import SCREENSHOTS, browser, screenshots  # noqa: F401 (fixtures: chromium, its screenshots)
from support.chdb import db  # noqa: F401 (a fixture: a fresh database on the stack's chDB)
from support.registries import broken_registry  # noqa: F401 (a fixture)
from whystream.infra.stack import EmbeddedStack
from whystream.kafka.topics import ensure_topics

_redis_dbs = itertools.cycle(range(1, 16))  # db 0 is left to the store's own tests
PROCESS_FIXTURES = {"stack", "redis_cluster"}  # fixtures that start real processes


def pytest_collection_modifyitems(items):
    """Mark `integration` every test that needs the embedded stack (or a Redis Cluster), through
    any fixture it uses; modules that start processes otherwise mark themselves."""
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter):
    if SCREENSHOTS.is_dir() and any(SCREENSHOTS.glob("*.png")):  # the browser tests', for a person to look at
        terminalreporter.write_line(f"console screenshots: {SCREENSHOTS}")


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """Settings of a running embedded stack (real processes, free loopback ports)."""
    home = tmp_path_factory.mktemp("stack")
    with EmbeddedStack(home, write_env_file=False) as settings:
        yield settings


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """Ports of a real 3-master Redis Cluster on loopback (tests/support/redis_cluster.py)."""
    from support.redis_cluster import start_cluster

    children, ports = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield ports
    for child in children:
        child.stop()


@pytest.fixture
def fresh_topics(stack):
    """Settings with a unique topic prefix, so each test sees empty topics."""
    settings = stack.with_(topic_prefix=f"t{uuid.uuid4().hex[:8]}.")
    ensure_topics(settings, partitions=4)
    return settings


@pytest.fixture(scope="session")
def small_model(stack, tmp_path_factory):
    """A small fraud model (40 trees) registered in a registry of its own."""
    from whystream.jobs.simulation.train import train_model
    from whystream.models.registry import ModelRegistry

    root = tmp_path_factory.mktemp("registry")
    return train_model(ModelRegistry(root), n_train=20_000, num_trees=40, num_leaves=15, progress=False)


@pytest.fixture
def engine_settings(fresh_topics, small_model, tmp_path):
    """Fresh topics, a copy of the small model's registry and an empty Redis database of their own.

    A copy, because tests register versions (a redacted one, a challenger): in the shared
    registry those would move LATEST under every later test of the same session."""
    base, _, _ = fresh_topics.redis_url.rpartition("/")
    url = f"{base}/{next(_redis_dbs)}"
    redis.Redis.from_url(url).flushdb()
    registry = tmp_path / "engine-registry"
    shutil.copytree(small_model.path.parent.parent, registry)
    return fresh_topics.with_(registry=registry, redis_url=url)
