"""Send PredictionEvents for a registered model with nothing but the .avsc file.

    python examples/produce_predictions.py --broker 127.0.0.1:9092 --model credit --version 0123456789ab \
        --features '{"income": 52000, "utilisation": 0.93, "months_on_book": null}' \
        --score 0.91 --decision decline --threshold 0.5 [--decision-class 2] [--topic predictions]

    python examples/produce_predictions.py --broker ... --model ... --version ... --events decisions.jsonl

Needs only confluent-kafka and fastavro: no whystream code. `--events` sends one
event per line of a JSON-lines file (features, score, decision, threshold, and
optionally prediction_id, event_time, segment, priority, decision_class, and
model / version to override the flags). The
message is Avro single-object encoded (C3 01, the schema's 8-byte CRC-64-AVRO
fingerprint, little-endian, then the Avro body) and keyed by prediction_id.
Feature names are the model's (`whystream models NAME` lists them); null means
missing; categorical features are the integer codes the model was trained on.
"""

import argparse
import io
import json
import time
import uuid
from pathlib import Path

import fastavro
from confluent_kafka import Producer
from fastavro.schema import fingerprint, to_parsing_canonical_form

SCHEMA = fastavro.parse_schema(json.loads(
    (Path(__file__).resolve().parent.parent / "schemas" / "PredictionEvent.avsc").read_text()))
HEADER = b"\xc3\x01" + bytes.fromhex(fingerprint(to_parsing_canonical_form(SCHEMA), "CRC-64-AVRO"))


def prediction_event(model: str, version: str, features: dict, score: float, decision: str, threshold: float,
                     **optional) -> dict:
    """A PredictionEvent record; optional: prediction_id, event_time (ms), segment, priority, decision_class."""
    return {"prediction_id": optional.get("prediction_id") or str(uuid.uuid4()), "model_name": model,
            "model_version": version, "event_time": optional.get("event_time") or int(time.time() * 1000),
            "features": {k: (None if v is None else float(v)) for k, v in features.items()},
            "score": float(score), "decision": decision, "threshold": float(threshold),
            "segment": optional.get("segment") or {}, "priority": bool(optional.get("priority", False)),
            "decision_class": optional.get("decision_class")}


def encode(event: dict) -> bytes:
    buffer = io.BytesIO()
    buffer.write(HEADER)
    fastavro.schemaless_writer(buffer, SCHEMA, event)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--topic", default="predictions")
    parser.add_argument("--model", help="registered model name (model_name)")
    parser.add_argument("--version", help="registered model version (model_version)")
    parser.add_argument("--events", type=Path, help="JSON-lines file of decisions to send")
    parser.add_argument("--features", default="{}", help="JSON object: feature name -> value or null")
    parser.add_argument("--score", type=float, default=0.0)
    parser.add_argument("--decision", default="approve")
    parser.add_argument("--threshold", type=float, default=0.0, help="0 for models without one")
    parser.add_argument("--decision-class", type=int, default=None, help="multiclass models: the decision's class")
    args = parser.parse_args()
    if args.events:
        lines = [json.loads(line) for line in args.events.read_text().splitlines() if line.strip()]
    else:
        lines = [{"features": json.loads(args.features), "score": args.score, "decision": args.decision,
                  "threshold": args.threshold, "decision_class": args.decision_class}]
    producer = Producer({"bootstrap.servers": args.broker, "enable.idempotence": True})
    for line in lines:
        model, version = line.pop("model", args.model), line.pop("version", args.version)
        if not (model and version):
            raise SystemExit("every event needs a model and a version (--model, --version)")
        event = prediction_event(model, version, **line)
        producer.produce(args.topic, encode(event), event["prediction_id"].encode())
        producer.poll(0)
    left = producer.flush(30)
    if left:
        raise SystemExit(f"{left} events not confirmed by the broker")
    print(f"sent {len(lines)} PredictionEvent(s) to {args.topic}")


if __name__ == "__main__":
    main()
