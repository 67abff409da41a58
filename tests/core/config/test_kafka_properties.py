"""Kafka client properties (whystream/config/kafka_properties.py): the properties file and
WHYSTREAM_KAFKA_* variables reach every client, a property librdkafka rejects is
one line naming where it came from, and secrets are never shown."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from whystream.config import Settings
from whystream.config.kafka_properties import KafkaConfig, env_name, read_properties
from whystream.errors import ConfigError
from whystream.infra.stack import free_port
from whystream.kafka.clients import check_broker

SECRET = "s3cr3t-Pa55"


def test_file_then_variables_each_remembering_where_it_came_from(tmp_path):
    path = tmp_path / "client.properties"
    path.write_text("# from the managed service\nsecurity.protocol=SASL_SSL\n\n! also a comment\n"
                    "sasl.mechanisms = PLAIN\nsasl.username=alice\nsasl.password=" + SECRET + "\n")
    config = KafkaConfig.from_env({"WHYSTREAM_KAFKA_CONFIG": str(path), "WHYSTREAM_KAFKA_SASL_USERNAME": "bob",
                                   "WHYSTREAM_KAFKA_SSL_CA_LOCATION": "/etc/ssl/ca.pem", "OTHER": "x"})
    assert config.properties == {"security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN",
                                 "sasl.username": "bob", "sasl.password": SECRET,
                                 "ssl.ca.location": "/etc/ssl/ca.pem"}
    assert config.origin("security.protocol") == f"{path}:2"
    assert config.origin("sasl.mechanisms") == f"{path}:5"
    assert config.origin("sasl.username") == "WHYSTREAM_KAFKA_SASL_USERNAME"  # the variable overrides the file
    assert env_name("ssl.ca.location") == "WHYSTREAM_KAFKA_SSL_CA_LOCATION"


def test_every_client_gets_the_properties_and_keeps_its_own_settings():
    settings = Settings(broker="127.0.0.1:1", kafka_config=KafkaConfig.of({"security.protocol": "SSL",
                                                                            "linger.ms": "100"}))
    conf = settings.kafka(**{"group.id": "g", "linger.ms": 5})
    assert conf == {"security.protocol": "SSL", "linger.ms": 5, "bootstrap.servers": "127.0.0.1:1", "group.id": "g"}
    assert Settings(broker="127.0.0.1:1").kafka() == {"bootstrap.servers": "127.0.0.1:1"}  # no settings: as before


def test_settings_load_reads_the_environment_and_the_files_bootstrap_servers(tmp_path, monkeypatch):
    for var in [v for v in os.environ if v.startswith("WHYSTREAM_")]:
        monkeypatch.delenv(var)
    path = tmp_path / "client.properties"
    path.write_text("bootstrap.servers=127.0.0.1:9093\nsecurity.protocol=SSL\n")
    monkeypatch.setenv("WHYSTREAM_KAFKA_CONFIG", str(path))
    monkeypatch.setenv("WHYSTREAM_KAFKA_SSL_CA_LOCATION", "/ca.pem")
    settings = Settings.load(home=tmp_path)
    assert settings.broker == "127.0.0.1:9093"
    assert settings.kafka_config.properties["ssl.ca.location"] == "/ca.pem"
    monkeypatch.setenv("WHYSTREAM_BROKER", "127.0.0.1:9094")
    assert Settings.load(home=tmp_path).broker == "127.0.0.1:9094"  # WHYSTREAM_BROKER wins over the file


@pytest.mark.parametrize("env, named", [
    ({"WHYSTREAM_KAFKA_NO_SUCH_PROPERTY": "1"}, "WHYSTREAM_KAFKA_NO_SUCH_PROPERTY"),
    ({"WHYSTREAM_KAFKA_SECURITY_PROTOCOL": "TLS_PLEASE"}, "WHYSTREAM_KAFKA_SECURITY_PROTOCOL"),
])
def test_a_rejected_variable_is_named(env, named):
    with pytest.raises(ConfigError) as error:
        KafkaConfig.from_env(env).validate()
    assert error.value.setting == named
    assert "\n" not in str(error.value)


def test_a_rejected_file_line_is_named_and_secrets_stay_out_of_the_message(tmp_path):
    path = tmp_path / "client.properties"
    path.write_text(f"security.protocol=SSL\nsasl.password={SECRET}\n# comment\n"
                    f"ssl.ca.location={tmp_path / 'missing.pem'}\n")
    config = KafkaConfig.from_env({"WHYSTREAM_KAFKA_CONFIG": str(path)})
    with pytest.raises(ConfigError) as error:
        config.validate()
    assert error.value.setting == f"{path}:4" and "ssl.ca.location" in str(error.value)
    assert SECRET not in str(error.value) and SECRET not in repr(config)
    assert config.masked() == {"security.protocol": "SSL", "sasl.password": "***",
                               "ssl.ca.location": str(tmp_path / "missing.pem")}


def test_malformed_file_lines_and_a_missing_file_are_config_errors(tmp_path):
    path = tmp_path / "client.properties"
    path.write_text("security.protocol=SSL\nthis line has no equals sign\n")
    with pytest.raises(ConfigError) as error:
        read_properties(path)
    assert error.value.setting == f"{path}:2"
    with pytest.raises(ConfigError) as error:
        KafkaConfig.from_env({"WHYSTREAM_KAFKA_CONFIG": str(tmp_path / "nope.properties")})
    assert error.value.setting == "WHYSTREAM_KAFKA_CONFIG"


def test_unreachable_broker_is_one_config_error_naming_the_broker():
    with pytest.raises(ConfigError) as error:
        check_broker(KafkaConfig(), f"127.0.0.1:{free_port()}", timeout=2)
    assert error.value.setting == "WHYSTREAM_BROKER"


def test_cli_ends_in_one_line_naming_the_variable_and_never_shows_the_secret(tmp_path, small_model):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHYSTREAM_")}
    env.update({"WHYSTREAM_BROKER": f"127.0.0.1:{free_port()}", "WHYSTREAM_REGISTRY": str(small_model.path.parent.parent),
                "WHYSTREAM_KAFKA_SASL_PASSWORD": SECRET, "WHYSTREAM_KAFKA_SASL_MECHANISMS": "NOT-A-MECHANISM",
                "WHYSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    result = subprocess.run([sys.executable, "-m", "whystream", "--home", str(tmp_path), "produce", "--count", "1"],
                            env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "WHYSTREAM_KAFKA_SASL_MECHANISMS" in lines[0], lines[0]
    assert SECRET not in result.stderr + result.stdout
