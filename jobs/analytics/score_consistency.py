"""Score consistency in ClickHouse: how often a producer's score is not the model's own.

Workers check every explained decision's producer score against the registered
version's own score of its features (whystream/models/score_check.py) and flag
it on the ExplanationEvent (`score_mismatch`); `score_check_stats` (migration
071) counts them per model version and minute. Read here for `whystream drift`,
the console's overview and the report (jobs/console/overview.py) and the
drift monitor, which raises a `score_mismatch` alert (a
DriftAlert with feature SCORE_FEATURE) once the window's mismatch rate passes
`max_rate` with at least `min_checked` checked decisions.

The rate is inclusion-weighted (an estimate over all decisions: adverse ones
are always explained, the rest sampled); the plain share of checked
explanations is given beside it.
"""

from __future__ import annotations

from whystream.jobs.analytics.drift_rule import Judgement
from whystream.jobs.analytics.drift_sql import time_lit
from whystream.jobs.clickhouse.sql import DEFAULT_DATABASE, ident, lit, rows

STATISTIC = "score_mismatch"
SCORE_FEATURE = "(score)"  # the DriftAlert's feature for a score-consistency alert: no feature moved, the score
MAX_RATE = 0.01  # an alert when more than 1% of decisions (estimated) are off the model's score
MIN_CHECKED = 20


def score_consistency(client, model: str, start_ms: int, end_ms: int,
                      database: str = DEFAULT_DATABASE) -> list[dict]:
    """Per model version in [start, end): checked, mismatched (explanations), weighted_n,
    mismatched_weight, rate (weighted share mismatched), share (of the checked
    explanations), max_difference."""
    sql = f"""
        SELECT model_version, sum(n) AS checked, sum(mismatched) AS mismatched, sum(weight) AS weighted_n,
               sum(mismatched_weight) AS mismatched_weight, max(max_difference) AS max_difference
        FROM {ident(database)}.score_check_stats
        WHERE model_name = {lit(model)} AND minute >= toStartOfMinute(toDateTime64({time_lit(start_ms)}, 3, 'UTC'))
          AND minute < toDateTime64({time_lit(end_ms)}, 3, 'UTC')
        GROUP BY model_version ORDER BY model_version"""
    out = []
    for r in rows(client, sql):
        checked, weight = int(r["checked"]), float(r["weighted_n"])
        out.append({**r, "checked": checked, "mismatched": int(r["mismatched"]), "weighted_n": weight,
                    "max_difference": float(r["max_difference"]),
                    "rate": float(r["mismatched_weight"]) / weight if weight > 0 else 0.0,
                    "share": int(r["mismatched"]) / checked if checked else 0.0})
    return out


def judge(row: dict, max_rate: float = MAX_RATE, min_checked: int = MIN_CHECKED) -> Judgement | None:
    """The window's mismatch rate of one version against `max_rate`; None with too few checked."""
    if row["checked"] < min_checked:
        return None
    return Judgement(STATISTIC, row["rate"], max_rate, row["rate"] > max_rate)


def line(row: dict, max_rate: float = MAX_RATE) -> str:
    """`whystream drift`'s line for one version."""
    flag = judge(row, max_rate)
    text = (f"producer scores off the model's own: {row['rate']:.1%} of decisions (estimated; "
            f"{row['mismatched']:,} of {row['checked']:,} checked explanations), largest difference "
            f"{row['max_difference']:.3g}")
    if flag is not None and flag.above:
        text += f" [red bold]ALERT > {max_rate:.1%}[/]"
    return text
