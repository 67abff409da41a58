"""Reason-code tables (CSV and JSON, versioned by content) and the principal reasons of
adverse decisions: at most four, only features that pushed toward the adverse outcome,
strongest first, with the table's code and text (the feature's name without one)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whystream.errors import WhystreamError
from whystream.explanations.records import principal_reasons, top_reasons, toward_sign
from whystream.models.reason_codes import MAX_PRINCIPAL_REASONS, load_reason_codes

FEATURES = ["income", "utilisation", "tenure", "inquiries", "delinquencies", "age_of_file"]


class Model:
    """What principal_reasons needs of a RegisteredModel."""

    def __init__(self, codes=(), direction=1):
        self.feature_names, self.reason_codes, self.adverse_direction = FEATURES, codes, direction

    def feature_index(self):
        return {f: i for i, f in enumerate(FEATURES)}


def test_csv_and_json_tables_of_the_same_content_have_the_same_version(tmp_path):
    (tmp_path / "codes.csv").write_text("feature,code,text\nutilisation,R07,Balances too high\n"
                                        "tenure , R12 ,Time on file too short\n")
    (tmp_path / "codes.json").write_text(json.dumps({"tenure": {"code": "R12", "text": "Time on file too short"},
                                                     "utilisation": {"code": "R07", "text": "Balances too high"}}))
    (tmp_path / "list.json").write_text(json.dumps([{"feature": "utilisation", "code": "R07",
                                                     "text": "Balances too high"},
                                                    {"feature": "tenure", "code": "R12",
                                                     "text": "Time on file too short"}]))
    tables = [load_reason_codes(tmp_path / f, FEATURES) for f in ("codes.csv", "codes.json", "list.json")]
    assert len({t.version for t in tables}) == 1
    assert tables[0].entries == (("utilisation", "R07", "Balances too high"), ("tenure", "R12", "Time on file too short"))
    (tmp_path / "other.csv").write_text("feature,code,text\nutilisation,R08,Balances too high\n")
    assert load_reason_codes(tmp_path / "other.csv", FEATURES).version != tables[0].version


@pytest.mark.parametrize("name, content, words", [
    ("a.csv", "feature,code,text\nshoe_size,S1,Shoes\n", "entry 1: 'shoe_size' is not a feature"),
    ("b.csv", "feature,code,text\nincome,,Income\n", "entry 1 (income): the code is empty"),
    ("c.csv", "feature,code,text\nincome,A,x\nincome,B,y\n", "'income' is listed twice"),
    ("d.csv", "name,reason\nincome,A\n", "needs the header feature,code,text"),
    ("e.csv", "feature,code,text\n", "the table is empty"),
    ("f.json", "{not json", "not JSON"),
    ("g.json", "[1, 2]", "expected an object"),
])
def test_a_bad_table_is_one_line_naming_the_file(tmp_path, name, content, words):
    (tmp_path / name).write_text(content)
    with pytest.raises(WhystreamError, match="reason codes .*" + words.replace("(", r"\(").replace(")", r"\)")):
        load_reason_codes(tmp_path / name, FEATURES)


shap_rows = st.lists(st.one_of(st.floats(-5, 5), st.just(0.0)), min_size=len(FEATURES), max_size=len(FEATURES))


@settings(max_examples=300, deadline=None)
@given(shap_rows, st.sampled_from([1, -1]), st.booleans())
def test_principal_reasons_are_the_strongest_adverse_factors_at_most_four(row, direction, with_table):
    shap = np.asarray(row)
    codes = tuple((f"C{i}", f"text {i}") for i in range(len(FEATURES))) if with_table else ()
    model = Model(codes, direction)
    values = np.arange(len(FEATURES), dtype=float)
    reasons = principal_reasons(model, top_reasons(FEATURES, values, shap, toward_sign(model, True)))
    pushing = [j for j in range(len(FEATURES)) if direction * shap[j] > 0]
    assert len(reasons) == min(MAX_PRINCIPAL_REASONS, len(pushing))
    toward = [direction * r["shap"] for r in reasons]
    assert all(t > 0 for t in toward) and toward == sorted(toward, reverse=True)
    chosen = {FEATURES.index(r["feature"]) for r in reasons}
    left = set(pushing) - chosen  # nothing left out pushes harder than what was chosen
    assert all(direction * shap[j] <= min(toward) for j in left) if reasons else not pushing
    for r in reasons:
        j = FEATURES.index(r["feature"])
        assert (r["code"], r["text"]) == (codes[j] if with_table else (r["feature"], r["feature"]))
        assert r["shap"] == shap[j] and r["value"] == values[j] and not math.isnan(r["value"])
