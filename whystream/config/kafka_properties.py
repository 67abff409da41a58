"""Kafka client properties: one object that every Kafka client whystream creates goes through.

Managed Kafka services hand out a client properties file (`key=value`, `#`
comments; e.g. `security.protocol=SASL_SSL`, `sasl.mechanisms=PLAIN`,
`sasl.username=...`). whystream reads

- `WHYSTREAM_KAFKA_CONFIG=PATH`: such a file, and
- `WHYSTREAM_KAFKA_<NAME>`: one librdkafka property each, `.` written `_`
  (`WHYSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL`), overriding the file,

and remembers where each property came from, so that a property librdkafka
rejects ends the command with one line naming the variable or `file:line`.
Secret values (passwords, keys, JAAS configs) are never shown: `masked()` and
the repr print `***`, and error messages name properties, not their values.

Example:

    >>> config = KafkaConfig.from_env({"WHYSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
    ...                                "WHYSTREAM_KAFKA_SSL_KEY_PASSWORD": "hunter2"})
    >>> config.masked()
    {'security.protocol': 'SSL', 'ssl.key.password': '***'}
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from whystream.config.secrets import prefixed
from whystream.errors import ConfigError

FILE_VAR = "WHYSTREAM_KAFKA_CONFIG"
PREFIX = "WHYSTREAM_KAFKA_"
# Properties whose value is a secret (librdkafka's own list of sensitive properties, and ours).
_SECRET = re.compile(r"password|secret|jaas|ssl\.key\.pem|oauthbearer\.config|token|user\.info|credentials",
                     re.IGNORECASE)
MASK = "***"
_VALID: set[tuple] = set()  # property sets a client accepted already


def is_secret(name: str) -> bool:
    return bool(_SECRET.search(name))


def env_name(prop: str) -> str:
    """The WHYSTREAM_KAFKA_* variable of a property: ssl.ca.location -> WHYSTREAM_KAFKA_SSL_CA_LOCATION."""
    return PREFIX + prop.replace(".", "_").upper()


@dataclass(frozen=True)
class KafkaConfig:
    """librdkafka properties given by the user, each with where it came from."""

    properties: dict[str, str] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # property -> "WHYSTREAM_KAFKA_X" or "path:line"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "KafkaConfig":
        """The properties of WHYSTREAM_KAFKA_CONFIG's file and the WHYSTREAM_KAFKA_* variables of
        `environ` (Settings.load passes the process environment)."""
        properties: dict[str, str] = {}
        origins: dict[str, str] = {}
        path = environ.get(FILE_VAR)
        if path:
            for prop, value, origin in read_properties(Path(path)):
                properties[prop], origins[prop] = value, origin
        for var, value in prefixed(environ, PREFIX).items():  # WHYSTREAM_KAFKA_<NAME>_FILE: read, as a secret
            if var != FILE_VAR:
                prop = var[len(PREFIX):].lower().replace("_", ".")
                if not prop:
                    continue
                properties[prop], origins[prop] = value, var
        return cls(properties, origins)

    @classmethod
    def of(cls, properties: Mapping[str, str], origin: str = "settings") -> "KafkaConfig":
        """Properties given in code (tests, embedding), each attributed to `origin`."""
        return cls(dict(properties), {k: origin for k in properties})

    def origin(self, prop: str) -> str:
        return self.origins.get(prop, env_name(prop))

    def masked(self) -> dict[str, str]:
        """The properties as they may be shown: secret values replaced by ***."""
        return {k: MASK if is_secret(k) else v for k, v in self.properties.items()}

    def __repr__(self) -> str:
        return f"KafkaConfig({self.masked()!r})"

    @property
    def bootstrap_servers(self) -> str | None:
        return self.properties.get("bootstrap.servers")

    def client(self, broker: str, **conf) -> dict:
        """A librdkafka configuration: the user's properties, the broker, then the
        client's own settings (group.id, linger.ms, ...), which take precedence."""
        return {**self.properties, "bootstrap.servers": broker, **conf}

    def validate(self) -> None:
        """Construct (and drop) a client with these properties; a property librdkafka
        rejects raises ConfigError naming the variable or file:line it came from.
        Done once per distinct set of properties in a process."""
        key = tuple(sorted(self.properties.items()))
        if not self.properties or key in _VALID:
            return
        from confluent_kafka import KafkaException, Producer

        conf = {k: v for k, v in self.properties.items() if k != "bootstrap.servers"}  # connects to nothing
        try:
            Producer({**conf, "log_level": 0}).flush(0)
        except (KafkaException, ValueError, TypeError) as exc:
            raise self.rejected(exc) from None
        _VALID.add(key)

    def rejected(self, exc: BaseException) -> ConfigError:
        """The ConfigError for a client that refused these properties."""
        message = self.scrub(str(exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else exc))
        named = [p for p in self.properties if re.search(rf'(?<![\w.]){re.escape(p)}(?![\w.])', message)]
        where = ", ".join(self.origin(p) for p in named) or (
            f"{FILE_VAR} / {PREFIX}* (" + ", ".join(self.origin(p) for p in self.properties) + ")")
        return ConfigError(where, f"the Kafka client rejected this property: {message}")

    def scrub(self, text: str) -> str:
        """`text` with every secret value replaced by ***."""
        for prop, value in self.properties.items():
            if is_secret(prop) and value:
                text = text.replace(value, MASK)
        return " ".join(text.split())


def read_properties(path: Path) -> list[tuple[str, str, str]]:
    """(property, value, "path:line") for each `key=value` line of a properties file;
    blank lines and `#`/`!` comments are skipped. A malformed line is a ConfigError."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(FILE_VAR, f"cannot read Kafka properties file {path} ({exc.strerror or exc})") from None
    found = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{path}:{number}", "expected key=value (a librdkafka property), "
                                                  "or a # comment")
        found.append((key.strip(), value.strip(), f"{path}:{number}"))
    return found


