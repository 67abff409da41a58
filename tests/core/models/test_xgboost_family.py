"""XGBoost boosters through `whystream register` (the real CLI): every objective whystream
translates, native categorical splits and missing values, DART, multiclass, JSON and
UBJSON files and an mlflow.xgboost URI; the translation routes every row as XGBoost does
(its own leaves, summed in float64, equal the kernel's raw score to the last bit) and
explains it as XGBoost's pred_contribs does (its float32 threshold rule: families/test_lgbtext.py);
damaged files end in one line with nothing written."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from support.cli import cli, write_csv, write_parquet
from support.objective_models import FEATURES, make_rows
from support.xgboost_models import MODELS, own, train
from whystream.models.families import xgboost as family
from whystream.models.registry import ModelRegistry
from whystream.treeshap import TreeShap

pytestmark = pytest.mark.integration  # models trained, registries written, the CLI run
F32 = 2.0 ** -24


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """Every model of support.xgboost_models, saved (JSON, DART and softmax as UBJSON) and
    registered through the CLI."""
    root = tmp_path_factory.mktemp("xgb")
    reference = write_parquet(root / "reference.parquet", make_rows(1200, 21))
    boosters = {}
    for name in MODELS:
        boosters[name] = booster = train(name)
        path = root / (f"{name}.ubj" if name in ("dart", "softmax") else f"{name}.json")
        booster.save_model(str(path))
        args = ["register", name, str(path), "--reference", str(reference)]
        code, out = cli(root / "registry", *(args + (["--threshold", "0.5"] if MODELS[name][2] == "binary" else [])))
        assert code == 0, out
        assert "family: xgboost (xgboost " in out
    return root, boosters


def tree_weights(gb: dict) -> list[float]:
    """DART's tree weights: beside the trees up to XGBoost 3.2 (booster "dart"), in the tree
    model since DART became gbtree's dropout (3.4)."""
    inner = gb["gbtree"]["model"] if gb["name"] == "dart" else gb["model"]
    return gb.get("weight_drop") or inner.get("weight_drop") or []


def xgboost_routing(booster, X):
    """Raw margins [n, K] from XGBoost's own routing (pred_leaf) and leaf values, summed in float64."""
    import xgboost as xgb

    from support.xgboost_models import TYPES

    model = json.loads(booster.save_raw("json"))
    learner = model["learner"]
    gb = learner["gradient_booster"]
    trees = (gb["gbtree"]["model"] if gb["name"] == "dart" else gb["model"])
    weights = tree_weights(gb) or [1.0] * len(trees["trees"])
    K = max(1, int(learner["learner_model_param"]["num_class"]))
    link = family.OBJECTIVES[learner["objective"]["name"]][1]
    raw = np.tile(family._margins(learner["learner_model_param"]["base_score"], link, K), (len(X), 1))
    dm = xgb.DMatrix(X, missing=np.nan, feature_names=FEATURES, feature_types=TYPES, enable_categorical=True)
    leaves = np.asarray(booster.predict(dm, pred_leaf=True)).reshape(len(X), -1).astype(int)
    for t, tree in enumerate(trees["trees"]):
        values = np.float32(tree["split_conditions"]).astype(float) * weights[t]
        raw[:, trees["tree_info"][t] if K > 1 else 0] += values[leaves[:, t]]
    return raw


@pytest.mark.parametrize("name", list(MODELS))
def test_each_objective_routes_and_explains_as_xgboost(registered, name):
    root, boosters = registered
    model = ModelRegistry(root / "registry").load(name)
    booster = boosters[name]
    assert model.family == "xgboost" and model.library.startswith("xgboost ")
    assert model.kind.objective == MODELS[name][2] and model.categorical_features == ["merchant"]
    X = make_rows(2000, 99)
    X[:6, 1] = [0.0, -0.0, 1e-30, -1e-30, 1e30, -1e30]  # zeros, extremes (XGBoost refuses inf and > 3.4e38)
    raw_own, contrib_own = own(booster, X)
    K = model.kind.n_outputs
    # routing: XGBoost's own leaves, summed in float64, are the translation's raw score to the last bits
    routed = xgboost_routing(booster, X)
    np.testing.assert_allclose(model.booster.predict(X, raw_score=True).reshape(len(X), K), routed, rtol=0,
                               atol=1e-12)
    worst = 0.0
    for k in range(K):
        kernel = TreeShap(model.booster, class_index=k if K > 1 else None)
        np.testing.assert_allclose(kernel.raw_score(X), routed[:, k], rtol=0, atol=1e-12)
        phi = np.column_stack([kernel.shap_values(X), np.full(len(X), kernel.expected_value)])
        # XGBoost's pred_contribs and margins are float32 sums of (trees + 1) terms: within that bound
        bound = 1e-6 + (kernel.n_trees + 1) * F32 * np.maximum(1, np.abs(contrib_own[:, k]).sum(axis=1))
        assert np.all(np.abs(phi - contrib_own[:, k]).max(axis=1) <= bound), name
        assert np.all(np.abs(routed[:, k] - raw_own[:, k]) <= bound), name
        worst = max(worst, float(np.abs(phi - contrib_own[:, k]).max()))
    assert worst < 1e-5, worst  # measured: 3e-7 .. 3e-6 (float32)
    print(f"{name}: max |kernel - pred_contribs| = {worst:.2g}")


