"""Avro codecs for whystream's topics.

Two wire formats, one interface (`encode`, `decode`):
- Avro single-object encoding (the default): C3 01, the 8-byte little-endian
  CRC-64-AVRO fingerprint of the writer schema, then the Avro body. A reader
  needs only the `.avsc` files: the fingerprint picks the writer schema among
  the current one and those in `schemas/history/`, and fastavro resolves it to
  the current schema (schema evolution).
- Confluent wire format (when a Schema Registry URL is configured): 00, a
  4-byte schema id, the body; written and read with confluent-kafka's
  serializers.

Every decoding failure raises DecodeError and nothing else, so a worker can
send the bytes to the dead-letter topic with the reason.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
from functools import cache
from importlib import resources
from typing import Any, Mapping

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from whystream.config import TOPICS, Settings
from whystream.errors import DecodeError
from whystream.wire.schema_registry import registry_client

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
SCHEMA_NAMES = ("PredictionEvent", "ExplanationEvent", "DeadLetter", "DriftAlert", "ModelRegistered", "ExplainRequest",
                "ExplainError", "SamplingCheckpoint")


def load_schema(name: str, version: int | None = None) -> dict:
    """The current schema `name` as published in schemas/NAME.avsc; an earlier `version`
    from schemas/history/NAME.vN.avsc."""
    if name not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    path = f"{name}.avsc" if version is None else f"history/{name}.v{version}.avsc"
    return json.loads(resources.files("whystream.schemas").joinpath(path).read_text())


def _history(name: str) -> list[dict]:
    """Earlier versions of schema `name`, oldest first (schemas/history/NAME.vN.avsc)."""
    folder = resources.files("whystream.schemas").joinpath("history")
    files = sorted(f.name for f in folder.iterdir() if f.name.startswith(f"{name}.v"))
    return [json.loads(folder.joinpath(f).read_text()) for f in files]


def _without_logical_types(schema: Any) -> Any:
    """The schema with logicalType annotations dropped, so timestamps read as
    plain int milliseconds instead of datetime objects. The parsing canonical
    form (and so the fingerprint) does not include logicalType: the result
    reads exactly the same bytes."""
    if isinstance(schema, dict):
        return {k: _without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_without_logical_types(s) for s in schema]
    return schema


def schema_fingerprint(schema: dict) -> bytes:
    """The 8-byte CRC-64-AVRO fingerprint, little-endian, as single-object encoding writes it."""
    canonical = to_parsing_canonical_form(fastavro.parse_schema(copy.deepcopy(schema)))
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


def _read_body(buffer: io.BytesIO, total: int, writer: Any, reader: Any, what: str) -> dict:
    """Read one Avro body and insist it used every byte."""
    try:
        record = fastavro.schemaless_reader(buffer, writer, reader)
    except Exception as exc:  # fastavro raises many types on garbage; callers want one
        raise DecodeError(f"{what}: malformed Avro body ({type(exc).__name__}: {exc})") from None
    if buffer.tell() != total:
        raise DecodeError(f"{what}: {total - buffer.tell()} trailing bytes after the Avro body")
    if not isinstance(record, dict):
        raise DecodeError(f"{what}: body is not a record")
    return record


class SingleObjectCodec:
    """Avro single-object encoding of one record type, reading every known version."""

    def __init__(self, name: str):
        self.name = name
        current = load_schema(name)
        self._writer = fastavro.parse_schema(current)
        self._reader = fastavro.parse_schema(_without_logical_types(current))
        self.header = SINGLE_OBJECT_MAGIC + schema_fingerprint(current)
        # fingerprint -> parsed writer schema; None marks the current schema (no resolution needed).
        self._writers: dict[bytes, Any] = {schema_fingerprint(current): None}
        for old in _history(name):
            self._writers[schema_fingerprint(old)] = fastavro.parse_schema(_without_logical_types(old))

    def encode(self, record: dict) -> bytes:
        buffer = io.BytesIO()
        buffer.write(self.header)
        try:
            fastavro.schemaless_writer(buffer, self._writer, record)
        except Exception as exc:
            raise ValueError(f"cannot encode {self.name}: {exc}") from exc
        return buffer.getvalue()

    def decode(self, data: bytes) -> dict:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DecodeError(f"{self.name}: expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < 10 or data[:2] != SINGLE_OBJECT_MAGIC:
            raise DecodeError(
                f"{self.name}: not Avro single-object encoded (expected C3 01 and an 8-byte "
                f"schema fingerprint, got {data[:10].hex(' ') or 'no bytes'})"
            )
        fp = data[2:10]
        if fp not in self._writers:
            raise DecodeError(
                f"{self.name}: unknown schema fingerprint {fp.hex()} (written with a schema this "
                f"reader does not know; known: {', '.join(k.hex() for k in self._writers)})"
            )
        writer = self._writers[fp]
        buffer = io.BytesIO(data)
        buffer.seek(10)
        if writer is None:
            return _read_body(buffer, len(data), self._reader, None, self.name)
        return _read_body(buffer, len(data), writer, self._reader, self.name)


def _to_millis(record: dict) -> dict:
    """Confluent's deserializer applies logical types; turn datetimes back into ms."""
    for key, value in record.items():
        if isinstance(value, dt.datetime):
            record[key] = int(value.timestamp() * 1000)
    return record


