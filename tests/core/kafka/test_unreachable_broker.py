"""Readers against a broker that is not there (issue 24: `whystream dlq` hung a
minute and more and printed ~1,150 librdkafka lines): one line naming the
broker and WHYSTREAM_BROKER within a few seconds, and librdkafka's own log
lines kept off the terminal unless asked for."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from whystream.config import Settings
from whystream.config.kafka_properties import KafkaConfig
from whystream.errors import ConfigError
from whystream.kafka import reader
from whystream.kafka.clients import consumer


@pytest.fixture
def nowhere() -> str:
    """A loopback address where nothing listens (a port just closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def test_whystream_dlq_says_in_one_line_that_the_broker_is_not_there(nowhere, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHYSTREAM_")}
    env.update(WHYSTREAM_HOME=str(tmp_path), WHYSTREAM_BROKER=nowhere)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "whystream", "dlq"], env=env, capture_output=True, text=True,
                            timeout=120)
    took = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-500:]
    assert result.stderr.startswith("whystream: error: WHYSTREAM_BROKER:") and nowhere in result.stderr
    assert result.stderr.count("\n") == 1 and not result.stdout, result.stderr[:500]
    assert took < reader.BROKER_CHECK_S + 25, took  # the check's 5 s, not a minute (the rest: starting Python)


def test_every_reader_checks_the_broker_first(nowhere, tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "BROKER_CHECK_S", 1.0)
    settings = Settings(home=tmp_path, broker=nowhere)
    for read in (lambda: list(reader.scan(settings, "predictions.dlq")),
                 lambda: reader.find_by_key(settings, "predictions", {b"k": 0})):
        with pytest.raises(ConfigError, match=f"WHYSTREAM_BROKER: cannot reach a Kafka broker at {nowhere} within 1s"):
            read()


def test_librdkafka_lines_stay_off_the_terminal_unless_asked_for(nowhere, tmp_path, capfd):
    quiet = consumer(Settings(home=tmp_path, broker=nowhere), **{"reconnect.backoff.ms": 10})
    quiet.poll(1.5)
    quiet.close()
    assert nowhere not in capfd.readouterr().err
    asked = Settings(home=tmp_path, broker=nowhere, kafka_config=KafkaConfig.of({"log_level": "7"}))
    loud = consumer(asked, **{"reconnect.backoff.ms": 10})
    loud.poll(1.5)
    loud.close()
    assert nowhere in capfd.readouterr().err  # asked for: librdkafka prints as it always does
