"""The null distribution of the KS statistic taken at a few fixed points.

The drift views measure KS at the reference's bin edges only (the histogram's
resolution: 9 inner decile edges), i.e. max_k |F_window(x_k) - F_reference(x_k)|.
Kolmogorov's critical value is that of the maximum over *every* point, so at 9
points it is far too high: at alpha = 0.05 the binned statistic exceeded it in
about 0.9% of drift-free windows (issue 23, finding 8), and a real shift had to
be larger to be seen.

Under no drift, sqrt(n) (F_window - F_reference)(x_k) tends to a Brownian bridge
B(t_k) at t_k = F_reference(x_k) (the same limit that gives Kolmogorov's
distribution, Donsker's theorem), so the exact asymptotic tail is
P(max_k |B(t_k)| > c). The bridge is Markov: with B(t) = (1 - t) W(t / (1 - t))
for a Brownian motion W, the event is |W(s_k)| <= c / (1 - t_k) at
s_k = t_k / (1 - t_k), and its probability is a chain of Gaussian convolutions,
integrated here on a Simpson grid (at least 121 points per step, spaced a quarter of the
step's sd or closer: the critical values agree with scipy's multivariate normal CDF,
Genz's algorithm, see the tests).
Points where the reference CDF is 0 or 1 carry no variance and are dropped.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import optimize, stats

_HALF_GRID = 60  # Simpson nodes per half interval, at least
_MAX_HALF_GRID = 1200
_ROUNDING = 1e-9  # float sums of one bin's weights differ from 1 by less


def binned_ks_critical(alpha: float, points) -> float:
    """c with P(max_k |B(t_k)| > c) = alpha, t_k = `points` (reference CDF values at the
    edges): the critical value of sqrt(n) * KS-at-those-points. With no point inside (0, 1) (a
    constant attribution: one bin) the statistic is 0 under no drift but for rounding: 1e-9."""
    inner = tuple(sorted({round(float(t), 4) for t in points if 1e-4 <= float(t) <= 1 - 1e-4}))
    return _critical(float(alpha), inner) if inner else _ROUNDING


@lru_cache(maxsize=4096)
def _critical(alpha: float, points: tuple[float, ...]) -> float:
    return float(optimize.brentq(lambda c: exceedance(c, points) - alpha, 1e-3, 10.0, xtol=1e-7))


def exceedance(c: float, points) -> float:
    """P(max_k |B(t_k)| > c) for a Brownian bridge B at the sorted points t_k in (0, 1)."""
    t = np.asarray(points, dtype=float)
    s, bounds = t / (1 - t), c / (1 - t)
    previous, nodes, weights, density = 0.0, None, None, None
    for s_k, a_k in zip(s, bounds):
        # beyond 9 sd W(s_k) has no mass worth counting; the nodes are spaced at most a quarter of
        # the step's sd apart (points close together or near 0 or 1 need more of them)
        reach = min(a_k, 9 * math.sqrt(s_k))
        spacing = math.sqrt(s_k - previous) / 4
        half = int(min(max(_HALF_GRID, math.ceil(reach / spacing)), _MAX_HALF_GRID))
        y = np.linspace(-reach, reach, 2 * half + 1)
        simpson = np.where(np.arange(len(y)) % 2 == 1, 4.0, 2.0)
        simpson[0] = simpson[-1] = 1.0
        simpson *= (y[1] - y[0]) / 3
        if density is None:
            step = stats.norm.pdf(y, scale=math.sqrt(s_k))
        else:  # W(s_k) = W(s_k-1) + N(0, s_k - s_k-1), kept inside the bounds at every point
            step = stats.norm.pdf(y[:, None] - nodes[None, :], scale=math.sqrt(s_k - previous)) @ (density * weights)
        previous, nodes, weights, density = s_k, y, simpson, step
    return float(min(max(1.0 - (density * weights).sum(), 0.0), 1.0))
