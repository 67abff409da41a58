"""Settings: where the broker, Redis, ClickHouse and the model registry are, read once
from flags, WHYSTREAM_* variables, mounted secret files and a running stack's file
(`settings`); the user's Kafka client properties (`kafka_properties`); secrets kept
out of what is printed (`secrets`)."""

from whystream.config.secrets import mask_secrets, write_private
from whystream.config.settings import (
    ENV,
    TOPICS,
    Settings,
    environment,
    read_env_file,
    stack_env_file,
)

__all__ = ["ENV", "TOPICS", "Settings", "environment", "mask_secrets", "read_env_file", "stack_env_file", "write_private"]
