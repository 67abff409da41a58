"""`whystream compare NAME`: how a challenger explains the champion's live decisions.

Workers explain every explained decision of a model's champion with its
challenger too (streams/control/shadow.py); the sink writes both explanations, and the
ClickHouse views of migration 041 pair them by `champion_prediction_id`:

- `champion_challenger`: per champion and challenger version, the decisions
  both explained, how often their top reason is the same feature, and the
  challenger's score minus the champion's (mean, mean absolute, largest);
- `champion_challenger_features`: per feature, both models' mean attribution
  and mean |attribution| over those decisions.

`comparison(client, name)` reads both, for the CLI and the HTML report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from whystream.jobs.clickhouse.sql import DEFAULT_DATABASE, ident, lit, rows


@dataclass
class Comparison:
    summaries: list[dict] = field(default_factory=list)  # rows of champion_challenger
    features: list[dict] = field(default_factory=list)  # rows of champion_challenger_features, largest first


def comparison(client, name: str, database: str = DEFAULT_DATABASE) -> Comparison:
    """The champion vs challenger comparison of model `name` (empty when nothing was shadowed)."""
    db = ident(database)
    summaries = rows(client, f"SELECT * FROM {db}.champion_challenger WHERE model_name = {lit(name)} "
                             "ORDER BY decisions DESC, champion_version, challenger_version")
    features = rows(client, f"SELECT * FROM {db}.champion_challenger_features WHERE model_name = {lit(name)} "
                            "ORDER BY champion_version, challenger_version, "
                            "greatest(champion_mean_abs_shap, challenger_mean_abs_shap) DESC, feature")
    return Comparison(summaries, features)
