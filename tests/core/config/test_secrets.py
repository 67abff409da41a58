"""Secrets stay out of argv, files others can read, printed settings and logs;
producer-supplied text is escaped before it reaches a log line."""

from __future__ import annotations

import logging
import stat

import pytest
from typer.testing import CliRunner

from whystream.cli import app
from whystream.config import Settings
from whystream.config.secrets import mask_secrets, write_private
from whystream.errors import ConfigError
from whystream.kafka.dead_letters import DeadLetterRecord
from whystream.kafka.messages import RawMessage
from whystream.logsafe import printable


@pytest.mark.parametrize("flag, url, variable", [
    ("--redis-url", "redis://:hunter2@127.0.0.1:6379/0", "WHYSTREAM_REDIS_URL"),
    ("--redis-url", "rediss://alice:hunter2@cache:6380/0", "WHYSTREAM_REDIS_URL"),
    ("--clickhouse-dsn", "http://analyst:hunter2@127.0.0.1:8123", "WHYSTREAM_CLICKHOUSE_DSN"),
    ("--broker", "kafka://user:hunter2@127.0.0.1:9092", "WHYSTREAM_BROKER"),
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
