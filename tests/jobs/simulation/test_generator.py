import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whystream.errors import WhystreamError
from whystream.jobs.simulation.generator import (
    BLOCK,
    CATEGORICAL_FEATURES,
    FEATURE_NAMES,
    FEATURES,
    MERCHANT_CATEGORIES,
    Batch,
    DriftSpec,
    TransactionGenerator,
)
from whystream.jobs.simulation.train import auc, train_model
from whystream.models.registry import ModelRegistry

COL = {name: j for j, name in enumerate(FEATURE_NAMES)}


def assert_same(a: Batch, b: Batch) -> None:
    for field in ("X", "y", "country", "channel", "index"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def concat(*parts: Batch) -> Batch:
    return Batch(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("X", "y", "country", "channel", "index")))


def rows(b: Batch, which: slice) -> Batch:
    return Batch(b.X[which], b.y[which], b.country[which], b.channel[which], b.index[which])


@pytest.fixture(scope="module")
def big() -> Batch:
    return TransactionGenerator(seed=3).sample(100_000)


def test_feature_catalogue():
    assert 30 <= len(FEATURES) <= 50
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert {f.kind for f in FEATURES} <= {"numeric", "categorical"}
    assert "merchant_category" in CATEGORICAL_FEATURES and "amount" not in CATEGORICAL_FEATURES
    assert all(f.description and f.unit for f in FEATURES)


def test_batch_types(big):
    n, F = big.X.shape
    assert (n, F) == (100_000, len(FEATURES)) and len(big) == n
    assert big.X.dtype == np.float64 and big.y.dtype == np.int8 and big.index.dtype == np.int64
    np.testing.assert_array_equal(big.index, np.arange(n))
    assert set(big.channel) == {"pos", "ecom", "atm"}
    for name in CATEGORICAL_FEATURES:
        codes = big.X[:, COL[name]]
        codes = codes[~np.isnan(codes)]
        assert (codes >= 0).all() and (codes == np.round(codes)).all()


def test_channel_matches_features(big):
    col = lambda name: big.X[:, COL[name]]
    ecom, atm, pos = (big.channel == c for c in ("ecom", "atm", "pos"))
    assert (col("online")[ecom] == 1).all() and (col("online")[~ecom] == 0).all()
    assert (col("card_present")[ecom] == 0).all() and (col("card_present")[atm] == 1).all()
    assert (col("merchant_category")[atm] == MERCHANT_CATEGORIES.index("cash_withdrawal")).all()
    assert 0.9 < col("card_present")[pos].mean() < 1  # a few keyed-in phone orders


def test_missing_values_follow_the_channel(big):
    device_age = big.X[:, COL["device_age_days"]]
    card_present = big.X[:, COL["card_present"]] == 1
    assert np.isnan(device_age[card_present]).all()
    assert 0.02 < np.isnan(device_age[big.channel == "ecom"]).mean() < 0.2
    assert np.isnan(big.X[:, COL["failed_pin_attempts"]][big.channel == "ecom"]).all()
    assert not np.isnan(big.X[:, COL["amount"]]).any()


def test_fraud_rate_in_range(big):
    assert 0.01 < big.y.mean() < 0.03


def test_same_seed_same_events_other_seed_other_events():
    assert_same(TransactionGenerator(5).sample(2000, 300), TransactionGenerator(5).sample(2000, 300))
    five, six = TransactionGenerator(5).sample(500), TransactionGenerator(6).sample(500)
    assert not np.array_equal(five.X, six.X, equal_nan=True)


def test_chunks_equal_one_sample():
    gen = TransactionGenerator(1)
    assert_same(gen.sample(100, 0), concat(gen.sample(60, 0), gen.sample(40, 60)))
    assert len(gen.sample(0, 17)) == 0


@settings(max_examples=25, deadline=None)
@given(start=st.integers(0, 5 * BLOCK), n=st.integers(1, 3 * BLOCK), cut=st.floats(0, 1))
def test_any_split_equals_one_sample(start, n, cut):
    gen = TransactionGenerator(2)
    k = int(cut * n)
    assert_same(gen.sample(n, start), concat(gen.sample(k, start), gen.sample(n - k, start + k)))


def test_sample_spanning_many_passes_matches_pieces():
    gen = TransactionGenerator(4)
    whole = gen.sample(70_000, 1000)
    assert_same(whole, concat(gen.sample(65_000, 1000), gen.sample(5_000, 66_000)))


def test_drift_applies_from_its_index_to_its_feature_only():
    spec = DriftSpec.parse("distance_from_home_km:80@2500")
    plain, drifted = TransactionGenerator(9).sample(5000), TransactionGenerator(9, [spec]).sample(5000)
    j = COL["distance_from_home_km"]
    before, after = slice(0, 2500), slice(2500, 5000)
    assert_same(rows(plain, before), rows(drifted, before))
    others = [c for c in range(len(FEATURES)) if c != j]
    np.testing.assert_array_equal(plain.X[after][:, others], drifted.X[after][:, others])
    np.testing.assert_allclose(drifted.X[after, j], plain.X[after, j] + 80)
    # Restarting mid-stream sees the same drift.
    assert_same(rows(drifted, after), TransactionGenerator(9, [spec]).sample(2500, 2500))


def test_drift_changes_fraud_through_the_mechanism():
    risky = [DriftSpec("ip_risk_score", 40.0, 0)]
    ecom = lambda b: b.y[b.channel == "ecom"].mean()
    assert ecom(TransactionGenerator(3, risky).sample(50_000)) > 2 * ecom(TransactionGenerator(3).sample(50_000))


def test_drift_spec_parses():
    assert DriftSpec.parse("distance_from_home_km:80@25000") == DriftSpec("distance_from_home_km", 80.0, 25000)
    assert DriftSpec.parse(" amount:-12.5@0 ") == DriftSpec("amount", -12.5, 0)


@pytest.mark.parametrize("text", [
    "", "distance_from_home_km", "distance_from_home_km:80", "distance_from_home_km:far@10",
    "distance_from_home_km:80@soon", ":80@10",
])
def test_drift_spec_bad_form(text):
    with pytest.raises(WhystreamError, match="FEATURE:SHIFT@INDEX"):
        DriftSpec.parse(text)


def test_drift_spec_unknown_feature_suggests_close_names():
    with pytest.raises(WhystreamError, match="FEATURE:SHIFT@INDEX") as err:
        DriftSpec.parse("distance_from_home:80@10")
    assert "distance_from_home_km" in str(err.value)


@pytest.mark.parametrize("args", [
    ("merchant_category", 1.0, 0), ("amount", float("nan"), 0), ("amount", 1.0, -1), ("nope", 1.0, 0),
])
def test_drift_spec_rejects(args):
    with pytest.raises(WhystreamError):
        DriftSpec(*args)


def test_trained_model_learns_the_mechanism(tmp_path):
    model = train_model(ModelRegistry(tmp_path), n_train=20_000, num_trees=50, progress=False)
    assert model.metrics["auc"] > 0.8
    assert 0.01 < model.metrics["decline_rate"] < 0.03


def test_auc():
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert auc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
