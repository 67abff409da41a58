"""whystream's topics on the broker: their layout, and creating the missing ones.

Every topic has the configured prefix in front (`Settings.topic`). Most get the
default partitions; TOPIC_LAYOUT names the others. `models` is the control
plane's log of model versions: compacted (the last event per version stays), and
one partition, so every worker reads it in the order it was written.
`sampling-checkpoints` (workers only, streams/checkpointing/): one partition, so a
replay reads one short stretch of it.
"""

from __future__ import annotations

from confluent_kafka.admin import NewTopic

from whystream.config import TOPICS, Settings
from whystream.errors import ConfigError
from whystream.kafka.clients import admin, check_broker

# (partitions, topic configs) of the topics not created with the default partitions
TOPIC_LAYOUT = {"models": (1, {"cleanup.policy": "compact"}), "sampling-checkpoints": (1, {})}


def ensure_topics(settings: Settings, partitions: int = 4, timeout: float = 8.0) -> None:
    """Create whystream's topics if they are missing (idempotent)."""
    # Fails fast, in one line, on an unreachable broker, a wrong CA or a refused login.
    existing = set(check_broker(settings.kafka_config, settings.require("broker"), timeout).topics)
    wanted = [t for t in TOPICS if settings.topic(t) not in existing]
    if not wanted:
        return
    layout = {t: TOPIC_LAYOUT.get(t, (partitions, {})) for t in wanted}
    for topic, exc in _create(admin(settings, log_level=0), [
            NewTopic(settings.topic(t), num_partitions=layout[t][0], replication_factor=1, config=layout[t][1])
            for t in wanted], timeout):
        raise ConfigError("WHYSTREAM_BROKER", f"cannot create topic {topic}: {exc}") from None


def ensure_topic(settings: Settings, topic: str, timeout: float) -> None:
    """Create one topic of one partition (a full name, prefix included) if it is missing; the
    broker's refusal is raised as it is."""
    client = admin(settings)
    if topic not in client.list_topics(timeout=timeout).topics:
        for _, exc in _create(client, [NewTopic(topic, num_partitions=1, replication_factor=1)], timeout):
            raise exc


def _create(client, topics: list[NewTopic], timeout: float):
    """Create `topics`; yields (topic, exception) for each the broker refused (one created
    meanwhile by someone else is no refusal)."""
    for name, future in client.create_topics(topics).items():
        try:
            future.result(timeout)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                yield name, exc


def topic_id(settings: Settings, topic: str, timeout: float = 10.0) -> str:
    """The broker's id of `topic` (Kafka's topic id, base64: a deleted and recreated topic gets
    a new one), "" where the broker gives none. Raises KafkaException when the broker cannot
    answer in time: an incarnation is not to be guessed."""
    from confluent_kafka import KafkaError, KafkaException, TopicCollection

    client = admin(settings, log_level=0)
    try:
        return str(client.describe_topics(TopicCollection([topic]))[topic].result(timeout).topic_id or "")
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART,
                                                               KafkaError._UNSUPPORTED_FEATURE,
                                                               KafkaError.UNSUPPORTED_VERSION):
            return ""  # no such topic yet, or a broker without DescribeTopicPartitions
        raise
