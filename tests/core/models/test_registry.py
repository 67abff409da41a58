import json

import lightgbm as lgb
import numpy as np
import pytest

from whystream.errors import ModelNotFound
from whystream.jobs.simulation.generator import (
    CATEGORICAL_FEATURES,
    FEATURE_NAMES,
    TransactionGenerator,
)
from whystream.models.reference import N_BINS, shap_bin_edges, shap_histogram
from whystream.models.registry import ModelRegistry


@pytest.fixture(scope="module")
def data():
    gen = TransactionGenerator(11)
    return gen.sample(5000), gen.sample(1000, start=5000)


@pytest.fixture(scope="module")
def booster(data):
    train, _ = data
    params = {"objective": "binary", "num_leaves": 15, "verbose": -1, "deterministic": True, "num_threads": 1}
    ds = lgb.Dataset(train.X, train.y, feature_name=FEATURE_NAMES, categorical_feature=CATEGORICAL_FEATURES)
    return lgb.train(params, ds, num_boost_round=20)


def test_round_trip(tmp_path, booster, data):
    _, ref = data
    registry = ModelRegistry(tmp_path)
    saved = registry.register("fraud", booster, 0.3, ref.X, metrics={"auc": 0.9})
    loaded = ModelRegistry(tmp_path).load("fraud", saved.version)
    np.testing.assert_array_equal(loaded.booster.predict(ref.X), booster.predict(ref.X))
    assert loaded.feature_names == FEATURE_NAMES
    assert loaded.categorical_features == CATEGORICAL_FEATURES
    assert loaded.threshold == 0.3 and loaded.metrics == {"auc": 0.9}
    assert loaded.feature_index()["amount"] == FEATURE_NAMES.index("amount")
    assert loaded.reference_shap.shape == (len(ref), len(FEATURE_NAMES))
    np.testing.assert_allclose(loaded.reference_shap, booster.predict(ref.X, pred_contrib=True)[:, :-1])

    version_dir = tmp_path / "fraud" / saved.version
    assert loaded.path == version_dir.resolve()
    assert {p.name for p in version_dir.iterdir()} == {"model.txt", "meta.json", "reference.npz",
                                                            "input_reference.npz"}
    assert json.loads((version_dir / "meta.json").read_text())["threshold"] == 0.3
    assert (tmp_path / "fraud" / "LATEST").read_text().strip() == saved.version
    assert not [p for p in (tmp_path / "fraud").iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_version_is_a_content_hash(tmp_path, booster, data):
    _, ref = data
    registry = ModelRegistry(tmp_path)
    first = registry.register("fraud", booster, 0.3, ref.X)
    again = registry.register("fraud", booster, 0.3, ref.X[:500])
    assert again.version == first.version and len(first.version) == 12
    other = registry.register("fraud", booster, 0.4, ref.X)
    assert other.version != first.version
    assert registry.versions("fraud") == [first.version, other.version]
    assert registry.load("fraud").version == other.version
    assert registry.models() == ["fraud"]


def test_loading_is_cached(tmp_path, booster, data):
    registry = ModelRegistry(tmp_path)
    saved = registry.register("fraud", booster, 0.3, data[1].X)
    assert registry.load("fraud") is registry.load("fraud", saved.version)
    assert not saved.reference_shap.flags.writeable


def test_unknown_name_or_version_names_the_known_ones(tmp_path, booster, data):
    registry = ModelRegistry(tmp_path)
    saved = registry.register("fraud", booster, 0.3, data[1].X)
    with pytest.raises(ModelNotFound, match="known: fraud"):
        registry.load("frauds")
    with pytest.raises(ModelNotFound, match=saved.version) as err:
        registry.load("fraud", "abc")
    assert "'abc'" in str(err.value)


@pytest.mark.parametrize("make_dir", [False, True])
def test_empty_registry_says_to_train(tmp_path, make_dir):
    root = tmp_path / "models"
    if make_dir:
        root.mkdir()
    registry = ModelRegistry(root)
    assert registry.models() == []
    with pytest.raises(ModelNotFound, match="whystream train"):
        registry.load("fraud")
    with pytest.raises(ModelNotFound, match="whystream train"):
        registry.versions("fraud")


def test_reference_bins(tmp_path, booster, data):
    model = ModelRegistry(tmp_path).register("fraud", booster, 0.3, data[1].X)
    F = len(FEATURE_NAMES)
    assert model.bin_edges.shape == (F, N_BINS + 1) and model.reference_hist.shape == (F, N_BINS)
    assert (model.bin_edges[:, 0] == -np.inf).all() and (model.bin_edges[:, -1] == np.inf).all()
    assert (np.diff(model.bin_edges, axis=1) > 0).all()
    np.testing.assert_allclose(model.reference_hist.sum(axis=1), 1.0)


def test_bin_edges_stay_increasing_when_quantiles_tie():
    rng = np.random.default_rng(0)
    shap = np.column_stack([
        np.zeros(1000),  # a feature the model never uses
        np.where(rng.random(1000) < 0.95, -0.01, rng.normal(size=1000)),  # mostly one value
        rng.normal(size=1000),
    ])
    edges = shap_bin_edges(shap)
    assert (np.diff(edges, axis=1) > 0).all()
    counts = shap_histogram(shap, edges)
    assert (counts.sum(axis=1) == 1000).all()
    assert counts[0].max() == 1000  # all the zeros share one bin
    assert np.abs(counts[2] - 100).max() <= 1  # continuous values fill deciles


def test_an_atom_whose_copies_differ_by_rounding_is_never_split(monkeypatch):
    """One SHAP value shared by many rows comes out of the summation a few ulps apart
    from row to row; an edge between those twins would send part of the atom to
    another bin depending on rounding alone, a false drift (seen: PSI 0.15)."""
    import whystream.models.reference as reference

    atom = -7.479421716995523e-07
    twin = np.nextafter(np.nextafter(atom, 1.0), 1.0)
    spread = np.random.default_rng(1).uniform(-3e-6, 3e-6, size=694)
    shap = np.concatenate([np.full(294, atom), np.full(12, twin), spread])[:, None]

    def atom_bins(edges):
        return set(np.searchsorted(edges[0], [atom, twin], side="right") - 1)

    edges = shap_bin_edges(shap)
    assert len(atom_bins(edges)) == 1
    assert (np.diff(edges, axis=1) > 0).all() and shap_histogram(shap, edges).sum() == len(shap)
    monkeypatch.setattr(reference, "ATOM_TOLERANCE", 0.0)  # the data does hit the case: exact equality splits it
    assert len(atom_bins(shap_bin_edges(shap))) == 2


def test_an_early_stopped_booster_is_registered_as_it_predicts(tmp_path, data):
    """The registry keeps the trees up to the best iteration, so explanations add up to
    the score the model gave, not to the score of trees that predict() ignores."""
    from whystream.treeshap import TreeShap

    train, valid = data
    params = {"objective": "binary", "num_leaves": 15, "verbose": -1, "learning_rate": 0.5, "num_threads": 1}
    ds = lgb.Dataset(train.X, train.y, feature_name=FEATURE_NAMES, categorical_feature=CATEGORICAL_FEATURES)
    vs = lgb.Dataset(valid.X, valid.y, reference=ds)
    booster = lgb.train(params, ds, num_boost_round=200, valid_sets=[vs], keep_training_booster=True,
                        callbacks=[lgb.early_stopping(3, verbose=False)])
    assert 0 < booster.best_iteration < booster.num_trees()  # it holds trees past the best iteration
    saved = ModelRegistry(tmp_path).register("fraud", booster, 0.3, valid.X)
    assert saved.booster.num_trees() == booster.best_iteration
    X = valid.X[:40]
    kernel = TreeShap(saved.booster)
    raw = booster.predict(X, raw_score=True)  # what the model scored (best iteration)
    np.testing.assert_allclose(kernel.shap_values(X).sum(axis=1) + kernel.expected_value, raw, atol=1e-6)
