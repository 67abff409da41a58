"""The KS statistic at the reference bin edges against its own null (issue 23, finding 8):
critical values from the Brownian bridge at those points, checked against scipy's
multivariate normal CDF (Genz's algorithm, an independent computation) and against
drift-free weighted windows drawn as the workers weight them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from whystream.jobs.analytics.drift_rule import DriftRule, ks_critical
from whystream.jobs.analytics.ks_null import binned_ks_critical, exceedance

DECILES = [k / 10 for k in range(1, 10)]


def bridge_exceedance(c: float, points) -> float:
    """P(max_k |B(t_k)| > c) from scipy's multivariate normal CDF: cov(B(s), B(t)) = min(s, t) - s t."""
    t = np.asarray(points)
    cov = np.minimum.outer(t, t) - np.outer(t, t)
    inside = stats.multivariate_normal(np.zeros(len(t)), cov, abseps=1e-5, releps=0, maxpts=500_000)
    return 1.0 - inside.cdf(np.full(len(t), c), lower_limit=np.full(len(t), -c))


@pytest.mark.parametrize("alpha", [0.05, 0.01])
@pytest.mark.parametrize("points", [DECILES, [0.02, 0.3, 0.31, 0.75, 0.97], [1e-4, 0.5, 0.5002, 0.9999]])
def test_critical_values_agree_with_the_multivariate_normal(alpha, points):
    c = binned_ks_critical(alpha, points)
    assert bridge_exceedance(c, points) == pytest.approx(alpha, rel=1e-2)


def test_one_point_and_many_points():
    # one point: a normal of variance t (1 - t)
    assert binned_ks_critical(1e-4, [0.3]) == pytest.approx(stats.norm.isf(5e-5) * math.sqrt(0.21), rel=1e-5)
    # more points only raise it, towards Kolmogorov's for every point (1.358 at 0.05), never past it
    nine, many = binned_ks_critical(0.05, DECILES), binned_ks_critical(0.05, np.arange(1, 50) / 50)
    kolmogorov = math.sqrt(-math.log(0.025) / 2)
    assert 1.17 < nine < many < kolmogorov < many + 0.1
    # the reference CDF's 0 and 1 carry no variance; repeated points count once
    assert binned_ks_critical(0.05, [0.0, *DECILES, 1.0, 0.5]) == nine
    assert binned_ks_critical(0.05, [0.0, 1.0]) == 1e-9  # a constant attribution: rounding only
    one_bin = {"weighted_n": 1000.0, "effective_n": 300.0, "n_reference": 5000.0, "reference_cdf": [1.0] * 9}
    rule = DriftRule(alpha=0.05, min_effect=dict.fromkeys(("psi", "ks", "stability", "wasserstein"), 0.0))
    assert not rule.judge({**one_bin, "ks": 2e-16})[0].above and rule.judge({**one_bin, "ks": 0.01})[0].above
    assert exceedance(nine, DECILES) == pytest.approx(0.05, abs=1e-7)


def test_drift_free_weighted_windows_alarm_at_alpha_and_kolmogorov_did_not():
    """3,000 drift-free windows of a Gaussian feature, weighted as the workers weight them (100
    priority rows weight 1, 300 sampled rows weight 10: n_eff 319), each against its own
    reference sample of 2,000 binned at its deciles, judged by the monitor's rule at alpha 0.05
    without a minimum effect."""
    rng = np.random.default_rng(23)
    trials, n_ref = 3000, 2000
    reference = rng.standard_normal((trials, n_ref))
    edges = np.quantile(reference, DECILES, axis=1).T  # (trials, 9)
    reference_cdf = (reference[:, :, None] <= edges[:, None, :]).mean(axis=1)
    window = rng.standard_normal((trials, 400))
    weights = np.concatenate([np.ones(100), np.full(300, 10.0)])
    window_cdf = ((window[:, :, None] <= edges[:, None, :]) * weights[None, :, None]).sum(axis=1) / weights.sum()
    ks = np.abs(window_cdf - reference_cdf).max(axis=1)
    n_eff = weights.sum() ** 2 / (weights ** 2).sum()
    rule = DriftRule(alpha=0.05, min_effect=dict.fromkeys(("psi", "ks", "stability", "wasserstein"), 0.0))
    alarms = [rule.judge({"weighted_n": weights.sum(), "effective_n": n_eff, "n_reference": n_ref, "ks": k,
                          "reference_cdf": list(cdf)})[0].above for k, cdf in zip(ks, reference_cdf)]
    rate = float(np.mean(alarms))
    assert 0.036 < rate < 0.064  # 0.05 within 3.5 binomial sd of 3,000 windows
    n = n_eff * n_ref / (n_eff + n_ref)
    assert float(np.mean(ks > ks_critical(0.05, n))) < rate / 2  # Kolmogorov's value for every point: ~0.02
    # the statistic itself: at most the full two-sample KS of the same (unweighted) samples
    assert all(np.abs((window[i][:, None] <= edges[i]).mean(axis=0) - reference_cdf[i]).max()
               <= stats.ks_2samp(window[i], reference[i]).statistic + 1e-12 for i in range(50))