class ConfluentCodec:
    """Confluent Schema Registry wire format, through confluent-kafka's serializers."""

    def __init__(self, name: str, registry_url: str, topic: str, registry_env: Mapping[str, str] | None = None):
        from confluent_kafka.schema_registry.avro import (
            AvroDeserializer,
            AvroSerializer,
        )
        from confluent_kafka.serialization import MessageField, SerializationContext

        self.name = name
        schema_str = json.dumps(load_schema(name))
        # Auth and TLS from WHYSTREAM_SCHEMA_REGISTRY_* (wire/schema_registry.py); subject: "<topic>-value".
        client = registry_client(registry_url, registry_env or {})
        self._serializer = AvroSerializer(client, schema_str)
        self._deserializer = AvroDeserializer(client, schema_str)
        self._context = SerializationContext(topic, MessageField.VALUE)

    def encode(self, record: dict) -> bytes:
        return self._serializer(record, self._context)

    def decode(self, data: bytes) -> dict:
        if not isinstance(data, (bytes, bytearray)) or len(data) < 5 or data[0] != 0:
            head = bytes(data[:5]).hex(" ") if isinstance(data, (bytes, bytearray)) else type(data).__name__
            raise DecodeError(f"{self.name}: not Confluent wire format (expected 00 and a 4-byte schema id, got {head})")
        try:
            record = self._deserializer(bytes(data), self._context)
        except Exception as exc:
            raise DecodeError(f"{self.name}: {type(exc).__name__}: {exc}") from None
        if not isinstance(record, dict):
            raise DecodeError(f"{self.name}: body is not a record")
        return _to_millis(record)


Codec = SingleObjectCodec | ConfluentCodec


@cache
def codec_for(name: str, registry_url: str | None = None, topic: str = "",
              registry_env: tuple[tuple[str, str], ...] = ()) -> Codec:
    """The codec for schema `name`: Confluent format if a registry URL is set (with the client
    properties of `registry_env`, WHYSTREAM_SCHEMA_REGISTRY_* pairs), else single-object."""
    if registry_url:
        return ConfluentCodec(name, registry_url, topic, dict(registry_env))
    return SingleObjectCodec(name)


def topic_codec(settings: Settings, topic: str) -> Codec:
    """The codec of one of whystream's topics (config.TOPICS names its schema), as `settings` say."""
    return codec_for(TOPICS[topic], settings.schema_registry_url, settings.topic(topic),
                     settings.schema_registry_properties)
