"""How long ClickHouse keeps explanations and their aggregates (audit retention).

Compliance defaults (docs/clickhouse.md, "Retention"):
- priority explanations (ADVERSE, NEAR_THRESHOLD, FLAGGED, NEW_VERSION), which
  hold the principal reasons of adverse actions: 762 days, any 25
  calendar months (US Reg B, 12 CFR 1002.12, keeps adverse-action records 25
  months; ECOA's limitation period is 5 years: set 1827 days where claims must
  be answered; the EU AI Act asks deployers for at least 6 months of logs);
- sampled (RESERVOIR) explanations: 90 days;
- ON_DEMAND answers to explain requests are kept out of `explanations` (the
  decision's stored explanation is the stream's own) and stored in
  `explain_answers`, the audit trail of what was told to whom: as long as
  priority explanations; rows older sinks stored in `explanations` are not
  RESERVOIR, so they keep the priority days;
- the decision store (`decisions`: every valid decision, explained or not):
  762 days, the audit default, on its own (WHYSTREAM_RETENTION_DECISIONS_DAYS);
- the aggregates (attribution_hist, attribution_stats, engine_stats): as long
  as the shorter of the two, never longer than the raw rows, so a re-read
  explanation can always be checked against what is stored before it is
  counted again; the sink ledger as long as the longest (it also holds where
  each stored decision was read); `explanation_ids`
  (the duplicate filter's index) as long as the explanations themselves.

`Retention.from_env(settings.environ)` reads WHYSTREAM_RETENTION_PRIORITY_DAYS,
WHYSTREAM_RETENTION_SAMPLED_DAYS and WHYSTREAM_RETENTION_DECISIONS_DAYS; `apply(client, database)` sets the TTLs
when they differ from what the tables have (the migration's are the defaults).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from whystream.errors import ConfigError

PRIORITY_VAR = "WHYSTREAM_RETENTION_PRIORITY_DAYS"
SAMPLED_VAR = "WHYSTREAM_RETENTION_SAMPLED_DAYS"
DECISIONS_VAR = "WHYSTREAM_RETENTION_DECISIONS_DAYS"
AGGREGATES = ("attribution_hist", "attribution_stats", "engine_stats", "score_check_stats")


def _days(environ: Mapping[str, str], var: str, default: int) -> int:
    text = environ.get(var, "").strip()
    if not text:
        return default
    if not text.isdigit() or not 1 <= int(text) <= 36_500:
        raise ConfigError(var, f"{text!r} is not a number of days between 1 and 36500")
    return int(text)


@dataclass(frozen=True)
class Retention:
    priority_days: int = 762
    sampled_days: int = 90
    decisions_days: int = 762

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "Retention":
        """The days WHYSTREAM_RETENTION_* of `environ` (Settings.environ) set, else the defaults."""
        return cls(_days(environ, PRIORITY_VAR, cls.priority_days), _days(environ, SAMPLED_VAR, cls.sampled_days),
                   _days(environ, DECISIONS_VAR, cls.decisions_days))

    @property
    def aggregate_days(self) -> int:
        return min(self.priority_days, self.sampled_days)

    @property
    def ledger_days(self) -> int:
        return max(self.priority_days, self.sampled_days, self.decisions_days)

    def ttls(self) -> dict[str, str]:
        """Table -> its TTL expression."""
        raw = (f"addDays(toDateTime(event_time), if(sampling_reason = 'RESERVOIR', "
               f"{self.sampled_days}, {self.priority_days}))")
        out = {"explanations": raw, "explanation_ids": raw,  # the duplicate filter's index lives as long as the rows
               "sink_ledger": f"inserted_at + toIntervalDay({self.ledger_days})",
               "decisions": f"addDays(toDateTime(event_time), {self.decisions_days})",
               "explain_answers": f"addDays(toDateTime(explained_at), {self.priority_days})"}
        out.update({table: f"minute + toIntervalDay({self.aggregate_days})" for table in AGGREGATES})
        return out

    def apply(self, client, database: str) -> list[str]:
        """Set the TTLs that differ from the tables'; return the tables changed."""
        from whystream.jobs.clickhouse.sql import ident, lit, rows

        db = ident(database)
        found = {r["name"]: r["create_table_query"] for r in rows(
            client, f"SELECT name, create_table_query FROM system.tables WHERE database = {lit(db)}")}
        changed = []
        for table, ttl in self.ttls().items():
            if table in found and _normal(ttl) not in _normal(found[table]):
                client.command(f"ALTER TABLE {db}.{table} MODIFY TTL {ttl}")
                changed.append(table)
        return changed


def _normal(sql: str) -> str:
    """SQL without spaces and with INTERVAL n DAY spelled toIntervalDay(n), for comparing TTLs."""
    sql = re.sub(r"INTERVAL\s+(\d+)\s+DAY", r"toIntervalDay(\1)", sql)
    return re.sub(r"\s+", "", sql)
