"""LightGBM model text written from trees of another family, node by node.

A family module re-expresses each split in LightGBM's own terms (whystream/treeshap/
documents the routing LightGBM and the kernel share) and hands the trees here as `Tree`s;
`model_text` writes what `lightgbm.Booster(model_str=...)` loads and `booster.model_to_string()`
gives back unchanged.

LightGBM keeps node counts as 32-bit integers (`leaf_count`, `internal_count`: a fraction
such as XGBoost's hessian sum 75.74515 is read back as 0), and TreeSHAP only ever uses
their ratios (child / parent, leaf / root). So each tree's covers are scaled to integers
with a root of 2^30: every ratio is kept to within 2^-31 relative (XGBoost itself stores
them as float32, 2^-24), and no cover rounds to zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

ROOT_COUNT = 1 << 30

# LightGBM's decision_type: bit 0 categorical, bit 1 default left, bits 2-3 missing type (2: NaN)
_NUMERICAL_NAN = 2 << 2
_CATEGORICAL = 1 | (2 << 2)  # NaN goes right, as for every LightGBM categorical split
_DEFAULT_LEFT = 2


@dataclass
class Tree:
    """One tree, internal nodes numbered so that a parent comes before its children (0 is
    the root); a child is an internal node's number, or ~leaf for a leaf. A tree of one
    leaf has no internal nodes."""

    feature: list[int] = field(default_factory=list)
    threshold: list[float] = field(default_factory=list)  # numerical: left iff x <= threshold
    categories: list[tuple[int, ...] | None] = field(default_factory=list)  # categorical: left iff int(x) in it
    default_left: list[bool] = field(default_factory=list)  # where NaN goes (numerical splits)
    left: list[int] = field(default_factory=list)
    right: list[int] = field(default_factory=list)
    cover: list[float] = field(default_factory=list)
    leaf_value: list[float] = field(default_factory=list)
    leaf_cover: list[float] = field(default_factory=list)

    def add_split(self, feature: int, threshold: float, default_left: bool, cover: float,
                  categories: tuple[int, ...] | None = None) -> int:
        self.feature.append(feature)
        self.threshold.append(threshold)
        self.categories.append(categories)
        self.default_left.append(default_left)
        self.left.append(0)
        self.right.append(0)
        self.cover.append(cover)
        return len(self.feature) - 1

    def add_leaf(self, value: float, cover: float) -> int:
        self.leaf_value.append(value)
        self.leaf_cover.append(cover)
        return ~(len(self.leaf_value) - 1)


def constant(value: float) -> Tree:
    """A one-leaf tree: a base score."""
    tree = Tree()
    tree.add_leaf(value, 1.0)
    return tree


def _num(x: float) -> str:
    return repr(float(x))  # the shortest text that reads back as the same double


def _tree_text(index: int, tree: Tree) -> str:
    n_leaves = len(tree.leaf_value)
    lines = [f"Tree={index}", f"num_leaves={n_leaves}"]
    if not tree.feature:
        return "\n".join(lines + ["num_cat=0", "split_feature=", "split_gain=", "threshold=", "decision_type=",
                                  "left_child=", "right_child=", f"leaf_value={_num(tree.leaf_value[0])}",
                                  "leaf_weight=", "leaf_count=", "internal_value=", "internal_weight=",
                                  "internal_count=", "is_linear=0", "shrinkage=1"]) + "\n\n\n"
    root = tree.cover[0]
    if not (root > 0 and math.isfinite(root)):
        raise ValueError(f"tree {index}: root cover {root}")
    scale = ROOT_COUNT / root
    counts = [max(1, min(ROOT_COUNT, round(c * scale))) for c in tree.cover]
    leaf_counts = [max(1, min(ROOT_COUNT, round(c * scale))) for c in tree.leaf_cover]
    thresholds, kinds, boundaries, words = [], [], [0], []
    for thr, cats, default_left in zip(tree.threshold, tree.categories, tree.default_left):
        if cats is None:
            thresholds.append(_num(thr))
            kinds.append(_NUMERICAL_NAN | (_DEFAULT_LEFT if default_left else 0))
            continue
        bits = np.zeros(max(cats) // 32 + 1 if cats else 1, dtype=np.uint64)
        for c in cats:
            bits[c // 32] |= np.uint64(1) << np.uint64(c % 32)
        thresholds.append(str(len(boundaries) - 1))
        kinds.append(_CATEGORICAL)
        words.extend(int(w) for w in bits)
        boundaries.append(len(words))
    n = len(tree.feature)
    join = " ".join
    lines += [
        f"num_cat={len(boundaries) - 1}",
        f"split_feature={join(map(str, tree.feature))}",
        f"split_gain={join(['0'] * n)}",
        f"threshold={join(thresholds)}",
        f"decision_type={join(map(str, kinds))}",
        f"left_child={join(map(str, tree.left))}",
        f"right_child={join(map(str, tree.right))}",
        f"leaf_value={join(map(_num, tree.leaf_value))}",
        f"leaf_weight={join(['0'] * n_leaves)}",
        f"leaf_count={join(map(str, leaf_counts))}",
        f"internal_value={join(['0'] * n)}",
        f"internal_weight={join(['0'] * n)}",
        f"internal_count={join(map(str, counts))}",
    ]
    if len(boundaries) > 1:
        lines += [f"cat_boundaries={join(map(str, boundaries))}", f"cat_threshold={join(map(str, words))}"]
    return "\n".join(lines + ["is_linear=0", "shrinkage=1"]) + "\n\n\n"


def model_text(trees: list[Tree], *, objective: str, feature_names: list[str], categorical: list[int],
               n_outputs: int = 1) -> str:
    """LightGBM's text of `trees` (tree i is output i % n_outputs's, LightGBM's layout).
    `objective`: LightGBM's objective line, e.g. "binary sigmoid:1", "multiclass num_class:3"."""
    if len(trees) % n_outputs:
        raise ValueError(f"{len(trees)} trees for {n_outputs} outputs")
    bad = [name for name in feature_names if not name or any(ch.isspace() for ch in name)]
    if bad:
        raise ValueError(f"feature name {bad[0]!r}: LightGBM's model text cannot hold a name with spaces")
    infos = ["none"] * len(feature_names)  # value ranges: informative only, never read to predict
    head = [
        "tree", "version=v4", f"num_class={n_outputs}", f"num_tree_per_iteration={n_outputs}", "label_index=0",
        f"max_feature_idx={len(feature_names) - 1}", f"objective={objective}",
        f"feature_names={' '.join(feature_names)}", f"feature_infos={' '.join(infos)}", "", "",
    ]
    body = "".join(_tree_text(i, tree) for i, tree in enumerate(trees))
    params = ["parameters:", "[boosting: gbdt]", f"[objective: {objective.split()[0]}]",
              f"[categorical_feature: {','.join(map(str, sorted(categorical)))}]", "end of parameters", "",
              "pandas_categorical:null", ""]
    return "\n".join(head) + body + "end of trees\n\n" + "\n".join(params)
