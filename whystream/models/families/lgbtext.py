"""Trees of any family written as LightGBM's model text, and the thresholds that make
LightGBM's comparison route as the family's own.

A family's loader builds each tree from `Leaf` and `Split` nodes (covers are the
library's node sample counts or hessian sums) and `model_text` writes them in LightGBM's
own text format (what `Booster.model_to_string()` writes, v4): internal nodes numbered in
pre-order, so that a parent always has a smaller index than its children (the kernel's
parser relies on it), leaves numbered left to right. Nodes are immutable, so one subtree
may hang in two places (XGBoost's NaN guard splits do that).

LightGBM semantics mirrored (include/LightGBM/tree.h, NumericalDecision and
CategoricalDecision): a numerical split sends x left iff `x <= threshold` in float64,
NaN to the default side (missing_type NaN, decision_type bit 3); a categorical split
sends x left iff int(x) is in the split's category bitset, NaN and negative x right.

Covers: LightGBM reads `leaf_count` / `internal_count` as int32 (a fraction such as
XGBoost's hessian sum 75.74515 is read back as 0), and TreeSHAP only uses their ratios.
A tree whose covers are all positive whole numbers that fit (node sample counts) is
written as it is: exact. Any other tree is scaled so that its root is 2^30 and rounded:
every ratio holds to within 2^-31 relative (XGBoost itself keeps covers as float32,
2^-24), and no count is zero (`_counts` says why).

Thresholds of families that compare float32(x) (rounding to float32 is monotone, so the
x that round to at most a float32 f are an interval ending at the midpoint between f and
the next float32, included if the tie rounds to f, i.e. f's mantissa is even):
- `le_float32(t)`: the largest double T with `x <= T` exactly when `float32(x) <= t`
  (scikit-learn compares float32(x) <= a float64 threshold, CatBoost's borders are float32);
- `lt_float32(t)`: the same for `float32(x) < t` (XGBoost's `<`; its thresholds are float32:
  pass np.float32 of the JSON's decimal, not the decimal).

>>> le_float32(0.5)  # 0.5 is a float32; x <= T exactly when float32(x) <= 0.5
0.5000000298023224
>>> float(np.float32(le_float32(0.5))), float(np.float32(np.nextafter(le_float32(0.5), 1.0)))
(0.5, 0.5000000596046448)
>>> lt_float32(1 + 2.0 ** -23)  # float32(x) < 1 + ulp exactly when x <= 1 + ulp / 2 (the tie goes to 1)
1.0000000596046448
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whystream.errors import WhystreamError

ROOT_COUNT = 1 << 30  # the root of a tree whose covers are not whole numbers
_F32_OVERFLOW = 2.0 ** 128 - 2.0 ** 103  # the smallest |x| that rounds to an infinite float32 (ties round up)
_DT_CATEGORICAL, _DT_DEFAULT_LEFT, _DT_MISSING_NAN = 1, 2, 8  # LightGBM's decision_type bits
_MAX_COUNT = 2 ** 31 - 1  # LightGBM's data_size_t


@dataclass(frozen=True)
class Leaf:
    value: float
    count: float


@dataclass(frozen=True)
class Split:
    feature: int
    left: "Leaf | Split"
    right: "Leaf | Split"
    count: float
    threshold: float = 0.0  # numerical: left iff x <= threshold
    default_left: bool = False  # where NaN goes (numerical splits)
    categories: frozenset[int] | None = None  # categorical: left iff int(x) in categories; NaN right


def le_float32(t):
    """The largest double T such that x <= T exactly when float32(x) <= t; of an array, each's."""
    return _at_most(t, strict=False)


def lt_float32(t):
    """The largest double T such that x <= T exactly when float32(x) < t; of an array, each's."""
    return _at_most(t, strict=True)


