"""The ingest benchmark's events: realistic PredictionEvents, Avro single-object
encoded, loaded into `predictions`; their event_time read or rewritten in place.
"""

from __future__ import annotations

from whystream.wire.avro_write import avro_long


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _event_time_span(value: bytes) -> tuple[int, int]:
    """Where event_time lies in a single-object encoded PredictionEvent (current schema): after
    three strings (prediction_id, model_name, model_version) in the body."""
    pos = 10
    for _ in range(3):
        length, pos = _varint(value, pos)
        pos += length >> 1
    _, end = _varint(value, pos)
    return pos, end


def with_event_time(value: bytes, event_time_ms: int) -> bytes:
    pos, end = _event_time_span(value)
    return value[:pos] + avro_long(event_time_ms) + value[end:]


def event_time_of(value: bytes) -> int:
    zigzag, _ = _varint(value, _event_time_span(value)[0])
    return (zigzag >> 1) ^ -(zigzag & 1)


def prediction_id_of(value: bytes) -> str:
    length, pos = _varint(value, 10)  # the body's first field
    return value[pos:pos + (length >> 1)].decode()


def encoded_events(model, count: int, run_id: str, seed: int = 1, start: int = 0):
    """Chunks of (key, value): realistic PredictionEvents, Avro single-object encoded."""
    from whystream.jobs.simulation.generator import TransactionGenerator
    from whystream.jobs.simulation.produce import prediction_events
    from whystream.wire.codecs import codec_for

    encode = codec_for("PredictionEvent").encode
    for records in prediction_events(model, TransactionGenerator(seed), start, count, run_id, seed):
        yield [(r["prediction_id"].encode(), encode(r)) for r in records]


def load_topic(settings, chunks) -> int:
    """Produce (key, value) chunks as fast as the broker takes them."""
    from whystream.kafka.clients import producer as kafka_producer

    topic = settings.topic("predictions")
    producer = kafka_producer(settings, "bulk", **{"linger.ms": 20, "batch.size": 1_000_000,
                                                   "queue.buffering.max.kbytes": 512 * 1024})
    sent = 0
    for chunk in chunks:
        for key, value in chunk:
            while True:
                try:
                    producer.produce(topic, value=value, key=key)
                    break
                except BufferError:
                    producer.poll(0.05)
        sent += len(chunk)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("loading the predictions topic did not finish in 120 s")
    return sent