def test_the_models_exercise_categorical_sets_missing_values_and_dart_weights(registered):
    """What the translation has to get right is in the test models (else the tests above prove less)."""
    _, boosters = registered
    splits = {"default_left": 0, "default_right": 0}
    for name in ("binary", "dart"):
        gb = json.loads(boosters[name].save_raw("json"))["learner"]["gradient_booster"]
        trees = (gb["gbtree"]["model"] if gb["name"] == "dart" else gb["model"])["trees"]
        for tree in trees:
            for node in tree.get("categories_nodes", []):
                splits["default_left" if tree["default_left"][node] else "default_right"] += 1
        if name == "dart":
            assert len(set(tree_weights(gb))) > 1  # trees of different weights
    assert splits["default_left"] and splits["default_right"], splits
    X = make_rows(100, 5)
    assert np.isnan(X).any() and len(set(X[~np.isnan(X[:, 0]), 0])) > 5


def test_a_translation_that_does_not_match_xgboost_is_refused(tmp_path, monkeypatch):
    """The check against XGBoost's own predictions is real: a base score off by 1e-3 (a seam of
    ours, patched) is refused in one line and nothing is written."""
    path = tmp_path / "m.json"
    train("regression", n=600, rounds=3).save_model(str(path))
    reference = write_csv(tmp_path / "ref.csv", make_rows(1000, 3))
    real = family._margins
    monkeypatch.setattr(family, "_margins", lambda *a: [m + 1e-3 for m in real(*a)])
    code, out = cli(tmp_path / "r", "register", "m", str(path), "--reference", str(reference))
    assert code == 2 and "differ from xgboost 3" in out and "\n" not in out.strip(), out
    assert not (tmp_path / "r").exists()


