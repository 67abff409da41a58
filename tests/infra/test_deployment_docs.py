"""infra/deployment/ files match the code: every setting is in the tables, the
example properties file is one librdkafka accepts, the example env file names
only real settings, and the systemd units run real commands."""

from __future__ import annotations

import re

from support import REPO
from whystream.config import ENV
from whystream.config.kafka_properties import KafkaConfig

ROOT = REPO
INFRA = ROOT / "infra" / "deployment"
PATTERNS = ("WHYSTREAM_KAFKA_", "WHYSTREAM_SCHEMA_REGISTRY_")  # WHYSTREAM_KAFKA_<NAME>, ..._<NAME>


def table_variables(text: str) -> set[str]:
    return set(re.findall(r"^\| `(WHYSTREAM_[A-Z_<>]+)`", text, re.M))


def test_every_setting_is_in_the_deployment_and_operations_tables():
    wanted = set(ENV.values()) | {"WHYSTREAM_KAFKA_CONFIG", "WHYSTREAM_KAFKA_<NAME>", "WHYSTREAM_SCHEMA_REGISTRY_<NAME>"}
    assert wanted <= table_variables((INFRA / "DEPLOYMENT.md").read_text())
    assert wanted <= table_variables((ROOT / "docs" / "operations.md").read_text())


def test_the_example_env_file_names_only_real_settings():
    names = re.findall(r"^#?\s*(WHYSTREAM_[A-Z_]+)=", (INFRA / "whystream.env.example").read_text(), re.M)
    assert names
    for name in names:
        assert name in ENV.values() or name == "WHYSTREAM_KAFKA_CONFIG" or name.startswith(PATTERNS), name


def test_the_example_properties_file_is_accepted_by_librdkafka(tmp_path):
    config = KafkaConfig.from_env({"WHYSTREAM_KAFKA_CONFIG": str(INFRA / "kafka.properties.example")})
    assert config.properties["security.protocol"] == "SASL_SSL"
    config.validate()  # raises ConfigError naming the line librdkafka rejects
    assert "<API secret>" not in repr(config)


def test_the_units_run_whystream_commands():
    import typer

    from whystream.cli import app

    commands = set(typer.main.get_command(app).commands)
    for unit in (INFRA / "systemd").glob("*.service"):
        start = re.search(r"^ExecStart=\S+/whystream (\w+)", unit.read_text(), re.M)
        assert start and start.group(1) in commands, unit.name
