"""Schema Registry client settings: `WHYSTREAM_SCHEMA_REGISTRY_URL` and
`WHYSTREAM_SCHEMA_REGISTRY_<NAME>` variables, `<NAME>` being a property of
confluent-kafka's SchemaRegistryClient with `.` written `_`:

    WHYSTREAM_SCHEMA_REGISTRY_URL=https://registry.internal:8081
    WHYSTREAM_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO=user:secret    # basic auth
    WHYSTREAM_SCHEMA_REGISTRY_SSL_CA_LOCATION=/etc/whystream/registry-ca.pem
    WHYSTREAM_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO_FILE=/run/secrets/registry  # a mounted secret

Subjects follow the TopicNameStrategy: the value schema of topic T is registered
under `T-value` (e.g. `predictions-value`, with the topic prefix in front).
A property the client rejects is a ConfigError naming its variable; secret
values are never part of a message.
"""

from __future__ import annotations

from typing import Mapping

from whystream.config.secrets import prefixed
from whystream.errors import ConfigError

URL_VAR = "WHYSTREAM_SCHEMA_REGISTRY_URL"
PREFIX = "WHYSTREAM_SCHEMA_REGISTRY_"


def registry_config(url: str, environ: Mapping[str, str]) -> tuple[dict, dict]:
    """(SchemaRegistryClient configuration, property -> the variable it came from), from the
    WHYSTREAM_SCHEMA_REGISTRY_* variables of `environ` (Settings.environ)."""
    conf, origins = {"url": url}, {"url": URL_VAR}
    for var, value in prefixed(environ, PREFIX).items():  # WHYSTREAM_SCHEMA_REGISTRY_<NAME>_FILE: read
        if var != URL_VAR:
            prop = var[len(PREFIX):].lower().replace("_", ".")
            conf[prop], origins[prop] = value, var
    return conf, origins


def registry_client(url: str, environ: Mapping[str, str]):
    """A SchemaRegistryClient (mock:// gives confluent-kafka's in-memory registry)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    conf, origins = registry_config(url, environ)
    try:
        return SchemaRegistryClient.new_client(conf)
    except (ValueError, TypeError) as exc:
        message = str(exc)
        for prop, value in conf.items():
            if prop != "url" and value and ("auth" in prop or "password" in prop or "secret" in prop):
                message = message.replace(value, "***")
        named = [origins[p] for p in conf if p in message] or [f"{PREFIX}*"]
        raise ConfigError(", ".join(named), f"the Schema Registry client rejected this setting: {message}") from None
