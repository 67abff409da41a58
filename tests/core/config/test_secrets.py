"""Secrets stay out of argv, files others can read, printed settings and logs;
producer-supplied text is escaped before it reaches a log line."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from whystream.cli import app
from whystream.config import Settings
from whystream.config.secrets import mask_secrets, write_private
from whystream.errors import ConfigError
from whystream.kafka.dead_letters import DeadLetterRecord
from whystream.config.kafka_properties import KafkaConfig
from whystream.kafka.messages import RawMessage
from whystream.logsafe import mask_secrets_in_logs, printable
from whystream.wire.schema_registry import registry_config


@pytest.mark.parametrize("flag, url, variable", [
    ("--redis-url", "redis://:hunter2@127.0.0.1:6379/0", "WHYSTREAM_REDIS_URL"),
    ("--redis-url", "rediss://alice:hunter2@cache:6380/0", "WHYSTREAM_REDIS_URL"),
    ("--clickhouse-dsn", "http://analyst:hunter2@127.0.0.1:8123", "WHYSTREAM_CLICKHOUSE_DSN"),
    ("--broker", "kafka://user:hunter2@127.0.0.1:9092", "WHYSTREAM_BROKER"),
    # issue 24: the query string and the fragment carry secrets too
    ("--clickhouse-dsn", "http://127.0.0.1:8123/?user=a&password=hunter2", "WHYSTREAM_CLICKHOUSE_DSN"),
    ("--clickhouse-dsn", "https://ch:8443/?user=a&access_token=hunter2", "WHYSTREAM_CLICKHOUSE_DSN"),
    ("--clickhouse-dsn", "http://127.0.0.1:8123/#hunter2", "WHYSTREAM_CLICKHOUSE_DSN"),
    ("--redis-url", "redis://h:1/0?password=hunter2", "WHYSTREAM_REDIS_URL"),
    ("--redis-url", "redis://u:hunter2@x@h:1/0", "WHYSTREAM_REDIS_URL"),
])
def test_a_password_on_the_command_line_is_refused(tmp_path, flag, url, variable):
    result = CliRunner().invoke(app, ["--home", str(tmp_path), flag, url, "sql", "SELECT 1"])
    assert isinstance(result.exception, ConfigError) and result.exception.setting == variable
    assert "hunter2" not in str(result.exception) and "environment" in str(result.exception)


def test_urls_without_a_password_are_still_taken_from_flags(tmp_path):
    settings = Settings.load(home=tmp_path, redis_url="redis://127.0.0.1:6379/0", clickhouse_dsn="chdb:///x")
    assert settings.redis_url == "redis://127.0.0.1:6379/0"


def test_secrets_can_come_from_mounted_files(tmp_path, monkeypatch):
    secret = tmp_path / "redis-url"
    secret.write_text("redis://:from-file@127.0.0.1:6379/3\n")
    monkeypatch.delenv("WHYSTREAM_REDIS_URL", raising=False)
    monkeypatch.setenv("WHYSTREAM_REDIS_URL_FILE", str(secret))
    assert Settings.load(home=tmp_path).redis_url == "redis://:from-file@127.0.0.1:6379/3"
    monkeypatch.setenv("WHYSTREAM_REDIS_URL", "redis://127.0.0.1:6379/4")  # the variable itself wins
    assert Settings.load(home=tmp_path).redis_url == "redis://127.0.0.1:6379/4"
    monkeypatch.delenv("WHYSTREAM_REDIS_URL")
    monkeypatch.setenv("WHYSTREAM_REDIS_URL_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="WHYSTREAM_REDIS_URL_FILE: cannot read"):
        Settings.load(home=tmp_path)


def test_passwords_from_the_environment_are_masked_wherever_settings_are_shown(tmp_path, monkeypatch):
    monkeypatch.setenv("WHYSTREAM_REDIS_URL", "rediss://worker:s3cr3t@cache.internal:6380/2")
    monkeypatch.setenv("WHYSTREAM_CLICKHOUSE_DSN", "https://analyst:p%40ss@ch.internal:8443")
    shown = Settings.load(home=tmp_path).shown()
    assert shown["WHYSTREAM_REDIS_URL"] == "rediss://worker:***@cache.internal:6380/2"
    assert shown["WHYSTREAM_CLICKHOUSE_DSN"] == "https://analyst:***@ch.internal:8443"
    assert "s3cr3t" not in mask_secrets("cannot reach redis://:s3cr3t@h:1 or http://u:s3cr3t@h:2/x")


@pytest.mark.parametrize("url", [
    "http://h:8123/?user=a&password=S3cret", "http://h:8123/?password=S3cret&user=a", "redis://h:1/0?password=S3cret",
    "https://h/x?X-Amz-Signature=S3cret", "https://h/x#access_token=S3cret", "https://h/x#S3cret",
    "redis://:S3cret@h:1", "redis://u:S3c@ret@h:1/0", "http://h/?PWD=S3cret", "http://h/?api_key=S3cret;x=1",
])
def test_every_url_form_of_a_secret_is_masked(url):
    text = f"cannot connect to {url}: refused; HTTPConnectionPool url: /?user=a&password=S3cret"
    assert "S3cret" not in mask_secrets(text) and "cannot connect to" in mask_secrets(text)
    assert "ret" not in mask_secrets(url).replace("***", "")


def test_urls_without_secrets_are_shown_as_they_are():
    for url in ["http://h:8123/?user=a&database=x", "chdb:///var/whystream/chdb", "127.0.0.1:9092,h2:9093",
                "rediss://cache:6380/2", "http://analyst@h:8123"]:
        assert mask_secrets(url) == url


def test_an_error_line_masks_a_query_string_password(tmp_path):
    """The reported leak: a DSN with `?password=` in WHYSTREAM_CLICKHOUSE_DSN was printed in the error line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHYSTREAM_")}
    env.update(WHYSTREAM_HOME=str(tmp_path), WHYSTREAM_CLICKHOUSE_DSN="http://127.0.0.1:9/?user=a&password=S3cret")
    result = subprocess.run([sys.executable, "-m", "whystream", "sql", "SELECT 1"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("whystream: error: WHYSTREAM_CLICKHOUSE_DSN")
    assert "S3cret" not in result.stderr + result.stdout and result.stderr.count("\n") == 1


def test_log_records_have_their_secrets_masked(caplog):
    mask_secrets_in_logs()
    with caplog.at_level(logging.WARNING):
        logging.getLogger("some.client").warning("retrying %s", "redis://h:1/0?password=S3cret")
    assert "S3cret" not in caplog.text and "password=***" in caplog.text


def test_client_properties_from_mounted_files(tmp_path):
    """WHYSTREAM_KAFKA_<NAME>_FILE and WHYSTREAM_SCHEMA_REGISTRY_<NAME>_FILE are read, not passed on as `*.file`."""
    secret = tmp_path / "secret"
    secret.write_text("hunter2\n")
    kafka = KafkaConfig.from_env({"WHYSTREAM_KAFKA_SASL_PASSWORD_FILE": str(secret),
                                  "WHYSTREAM_KAFKA_SASL_USERNAME": "u"})
    assert kafka.properties == {"sasl.password": "hunter2", "sasl.username": "u"}
    assert KafkaConfig.from_env({"WHYSTREAM_KAFKA_SASL_PASSWORD_FILE": str(secret),
                                 "WHYSTREAM_KAFKA_SASL_PASSWORD": "wins"}).properties == {"sasl.password": "wins"}
    conf, origins = registry_config("http://r:8081", {"WHYSTREAM_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO_FILE": str(secret)})
    assert conf == {"url": "http://r:8081", "basic.auth.user.info": "hunter2"}
    with pytest.raises(ConfigError, match="WHYSTREAM_KAFKA_SASL_PASSWORD_FILE: cannot read"):
        KafkaConfig.from_env({"WHYSTREAM_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "missing")})


def test_files_with_settings_are_the_owners_alone(tmp_path):
    path = tmp_path / "deep" / "stack.env"
    write_private(path, "WHYSTREAM_REDIS_URL=redis://:pw@h:1\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    write_private(path, "again\n")  # replacing keeps the mode and leaves no temporary file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "again\n"
    assert [p.name for p in path.parent.iterdir()] == ["stack.env"]


def test_producer_text_is_escaped_and_bounded():
    forged = "amount\n2026-12-01 00:00:00 CRITICAL whystream: forged line\x1b[2J\u202e"
    shown = printable(forged)
    assert "\n" not in shown and "\x1b" not in shown and "\u202e" not in shown
    assert "forged line" in shown and "\\n" in shown and "\\x1b" in shown
    long = printable("x" * 1_000_000)
    assert len(long) < 300 and "1,000,000 characters" in long


def test_dead_letter_reasons_quoting_the_producer_are_made_safe(caplog):
    message = RawMessage(b"raw", None, "predictions", 0, 7)
    letter = DeadLetterRecord("UNKNOWN_FEATURE", "feature(s) evil\r\nWARNING fake, " + "y" * 5000 + " ...", message)
    assert "\r" not in letter.reason and "\n" not in letter.reason and len(letter.reason) < 1100
    with caplog.at_level(logging.WARNING):
        logging.getLogger("whystream.test").warning("dead letter: %s", letter.reason)
    assert len(caplog.records[-1].getMessage().splitlines()) == 1
