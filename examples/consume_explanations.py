"""Read whystream's `explanations` topic with nothing but the .avsc files.

    python examples/consume_explanations.py --broker 127.0.0.1:9092 [--topic explanations] [--max 10] [--wait 30]

Needs only confluent-kafka and fastavro: no whystream code. It takes the same
client settings as whystream: a properties file (`--kafka-config PATH`, default
$WHYSTREAM_KAFKA_CONFIG) and WHYSTREAM_KAFKA_<NAME> variables over it (TLS, SASL;
`.` written `_`, e.g. WHYSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL). Messages are Avro
single-object encoded: C3 01, the 8-byte CRC-64-AVRO fingerprint of the writer
schema (little-endian), then the Avro body.
"""

import argparse
import io
import json
import os
from pathlib import Path

import fastavro
from confluent_kafka import Consumer
from fastavro.schema import fingerprint, to_parsing_canonical_form

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def readers() -> dict:
    """Writer schemas by fingerprint: the current ExplanationEvent and any history."""
    found = {}
    for path in [SCHEMAS / "ExplanationEvent.avsc", *sorted(SCHEMAS.glob("history/ExplanationEvent.v*.avsc"))]:
        schema = fastavro.parse_schema(json.loads(path.read_text()))
        found[bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))] = schema
    return found


def decode(data: bytes, schemas: dict) -> dict:
    if data[:2] != b"\xc3\x01" or data[2:10] not in schemas:
        raise ValueError("not an ExplanationEvent in Avro single-object encoding")
    return fastavro.schemaless_reader(io.BytesIO(data[10:]), schemas[data[2:10]])


def client_properties(path: str | None) -> dict:
    """key=value lines of a client properties file (# comments), then WHYSTREAM_KAFKA_* variables."""
    found = {}
    for line in Path(path).read_text().splitlines() if path else []:
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith(("#", "!")):
            found[key.strip()] = value.strip()
    for var, value in os.environ.items():
        if var.startswith("WHYSTREAM_KAFKA_") and var != "WHYSTREAM_KAFKA_CONFIG":
            found[var[len("WHYSTREAM_KAFKA_"):].lower().replace("_", ".")] = value
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default=os.environ.get("WHYSTREAM_BROKER"),
                        help="bootstrap servers [WHYSTREAM_BROKER, else the properties file's bootstrap.servers]")
    parser.add_argument("--kafka-config", default=os.environ.get("WHYSTREAM_KAFKA_CONFIG"),
                        help="client properties file [WHYSTREAM_KAFKA_CONFIG]")
    parser.add_argument("--topic", default="explanations")
    parser.add_argument("--group", default="explanation-reader")
    parser.add_argument("--max", type=int, default=10)
    parser.add_argument("--wait", type=float, default=30.0, help="give up after this many seconds without a message")
    args = parser.parse_args()
    schemas = readers()
    properties = client_properties(args.kafka_config)
    if args.broker:
        properties["bootstrap.servers"] = args.broker
    if "bootstrap.servers" not in properties:
        parser.error("no broker: pass --broker, set WHYSTREAM_BROKER or bootstrap.servers in the properties file")
    consumer = Consumer({**properties, "group.id": args.group, "auto.offset.reset": "earliest",
                         "session.timeout.ms": 10000})
    consumer.subscribe([args.topic])
    shown = 0
    try:
        while shown < args.max:
            message = consumer.poll(args.wait)
            if message is None:
                break
            if message.error():
                continue
            e = decode(message.value(), schemas)
            reasons = ", ".join(f"{r['feature']} {r['shap']:+.2f}" for r in e["top_reasons"][:3])
            print(f"{e['prediction_id']} {e['decision']} ({e['sampling_reason']}, weight {e['inclusion_weight']:g}): {reasons}")
            shown += 1
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