def _at_most(t, strict: bool):
    t = np.asarray(t, dtype=np.float64)
    if np.isnan(t).any():
        raise ValueError("a NaN threshold")
    t1 = np.atleast_1d(t)
    with np.errstate(over="ignore"):  # beyond the float32 range f or g is infinite, handled below
        f = t1.astype(np.float32)  # f: the largest float32 <= t (< t if strict)
        above = (f.astype(np.float64) >= t1) if strict else (f.astype(np.float64) > t1)
        f = np.where(above, np.nextafter(f, np.float32(-np.inf)), f)
        g = np.nextafter(f, np.float32(np.inf))
        mid = np.where(np.isinf(g), _F32_OVERFLOW, (f.astype(np.float64) + g.astype(np.float64)) / 2.0)  # exact
        tie_rounds_to_f = np.isfinite(g) & (np.abs(f).view(np.uint32) % 2 == 0)  # ties go to even mantissas
        out = np.where(tie_rounds_to_f, mid, np.nextafter(mid, -np.inf))
        out = np.where(f == -np.inf, -_F32_OVERFLOW, out)
        if not strict:
            out = np.where(t1 == np.inf, np.inf, out)
    return float(out[0]) if t.ndim == 0 else out


def check_feature_names(names: list[str], where: str) -> list[str]:
    """LightGBM's text keeps feature names space-separated and refuses JSON's special characters."""
    for name in names:
        if not name or any(ch.isspace() or ch in '",:[]{}' for ch in name):
            raise WhystreamError(f"{where}: feature name {name!r} cannot be a LightGBM feature name (no spaces, "
                                 "no \",:[]{} characters); rename the column and save the model again")
    if len(set(names)) != len(names):
        raise WhystreamError(f"{where}: feature names are not unique")
    return list(names)


def _counts(splits: list[Split], leaves: list[Leaf], children: list[list[int]]) -> tuple[list[int], list[int]]:
    """LightGBM's integer counts (internal, leaf) of one tree's nodes in pre-order (the module
    docstring's rule). No count is zero: a zero cover (CatBoost's leaves that no training row
    reached) makes LightGBM's TreeSHAP, and the kernel's, divide 0 by 0 (NaN SHAP values for
    every row, checked). Such a leaf counts 1 of a root of 2^30, a split covering nothing the
    leaves below it: at most a few 2^-30 of the tree's weight in any expectation (CatBoost's
    own ShapValues skips them; their leaves hold 0)."""
    internal = np.array([s.count for s in splits], dtype=np.float64)
    leaf = np.array([x.count for x in leaves], dtype=np.float64)
    covers = np.concatenate([internal, leaf])
    if np.all(covers == np.round(covers)) and covers.min(initial=1) >= 1 and covers.max(initial=0) <= _MAX_COUNT:
        return internal.astype(np.int64).tolist(), leaf.astype(np.int64).tolist()
    if not (internal[0] > 0 and np.isfinite(internal[0])):
        raise ValueError(f"root cover {internal[0]}")
    scale = ROOT_COUNT / internal[0]
    leaf_counts = np.clip(np.round(leaf * scale), 1, _MAX_COUNT).astype(np.int64)
    counts = np.clip(np.round(internal * scale), 0, _MAX_COUNT).astype(np.int64)
    for i in reversed(range(len(splits))):  # children after parents: a split covering nothing counts its leaves
        if counts[i] == 0:
            counts[i] = sum(leaf_counts[~c] if c < 0 else counts[c] for c in children[i])
    return counts.tolist(), leaf_counts.tolist()


