"""When a feature's attribution statistics count as drift: critical values from
the effective sample size, floored by a minimum effect size.

A window of explanations is a weighted sample (priority decisions weigh 1,
reservoir samples n/k), so its noise is that of Kish's effective sample size
n_eff = (sum w)^2 / sum w^2, not of its row count. The reference is a sample
too (n_ref held-out rows), so each statistic is compared with its null
distribution for two samples of n_eff and n_ref, i.e. with
n = n_eff * n_ref / (n_eff + n_ref):

- PSI: n * PSI is about chi-squared with B - 1 degrees of freedom under no
  drift (to second order PSI is Pearson's chi-squared divergence; B = bins the
  reference fills). Critical value chi2.ppf(1 - alpha, B - 1) / n.
- KS: the weighted KS statistic is taken at the reference bin edges only, so
  its null is that of a Brownian bridge's maximum at those points, t_k = the
  reference CDF there (`reference_cdf`): critical value c / sqrt(n) with
  P(max_k |B(t_k)| > c) = alpha (jobs/analytics/ks_null.py; 2.05 at 1e-4 for
  the 9 decile edges). Kolmogorov's c(alpha) = sqrt(-ln(alpha / 2) / 2) (2.23)
  is the full statistic's and made the binned one ~5x too conservative; it is
  kept for rows without `reference_cdf` (a view before migration 056).
- Wasserstein-1: sqrt(n) * W1 tends to the L1 norm of a Brownian bridge
  B(F(x)), whose mean is sqrt(2/pi) * J with J = integral of sqrt(F(1-F)) dx
  (`reference_cdf_spread`), and which exceeds its mean by t with probability
  at most exp(-t^2 / (2 sigma^2)) (Gaussian concentration; sigma the
  reference SHAP's standard deviation bounds the norm's weak variance).
  Critical value (sqrt(2/pi) * J + sigma * sqrt(2 ln(1/alpha))) / sqrt(n), plus
  the resolution of the 100 quantile midpoints (`wasserstein_resolution`: a
  binary feature's rare atom moves the estimate by whole quantile steps).
- stability: the difference of the window's and the reference's mean |SHAP|
  must exceed z(alpha) standard errors of the difference (both samples'), see
  `stability_error`.

Each statistic must also exceed its minimum effect size: a large window makes
any tiny, harmless change significant, and an analyst does not want to hear
about a 1% move. `alpha` is per statistic, feature and window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from scipy import stats

from whystream.jobs.analytics.ks_null import binned_ks_critical

STATISTICS = ("psi", "ks", "stability", "wasserstein")


@dataclass(frozen=True)
class Judgement:
    statistic: str
    value: float
    threshold: float  # what it had to exceed: max(minimum effect, critical value)
    above: bool
    critical: float = 0.0  # the critical value from the effective sample size


@dataclass(frozen=True)
class DriftRule:
    alpha: float = 1e-4
    # minimum effect sizes: psi and ks as such, stability relative to the reference mean |SHAP|,
    # wasserstein relative to it too (wasserstein_rel)
    # (PSI keeps the industry's 0.2 for "significant"; KS, the sharper test, catches the smaller shifts;
    # an amount shift moves the attributions of features that interact with it by PSI ~0.1, KS ~0.06)
    min_effect: dict = field(default_factory=lambda: {"psi": 0.2, "ks": 0.08, "stability": 0.2, "wasserstein": 0.25})
    min_weighted_n: float = 500.0
    min_effective_n: float = 100.0
    min_reference_share: float = 0.01  # stability: only features carrying this share of the total mean |SHAP|

    def enough_data(self, row: dict) -> bool:
        return (float(row.get("weighted_n") or 0) >= self.min_weighted_n
                and float(row.get("effective_n") or 0) >= self.min_effective_n)

    def judge(self, row: dict, reference_total: float | None = None, min_effect: dict | None = None) -> list[Judgement]:
        """The judgeable statistics of one feature_drift row. `reference_total`:
        the version's summed reference mean |SHAP| (default: this feature's);
        `min_effect` overrides the minimum effect sizes for this feature."""
        if not self.enough_data(row):
            return []
        effect = {**self.min_effect, **(min_effect or {})}
        n = combined_n(float(row["effective_n"]), float(row.get("n_reference") or 0))
        out = []
        psi = number(row.get("psi"))
        if psi is not None:
            critical = psi_critical(self.alpha, int(row.get("psi_bins") or 10), n)
            out.append(_verdict("psi", psi, effect["psi"], critical))
        ks = number(row.get("ks"))
        if ks is not None:
            out.append(_verdict("ks", ks, effect["ks"], ks_critical(self.alpha, n, row.get("reference_cdf"))))
        reference = number(row.get("reference_mean_abs_shap")) or 0.0
        if reference <= 0:
            return out
        w1 = number(row.get("wasserstein"))
        sd = math.sqrt(max((number(row.get("reference_mean_sq_shap")) or 0.0)
                           - (number(row.get("reference_mean_shap")) or 0.0) ** 2, 0.0))
        if w1 is not None and sd > 0:
            critical = (wasserstein_critical(self.alpha, number(row.get("reference_cdf_spread")) or 0.0, sd, n)
                        + (number(row.get("wasserstein_resolution")) or 0.0))
            out.append(_verdict("wasserstein", w1 / reference, effect["wasserstein"], critical / reference))
        stability = number(row.get("stability"))
        total = reference if reference_total is None else reference_total
        if stability is not None and reference >= self.min_reference_share * total:
            z = stats.norm.isf(self.alpha / 2)
            critical = z * stability_error(row) / reference
            out.append(_verdict("stability", stability, effect["stability"], critical))
        return out


def _verdict(statistic: str, value: float, min_effect: float, critical: float) -> Judgement:
    threshold = max(min_effect, critical)
    return Judgement(statistic, value, threshold, value > threshold, critical)


def combined_n(n_eff: float, n_reference: float) -> float:
    """The sample size of a two-sample comparison: n_eff * n_ref / (n_eff + n_ref)
    (n_eff alone for a reference of unknown size)."""
    if n_reference <= 0:
        return max(n_eff, 1.0)
    return max(n_eff * n_reference / (n_eff + n_reference), 1.0)


def psi_critical(alpha: float, bins: int, n: float) -> float:
    return float(stats.chi2.isf(alpha, max(bins - 1, 1))) / n


def ks_critical(alpha: float, n: float, reference_cdf=None) -> float:
    """KS at the points where the reference CDF is `reference_cdf` (None: at every point, Kolmogorov)."""
    if reference_cdf is None or len(reference_cdf) == 0:
        return math.sqrt(-math.log(alpha / 2) / 2) / math.sqrt(n)
    return binned_ks_critical(alpha, reference_cdf) / math.sqrt(n)


def wasserstein_critical(alpha: float, cdf_spread: float, sd: float, n: float) -> float:
    return (math.sqrt(2 / math.pi) * cdf_spread + sd * math.sqrt(2 * math.log(1 / alpha))) / math.sqrt(n)


def stability_error(row: dict) -> float:
    """Standard error of mean |SHAP| (window) - reference mean |SHAP|.

    The reference mean is a sample mean too (a few thousand held-out rows): its
    error counts. A heavy-tailed attribution's window that happens to miss its
    rare large values has both a low mean and a low spread, and would look
    precisely off: without drift the window spreads like the reference, so its
    spread is taken as at least the reference's."""
    mean_abs = float(row["mean_abs_shap"])
    reference = float(row["reference_mean_abs_shap"])
    variance = max(float(row.get("mean_sq_shap") or 0.0) - mean_abs * mean_abs, 0.0)
    n_reference = float(row.get("n_reference") or 0.0)  # 0: registered before the spread was kept
    reference_error = 0.0
    if n_reference > 0:
        reference_variance = max(float(row.get("reference_mean_sq_shap") or 0.0) - reference * reference, 0.0)
        reference_error = reference_variance / n_reference
        variance = max(variance, reference_variance)
    return math.sqrt(variance / max(float(row["effective_n"]), 1.0) + reference_error)


def number(value) -> float | None:
    """A finite float, or None (SQL NULL, NaN, inf, a string from JSON)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
