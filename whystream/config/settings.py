"""Settings: where the broker, Redis, ClickHouse and the model registry are.

Precedence: CLI flags > WHYSTREAM_* environment variables > files named by
WHYSTREAM_*_FILE (mounted secrets) > the connection file written by a running
`whystream up` (var/stack.env) > defaults. Secrets (URLs with passwords) only
ever come from the environment or those files: a flag with a password is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from whystream.config.kafka_properties import KafkaConfig
from whystream.config.secrets import from_file, has_secret, mask_secrets
from whystream.errors import ConfigError

# whystream's topics (each with the configured prefix in front) and the schema of their values
TOPICS = {
    "predictions": "PredictionEvent",
    "explanations": "ExplanationEvent",
    "predictions.dlq": "DeadLetter",
    "drift-alerts": "DriftAlert",
    "models": "ModelRegistered",
    "explain-requests": "ExplainRequest",
    "explain-errors": "ExplainError",
    "explanations.dlq": "DeadLetter",
    "sampling-checkpoints": "SamplingCheckpoint",
}
PREFIX = "WHYSTREAM_"

ENV = {
    "broker": "WHYSTREAM_BROKER",
    "redis_url": "WHYSTREAM_REDIS_URL",
    "clickhouse_dsn": "WHYSTREAM_CLICKHOUSE_DSN",
    "clickhouse_cluster": "WHYSTREAM_CLICKHOUSE_CLUSTER",
    "topic_prefix": "WHYSTREAM_TOPIC_PREFIX",
    "registry": "WHYSTREAM_REGISTRY",
    "schema_registry_url": "WHYSTREAM_SCHEMA_REGISTRY_URL",
    "home": "WHYSTREAM_HOME",
}


def environment() -> Mapping[str, str]:
    """Every WHYSTREAM_* variable of the process, as it is now (read-only): the one place
    whystream reads its environment."""
    return MappingProxyType({k: v for k, v in os.environ.items() if k.startswith(PREFIX)})


def stack_env_file(home: Path) -> Path:
    """Where a running embedded stack writes its WHYSTREAM_* lines."""
    return home / "stack.env"


def find_home(start: Path) -> tuple[Path, tuple[Path, ...]]:
    """(the home, the stack.env files looked for) when neither --home nor WHYSTREAM_HOME names
    one: `var` of the nearest directory at or above `start` whose `var` holds a running
    stack's stack.env or a model registry, so that every command finds the project's stack
    and registry from any of its subdirectories (as git finds `.git`); else `start`/var."""
    looked = []
    for directory in (start, *start.parents):
        home = directory / "var"
        looked.append(stack_env_file(home))
        if stack_env_file(home).is_file() or (home / "registry").is_dir():
            return home, tuple(looked)
    return start / "var", tuple(looked)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a running stack's stack.env; empty if there is none or
    the `whystream up` that wrote it is gone (killed without cleaning up)."""
    if not path.is_file():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    values = {k.strip(): v.strip() for k, v in pairs}
    pid = values.get("WHYSTREAM_STACK_PID", "")
    if pid.isdigit() and not Path(f"/proc/{pid}").exists():
        return {}
    return values


@dataclass(frozen=True)
class Settings:
    home: Path = Path("var")
    broker: str | None = None
    redis_url: str | None = None
    clickhouse_dsn: str | None = None
    clickhouse_cluster: str | None = None  # a ClickHouse cluster's name: cluster-aware migrations
    topic_prefix: str = ""
    registry: Path | None = None
    schema_registry_url: str | None = None
    # librdkafka properties from WHYSTREAM_KAFKA_CONFIG and WHYSTREAM_KAFKA_* (TLS, SASL, ...)
    kafka_config: KafkaConfig = field(default_factory=KafkaConfig, compare=False)
    # Every WHYSTREAM_* variable as it was at load: the one place the environment is read. The
    # sections that are parsed where they are used come from here: the Schema Registry client's
    # properties (wire/schema_registry.py), the SQL limits (jobs/clickhouse/guard.py), retention
    # (jobs/clickhouse/retention.py) and the web servers' token (streams/web_access.py).
    # A Settings made without `load` has none: its sections take their defaults.
    environ: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), compare=False, repr=False)
    # The stack.env files `load` looked for (the error says where when none was found).
    looked_in: tuple[Path, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def load(cls, **overrides) -> "Settings":
        """Settings from flags (overrides that are not None), env, the stack file, defaults."""
        for name, value in overrides.items():
            if name in ENV and isinstance(value, str) and has_secret(value):
                raise ConfigError(ENV[name], "a password, token or secret parameter on the command line is visible "
                                             "to every user of this "
                                             f"machine (ps, /proc, shell history); set {ENV[name]} in the "
                                             "environment instead")
        environ = environment()
        given = overrides.get("home") or environ.get(ENV["home"])
        home, looked = (Path(given), (stack_env_file(Path(given)),)) if given else find_home(Path.cwd())
        stack = read_env_file(stack_env_file(home))
        kafka_config = KafkaConfig.from_env(environ)
        values = {"kafka_config": kafka_config, "environ": environ, "looked_in": looked}
        for name, var in ENV.items():
            flag = overrides.get(name)
            # A properties file that names its bootstrap.servers needs no WHYSTREAM_BROKER.
            from_properties = kafka_config.bootstrap_servers if name == "broker" else None
            values[name] = flag if flag is not None else (environ.get(var) or from_file(var, environ)
                                                          or from_properties or stack.get(var))
        values["home"] = home
        values["registry"] = Path(values["registry"]) if values["registry"] else home / "registry"
        values["topic_prefix"] = values["topic_prefix"] or ""
        return cls(**values)

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)

    def topic(self, name: str) -> str:
        """The full topic name for one of TOPICS, with the configured prefix."""
        if name not in TOPICS:
            raise ValueError(f"unknown topic {name!r}; whystream's topics are {', '.join(TOPICS)}")
        return f"{self.topic_prefix}{name}"

    def require(self, name: str) -> str:
        """A connection setting's value, or a ConfigError that says how to provide it."""
        value = getattr(self, name)
        if not value:
            where = ""
            if self.looked_in:
                places = [str(p) for p in self.looked_in]
                where = f" (looked for {', '.join(places[:4])}{', ...' if len(places) > 4 else ''})"
            raise ConfigError(
                ENV[name],
                f"not set and no embedded stack is running{where}; start one with `whystream up` "
                f"(in another terminal) or set {ENV[name]} (or --home)",
            )
        return value

    @property
    def schema_registry_properties(self) -> tuple[tuple[str, str], ...]:
        """The WHYSTREAM_SCHEMA_REGISTRY_* variables but the URL (auth, TLS), as (variable, value)."""
        return tuple(sorted((k, v) for k, v in self.environ.items()
                            if k.startswith("WHYSTREAM_SCHEMA_REGISTRY_") and k != ENV["schema_registry_url"]))

    def kafka(self, **conf) -> dict:
        """confluent-kafka configuration for the broker: the user's client properties
        (checked once; a rejected one is a ConfigError naming where it came from),
        then this client's own settings."""
        self.kafka_config.validate()
        return self.kafka_config.client(self.require("broker"), **conf)

    def as_env(self) -> dict[str, str]:
        """The WHYSTREAM_* variables that reproduce these settings."""
        pairs = {ENV[name]: getattr(self, name) for name in ENV}
        return {k: str(v) for k, v in pairs.items() if v not in (None, "")}

    def shown(self) -> dict[str, str]:
        """as_env() with passwords masked: for printing and logging."""
        return {k: mask_secrets(v) for k, v in self.as_env().items()}
