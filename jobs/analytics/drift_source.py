"""Input, score and decline-rate drift from all decisions where the decision store has them.

Two sources give the same figures (jobs/analytics/input_drift.py):

- the sample: `input_drift` and `decision_drift` (migration 030), from the
  explanations' inclusion-weighted aggregates: estimates over all decisions;
- all decisions: `input_drift_all` (migration 076) and `decision_drift_all`
  (074, 076), from the decision store (`decisions`, migration 072), each
  decision once at weight 1: exact counts.

A window is read from the store when the store covers it: the store's first
decision of the model in the window is no later than the window's first explained
decision (or the store holds the window and nothing was explained in it); both
reads stay inside the window, however long the store's history. A window
reaching back before the store existed (or before `whystream sink` stored
decisions) falls back to the sample, and so does a version the store lacks
in the window. Every row says which it is in `source` (ALL or SAMPLE), so
readers of `whystream drift`, the console and the report know how the figures
were counted.

The drift monitor's alerts judge attribution drift, which only explanations have;
these reads are for the tables and pages beside it.
"""

from __future__ import annotations

from whystream.jobs.analytics import input_drift
from whystream.jobs.clickhouse.sql import DEFAULT_DATABASE, ident, lit, ms_lit, rows

ALL = "all decisions"
SAMPLE = "sample"


def store_covers(client, model: str, start_ms: int, end_ms: int, database: str = DEFAULT_DATABASE) -> bool:
    """Whether the decision store holds every decision of `model` in the window [start minute, end):
    its first stored decision there is no later than the first explained one (which, with the
    store running, is itself stored). Both reads stay inside the window."""
    db, name = ident(database), lit(model)
    window = f"event_time >= toStartOfMinute({ms_lit(start_ms)}) AND event_time < {ms_lit(end_ms)}"
    found = rows(client, f"""
        SELECT
            (SELECT toUnixTimestamp64Milli(minOrNull(event_time)) FROM {db}.decisions
             WHERE model_name = {name} AND {window}) AS store_first,
            (SELECT toUnixTimestamp64Milli(minOrNull(event_time)) FROM {db}.explanation_ids
             WHERE model_name = {name} AND {window}) AS sample_first""")[0]
    if found["store_first"] is None:
        return False
    return found["sample_first"] is None or int(found["store_first"]) <= int(found["sample_first"])


def _per_version(every: list[dict], sample: list[dict]) -> list[dict]:
    """The store's rows of each version it has, the sample's of the others; each with its `source`."""
    stored = {r["model_version"] for r in every}
    return ([dict(r, source=ALL) for r in every]
            + [dict(r, source=SAMPLE) for r in sample if r["model_version"] not in stored])


def input_rows(client, model: str, start_ms: int, end_ms: int, database: str = DEFAULT_DATABASE) -> list[dict]:
    """input_drift's rows (model_version, feature, feature_index, n, weighted_n, effective_n,
    value_psi, missing_rate, reference_missing) from all decisions where the store covers the
    window, else from the sample; `source` says which."""
    sample = input_drift.input_drift(client, model, start_ms, end_ms, database)
    if not store_covers(client, model, start_ms, end_ms, database):
        return [dict(r, source=SAMPLE) for r in sample]
    return _per_version(input_drift.input_drift_all(client, model, start_ms, end_ms, database), sample)


def decision_rows(client, model: str, start_ms: int, end_ms: int, database: str = DEFAULT_DATABASE) -> list[dict]:
    """decision_drift's rows per version, from all decisions where the store covers the window, else
    from the sample; `source` says which, `counted_over` in words ('all 1,234 decisions',
    'explanations, weighted')."""
    sample = input_drift.decision_drift(client, model, start_ms, end_ms, database)
    every = input_drift.decision_drift_all(client, model, start_ms, end_ms, database) \
        if store_covers(client, model, start_ms, end_ms, database) else []
    out = _per_version(every, sample)
    for r in out:
        r["counted_over"] = f"all {int(r['n']):,} decisions" if r["source"] == ALL else "explanations, weighted"
    return sorted(out, key=lambda r: r["model_version"])


def input_source_line(rows_: list[dict]) -> str:
    """'input drift (value PSI, missing) counted over all 1,234 decisions', or over the sample;
    per version where there are several."""
    seen: dict[str, dict] = {}
    for r in rows_:
        seen.setdefault(r["model_version"], r)
    parts = [(f"all {int(r['n']):,} decisions" if r["source"] == ALL
              else "the sample of explanations, inclusion-weighted") + (f" (version {v})" if len(seen) > 1 else "")
             for v, r in sorted(seen.items())]
    return "input drift (value PSI, missing) counted over " + "; ".join(parts) if parts else ""
