"""Input drift beside attribution drift: did the data move, or did the reasons move?

The statistics are parameterised views of schemas/clickhouse/030_input_drift.sql
over aggregates the materialized views keep per minute (inclusion-weighted, so
they estimate all decisions, not only the explained ones):

- `input_drift(model, start, end)`: per model version and feature, PSI of the
  window's value histogram against the reference rows' on the reference's value
  bins (`value_psi`), the missing-value rate and the reference's;
- `decision_drift(model, start, end)`: per model version, PSI of the score
  histogram (`score_psi`), mean score, the decline rate (share on the adverse side
  of the threshold) and the reference's, and the adverse rate by the decision labels.

`input_drift_all` and `decision_drift_all` (migrations 074, 076) give the same
figures from the decision store, every decision once at weight 1;
jobs/analytics/drift_source.py picks between the two for a window.

The functions here read them (literal view arguments, as drift_sql does, so the
text also runs through a sink's query port), say why input drift is unavailable
for a version (registered before input references were kept), and lay the
figures beside the attribution drift rows that `whystream drift`, the console and the report show
(jobs/console/drift_page.py).
"""

from __future__ import annotations

import math

from whystream.jobs.analytics.drift_sql import time_lit
from whystream.jobs.clickhouse.sql import DEFAULT_DATABASE, ident, lit, rows
from whystream.models.input_reference import MISSING_REASON


def _window(model: str, start_ms: int, end_ms: int) -> str:
    return f"model = {lit(model)}, start = {time_lit(start_ms)}, end = {time_lit(end_ms)}"


def _floats(row: dict) -> dict:
    for key, value in row.items():
        if value in ("inf", "-inf", "nan"):  # through JSON (the sink's query port) they come as strings
            row[key] = float(value)
    return row


def input_drift(client, model: str, start_ms: int, end_ms: int, database: str = DEFAULT_DATABASE) -> list[dict]:
    """Rows of input_drift: model_version, feature, feature_index, n, weighted_n, effective_n,
    value_psi (NaN when no decision had a value), missing_rate, reference_missing."""
    sql = f"SELECT * FROM {ident(database)}.input_drift({_window(model, start_ms, end_ms)})"
    return [_floats(r) for r in rows(client, sql)]


def input_drift_all(client, model: str, start_ms: int, end_ms: int, database: str = DEFAULT_DATABASE) -> list[dict]:
    """input_drift's rows from every stored decision (the decision store, migration 076), not the
    explanations' weighted sample: n counts decisions (weighted_n and effective_n equal it); [] where
    the store holds none of the window. Redacted values are not counted, as in input_drift."""
    sql = f"SELECT * FROM {ident(database)}.input_drift_all({_window(model, start_ms, end_ms)})"
    return [_floats(r) for r in rows(client, sql)]


def decision_drift(client, model: str, start_ms: int, end_ms: int, database: str = DEFAULT_DATABASE) -> list[dict]:
    """Rows of decision_drift per model version: n, weighted_n, effective_n, mean_score,
    adverse_rate, decline_rate, score_psi, reference_mean_score, reference_decline (the
    reference figures NaN for a version without a score reference)."""
    sql = f"SELECT * FROM {ident(database)}.decision_drift({_window(model, start_ms, end_ms)})"
    return [_floats(r) for r in rows(client, sql)]


def decision_drift_all(client, model: str, start_ms: int, end_ms: int,
                       database: str = DEFAULT_DATABASE) -> list[dict]:
    """decision_drift's rows from every stored decision (the decision store, migrations 074 and 076), not
    the explanations' weighted sample; [] where the store holds none of the window."""
    sql = f"SELECT * FROM {ident(database)}.decision_drift_all({_window(model, start_ms, end_ms)})"
    return [_floats(r) for r in rows(client, sql)]


def versions_with_input_reference(client, model: str, database: str = DEFAULT_DATABASE) -> set[str]:
    return {r["model_version"] for r in rows(
        client, f"SELECT DISTINCT model_version FROM {ident(database)}.input_reference WHERE model_name = {lit(model)}")}


def unavailable(client, model: str, versions, database: str = DEFAULT_DATABASE) -> dict[str, str]:
    """{version: why input drift is unavailable} for the versions without an input reference."""
    have = versions_with_input_reference(client, model, database)
    return {v: MISSING_REASON for v in sorted(set(versions) - have)}


def beside(attribution_rows: list[dict], input_rows: list[dict]) -> list[dict]:
    """The attribution drift rows with the input figures of the same version and feature
    added (value_psi, missing_rate, reference_missing; None where there are none) and where
    they were counted (`input_source`: the input row's `source`, jobs/analytics/drift_source.py)."""
    by_key = {(r["model_version"], r["feature"]): r for r in input_rows}
    out = []
    for row in attribution_rows:
        found = by_key.get((row["model_version"], row["feature"]), {})
        out.append({**row, **{k: _number(found.get(k)) for k in ("value_psi", "missing_rate", "reference_missing")},
                    "input_source": found.get("source")})
    return out


def _number(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def pct(value) -> str:
    value = _number(value)
    return "-" if value is None else f"{value:.1%}"


def missing_cell(row: dict) -> str:
    """'2.0% (1.9%)': the window's missing rate and the reference's; '-' without one."""
    if row.get("missing_rate") is None:
        return "-"
    return f"{pct(row['missing_rate'])} ({pct(row.get('reference_missing'))})"


def decision_line(row: dict) -> str:
    """One line of a version's score and decline-rate shift, for the drift table's caption."""
    if _number(row.get("score_psi")) is None and _number(row.get("reference_mean_score")) is None:
        return (f"score mean {row['mean_score']:.4g}, adverse rate {pct(row['adverse_rate'])} "
                f"(no score reference: {MISSING_REASON})")
    return (f"score PSI {_number(row['score_psi']) or 0:.3f}, mean {row['mean_score']:.4g} "
            f"(ref {row['reference_mean_score']:.4g}); decline rate {pct(row['decline_rate'])} "
            f"(ref {pct(row['reference_decline'])}); adverse decisions {pct(row['adverse_rate'])}")
