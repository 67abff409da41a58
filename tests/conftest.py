"""Shared fixtures. `stack` starts the real embedded stack once per test session:
the Tansu broker, a redis-server and a chDB directory (see infra/stack.py)."""

from __future__ import annotations

import uuid

import pytest

from whystream.infra.stack import EmbeddedStack, ensure_topics


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """Settings of a running embedded stack (real processes, free loopback ports)."""
    home = tmp_path_factory.mktemp("stack")
    with EmbeddedStack(home, write_env_file=False) as settings:
        yield settings


@pytest.fixture
def fresh_topics(stack):
    """Settings with a unique topic prefix, so each test sees empty topics."""
    settings = stack.with_(topic_prefix=f"t{uuid.uuid4().hex[:8]}.")
    ensure_topics(settings, partitions=4)
    return settings
