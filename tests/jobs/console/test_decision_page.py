"""The decision page's pieces without a browser: the waterfall's labels (cut on the axis, whole
on hover, never merged by the categorical axis) and an ExplanationEvent drawn as a stored row."""

from __future__ import annotations

import datetime as dt

from whystream.jobs.console.decision_page import FEATURE_CHARS, contributions, decision_section, event_row


def test_long_feature_labels_are_cut_on_the_axis_whole_on_hover_and_never_merged():
    long = "merchant_category_risk_score_from_the_bureau"
    row = {"features": [long + "_a", long + "_b", "amount", "tenure"],
           "feature_values": [0.0333309268, 0.0333309268, 11.77112345, None], "shap": [-0.4, -0.3, 0.5, 0.1],
           "redacted_features": ["tenure"]}
    shown = contributions(row)
    axis, hover, shap = zip(*shown)
    assert shap == (0.5, -0.4, -0.3, 0.1)  # largest |SHAP| first
    assert axis[0] == "amount = 11.77" and hover[0] == "amount = 11.7711"
    assert axis[1].startswith(long[:FEATURE_CHARS - 1] + "…") and axis[1].endswith("= 0.03333")
    assert len(set(axis)) == len(axis)  # two names cut alike stay two bars
    assert hover[1] == f"{long}_a = 0.0333309" and hover[2] == f"{long}_b = 0.0333309"
    assert axis[3] == "tenure = redacted" and all(len(a) <= 40 for a in axis)


def test_an_explanation_computed_now_draws_like_a_stored_one_and_says_so():
    event = {"prediction_id": "p-<1>", "model_name": "credit", "model_version": "v1", "explainer": "whystream-treeshap",
             "explainer_version": "1.0.0", "event_time": dt.datetime(2026, 12, 7, 3, 0, tzinfo=dt.timezone.utc),
             "explained_at": 1796612460000, "output_space": "raw_margin", "base_value": -1.0, "raw_score": -0.5,
             "attributions": [{"feature": "amount", "value": 20.5, "shap": 0.7},
                              {"feature": "tenure", "value": 3.0, "shap": -0.2}],
             "principal_reasons": [], "reason_codes_version": None, "score": 0.3775, "decision": "approve",
             "threshold": 0.5, "sampling_reason": "ON_DEMAND", "inclusion_weight": 1.0, "stratum": "web",
             "source": "LIVE", "latency_ms": 5.0, "worker": "w", "explained_class": None, "redacted_features": [],
             "role": None, "champion_prediction_id": None,
             "adverse_reasons": [{"feature": "amount", "value": 20.5, "shap": 0.7}], "received_at": None,
             "model_score": 0.3775, "score_mismatch": False, "features_source": "store"}
    row = event_row(event)
    assert row["event_time_ms"] == 1796612400000 and row["explained_at_ms"] == 1796612460000
    assert (row["features"], row["shap"], row["adverse_features"]) == (["amount", "tenure"], [0.7, -0.2], ["amount"])
    html = decision_section(row, stored=False)
    assert "id='explained-now'" in html and "the decision store" in html and "Computed now and not stored" in html
    assert "p-&lt;1&gt;" in html and "p-<1>" not in html  # producer text escaped
    assert "Recompute now" not in html and "not part of any estimate" in html
