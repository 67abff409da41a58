"""Every Kafka client whystream makes, from one Settings object.

A client's configuration is, in this order (later wins): the user's librdkafka
properties (`Settings.kafka_config`: TLS, SASL, ... from WHYSTREAM_KAFKA_CONFIG
and WHYSTREAM_KAFKA_*), the broker, then what the client's role needs. Roles are
named here, once, instead of at every call site:

| producer role  | used by                                              | settings                     |
|----------------|------------------------------------------------------|------------------------------|
| `confirmed`    | the sink's dead letters, model events, redrive       | idempotent                   |
| `explanations` | the engine: explanations, dead letters, checkpoints  | idempotent, lz4, linger 2 ms |
| `control`      | answers to explain requests, the challenger's shadow | idempotent, linger 2 ms      |
| `alerts`       | drift alerts                                         | idempotent, linger 5 ms      |
| `bulk`         | the simulated producer (`whystream produce`)         | lz4, linger 5 ms             |
| `plain`        | the demo's malformed messages                        | librdkafka's defaults        |

Idempotence keeps a retried produce request from writing a message twice, which
every exactly-once output needs; the simulated producer stands for a producer
outside whystream. Consumers never auto-commit: whystream commits what it has
handled itself, or nothing (`consumer(settings)` without a group reads without
joining one). `check_broker` fetches metadata once so that a wrong CA, a refused
login or an unreachable broker ends a command at once, in one line.

librdkafka's own log lines (a broker down prints one per retry, over a
thousand a minute) go to the logger `whystream.librdkafka`, which shows
nothing, unless the user asks for them with librdkafka's `debug` or
`log_level` property (WHYSTREAM_KAFKA_DEBUG=broker,..., WHYSTREAM_KAFKA_LOG_LEVEL=7):
then librdkafka prints them as it always does.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient

from whystream.config import Settings
from whystream.config.kafka_properties import KafkaConfig
from whystream.errors import ConfigError

_IDEMPOTENT = {"enable.idempotence": True}
PRODUCER_ROLES = {
    "confirmed": _IDEMPOTENT,
    "explanations": {**_IDEMPOTENT, "linger.ms": 2, "compression.type": "lz4"},
    "control": {**_IDEMPOTENT, "linger.ms": 2},
    "alerts": {**_IDEMPOTENT, "linger.ms": 5},
    "bulk": {"linger.ms": 5, "compression.type": "lz4"},
    "plain": {},
}
# Consumer groups, each with the topic prefix in front: a prefix is a whole deployment of its own.
GROUPS = {"worker": "whystream-worker", "explain": "whystream-explain", "sink": "whystream-sink"}


_LIBRDKAFKA = logging.getLogger("whystream.librdkafka")
_LIBRDKAFKA.addHandler(logging.NullHandler())
_LIBRDKAFKA.propagate = False


def _configured(settings: Settings, **conf) -> dict:
    """settings.kafka(**conf), with librdkafka's logging kept off the terminal unless asked for."""
    asked = {"debug", "log_level"} & set(settings.kafka_config.properties)
    return settings.kafka(**({} if asked else {"logger": _LIBRDKAFKA}), **conf)


def group_id(settings: Settings, name: str) -> str:
    """The consumer group `name` of GROUPS in this deployment."""
    return f"{settings.topic_prefix}{GROUPS[name]}"


def producer(settings: Settings, role: str = "confirmed", **conf) -> Producer:
    """A producer for one of PRODUCER_ROLES (`conf`: anything a caller must add or change, e.g. a
    benchmark's batch sizes)."""
    return Producer(_configured(settings, **{**PRODUCER_ROLES[role], **conf}))


def consumer(settings: Settings, group: str | None = None, *, label: str = "peek", **conf) -> Consumer:
    """A consumer in `group` (a GROUPS name), or without one: in a throwaway group of its own,
    `whystream-<label>-<random>`, that never commits (reading a topic without joining
    anything). Offsets are never auto-committed."""
    group_name = group_id(settings, group) if group else f"whystream-{label}-{uuid.uuid4().hex[:8]}"
    return Consumer(_configured(settings, **{"group.id": group_name, "enable.auto.commit": False, **conf}))


def admin(settings: Settings, **conf) -> AdminClient:
    return AdminClient(_configured(settings, **conf))


def check_broker(config: KafkaConfig, broker: str, timeout: float = 10.0, broker_var: str = "WHYSTREAM_BROKER"):
    """Fetch the cluster's metadata once, so that a wrong CA, a refused login or an
    unreachable broker ends the command now, in one line, instead of a client
    that retries forever. Returns the metadata (topics, brokers)."""
    config.validate()
    errors: list = []
    admin = AdminClient(config.client(broker, log_level=0, error_cb=errors.append))  # the line below says it all
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            return admin.list_topics(timeout=min(1.0, max(deadline - time.monotonic(), 0.1)))
        except Exception as exc:  # KafkaException: no metadata within the slice
            last = exc
        admin.poll(0)  # serves error_cb
        # A TLS or SASL failure will not heal by waiting: report it at once.
        if any(e.code() in (KafkaError._SSL, KafkaError._AUTHENTICATION) for e in errors):
            break
    failure = next((e for e in errors if e.code() in (KafkaError._SSL, KafkaError._AUTHENTICATION)), None)
    if failure is not None and failure.code() == KafkaError._SSL:
        names = [p for p in config.properties if p.startswith("ssl.")] or ["security.protocol"]
        raise ConfigError(", ".join(config.origin(p) for p in names),
                          f"TLS with the Kafka broker at {broker} failed: {_reason(config, failure)}")
    if failure is not None:
        names = [p for p in config.properties if p.startswith("sasl.")] or ["sasl.mechanisms"]
        raise ConfigError(", ".join(config.origin(p) for p in names),
                          f"the Kafka broker at {broker} refused the login: {_reason(config, failure)}")
    detail = _reason(config, errors[-1] if errors else (last.args[0] if last and last.args else last))
    protocol = config.properties.get("security.protocol")
    hint = f"; security.protocol is {protocol} ({config.origin('security.protocol')})" if protocol else ""
    raise ConfigError(broker_var, f"cannot reach a Kafka broker at {broker} within {timeout:g}s ({detail}){hint}")


def _reason(config: KafkaConfig, error) -> str:
    """A librdkafka error as one short line: the broker's address prefix and the timing suffix dropped."""
    text = config.scrub(error.str() if hasattr(error, "str") else str(error))
    text = re.sub(r"^\S+://\S+?: ", "", text)  # "ssl://127.0.0.1:1234/bootstrap: "
    return re.sub(r"\s*\(after \d+ms in state \w+\)$", "", text)
