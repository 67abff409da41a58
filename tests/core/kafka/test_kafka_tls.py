"""Kafka over TLS, end to end: `whystream produce`, a worker, `whystream explain`,
the sink and the example consumer against the embedded broker behind a real TLS
terminator (tests/support/tls.py; Tansu 0.6.0 serves no TLS itself), with a CA and
certificates made here. The broker advertises only the TLS port, so every client
that reaches it speaks TLS; a wrong CA ends a command in one line, at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import REPO
from support.tls import TlsProxy, make_certs
from support.worker import dedup, priority_ids, wait_quiet
from whystream.config import Settings
from whystream.config.kafka_properties import KafkaConfig
from whystream.infra.stack import free_port, start_broker
from whystream.jobs.clickhouse.sql import rows
from whystream.jobs.simulation.generator import TransactionGenerator
from whystream.jobs.simulation.produce import prediction_events
from whystream.jobs.sink.consumer import run_sink
from whystream.kafka.reader import read_all
from whystream.kafka.topics import ensure_topics

pytestmark = pytest.mark.integration
EXAMPLE = REPO / "examples" / "consume_explanations.py"


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """(address of the TLS port, certs, proxy): a Tansu of its own advertising the TLS terminator's port."""
    home = tmp_path_factory.mktemp("tls")
    certs = make_certs(home / "certs")
    port = free_port()
    broker, plain = start_broker(home, advertised=f"127.0.0.1:{port}", log_name="tansu-tls.log")
    proxy = TlsProxy(certs, upstream=int(plain.rsplit(":", 1)[1]), port=port).start()
    yield f"127.0.0.1:{port}", certs, proxy
    proxy.stop()
    broker.stop()


