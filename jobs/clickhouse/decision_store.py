"""Reading the decision store (`decisions`, migration 072) back: one decision by its id,
as the PredictionEvent it was, for explain on demand once the decision has left the
`predictions` topic and the workers' 15-minute memory of where it lies.

`stored_decision(client, id)` reads it (read-only: a plain SELECT, through the SQL
guard's query port on embedded chDB too); `archive(settings, database)` is the
fallback a worker and `whystream explain` are given: id -> the decision encoded as a
PredictionEvent, or None (not stored, past its retention, or stored with redacted
features: those values are not in the store, so its explanation cannot be recomputed
from it). A ClickHouse that cannot be reached is logged and answers None: explain on
demand never fails because the store is away.
"""

from __future__ import annotations

import logging
from typing import Callable

from whystream.config import Settings
from whystream.errors import WhystreamError
from whystream.jobs.clickhouse.sql import DEFAULT_DATABASE, ident, lit, one_line, rows
from whystream.logsafe import printable
from whystream.wire.codecs import topic_codec

log = logging.getLogger("whystream.decisions")


def stored_decision(client, prediction_id: str, database: str = DEFAULT_DATABASE) -> dict | None:
    """The stored decision `prediction_id` as a PredictionEvent record, with `redacted_features`
    (names whose values the store never held) and `received_at` (ms or None); None if absent."""
    found = rows(client, f"""
        SELECT prediction_id, model_name, model_version, toUnixTimestamp64Milli(event_time) AS event_time,
               features, redacted_features, score, decision, threshold, decision_class, segment, priority,
               toUnixTimestamp64Milli(received_at) AS received_at
        FROM {ident(database)}.decisions WHERE prediction_id = {lit(prediction_id)}
        ORDER BY inserted_at LIMIT 1""")
    if not found:
        return None
    r = found[0]
    return {"prediction_id": r["prediction_id"], "model_name": r["model_name"], "model_version": r["model_version"],
            "event_time": int(r["event_time"]),
            "features": {k: None if v is None else float(v) for k, v in dict(r["features"]).items()},
            "score": float(r["score"]), "decision": r["decision"], "threshold": float(r["threshold"]),
            "segment": dict(r["segment"]), "priority": bool(r["priority"]),
            "decision_class": None if r["decision_class"] is None else int(r["decision_class"]),
            "redacted_features": list(r["redacted_features"]),
            "received_at": None if r["received_at"] is None else int(r["received_at"])}


def shared_reader(settings: Settings, database: str = DEFAULT_DATABASE):
    """A read-only client that never holds an embedded chDB directory (a long-running worker
    must not keep the sink from opening it): on chDB only a running sink's query port."""
    from whystream.jobs.clickhouse.connection import parse_dsn
    from whystream.jobs.clickhouse.query_port import SinkQueryClient, advertised_port, open_query_client

    dsn = parse_dsn(settings.require("clickhouse_dsn"))
    if dsn.kind != "chdb":
        return open_query_client(settings, database)
    advertised = advertised_port(settings, dsn)
    if advertised is None:
        raise WhystreamError("no `whystream sink` serves the embedded ClickHouse (chDB) now")
    return SinkQueryClient(*advertised, database)


def archive(settings: Settings, database: str = DEFAULT_DATABASE,
            connect: Callable[[], object] | None = None) -> Callable[[str], bytes | None]:
    """The decision store as explain on demand's last resort: id -> encoded PredictionEvent or None.
    `connect` (default: `shared_reader`) is called on first need and again after a failure."""
    codec = topic_codec(settings, "predictions")
    connect = connect or (lambda: shared_reader(settings, database))
    client = [None]

    def lookup(prediction_id: str) -> bytes | None:
        try:
            if client[0] is None:
                client[0] = connect()
            record = stored_decision(client[0], prediction_id, database)
        except Exception as exc:  # the store is an archive: its absence never fails an explanation
            client[0] = None
            log.warning("decision store unavailable for %s: %s", printable(prediction_id[:200]), one_line(exc))
            return None
        if record is None:
            return None
        if record["redacted_features"]:
            log.warning("decision %s is stored without its redacted features (%s): its explanation cannot be "
                        "recomputed from the store", printable(prediction_id[:200]),
                        printable(", ".join(record["redacted_features"])))
            return None
        record.pop("redacted_features")
        record.pop("received_at")
        return codec.encode(record)

    return lookup