def _tree_text(index: int, root: Leaf | Split) -> str:
    if isinstance(root, Leaf):
        return (f"Tree={index}\nnum_leaves=1\nnum_cat=0\nsplit_feature=\nsplit_gain=\nthreshold=\ndecision_type=\n"
                f"left_child=\nright_child=\nleaf_value={float(root.value)!r}\nleaf_weight=\nleaf_count=0\n"
                "internal_value=\ninternal_weight=\ninternal_count=\nis_linear=0\nshrinkage=1\n\n\n")
    splits: list[Split] = []
    leaves: list[Leaf] = []
    children: list[list[int]] = []
    stack: list[tuple[Leaf | Split, int, int]] = [(root, -1, 0)]  # (node, parent, side): pre-order, no recursion
    while stack:
        node, parent, side = stack.pop()
        if isinstance(node, Leaf):
            leaves.append(node)
            me = ~(len(leaves) - 1)
        else:
            me = len(splits)
            splits.append(node)
            children.append([0, 0])
            stack += [(node.right, me, 1), (node.left, me, 0)]  # left popped first
        if parent >= 0:
            children[parent][side] = me
    thresholds, dtypes, bounds, words = [], [], [0], []
    for s in splits:
        if s.categories is None:
            thresholds.append(repr(float(s.threshold)))
            dtypes.append(_DT_MISSING_NAN | (_DT_DEFAULT_LEFT if s.default_left else 0))
        else:
            bits = np.zeros(max(s.categories) // 32 + 1 if s.categories else 1, dtype=np.uint64)
            for c in s.categories:
                bits[c // 32] |= np.uint64(1) << np.uint64(c % 32)
            thresholds.append(str(len(bounds) - 1))
            dtypes.append(_DT_CATEGORICAL | _DT_MISSING_NAN)
            words += [str(int(w)) for w in bits]
            bounds.append(len(words))
    internal_counts, leaf_counts = _counts(splits, leaves, children)
    n_cat = len(bounds) - 1
    lines = [
        f"Tree={index}", f"num_leaves={len(leaves)}", f"num_cat={n_cat}",
        "split_feature=" + " ".join(str(s.feature) for s in splits),
        "split_gain=" + " ".join("0" for _ in splits),
        "threshold=" + " ".join(thresholds),
        "decision_type=" + " ".join(str(d) for d in dtypes),
        "left_child=" + " ".join(str(c[0]) for c in children),
        "right_child=" + " ".join(str(c[1]) for c in children),
        "leaf_value=" + " ".join(repr(float(leaf.value)) for leaf in leaves),
        "leaf_weight=" + " ".join("0" for _ in leaves),
        "leaf_count=" + " ".join(map(str, leaf_counts)),
        "internal_value=" + " ".join("0" for _ in splits),
        "internal_weight=" + " ".join("0" for _ in splits),
        "internal_count=" + " ".join(map(str, internal_counts)),
    ]
    if n_cat:
        lines += ["cat_boundaries=" + " ".join(str(b) for b in bounds), "cat_threshold=" + " ".join(words)]
    lines += ["is_linear=0", "shrinkage=1"]
    return "\n".join(lines) + "\n\n\n"


def model_text(trees: list[Leaf | Split], *, feature_names: list[str], objective: str | None,
               n_outputs: int = 1, categorical: list[int] = (), where: str = "model") -> str:
    """LightGBM model text of `trees` (tree i belongs to output i % n_outputs, as in
    LightGBM's multiclass layout); `objective` is LightGBM's objective line (e.g. "binary
    sigmoid:1", "multiclass num_class:3"), None writes none: predict() is the raw sum.
    WhystreamError (one line, starting with `where`) for feature names LightGBM cannot hold."""
    if len(trees) % n_outputs:
        raise ValueError(f"{len(trees)} trees are not whole iterations of {n_outputs} outputs")
    check_feature_names(feature_names, where)
    header = ["tree", "version=v4", f"num_class={n_outputs}", f"num_tree_per_iteration={n_outputs}",
              "label_index=0", f"max_feature_idx={len(feature_names) - 1}"]
    if objective:
        header.append(f"objective={objective}")
    header += ["feature_names=" + " ".join(feature_names),
               "feature_infos=" + " ".join("none" for _ in feature_names), "", ""]
    body = "".join(_tree_text(i, tree) for i, tree in enumerate(trees))
    params = ["parameters:", "[boosting: gbdt]"]
    if objective:
        params.append(f"[objective: {objective.split()[0]}]")
    if categorical:
        params.append("[categorical_feature: " + ",".join(str(i) for i in sorted(categorical)) + "]")
    params += ["end of parameters", ""]
    return "\n".join(header) + body + "end of trees\n\n" + "\n".join(params)
