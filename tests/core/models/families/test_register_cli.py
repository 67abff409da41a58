"""scikit-learn and CatBoost models through `whystream register` (the real CLI), as a
credit team hands them over: a RandomForest classifier (output_space probability: a
threshold in (0, 1) required, the near-threshold band in probability units), a
HistGradientBoosting classifier with missing values and a categorical feature, and a
CatBoost model with a one-hot categorical, each stored, reloaded and explained as its
library does; damaged files of each family end in one line with nothing written."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from catboost import CatBoostClassifier
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

from support.cli import cli, write_csv
from support.objective_models import FEATURES, make_rows, target
from whystream.models.registry import ModelRegistry
from whystream.treeshap import TreeShap

pytestmark = pytest.mark.integration  # models trained, registries written, the CLI run


def _frame(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    X = make_rows(n, seed)
    return pd.DataFrame(X, columns=FEATURES), target("binary", X, seed + 1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Each family's saved model (the file a data scientist hands over) and a reference file."""
    d = tmp_path_factory.mktemp("families")
    frame, y = _frame(1200, 0)
    forest = RandomForestClassifier(25, max_depth=6, random_state=0, n_jobs=1).fit(frame, y)
    sio.dump(forest, d / "forest.skops")
    hgb = HistGradientBoostingClassifier(max_iter=20, categorical_features=["merchant"], random_state=0).fit(frame, y)
    sio.dump(hgb, d / "hgb.skops")
    cat = CatBoostClassifier(iterations=20, depth=4, one_hot_max_size=10, verbose=0, random_seed=0, thread_count=1,
                             allow_writing_files=False)
    cat.fit(frame.assign(merchant=frame.merchant.fillna(-1).astype(int)), y, cat_features=["merchant"])
    cat.save_model(str(d / "cat.cbm"))
    rows = make_rows(1000, 7)
    rows[:, 0] = np.nan_to_num(rows[:, 0], nan=3.0)  # CatBoost's categorical codes: integers
    return {"dir": d, "reference": write_csv(d / "ref.csv", rows), "rows": rows,
            "models": {"forest": forest, "hgb": hgb, "cat": cat}}


def test_a_random_forest_classifier_is_registered_in_probability_space(files, tmp_path):
    registry = tmp_path / "r"
    model_file, reference = str(files["dir"] / "forest.skops"), str(files["reference"])
    code, out = cli(registry, "register", "credit", model_file, "--reference", reference)
    assert code == 2 and "needs --threshold" in out and "\n" not in out.strip(), out
    code, out = cli(registry, "register", "credit", model_file, "--reference", reference, "--threshold", "1.5")
    assert code == 2 and "not a probability in (0, 1)" in out and not registry.exists(), out
    code, out = cli(registry, "register", "credit", model_file, "--reference", reference, "--threshold", "0.4")
    assert code == 0 and "explained in probability" in out and "family: sklearn (scikit-learn " in out, out

    model = ModelRegistry(registry).load("credit")
    assert (model.family, model.kind.output_space, model.kind.probability, model.score_scale) == (
        "sklearn", "probability", True, 1.0)
    rows = files["rows"]
    kernel = TreeShap(model.booster)
    forest = files["models"]["forest"]
    proba = forest.predict_proba(pd.DataFrame(rows, columns=FEATURES))[:, 1]
    np.testing.assert_allclose(kernel.raw_score(rows), proba, rtol=0, atol=1e-12)  # the raw score IS P(class 1)
    phi = kernel.shap_values(rows)
    np.testing.assert_allclose(phi.sum(axis=1) + kernel.expected_value, proba, rtol=0, atol=1e-12)
    assert np.abs(phi).max() > 0.01


@pytest.mark.parametrize("name, family, space", [("hgb", "sklearn", "raw_margin"), ("cat", "catboost", "raw_margin")])
def test_boosters_of_both_families_are_registered_in_margin_space(files, tmp_path, name, family, space):
    suffix = "skops" if family == "sklearn" else "cbm"
    code, out = cli(tmp_path / "r", "register", name, str(files["dir"] / f"{name}.{suffix}"),
                    "--reference", str(files["reference"]), "--threshold", "0.5")
    assert code == 0 and f"explained in {space}" in out, out
    model = ModelRegistry(tmp_path / "r").load(name)
    assert model.family == family and model.kind.output_space == space and model.categorical_features == ["merchant"]
    rows = files["rows"]
    frame = pd.DataFrame(rows, columns=FEATURES)
    library = files["models"][name]
    if family == "sklearn":
        raw = library._raw_predict(rows)[:, 0]
    else:
        raw = library.predict(frame.assign(merchant=frame.merchant.astype(int)), prediction_type="RawFormulaVal")
    np.testing.assert_allclose(TreeShap(model.booster).raw_score(rows), raw, rtol=0, atol=1e-12)


def test_damaged_files_of_each_family_end_in_one_line_and_write_nothing(files, tmp_path):
    d = files["dir"]
    forest, cbm = (d / "forest.skops").read_bytes(), (d / "cat.cbm").read_bytes()
    damaged = {
        "truncated.skops": (forest[: len(forest) // 2], "damaged skops file"),
        "renamed.skops": (pickle.dumps(files["models"]["hgb"]), "a pickle, which whystream never loads"),
        "model.pkl": (pickle.dumps(files["models"]["forest"]), "a pickle, which whystream never loads"),
        "truncated.cbm": (cbm[: len(cbm) // 2], "CatBoost cannot load it"),
        "truncated.json": (b'{"features_info": {"float_features": [', "CatBoost cannot load it"),
        "notes.skops": (b"amount,tenure\n1,2\n", "not a skops file"),
    }
    for name, (body, words) in damaged.items():
        (tmp_path / name).write_bytes(body)
        code, out = cli(tmp_path / "r", "register", "m", str(tmp_path / name), "--reference", str(files["reference"]),
                        "--threshold", "0.5")
        assert code == 2 and out.startswith("whystream: error: ") and words in out, (name, out)
        assert "\n" not in out.strip() and not (tmp_path / "r").exists(), (name, out)
    # the installed command: one line on stderr, no traceback, nothing unpickled
    run = subprocess.run([sys.executable, "-m", "whystream", "--registry", str(tmp_path / "r"), "register", "m",
                          str(tmp_path / "renamed.skops"), "--reference", str(files["reference"]), "--threshold",
                          "0.5"], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "never loads" in run.stderr and "Traceback" not in run.stderr and not (tmp_path / "r").exists()