def damaged_files(tmp_path):
    good = train("binary", n=600, rounds=3)
    good.save_model(str(tmp_path / "good.json"))
    good.save_model(str(tmp_path / "good.ubj"))
    text, ubj = (tmp_path / "good.json").read_bytes(), (tmp_path / "good.ubj").read_bytes()
    (tmp_path / "truncated.json").write_bytes(text[:len(text) // 2])
    (tmp_path / "truncated.ubj").write_bytes(ubj[:len(ubj) // 3])
    (tmp_path / "random.bin").write_bytes(np.random.default_rng(0).bytes(5000))
    (tmp_path / "brace.ubj").write_bytes(ubj[:40] + np.random.default_rng(1).bytes(3000))
    (tmp_path / "not-trees.json").write_text(json.dumps({"learner": {"objective": "binary"}}))
    # a node's parent index made negative: XGBoost 3.2 dies of a segmentation fault loading it
    at = ubj.find(b"parents[$l#L") + len(b"parents[$l#L") + 8 + 4
    (tmp_path / "crashes.ubj").write_bytes(ubj[:at] + b"\xf3" + ubj[at + 1:])
    write_csv(tmp_path / "table.csv", make_rows(10, 1))
    return [("truncated.json", "XGBoost cannot load it, truncated or damaged"),
            ("truncated.ubj", "XGBoost cannot load it, truncated or damaged"),
            ("random.bin", "not a model whystream reads"),
            ("brace.ubj", "XGBoost cannot load it, truncated or damaged"),
            ("not-trees.json", "XGBoost cannot load it"),
            ("crashes.ubj", "XGBoost cannot load it, truncated or damaged (the loader died with signal 11)"),
            ("table.csv", "not a model whystream reads")]


def test_damaged_files_end_in_one_line_and_write_nothing(tmp_path):
    reference = write_csv(tmp_path / "ref.csv", make_rows(1000, 3))
    for name, words in damaged_files(tmp_path):
        code, out = cli(tmp_path / "r", "register", "m", str(tmp_path / name), "--reference", str(reference),
                        "--threshold", "0.5")
        assert code == 2 and out.startswith("whystream: error: ") and words in out, (name, out)
        assert "\n" not in out.strip(), (name, out)
        assert not (tmp_path / "r").exists(), name
    # the installed command too: one line on stderr, no traceback, no XGBoost warning
    run = subprocess.run([sys.executable, "-m", "whystream", "--registry", str(tmp_path / "r"), "register", "m",
                          str(tmp_path / "crashes.ubj"), "--reference", str(reference), "--threshold", "0.5"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "r").exists()


def test_an_mlflow_xgboost_uri_from_a_real_local_store(tmp_path, monkeypatch):
    """whystream[mlflow]: a booster logged with mlflow.xgboost (UBJSON inside the model) registered
    by its models:/ URI: the same version as the file itself."""
    import mlflow
    import mlflow.xgboost

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    booster = train("softprob", n=600, rounds=3)
    with mlflow.start_run():
        mlflow.xgboost.log_model(booster, name="model", registered_model_name="tiers", pip_requirements=["xgboost"])
    booster.save_model(str(tmp_path / "tiers.json"))
    reference = write_csv(tmp_path / "ref.csv", make_rows(1000, 3))
    code, out = cli(tmp_path / "r", "register", "tiers", "models:/tiers/1", "--reference", str(reference))
    assert code == 0, out
    via_mlflow = ModelRegistry(tmp_path / "r").load("tiers")
    assert via_mlflow.family == "xgboost" and via_mlflow.source == "models:/tiers/1"
    code, out = cli(tmp_path / "r", "register", "tiers", str(tmp_path / "tiers.json"), "--reference", str(reference))
    assert code == 0 and ModelRegistry(tmp_path / "r").load("tiers").version == via_mlflow.version, out


@pytest.mark.parametrize("objective", ["reg:logistic", "binary:logitraw", "reg:absoluteerror", "reg:pseudohubererror",
                                       "reg:quantileerror", "reg:squaredlogerror", "rank:pairwise", "rank:ndcg"])
def test_the_other_objectives_translate_to_xgboosts_margins_and_predictions(objective):
    import lightgbm as lgb
    import xgboost as xgb

    X = make_rows(1000, 4)[:, 1:]  # numeric features only
    s = np.nan_to_num(X[:, 0]) - np.nan_to_num(X[:, 1])
    y = {"reg:logistic": 1 / (1 + np.exp(-s)), "reg:squaredlogerror": np.exp(s)}.get(
        objective, (s > 0) + (s > 1.0) if objective.startswith(("rank", "binary")) else 3 * s).astype(float)
    if objective == "binary:logitraw":
        y = (y > 0).astype(float)
    data = xgb.DMatrix(X, y, group=[50] * 20 if objective.startswith("rank") else None)
    extra = {"quantile_alpha": 0.3} if objective == "reg:quantileerror" else {}
    booster = xgb.train({"objective": objective, "max_depth": 3, "nthread": 1, **extra}, data, 8)
    text, _ = family.translate(json.loads(booster.save_raw("json")), objective)
    translated = lgb.Booster(model_str=text)
    dm = xgb.DMatrix(X)
    margin, prediction = booster.predict(dm, output_margin=True), booster.predict(dm)
    contrib = booster.predict(dm, pred_contribs=True)
    bound = 1e-6 + 9 * F32 * np.maximum(1, np.abs(contrib).sum(axis=1))  # float32 sums of 8 trees + base
    assert np.all(np.abs(translated.predict(X, raw_score=True) - margin) <= bound)
    assert np.all(np.abs(translated.predict(X) - prediction) <= 2 * bound * np.maximum(1, np.abs(prediction)))
    assert np.all(np.abs(TreeShap(translated).shap_values(X) - contrib[:, :-1]).max(axis=1) <= bound)


def test_without_the_extra_and_with_unusable_names_it_is_one_line(tmp_path, monkeypatch):
    from whystream.errors import WhystreamError
    from whystream.models import families

    booster = train("regression", n=600, rounds=2)
    booster.save_model(str(tmp_path / "m.json"))
    model = json.loads((tmp_path / "m.json").read_text())
    model["learner"]["feature_names"][1] = "amount in euro"
    with pytest.raises(WhystreamError, match="'amount in euro' cannot be a LightGBM feature name"):
        family.translate(model, "m.json")
    model["learner"]["gradient_booster"]["name"] = "gblinear"
    with pytest.raises(WhystreamError, match="an XGBoost gblinear model; only tree boosters"):
        family.translate(model, "m.json")
    monkeypatch.setitem(sys.modules, "xgboost", None)  # as if whystream[xgboost] were not installed
    with pytest.raises(WhystreamError, match=r"an XGBoost model; it needs the optional extra: pip install 'whystream\[xgboost\]'"):
        families.load(str(tmp_path / "m.json"))
