"""What the CLI prints, without a stack: the `--format` renderer (whystream/cli/output.py),
a trailing FORMAT clause of `whystream sql`, model names that are never guessed, the
project's home found from any subdirectory, one explanation for a person, and the
demo's lines when piped."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from whystream.cli.common import model_name
from whystream.cli.explanation_view import show
from whystream.cli.output import Format, emit, output_format, utc_ms
from whystream.config import Settings
from whystream.errors import ConfigError, WhystreamError
from whystream.jobs.demo import LEGEND, PlainProgress, heading, showcase

LONG = "acme-merchant-with-a-very-long-name-" * 4  # wider than any terminal column at 80
RECORDS = [{"merchant": LONG, "score": 0.123456789, "at": dt.datetime(2026, 12, 7, 0, 17, 27), "codes": [1, 2],
            "missing": float("nan"), "flag": True},
           {"merchant": "b", "score": 2.0, "at": None, "codes": [], "missing": None, "flag": False}]


def printed(capsys, fmt, records=RECORDS, **kwargs) -> str:
    emit(records, fmt, **kwargs)
    return capsys.readouterr().out


def test_json_is_one_document_with_every_value_whole(capsys):
    parsed = json.loads(printed(capsys, Format.json))
    assert parsed[0]["merchant"] == LONG and parsed[0]["score"] == 0.123456789
    assert parsed[0]["at"] == "2026-12-07T00:17:27+00:00" and parsed[0]["missing"] is None  # NaN is not JSON
    assert parsed[0]["codes"] == [1, 2] and parsed[1]["flag"] is False


def test_csv_reads_back_with_a_header(capsys):
    rows = list(csv.DictReader(io.StringIO(printed(capsys, Format.csv))))
    assert [r["merchant"] for r in rows] == [LONG, "b"]
    assert rows[0]["score"] == "0.123456789" and rows[0]["missing"] == "" and json.loads(rows[0]["codes"]) == [1, 2]


def test_a_piped_table_is_never_cut_and_carries_no_escape_codes(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    out = printed(capsys, Format.table, title="a title")
    assert "\x1b" not in out and "…" not in out
    body = [line for line in out.splitlines() if line.startswith("│")]
    assert len(body) == 2 and LONG in body[0]  # one row a line, the long cell whole
    assert "0.123457" in body[0] and "yes" in body[0]  # rounded for a person only


WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ0123456789-_.:/@", min_size=1, max_size=300)
ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)


def captured(records, fmt) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        emit(records, fmt)
    return out.getvalue()


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(WORDS, st.floats(), ANY_TEXT), min_size=1, max_size=6))
def test_every_value_survives_every_format(rows):
    records = [{"name": name, "x": x, "note": note} for name, x, note in rows]
    table = [line for line in captured([{"name": r["name"], "x": r["x"]} for r in records], Format.table).splitlines()
             if line.startswith("│")]
    assert [line.split("│")[1].strip() for line in table] == [r["name"] for r in records]  # whole, one a line
    back = json.loads(captured(records, Format.json))
    assert [b["note"] for b in back] == [r["note"] for r in records]
    assert [b["x"] for b in back] == [x if math.isfinite(x) else None for x in (r["x"] for r in records)]
    read = list(csv.DictReader(io.StringIO(captured(records, Format.csv), newline="")))
    assert [(r["name"], r["note"]) for r in read] == [(r["name"], r["note"]) for r in records]


def test_a_table_on_a_terminal_fits_its_width_and_folds_instead_of_cutting(monkeypatch):
    buffer = io.StringIO()
    monkeypatch.setattr("whystream.cli.output.stdout_console",
                        lambda: Console(file=buffer, width=60, force_terminal=True, color_system=None))
    emit(RECORDS, Format.table)
    lines = buffer.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 60 and "…" not in buffer.getvalue()
    assert "".join(line.split("│")[1].strip() for line in lines if line.startswith("│")).startswith(LONG)


def test_sql_answers_a_trailing_format_clause_with_the_same_format(capsys):
    assert output_format("SELECT 1 AS a FORMAT CSV", None) == ("SELECT 1 AS a", Format.csv)
    assert "--format csv" in capsys.readouterr().err
    assert output_format("select 1 format JSONEachRow;", None) == ("select 1", Format.json)
    assert output_format("SELECT 'x FORMAT CSV'", None) == ("SELECT 'x FORMAT CSV'", Format.table)  # a literal
    with pytest.raises(WhystreamError, match="--format"):
        output_format("SELECT 1 FORMAT Parquet", None)
    with pytest.raises(WhystreamError, match="disagree"):
        output_format("SELECT 1 FORMAT CSV", Format.json)


def test_a_model_name_is_checked_and_never_guessed():
    assert model_name("credit", ["credit", "fraud"], "registry r") == "credit"
    assert model_name(None, ["credit"], "registry r") == "credit"  # the only one
    with pytest.raises(WhystreamError, match=r"no model 'nosuch' in registry r; known: credit, fraud"):
        model_name("nosuch", ["credit", "fraud"], "registry r")
    with pytest.raises(WhystreamError, match=r"--model is required: registry r holds credit, fraud"):
        model_name(None, ["credit", "fraud"], "registry r")
    with pytest.raises(WhystreamError, match="no model in registry r"):
        model_name(None, [], "registry r")


def test_the_home_is_found_from_any_subdirectory_or_the_error_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("WHYSTREAM_HOME", raising=False)
    monkeypatch.delenv("WHYSTREAM_BROKER", raising=False)
    monkeypatch.delenv("WHYSTREAM_REGISTRY", raising=False)
    deep = tmp_path / "project" / "notebooks" / "week1"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    with pytest.raises(ConfigError) as missing:
        Settings.load().require("broker")
    assert f"looked for {deep / 'var' / 'stack.env'}, {deep.parent / 'var' / 'stack.env'}" in str(missing.value)
    assert "\n" not in str(missing.value)

    (tmp_path / "project" / "var" / "registry").mkdir(parents=True)
    found = Settings.load()
    assert found.home == tmp_path / "project" / "var" and found.registry == found.home / "registry"
    (tmp_path / "project" / "var" / "stack.env").write_text("WHYSTREAM_BROKER=127.0.0.1:9\n")
    assert Settings.load().broker == "127.0.0.1:9"
    assert Settings.load(home=tmp_path / "elsewhere").broker is None  # --home wins over the walk


def explanation(**changes) -> dict:
    features = ["amount", "ip_risk", "tenure", "merchant"]
    shap = [0.2, 2.5, -0.7, 0.0]
    event = {"prediction_id": "p-1", "model_name": "credit", "model_version": "6d8330c99936",
             "explainer": "whystream-treeshap", "explainer_version": "1.0.0", "event_time": 1796603078576,
             "explained_at": 1796603078676, "output_space": "raw_margin", "base_value": -3.0,
             "raw_score": -3.0 + sum(shap), "attributions": [{"feature": f, "value": v, "shap": s} for f, v, s in
                                                            zip(features, [1250.0, 91.2, None, 3.0], shap)],
             "top_reasons": [], "score": 0.2689, "decision": "decline", "threshold": 0.25,
             "sampling_reason": "ADVERSE", "inclusion_weight": 1.0, "stratum": "ecom", "source": "LIVE",
             "redis_available": True, "latency_ms": 100.0, "worker": "w-1", "explained_class": None,
             "principal_reasons": [{"code": "R07", "text": "IP address of high risk", "feature": "ip_risk",
                                    "value": 91.2, "shap": 2.5}],
             "reason_codes_version": "v3", "redacted_features": ["tenure"], "role": "CHAMPION",
             "champion_prediction_id": None, "request_id": None,
             "adverse_reasons": [{"feature": "ip_risk", "value": 91.2, "shap": 2.5},
                                 {"feature": "amount", "value": 1250.0, "shap": 0.2}],
             "requested_by": None, "received_at": 1796603078600, "model_score": 0.2689, "score_mismatch": False,
             "features_source": None}
    return {**event, **changes}


def test_one_explanation_for_a_person(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    show(explanation())
    out = capsys.readouterr().out
    text = " ".join(out.split())
    assert "decision p-1: decline (score 0.2689 vs threshold 0.25" in text
    assert "raw score -1 in raw_margin = probability 0.2689" in text  # sigmoid(-1)
    assert "threshold -1.09861 in raw_margin (the producer's 0.25): the raw score is above it" in text  # logit
    assert "2026-12-07 00:24:38.576 UTC" in text and "1796603078576" not in text  # a time, not epoch ms
    assert "R07" in text and "IP address of high risk" in text and "exact TreeSHAP" in text
    rows = [line.split("│")[1].strip() for line in out.splitlines() if line.count("│") == 5]
    assert rows == ["ip_risk", "tenure", "amount", "merchant"]  # largest |SHAP| first
    assert "redacted" in next(line for line in out.splitlines() if "│ tenure" in line)
    assert "\x1b" not in out and "…" not in out
    assert "model score 0.2689, the registered version's own score of these features (producer 0.2689): " \
           "matches the producer's" in text
    assert "explained 76 ms after broker receipt" in text and "features from the decision as the worker" in text
    adverse = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.count("│") == 4]
    assert adverse == [["ip_risk", "91.2", "+2.5000"], ["amount", "1250", "+0.2000"]]


def test_an_approval_names_what_almost_declined_it_and_a_score_mismatch(capsys):
    show(explanation(decision="approve", score=0.1, principal_reasons=[], model_score=0.2689, score_mismatch=True,
                     features_source="store", received_at=None,
                     adverse_reasons=[{"feature": "tenure", "value": None, "shap": 0.7}]))
    out = capsys.readouterr().out
    text = " ".join(out.split())
    assert "(producer 0.1): MISMATCH: the producer's score is not the model's own" in text
    assert "features from the decision store" in text and "broker receipt" not in text
    assert "what almost declined it" in text
    [row] = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.count("│") == 4]
    assert row == ["tenure", "redacted", "+0.7000"]
    old = explanation(model_score=None, adverse_reasons=[])  # written before ExplanationEvent v4
    show(old)
    text = " ".join(capsys.readouterr().out.split())
    assert "model score not checked" in text and "adverse reasons: none" in text


def test_one_explanation_as_csv_is_a_row_per_feature_after_its_own_facts(capsys):
    from whystream.cli.explanation_view import CSV_COLUMNS, rows

    emit(rows(explanation()), Format.csv, CSV_COLUMNS)
    read = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert list(read[0]) == CSV_COLUMNS
    assert [r["feature"] for r in read] == ["ip_risk", "tenure", "amount", "merchant"]  # largest |SHAP| first
    assert [r["rank"] for r in read] == ["1", "2", "3", "4"]
    assert {r["prediction_id"] for r in read} == {"p-1"} and {r["decision"] for r in read} == {"decline"}
    assert {r["event_time"] for r in read} == {"2026-12-07T00:24:38.576Z"}  # ISO 8601 UTC, not epoch ms
    ip, tenure, amount, merchant = read
    assert (ip["value"], ip["shap"], ip["direction"], ip["reason_code"], ip["reason_text"], ip["reason_rank"],
            ip["adverse_rank"]) == ("91.2", "2.5", "higher score", "R07", "IP address of high risk", "1", "1")
    assert (tenure["value"], tenure["redacted"], tenure["direction"]) == ("", "True", "lower score")  # by policy
    assert (amount["reason_code"], amount["adverse_rank"], amount["redacted"]) == ("", "2", "False")
    assert merchant["direction"] == "none"
    total = float(ip["base_value"]) + sum(float(r["shap"]) for r in read)
    assert total == pytest.approx(float(ip["raw_score"]))  # the rows add up, as the explanation does


def test_a_fallback_explanation_says_what_it_is(capsys):
    show(explanation(source="FALLBACK", output_space="identity", principal_reasons=[]))
    out = " ".join(capsys.readouterr().out.split())
    assert "FALLBACK, approximation (Saabas path attribution)" in out and "probability" not in out


def test_utc_ms_reads_epoch_milliseconds_and_datetimes():
    assert utc_ms(0) == "1970-01-01T00:00:00.000Z"
    assert utc_ms(dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)) == "2026-01-02T00:00:00.000Z"


def test_the_demo_prints_whole_lines_when_piped_and_showcases_exact_explanations():
    buffer = io.StringIO()
    console = Console(file=buffer, width=80, soft_wrap=True)  # not a terminal, as when piped or logged
    title = "a few explanations from the `explanations` topic (top reasons: feature, value, SHAP)"
    heading(console, title)
    console.print(LEGEND, soft_wrap=True)

    class Task:
        def __init__(self, description, completed, total, note):
            self.description, self.completed, self.total, self.fields = description, completed, total, {"note": note}

    class Progress:
        tasks = [Task("consumed by the worker", 50_003, 50_003, "dead letters 3"),
                 Task("explained", 9_000, None, "priority 8,000 · sampled 1,000 · fallbacks 0")]

    PlainProgress(console).show(Progress(), force=True)
    lines = buffer.getvalue().splitlines()
    assert lines[0] == f"── {title} ──" and lines[1] == LEGEND and "fallback:" in LEGEND
    assert lines[2] == ("consumed by the worker 50,003/50,003 (dead letters 3); explained 9,000 "
                        "(priority 8,000 · sampled 1,000 · fallbacks 0)")
    explained = [{"sampling_reason": "ADVERSE", "source": "FALLBACK", "prediction_id": "a"},
                 {"sampling_reason": "ADVERSE", "source": "LIVE", "prediction_id": "b"},
                 {"sampling_reason": "RESERVOIR", "source": "CACHE", "prediction_id": "c"},
                 {"sampling_reason": "ADVERSE", "source": "CACHE", "prediction_id": "d"}]
    assert [e["prediction_id"] for e in showcase(explained)] == ["b", "d", "c"]
