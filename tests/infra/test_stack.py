"""The embedded stack is made of real processes, and bad configuration ends in
one readable line that names the setting."""

from __future__ import annotations

import os
import subprocess
import sys

import clickhouse_connect
import redis
from confluent_kafka.admin import AdminClient

from whystream.config import TOPICS, Settings
from whystream.infra.stack import free_port
from whystream.kafka.topics import TOPIC_LAYOUT


def test_stack_parts_are_real_and_reachable(stack):
    topics = AdminClient(stack.kafka()).list_topics(timeout=10).topics
    assert {stack.topic(t) for t in TOPICS} <= set(topics)
    assert all(len(topics[stack.topic(t)].partitions) == TOPIC_LAYOUT.get(t, (4,))[0] for t in TOPICS)
    assert redis.Redis.from_url(stack.redis_url).ping()
    assert stack.clickhouse_dsn.startswith("chdb://")
    client = clickhouse_connect.get_client(dsn=stack.clickhouse_dsn)
    assert client.query("SELECT 1 + 1").result_rows == [(2,)]


def test_settings_precedence(tmp_path, monkeypatch):
    (tmp_path / "stack.env").write_text(f"WHYSTREAM_BROKER=from-file:1\nWHYSTREAM_STACK_PID={os.getpid()}\n")
    monkeypatch.setenv("WHYSTREAM_HOME", str(tmp_path))
    monkeypatch.delenv("WHYSTREAM_BROKER", raising=False)
    assert Settings.load().broker == "from-file:1"
    monkeypatch.setenv("WHYSTREAM_BROKER", "from-env:2")
    assert Settings.load().broker == "from-env:2"
    assert Settings.load(broker="from-flag:3").broker == "from-flag:3"
    (tmp_path / "stack.env").write_text("WHYSTREAM_BROKER=stale:1\nWHYSTREAM_STACK_PID=999999999\n")
    monkeypatch.delenv("WHYSTREAM_BROKER")
    assert Settings.load().broker is None  # a dead `whystream up` left it behind


def run_cli(*args, env=None, home):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WHYSTREAM_")}
    return subprocess.run([sys.executable, "-m", "whystream", "--home", str(home), *args],
                          env={**clean, **(env or {})}, capture_output=True, text=True, timeout=120)


def one_error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_unreachable_broker_is_one_line_naming_the_setting(tmp_path, small_model):
    registry = small_model.path.parent.parent
    line = one_error_line(run_cli("--broker", f"127.0.0.1:{free_port()}", "--registry", str(registry),
                                  "produce", "--count", "1", home=tmp_path))
    assert "WHYSTREAM_BROKER" in line


def test_no_stack_and_no_broker_says_how_to_get_one(tmp_path, small_model):
    line = one_error_line(run_cli("--registry", str(small_model.path.parent.parent), "produce", "--count", "1",
                                  home=tmp_path))
    assert "WHYSTREAM_BROKER" in line and "whystream up" in line


def test_missing_model_is_one_line_saying_what_to_do(tmp_path, stack):
    line = one_error_line(run_cli("--broker", stack.broker, "produce", "--count", "1", home=tmp_path))
    assert "whystream train" in line


def test_unknown_model_version_names_the_known_ones(tmp_path, stack, small_model):
    line = one_error_line(run_cli("--broker", stack.broker, "--registry", str(small_model.path.parent.parent),
                                  "produce", "--version", "nope", "--count", "1", home=tmp_path))
    assert "nope" in line and small_model.version in line


def test_whystream_up_prints_settings_and_stops_cleanly_on_ctrl_c(tmp_path):
    import signal

    import psutil

    clean = {k: v for k, v in os.environ.items() if not k.startswith("WHYSTREAM_")}
    up = subprocess.Popen([sys.executable, "-m", "whystream", "--home", str(tmp_path), "up"], env=clean,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = {}
    while "WHYSTREAM_CLICKHOUSE_DSN" not in lines:
        line = up.stdout.readline()
        assert line, "whystream up ended early"
        if "=" in line:
            key, value = line.strip().split("=", 1)
            lines[key] = value
    children = psutil.Process(up.pid).children(recursive=True)
    assert len(children) == 2 and all(c.is_running() for c in children)
    assert Settings.load(home=tmp_path).broker == lines["WHYSTREAM_BROKER"]  # other commands find it
    assert (tmp_path / "stack.env").stat().st_mode & 0o777 == 0o600  # connection settings: the owner's only
    assert redis.Redis.from_url(lines["WHYSTREAM_REDIS_URL"]).ping()

    up.send_signal(signal.SIGINT)
    assert up.wait(30) == 0
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive
    assert not (tmp_path / "stack.env").exists()
