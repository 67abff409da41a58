"""`whystream register` and `whystream models` through the real CLI: files the test
writes (models trained here, Parquet and CSV references, reason-code tables), every
bad input ending in one line that names the file and the column or count, and
nothing half-registered."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from support.cli import cli, write_csv, write_parquet
from support.objective_models import CATEGORICAL, FEATURES, make_rows, train
from whystream.models.registry import ModelRegistry

# End to end through the CLI (models trained, registries written, the installed command run): not a unit test.
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("byo")
    models = {}
    for objective in ("binary", "poisson", "multiclass"):
        path = root / f"{objective}.txt"
        train(objective).save_model(str(path))
        models[objective] = path
    X = make_rows(1500, 3)
    (root / "codes.json").write_text(json.dumps({"amount": {"code": "A1", "text": "Amount too high"},
                                                 "tenure": {"code": "T2", "text": "Customer too new"}}))
    return {"root": root, "models": models, "X": X, "parquet": write_parquet(root / "ref.parquet", X),
            "csv": write_csv(root / "ref.csv", X), "codes": root / "codes.json"}


def test_register_a_binary_model_with_a_parquet_reference_and_reason_codes(files, tmp_path):
    code, out = cli(tmp_path, "register", "credit", str(files["models"]["binary"]), "--reference",
                    str(files["parquet"]), "--threshold", "0.4", "--reason-codes", str(files["codes"]))
    assert code == 0, out
    model = ModelRegistry(tmp_path).load("credit")
    for line in (f"credit version {model.version}", "binary, explained in raw_margin", "features: 6",
                 "categorical: merchant", "reference rows: 1,500", f"stored in: {model.path}",
                 f"table {model.reason_codes_version}"):
        assert line in " ".join(out.split()), line
    assert model.categorical_features == CATEGORICAL and model.threshold == 0.4
    assert model.reason_codes[FEATURES.index("amount")] == ("A1", "Amount too high")
    assert model.reason_codes[FEATURES.index("velocity")] == ("velocity", "velocity")  # not in the table
    assert model.source == str(files["models"]["binary"])


def test_csv_and_parquet_references_of_the_same_rows_give_the_same_version(files, tmp_path):
    for ref in ("csv", "parquet"):
        assert cli(tmp_path / ref, "register", "claims", str(files["models"]["poisson"]), "--reference",
                   str(files[ref]))[0] == 0
    by_csv, by_parquet = (ModelRegistry(tmp_path / r).load("claims") for r in ("csv", "parquet"))
    assert by_csv.version == by_parquet.version
    np.testing.assert_array_equal(by_csv.reference_shap, by_parquet.reference_shap)
    assert by_csv.kind.output_space == "log_link" and not by_csv.has_threshold


def test_models_lists_versions_and_shows_one(files, tmp_path):
    cli(tmp_path, "register", "tiers", str(files["models"]["multiclass"]), "--reference", str(files["csv"]))
    cli(tmp_path, "register", "credit", str(files["models"]["binary"]), "--reference", str(files["csv"]),
        "--threshold", "0.5")
    cli(tmp_path, "register", "credit", str(files["models"]["binary"]), "--reference", str(files["csv"]),
        "--threshold", "0.6")
    registry = ModelRegistry(tmp_path)
    first, second = registry.versions("credit")
    code, out = cli(tmp_path, "models")
    assert code == 0
    lines = out.splitlines()
    assert any(first in line and "binary" in line and "latest" not in line for line in lines)
    assert any(second in line and "latest" in line for line in lines)
    assert any("tiers" in line and "multiclass (3 classes)" in line for line in lines)
    code, out = cli(tmp_path, "models", "tiers")
    assert code == 0 and "multiclass (3 classes), explained in softmax_logit" in " ".join(out.split())
    assert "threshold: none" in " ".join(out.split())
    assert cli(tmp_path, "models", "nope") == (2, f"whystream: error: no model 'nope' in registry {tmp_path}; "
                                                  "known: credit, tiers")
    code, out = cli(tmp_path, "models", "credit", "--version", "nosuch")
    assert code == 2 and out.startswith("whystream: error: model 'credit' has no version 'nosuch'")

    code, out = cli(tmp_path, "models", "--format", "json")
    listed = json.loads(out)
    assert code == 0 and [(m["model"], m["version"], m["latest"]) for m in listed] == [
        ("credit", first, False), ("credit", second, True), ("tiers", registry.latest("tiers"), True)]
    assert listed[0]["features"] == len(FEATURES) and listed[0]["reference_rows"] > 0
    code, out = cli(tmp_path, "models", "credit", "--format", "json")
    shown = json.loads(out)
    assert (shown["version"], shown["threshold"], shown["output_space"]) == (second, 0.6, "raw_margin")
    assert [f["feature"] for f in shown["features"]] == FEATURES  # the names producers send
    code, out = cli(tmp_path, "models", "credit", "--format", "csv")
    assert [r["feature"] for r in csv.DictReader(io.StringIO(out))] == FEATURES
    code, out = cli(tmp_path, "models", "credit")  # for a person: the details, then the features by name
    assert code == 0 and all(f in out for f in FEATURES) and "producers send them by these names" in out


def test_registering_the_same_model_twice_is_a_no_op(files, tmp_path):
    args = ("register", "credit", str(files["models"]["binary"]), "--reference", str(files["csv"]), "--threshold", "0.5")
    assert cli(tmp_path, *args)[0] == 0 and cli(tmp_path, *args)[0] == 0
    assert len(ModelRegistry(tmp_path).versions("credit")) == 1


def bad_inputs(files, tmp_path):
    """(name, argv after `register NAME`, expected words of the one-line error)."""
    X, binary = files["X"], str(files["models"]["binary"])
    text = files["models"]["binary"].read_text()
    (tmp_path / "truncated.txt").write_text(text[:len(text) // 2])
    (tmp_path / "damaged.txt").write_text(text.replace("num_leaves=", "num_leaves=x", 1))
    (tmp_path / "notes.txt").write_text("hello\n")
    write_csv(tmp_path / "few.csv", X[:999])
    write_csv(tmp_path / "missing.csv", X[:, 1:], FEATURES[1:])
    write_parquet(tmp_path / "extra.parquet", np.column_stack([X, X[:, 0]]), FEATURES + ["shoe_size"])
    pq.write_table(pa.table({**{n: X[:, j] for j, n in enumerate(FEATURES) if n != "amount"},
                             "amount": pa.array(["12.5"] * len(X))}), tmp_path / "strings.parquet")
    rows = list(csv.reader(open(files["csv"])))
    rows[7][2] = "abc"
    csv.writer(open(tmp_path / "text.csv", "w", newline="")).writerows(rows)
    fractional = X.copy()
    fractional[5, 0] = 2.5
    write_csv(tmp_path / "fraction.csv", fractional)
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "empty.parquet").write_bytes(b"PAR1")
    (tmp_path / "codes.csv").write_text("feature,code,text\nshoe_size,S1,Shoes\n")
    ref = ["--reference", str(files["csv"])]
    return [
        ("not a model", [str(tmp_path / "notes.txt"), *ref, "--threshold", "0.5"], "not a model whystream reads"),
        ("truncated model", [str(tmp_path / "truncated.txt"), *ref, "--threshold", "0.5"], "truncated"),
        ("damaged model", [str(tmp_path / "damaged.txt"), *ref, "--threshold", "0.5"], "LightGBM cannot load it"),
        ("no model file", [str(tmp_path / "nothing.txt"), *ref], "no such file"),
        ("no threshold", [binary, *ref], "needs --threshold"),
        ("threshold not a probability", [binary, *ref, "--threshold", "3"], "not a probability"),
        ("too few rows", [binary, "--reference", str(tmp_path / "few.csv"), "--threshold", "0.5"],
         "999 rows; at least 1,000"),
        ("missing column", [binary, "--reference", str(tmp_path / "missing.csv"), "--threshold", "0.5"],
         "missing column(s) merchant"),
        ("extra column", [binary, "--reference", str(tmp_path / "extra.parquet"), "--threshold", "0.5"],
         "column(s) shoe_size are not features"),
        ("text column", [binary, "--reference", str(tmp_path / "strings.parquet"), "--threshold", "0.5"],
         "column amount has type string"),
        ("text cell", [binary, "--reference", str(tmp_path / "text.csv"), "--threshold", "0.5"],
         f"column {FEATURES[2]}, line 8: 'abc' is not a number"),
        ("fractional category", [binary, "--reference", str(tmp_path / "fraction.csv"), "--threshold", "0.5"],
         "column merchant, row 6: 2.5 is not a category code"),
        ("empty csv", [binary, "--reference", str(tmp_path / "empty.csv"), "--threshold", "0.5"], "empty"),
        ("broken parquet", [binary, "--reference", str(tmp_path / "empty.parquet"), "--threshold", "0.5"],
         "not a readable Parquet file"),
        ("unknown feature in codes", [binary, *ref, "--threshold", "0.5", "--reason-codes",
                                      str(tmp_path / "codes.csv")], "'shoe_size' is not a feature of the model"),
    ]


def test_bad_input_ends_in_one_line_and_writes_nothing(files, tmp_path):
    registry = tmp_path / "registry"
    for name, argv, words in bad_inputs(files, tmp_path):
        code, out = cli(registry, "register", "credit", *argv)
        assert code == 2, (name, out)
        assert out.startswith("whystream: error: ") and words in out and "\n" not in out.strip(), (name, out)
        assert not registry.exists() or not any(registry.iterdir()), name  # nothing half-registered


def test_the_installed_command_prints_one_line_and_no_traceback(files, tmp_path):
    few = write_csv(tmp_path / "few.csv", files["X"][:10])
    result = subprocess.run([sys.executable, "-m", "whystream", "--registry", str(tmp_path / "r"), "register",
                             "credit", str(files["models"]["binary"]), "--reference", str(few), "--threshold", "0.5"],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 2
    assert result.stderr.strip() == f"whystream: error: reference {few}: 10 rows; at least 1,000 held-out rows are " \
                                    "needed for a SHAP reference and drift bins"
    assert "Traceback" not in result.stdout + result.stderr and not (tmp_path / "r").exists()


def test_a_linear_tree_model_is_refused_in_one_line(files, tmp_path):
    import lightgbm as lgb

    X = np.nan_to_num(files["X"])
    path = tmp_path / "linear.txt"
    lgb.train(dict(objective="regression", linear_tree=True, verbose=-1, num_threads=1),
              lgb.Dataset(X, X[:, 1], feature_name=FEATURES), num_boost_round=3).save_model(str(path))
    code, out = cli(tmp_path / "r", "register", "lin", str(path), "--reference", str(files["csv"]))
    assert code == 2 and "cannot be explained exactly: linear trees" in out
    assert not (tmp_path / "r").exists()


def test_an_mlflow_model_uri_from_a_real_local_store(files, tmp_path, monkeypatch):
    """whystream[mlflow]: a model logged with mlflow.lightgbm into a file store made here, registered
    by its models:/NAME/VERSION URI; a URI MLflow cannot resolve is one line."""
    import lightgbm as lgb
    import mlflow
    import mlflow.lightgbm

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for this to use a plain directory
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    booster = lgb.Booster(model_file=str(files["models"]["multiclass"]))
    with mlflow.start_run():
        mlflow.lightgbm.log_model(booster, name="model", registered_model_name="tiers")
    code, out = cli(tmp_path / "r", "register", "tiers", "models:/tiers/1", "--reference", str(files["parquet"]))
    assert code == 0, out
    model = ModelRegistry(tmp_path / "r").load("tiers")
    assert model.source == "models:/tiers/1" and model.kind.n_outputs == 3
    assert model.booster.model_to_string() == lgb.Booster(model_str=booster.model_to_string()).model_to_string()
    code, out = cli(tmp_path / "r", "register", "tiers", "models:/tiers/7", "--reference", str(files["parquet"]))
    assert code == 2 and out.startswith("whystream: error: models:/tiers/7: MLflow cannot load it")
    assert "\n" not in out.strip()


def test_register_challenge_and_promote_are_announced_on_models(files, tmp_path, fresh_topics):
    from whystream.kafka.reader import read_all

    flags = ["--broker", fresh_topics.broker, "--topic-prefix", fresh_topics.topic_prefix]
    model, ref = str(files["models"]["binary"]), str(files["parquet"])
    code, out = cli(tmp_path, *flags, "register", "credit", model, "--reference", ref, "--threshold", "0.4")
    assert code == 0 and "announced" in out, out
    code, out = cli(tmp_path, *flags, "register", "credit", model, "--reference", ref, "--threshold", "0.45",
                    "--challenger-of", "debit")
    assert code == 2 and "a challenger is a version of the model it challenges" in out
    code, out = cli(tmp_path, *flags, "register", "credit", model, "--reference", ref, "--threshold", "0.45",
                    "--challenger-of", "credit")
    assert code == 0, out
    registry = ModelRegistry(tmp_path)
    champion, challenger = registry.latest("credit"), registry.challenger("credit")
    assert challenger and challenger != champion
    code, out = cli(tmp_path, *flags, "promote", "credit", challenger)
    assert code == 0, out
    events = read_all(fresh_topics, fresh_topics.topic("models"), "ModelRegistered")
    assert [(e["version"], e["role"], e["challenger_of"], e["promoted"]) for e in events] == [
        (champion, "CHAMPION", None, False), (challenger, "CHALLENGER", "credit", False),
        (challenger, "CHAMPION", None, True)]
    assert registry.latest("credit") == challenger and registry.challenger("credit") is None
