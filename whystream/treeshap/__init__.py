"""Exact path-dependent TreeSHAP for LightGBM boosters, compiled with numba.

`TreeShap(booster)` parses the booster once into flat numpy arrays;
`shap_values(X)` then returns what `shap.TreeExplainer(booster).shap_values(X)`
returns (for a LightGBM booster shap returns LightGBM's own `pred_contrib`
TreeSHAP without its last, bias, column), and `expected_value` is that bias in
raw margin space.

Multi-output boosters (multiclass, multiclassova: K trees per iteration, tree i
belongs to class i % K) are explained one output at a time:
`TreeShap(booster, class_index=k)` keeps the trees of class k, which is a
single-output model of its own whose raw score is class k's raw score; its
SHAP values are pred_contrib's block of class k.

Algorithm: Gauss-Legendre quadrature over the tree ("quad", default)
--------------------------------------------------------------------
Path-dependent TreeSHAP is a sum of one small game per leaf l with value v_l:
for each distinct feature j on the leaf's root path, z_j is the product of the
cover fractions (child count / parent count) of the path's edges on j, and
o_j in {0, 1} says whether row x follows all of those edges.  Then (Lundberg
et al. 2020; the Shapley weights are Beta integrals)

    phi_i += v_l (o_i - z_i) * int_0^1 prod_{j != i} (o_j u + z_j (1 - u)) du

The integrand is a polynomial of degree d - 1 (d distinct features on the
path), so a Gauss-Legendre rule with G >= d/2 points integrates it exactly.
The per-leaf products are shared along the tree.  A top-down pass builds
P_c(u) = prod of the factors a_j(u) = o_j u + z_j (1 - u) on the path to node c
at the G points (a feature met again deeper replaces its earlier factor:
multiply by the new one, divide by the old one) and K_c = (o_c - z_c) / a_c(u)
for the feature of the edge into c; a bottom-up pass sums S_c = sum of v_l P_l(u)
over the leaves under c (a leaf's, then its parent's from its two children).
Every edge adds S_c (K_c - K_prev) to its feature's phi, prev being the
feature's previous edge on the path: c's share of those leaves, less the share
the previous edge would otherwise count for them (its factor is replaced there;
K_prev = 0 without one).  Cost: O(N G) per tree and row with N = 2L - 1 nodes,
i.e. O(L D) like Linear TreeSHAP (Yu et al. 2022), but with no polynomial
interpolation, hence no loss of accuracy at depth: every term is a product of
positive factors.  The quadrature weights ride in the root's product, so each
feature's phi is the plain sum of its lanes at the end.

The G points are lanes of one vector, computed by the small LLVM intrinsics of
`vector` (8 doubles: one AVX-512 register, two AVX2 ones), so G is chosen per
tree from its largest d: a tree with d <= 8 (any tree of depth <= 8, such as
XGBoost's default depth-6 trees; a quarter of a 31-leaf LightGBM model's) needs 4 points, and two rows go
through it at once, lanes 0-3 and 4-7 (a row without a partner, as a single
row is, runs alone on 4 lanes); a tree with d <= 16 takes 8 points, one row a
vector; deeper ones 16, 24, ... points in 8-lane chunks.  The kernel reads each
node as one flat record of precomputed vector offsets (parent's, prev's,
children's, the feature's lanes), read without numba's negative-index test
(`vector._at`), so that its scalar work per node is a few loads and adds (which
more than halved the time a row takes: the bookkeeping, not the arithmetic, was
most of it).

`algorithm="classic"` runs Lundberg's extend / unwound-path-sum (LightGBM's
own arithmetic, O(L D^2) per tree) on each leaf's unique path.  It serves as a
cross-check and, with "quad", for trees with a zero cover (a division by zero
that the quadrature cannot take but LightGBM's arithmetic reproduces).

LightGBM semantics mirrored (include/LightGBM/tree.h, src/c_api.cpp)
--------------------------------------------------------------------
- numerical split: left iff x <= threshold.  NaN becomes 0.0 unless the split's
  missing_type is NaN, in which case NaN goes the default_left direction; with
  missing_type Zero, a zero (|x| <= 1e-35, which NaN has become) goes the
  default direction;
- dense input rows drop values with |x| <= kZeroThreshold (1e-35f): read as 0.0;
- categorical split: left iff int(x) (truncated toward zero) is in the
  threshold's category set; NaN, x <= -1 and x >= 2^31 go right;
- covers are the trees' internal_count / leaf_count;
- base value: per tree sum_l (leaf_count_l / root internal_count) * v_l, summed
  over trees in order (Tree::ExpectedValue); a single-leaf tree only adds its
  value to the base value (and to the raw score);
- the model is read from booster.model_to_string(), LightGBM's own format,
  which has every number as the booster holds it: dump_model()'s JSON (what
  shap parses) clamps thresholds to +-1e300 (Common::AvoidInf), while the
  "NaN or not" split of a feature with missing values is `x <= inf`, and rows
  with values above 1e300 would go the wrong way; it is also ~10x slower;
- all trees are explained, as shap does (pred_contrib with num_iteration=-1),
  even when the booster has a best_iteration from early stopping.

Threads and compilation
-----------------------
The kernels are @njit(nogil=True, cache=True): compiled on first use (~10 s;
then loaded from the package's __pycache__ folder in well under a second - numba falls back
to a user cache directory where that is not writable, or NUMBA_CACHE_DIR).
A batch is cut into up to numba.get_num_threads() chunks run by the calling
thread and a shared thread pool; rows within a chunk go through the trees in
blocks of up to 64 (tree-major: a tree's records stay in cache for the block).  There is no numba `parallel=True`: the pool costs no
compilation, works the same with every numba threading layer, and concurrent
callers share its cores instead of each starting a team of threads.
Modules
-------
`model` parses LightGBM's text into the flat arrays the kernels read,
`kernels` holds the two numba algorithms ("quad" and "classic"), `vector` the
8-lane LLVM helpers of "quad", and `explainer` the public `TreeShap` with its
shared thread pool.
"""

from whystream.errors import UnsupportedModel
from whystream.treeshap.explainer import EXPLAINER_NAME, EXPLAINER_VERSION, TreeShap

__all__ = ["EXPLAINER_NAME", "EXPLAINER_VERSION", "TreeShap", "UnsupportedModel"]