def client_env(settings: Settings, broker: str, properties: Path, ca: Path) -> dict:
    """What an operator sets: the properties file, one variable over it, the usual WHYSTREAM_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHYSTREAM_")}
    env.update(settings.as_env())
    env.update({"WHYSTREAM_BROKER": broker, "WHYSTREAM_KAFKA_CONFIG": str(properties),
                "WHYSTREAM_KAFKA_SSL_CA_LOCATION": str(ca), "PYTHONUNBUFFERED": "1"})
    return env


def whystream(env, *args, timeout=180):
    return subprocess.run([sys.executable, "-m", "whystream", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_produce_worker_explain_sink_and_example_over_tls(tls, engine_settings, small_model, db, tmp_path):  # noqa: F811
    address, certs, proxy = tls
    client, database = db
    properties = tmp_path / "client.properties"
    properties.write_text("# as a managed service hands it out\nsecurity.protocol=SSL\n")
    env = client_env(engine_settings, address, properties, certs.ca)
    settings = engine_settings.with_(broker=address, kafka_config=KafkaConfig.from_env(env))
    assert settings.kafka_config.properties == {"security.protocol": "SSL", "ssl.ca.location": str(certs.ca)}
    ensure_topics(settings)
    before, plaintext, untrusting = proxy.handshakes, proxy.plaintext, proxy.untrusting

    sent = whystream(env, "produce", "--count", "400", "--rate", "0", "--seed", "3", "--run-id", "tls")
    assert sent.returncode == 0, sent.stderr
    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen([sys.executable, "-m", "whystream", "worker", "--web-port", str(free_port()),
                               "--new-version-events", "0", "--window", "2", "--idle-close", "3"],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not read_all(settings, settings.topic("explanations"), "ExplanationEvent", timeout=3):
            assert worker.poll() is None and time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            time.sleep(0.5)
        published = dedup(wait_quiet(settings, quiet_s=5))
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()
        records = [r for chunk in prediction_events(small_model, TransactionGenerator(3), 0, 400, "tls", 3)
                   for r in chunk]
        due = priority_ids(records)
        assert due and due <= set(published)
        quiet = next(r["prediction_id"] for r in records if r["prediction_id"] not in published)
        explained = whystream(env, "explain", quiet, "--format", "json")
        assert explained.returncode == 0, explained.stderr
        assert f'"prediction_id": "{quiet}"' in explained.stdout
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)

    stats = run_sink(settings, database=database, idle_exit_seconds=4)
    assert stats.written == len(published)
    stored = rows(client, f"SELECT count() AS n FROM {database}.explanations FINAL")[0]["n"]
    assert stored == len(published)

    example = subprocess.run([sys.executable, str(EXAMPLE), "--topic", settings.topic("explanations"), "--max", "3"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert example.returncode == 0, example.stderr
    assert len(example.stdout.splitlines()) == 3

    # Every client went through the TLS port, and nothing (no Faust/aiokafka client either)
    # tried it in plaintext or refused its certificate.
    assert proxy.handshakes > before
    assert (proxy.plaintext, proxy.untrusting) == (plaintext, untrusting), proxy.failures


@pytest.mark.parametrize("command", [["produce", "--count", "1"], ["worker", "--web-port", "0"], ["sink"],
                                     ["explain", "some-id"]])
def test_a_wrong_ca_ends_each_command_in_one_line_naming_the_setting(tls, engine_settings, small_model, tmp_path,
                                                                     command):
    address, certs, proxy = tls
    properties = tmp_path / "client.properties"
    properties.write_text("security.protocol=SSL\n")
    env = client_env(engine_settings, address, properties, certs.other_ca)
    env["WHYSTREAM_CLICKHOUSE_DSN"] = f"chdb://{tmp_path / 'chdb'}"  # the session's directory is held by this process
    env["WHYSTREAM_HOME"] = str(tmp_path)
    untrusting = proxy.untrusting
    line = one_error_line(whystream(env, *command, timeout=60))
    assert "WHYSTREAM_KAFKA_SSL_CA_LOCATION" in line and "certificate verify failed" in line, line
    assert proxy.wait_until(lambda: proxy.untrusting > untrusting)  # the terminator saw the refusal


def test_a_refused_sasl_login_ends_in_one_line_without_the_password(tls, engine_settings, small_model, tmp_path):
    """Tansu 0.6.0 answers every SASL handshake with "unsupported mechanism" (it cannot
    authenticate anyone here): the login path still has to end in one line, naming the SASL
    settings, never showing the password."""
    address, certs, _ = tls
    properties = tmp_path / "client.properties"
    properties.write_text("security.protocol=SASL_SSL\nsasl.mechanisms=SCRAM-SHA-512\nsasl.username=whystream\n")
    env = client_env(engine_settings, address, properties, certs.ca)
    env["WHYSTREAM_KAFKA_SASL_PASSWORD"] = "sasl-Pa55-word"
    result = whystream(env, "produce", "--count", "1", timeout=60)
    line = one_error_line(result)
    assert "refused the login" in line and f"{properties}:2" in line and "WHYSTREAM_KAFKA_SASL_PASSWORD" in line, line
    assert "sasl-Pa55-word" not in result.stderr + result.stdout


def test_the_drift_monitor_publishes_alerts_over_tls(tls, fresh_topics, db, tmp_path):  # noqa: F811
    from support.drift import consume_alerts, load_stream, run_ticks
    from whystream.jobs.analytics.drift import DriftMonitor

    address, certs, proxy = tls
    client, database = db
    settings = fresh_topics.with_(broker=address, kafka_config=KafkaConfig.of(
        {"security.protocol": "SSL", "ssl.ca.location": str(certs.ca)}))
    ensure_topics(settings)
    plaintext, untrusting = proxy.plaintext, proxy.untrusting
    model, t0 = load_stream(client, database, [(6, False), (6, True)])
    alerts = run_ticks(DriftMonitor(settings, window_seconds=300, database=database, client=client), t0, range(5, 12))
    assert alerts
    assert sorted(a["alert_id"] for a in consume_alerts(settings, len(alerts))) == \
        sorted(a["alert_id"] for _, a in alerts)
    assert (proxy.plaintext, proxy.untrusting) == (plaintext, untrusting), proxy.failures


def test_the_terminator_would_see_a_plaintext_client(tls):
    """What the end-to-end test relies on to prove that no client (Faust's included) spoke
    plaintext to the TLS port: such a client is counted."""
    from confluent_kafka.admin import AdminClient

    address, _, proxy = tls
    plaintext = proxy.plaintext
    admin = AdminClient({"bootstrap.servers": address, "log_level": 0})
    with pytest.raises(Exception):
        admin.list_topics(timeout=2)
    assert proxy.wait_until(lambda: proxy.plaintext > plaintext)
