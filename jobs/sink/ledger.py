"""Exactly once into `explanations` and every view, whoever inserts and however batches are cut.

A batch is written in units: the rows of one topic partition, one fixed block
of BLOCK offsets and one day of event time (a day is one ClickHouse
partition, so a unit is one part and one deduplication block). For each unit
the sink loops:

1. ask `sink_ledger` which of the unit's offsets are stored: the same
   prediction_id at the same (topic, topic id, partition, offset); the rest
   are left to insert;
2. claim the deduplication token of (topic, topic id, partition, first
   offset left, its prediction_id) for the offsets left, in `sink_claims`
   (deduplicated by the token: the first claim stays);
3. insert the claimed offsets under that token, in the table and in every
   materialized view, then (the insert returned) in the ledger under a token of
   its own: a ledger row means every view has it, so a unit whose insert failed
   half-way (views are not atomic) is inserted again under the same token, and
   each table and view keeps it once; when the claim is another
   sink's and this one does not hold all its offsets, wait for them to be
   stored instead (at most CLAIM_WAIT_S, then the claim is taken as abandoned
   and this sink claims again under a token of its own);
4. go back to 1 until nothing is left.

Why this holds with two sinks racing over the same offsets, cut differently
(one evicted while it waits out an outage, another re-reading from the last
commit): both compute the token from the first offset that was not stored
when they looked. Over the same stored state they get the same token, and the
claim makes them insert the same rows under it (ClickHouse deduplicates the
table and each view separately: two different row sets under one token at the
same moment could land one in the table and the other in a view); ClickHouse
keeps the first insert and drops the other whole; the loser looks again and
inserts only what is still missing, under the token of its new first offset.
A retry of a failed insert reuses its rows and token: an insert that landed
although its answer was lost is dropped. What is left open: a sink that
claimed, then stalls longer than CLAIM_WAIT_S and inserts after another sink
took over the claim's offsets (docs/clickhouse.md, "From the topic to the tables, exactly once").

A recreated topic reuses offsets: its Kafka topic id differs (Tansu and
Kafka >= 2.8 have them), and the token and the ledger check also include the
prediction_id at the offset, so old rows and old tokens never match new
messages even where a broker has no topic ids.

An insert refused for its data (jobs/clickhouse/errors.py, is_data_error) is split in
halves until the failing row is alone; that row is set aside (dead-lettered)
and the others are written.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Callable

from whystream.config import Settings
from whystream.errors import WhystreamError
from whystream.jobs.clickhouse.sql import ident, lit, one_line
from whystream.jobs.clickhouse.sql import rows as query_rows
from whystream.jobs.sink.rows import Rows
from whystream.kafka.clients import admin

BLOCK = 65_536  # offsets per unit at most
DAY_MS = 86_400_000
MAX_ROUNDS = 64  # halving a unit of BLOCK rows takes 12; the rest is slack
TOPIC_ID_REFRESH_S = 10.0
CLAIM_WAIT_S = 30.0  # how long a claim of offsets this sink does not all hold is waited for

log = logging.getLogger("whystream.sink")

UnitKey = tuple  # (topic, partition, block, day)


def units(rows: Rows) -> dict[UnitKey, Rows]:
    """The rows of a batch by unit, each ordered by offset."""
    groups: dict[UnitKey, list[int]] = {}
    for i, m in enumerate(rows.messages):
        key = (m.topic, m.partition, m.offset // BLOCK, int(rows.event_time[i]) // DAY_MS)
        groups.setdefault(key, []).append(i)
    return {key: rows.take(sorted(idx, key=lambda i: rows.messages[i].offset)) for key, idx in sorted(groups.items())}


def unit_token(topic_id: str, unit: Rows) -> str:
    first = unit.messages[0]
    text = f"{first.topic}\x00{topic_id}\x00{first.partition}\x00{first.offset}\x00{unit.prediction_ids[0]}"
    return "sink2:" + hashlib.sha256(text.encode()).hexdigest()[:40]


def stored(client, database: str, groups: dict, topic_ids: dict[str, str]) -> set[tuple[str, int, int, str]]:
    """(topic, partition, offset, prediction_id) of what the ledger holds in the groups' offset ranges
    (an offset of a recreated topic can hold rows of both incarnations)."""
    by_topic: dict[str, list[str]] = {}
    for unit in groups.values():
        m = unit.messages
        by_topic.setdefault(m[0].topic, []).append(
            f"(kafka_partition = {int(m[0].partition)} AND kafka_offset BETWEEN {int(m[0].offset)} AND {int(m[-1].offset)})")
    found = set()
    for topic, ranges in by_topic.items():
        for r in query_rows(client, f"""
                SELECT kafka_partition AS p, kafka_offset AS o, prediction_id AS id FROM {ident(database)}.sink_ledger
                WHERE kafka_topic = {lit(topic)} AND kafka_topic_id = {lit(topic_ids.get(topic, ''))}
                  AND ({' OR '.join(ranges)})"""):
            found.add((topic, r["p"], r["o"], r["id"]))
    return found


def claim(client, database: str, token: str, unit: Rows, sink: str) -> list[int]:
    """Claim `token` for the unit's offsets; the offsets of the claim that stays (maybe another sink's)."""
    db = ident(database)
    offsets = [m.offset for m in unit.messages]
    client.insert("sink_claims", [[token], [offsets], [sink]], database=db, column_names=["token", "offsets", "sink"],
                  column_oriented=True, settings={"insert_deduplication_token": "claim:" + token})
    found = client.query(f"SELECT offsets FROM {db}.sink_claims WHERE token = {{token:String}} "
                         f"ORDER BY claimed_at, sink LIMIT 1", parameters={"token": token}).result_rows
    return list(found[0][0]) if found else offsets


def write_exactly_once(rows: Rows, topic_ids: dict[str, str], database: str,
                       retrying: Callable[[str, Callable], object],
                       insert: Callable[[object, Rows, str, str], Exception | None],
                       set_aside: Callable[[Rows, Exception], None], sink: str = "",
                       pause: Callable[[float], None] = time.sleep) -> int:
    """Write `rows` as described in the module docstring; return how many are now stored that were not
    when this call first looked (by this sink or a racing one).

    `retrying(what, step)` runs step(client) until it succeeds (transient errors); `insert(client, unit,
    topic_id, token)` inserts a unit and returns the exception when ClickHouse refused its data, else None;
    `set_aside(unit, exc)` dead-letters a single refused row; `pause(s)` waits for another sink's claim.
    """
    groups = units(rows)
    written, first, rounds = 0, True, 0
    waiting_since: dict = {}
    while groups:
        rounds += 1
        if rounds > MAX_ROUNDS + len(waiting_since) * 1000:
            raise WhystreamError(f"{sum(map(len, groups.values()))} rows still missing from {database}.sink_ledger "
                                 f"after {MAX_ROUNDS} inserts")
        have = retrying("reading the sink ledger", lambda c: stored(c, database, groups, topic_ids))
        following: dict = {}
        for key, unit in groups.items():
            left = [i for i, m in enumerate(unit.messages)
                    if (m.topic, m.partition, m.offset, unit.prediction_ids[i]) not in have]
            if first:
                written += len(left)
            if not left:
                continue
            unit = unit.take(left)
            topic_id = topic_ids.get(unit.messages[0].topic, "")
            token = unit_token(topic_id, unit) + "".join(f":{part}" for part in key[4:])
            since = waiting_since.get(token)
            if since is not None and time.monotonic() - since > CLAIM_WAIT_S:
                token += ":" + sink  # the claim's holder is gone: a token of this sink's own
            claimed = retrying("claiming a token", lambda c: claim(c, database, token, unit, sink))
            mine = {m.offset: i for i, m in enumerate(unit.messages)}
            if any(o not in mine for o in claimed):
                waiting_since.setdefault(token, time.monotonic())
                following[key] = unit  # held by another sink: look again after a while
                continue
            chosen = unit.take([mine[o] for o in claimed])
            taken = set(claimed)
            rest = [i for i, m in enumerate(unit.messages) if m.offset not in taken]
            refused = retrying("inserting explanations", lambda c: insert(c, chosen, topic_id, token))
            if refused is None:
                following[key] = unit  # look again: a racing sink's insert under this token may have won
                continue
            if rest:
                following[key] = unit.take(rest)
            if len(chosen) == 1:
                set_aside(chosen, refused)
                written -= 1
            else:
                half = len(chosen) // 2
                following[(*key, f"a{len(chosen)}")] = chosen.take(list(range(half)))
                following[(*key, f"b{len(chosen)}")] = chosen.take(list(range(half, len(chosen))))
        groups, first = following, False
        if waiting_since and groups:
            pause(0.2)
    return written


class TopicIds:
    """Kafka topic ids by topic name ('' where the broker has none), looked up again every
    TOPIC_ID_REFRESH_S, so a topic deleted and created again is told apart from the old one."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._known: dict[str, tuple[str, float]] = {}
        self._admin = None

    def __call__(self, topic: str) -> str:
        known = self._known.get(topic)
        if known is None or time.monotonic() - known[1] > TOPIC_ID_REFRESH_S:
            known = (self._lookup(topic), time.monotonic())
            self._known[topic] = known
        return known[0]

    def _lookup(self, topic: str) -> str:
        from confluent_kafka import TopicCollection
        try:
            if self._admin is None:
                self._admin = admin(self.settings, log_level=0)
            description = self._admin.describe_topics(TopicCollection([topic]))[topic].result(10)
            return str(description.topic_id or "")
        except Exception as exc:  # no such topic, or a broker without DescribeTopicPartitions
            log.info("no topic id for %s (%s): the ledger relies on prediction_ids", topic, one_line(exc))
            return ""
