"""Saabas path attribution for LightGBM: the engine's cheap fallback.

Along the path a row takes through a tree, each split moves the expected
output from the parent's value to the child's; Saabas gives that move to the
split's feature. With node expectations weighted by cover (training counts),
the root's expectation is the TreeSHAP base value, so the attributions add up
to raw output - base value, exactly like SHAP, but they are not SHAP values
(they ignore feature interactions' order). LightGBM routes rows
(`pred_leaf=True`), so missing values and categorical splits follow the model.

Cost per row: one leaf lookup and one [F] vector add per tree. Of a multiclass
model, `class_index` picks one output's trees (tree i belongs to class i % K).
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np


def _leaf_tables(tree: dict, n_features: int) -> tuple[dict[int, np.ndarray], float]:
    """{leaf index: path contributions [F]} and the tree's expected output."""
    tables: dict[int, np.ndarray] = {}

    def expectation(node) -> tuple[float, float]:  # (expected value, cover)
        if "split_feature" not in node:
            return node["leaf_value"], node.get("leaf_count", 0) or 1e-12
        left, right = expectation(node["left_child"]), expectation(node["right_child"])
        cover = left[1] + right[1]
        node["_expected"] = (left[0] * left[1] + right[0] * right[1]) / cover
        node["_children"] = (left[0], right[0])
        return node["_expected"], cover

    def walk(node, path: np.ndarray) -> None:
        if "split_feature" not in node:  # a leaf (a single-leaf tree's has no index: it is leaf 0)
            tables[node.get("leaf_index", 0)] = path
            return
        for child, value in zip((node["left_child"], node["right_child"]), node["_children"]):
            step = path.copy()
            step[node["split_feature"]] += value - node["_expected"]
            walk(child, step)

    root = tree["tree_structure"]
    base, _ = expectation(root)
    walk(root, np.zeros(n_features))
    return tables, base


class SaabasExplainer:
    def __init__(self, booster: lgb.Booster, class_index: int | None = None):
        dump = booster.dump_model()
        per_iter = dump.get("num_tree_per_iteration", 1)
        if per_iter != 1 and class_index is None:
            raise ValueError("a multiclass model's Saabas attributions need class_index")
        self.booster = booster
        self.n_features = dump["max_feature_idx"] + 1
        self.tables = []
        self.expected_value = 0.0
        self._trees = [i for i in range(len(dump["tree_info"])) if per_iter == 1 or i % per_iter == class_index]
        for i in self._trees:
            tree = dump["tree_info"][i]
            tables, base = _leaf_tables(tree, self.n_features)
            table = np.zeros((max(tables) + 1, self.n_features))
            for leaf, path in tables.items():
                table[leaf] = path
            self.tables.append(table)
            self.expected_value += base

    def shap_values(self, X: np.ndarray) -> np.ndarray:
        leaves = self.booster.predict(X, pred_leaf=True).reshape(len(X), -1)[:, self._trees]
        out = np.zeros((len(X), self.n_features))
        for t, table in enumerate(self.tables):
            out += table[leaves[:, t]]
        return out
