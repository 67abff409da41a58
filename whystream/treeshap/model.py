"""LightGBM's model text (booster.model_to_string()) as the flat arrays of the
TreeSHAP kernels: trees, splits, category bitsets, each tree's quadrature
nodes and rule, each leaf's unique path; the layout is documented in `kernels`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from whystream.errors import UnsupportedModel
from whystream.treeshap.vector import HALF_LANES, LANES


@njit(nogil=True, cache=True, error_model="numpy")
def _build_paths(node_off, leaf_off, un_off, left, right, feat, icount, lcount, lval):
    """From each tree's child / feature / count arrays: the quad node arrays (parent, previous
    occurrence of the edge's feature, combined cover fraction z), per tree the largest number
    of distinct features on a path, whether a cover is zero, its expected value, and the
    per-leaf unique paths of "classic"."""
    T = node_off.shape[0] - 1
    U = un_off[T]
    un_int = np.zeros((U, 4), dtype=np.int32)
    un_kid = np.zeros((U, 2), dtype=np.int32)  # an internal node's children, left then right
    un_flt = np.zeros((U, 2))
    dist = np.zeros(U, dtype=np.int64)  # distinct features on the path to the node
    depth = np.zeros(U, dtype=np.int64)
    tree_maxd = np.zeros(T, dtype=np.int64)
    tree_zero = np.zeros(T, dtype=np.bool_)
    tree_ev = np.zeros(T)
    n_leaves = leaf_off[T]
    lf_d = np.zeros(n_leaves, dtype=np.int64)
    lf_pn_len = np.zeros(n_leaves, dtype=np.int64)
    for t in range(T):
        n0 = node_off[t]
        l0 = leaf_off[t]
        nint = node_off[t + 1] - n0
        if nint == 0:
            tree_ev[t] = lval[l0]  # Tree::ExpectedValue of a single leaf
            continue
        u0 = un_off[t]
        N = 2 * nint + 1
        un_int[u0, 1] = N
        for n in range(nint):
            for side in range(2):
                child = left[n0 + n] if side == 1 else right[n0 + n]
                uid = child if child >= 0 else nint + ~child
                un_int[u0 + uid, 0] = n
                un_int[u0 + uid, 3] = side
                un_kid[u0 + n, 1 - side] = uid
        zero = False
        for c in range(1, N):  # parents have smaller indices than their children
            e = u0 + c
            p = un_int[e, 0]
            f = feat[n0 + p]
            count = icount[n0 + c] if c < nint else lcount[l0 + c - nint]
            frac = count / icount[n0 + p]
            prev = N
            a = p
            while a != 0:
                if feat[n0 + un_int[u0 + a, 0]] == f:
                    prev = a
                    break
                a = un_int[u0 + a, 0]
            z = frac * (un_flt[u0 + prev, 0] if prev < N else 1.0)
            un_int[e, 1] = prev
            un_int[e, 2] = f
            un_flt[e, 0] = z
            if not z > 0.0:
                zero = True
            dist[e] = dist[u0 + p] + (1 if prev == N else 0)
            depth[e] = depth[u0 + p] + 1
        ev = 0.0
        total = icount[n0]
        maxd = 1
        for li in range(N - nint):
            e = u0 + nint + li
            un_flt[e, 1] = lval[l0 + li]
            ev += (lcount[l0 + li] / total) * lval[l0 + li]
            lf_d[l0 + li] = dist[e]
            lf_pn_len[l0 + li] = depth[e]
            maxd = max(maxd, dist[e])
        tree_ev[t] = ev
        tree_maxd[t] = maxd
        tree_zero[t] = zero

    # per-leaf unique paths for "classic"
    lf_pe_off = np.zeros(n_leaves, dtype=np.int64)
    lf_pn_off = np.zeros(n_leaves, dtype=np.int64)
    for leaf in range(1, n_leaves):
        lf_pe_off[leaf] = lf_pe_off[leaf - 1] + lf_d[leaf - 1]
        lf_pn_off[leaf] = lf_pn_off[leaf - 1] + lf_pn_len[leaf - 1]
    n_pe = lf_pe_off[n_leaves - 1] + lf_d[n_leaves - 1] if n_leaves else 0
    n_pn = lf_pn_off[n_leaves - 1] + lf_pn_len[n_leaves - 1] if n_leaves else 0
    pn_node = np.zeros(n_pn, dtype=np.int32)
    pn_left = np.zeros(n_pn, dtype=np.bool_)
    pn_pos = np.zeros(n_pn, dtype=np.int32)
    pe_feat = np.zeros(n_pe, dtype=np.int32)
    pe_z = np.zeros(n_pe)
    chain = np.zeros(max(1, depth.max() if U else 1), dtype=np.int64)
    for t in range(T):
        n0 = node_off[t]
        l0 = leaf_off[t]
        nint = node_off[t + 1] - n0
        u0 = un_off[t]
        for li in range(leaf_off[t + 1] - l0 if nint > 0 else 0):
            leaf = l0 + li
            k = 0
            a = nint + li
            while a != 0:  # the nodes below the path's edges, leaf first
                chain[k] = a
                k += 1
                a = un_int[u0 + a, 0]
            pe0 = lf_pe_off[leaf]
            pn0 = lf_pn_off[leaf]
            nd = 0
            for j in range(k):  # root first
                e = u0 + chain[k - 1 - j]
                f = un_int[e, 2]
                pos = 0
                while pos < nd and pe_feat[pe0 + pos] != f:
                    pos += 1
                if pos == nd:
                    pe_feat[pe0 + pos] = f
                    nd += 1
                pe_z[pe0 + pos] = un_flt[e, 0]  # the combined fraction at the last occurrence
                pn_node[pn0 + j] = un_int[e, 0]
                pn_left[pn0 + j] = un_int[e, 3] == 1
                pn_pos[pn0 + j] = pos
    return (un_int, un_flt, un_kid, tree_maxd, tree_zero, tree_ev, lf_d, lf_pe_off, lf_pn_off, lf_pn_len,
            pn_node, pn_left, pn_pos, pe_feat, pe_z)


def _quadrature_rules(points) -> tuple[np.ndarray, dict]:
    """Gauss-Legendre rules on [0, 1] with `points` points per row, laid out per 8-lane
    chunk as u[8], 1 - u[8], w[8]; a 4-point rule fills both halves of one chunk (two rows)."""
    parts, offsets, pos = [], {}, 0
    for n in sorted(set(int(n) for n in points)):
        if n == 0:
            continue
        xs, ws = np.polynomial.legendre.leggauss(n)
        u, w = (xs + 1.0) / 2.0, ws / 2.0
        if n < LANES:
            u, w = np.tile(u, LANES // n), np.tile(w, LANES // n)
        rule = np.concatenate([np.concatenate([u[k:k + LANES], 1.0 - u[k:k + LANES], w[k:k + LANES]])
                               for k in range(0, len(u), LANES)])
        offsets[n] = pos
        parts.append(rule)
        pos += len(rule)
    return (np.concatenate(parts) if parts else np.zeros(3 * LANES)), offsets


def _quad_records(un_off, un_int, un_flt, un_kid, tree_nch) -> tuple[np.ndarray, np.ndarray]:
    """Per quad node, what the "quad" kernel reads, flat: int32 [parent slot, prev slot,
    feature * 8, went-left, parent's split index, left child slot, right child slot, 0] and
    float64 [z, leaf value]; a slot is a node's offset (node * lanes of a pass) in the
    kernel's per-node vectors, so that the kernel adds instead of multiplying."""
    lanes = np.repeat(LANES * tree_nch, np.diff(un_off))
    rec = np.zeros((len(un_int), 8), dtype=np.int64)
    rec[:, 0], rec[:, 1] = un_int[:, 0] * lanes, un_int[:, 1] * lanes
    rec[:, 2], rec[:, 3], rec[:, 4] = un_int[:, 2] * LANES, un_int[:, 3], un_int[:, 0]
    rec[:, 5], rec[:, 6] = un_kid[:, 0] * lanes, un_kid[:, 1] * lanes
    if rec.size and rec.max() >= 2**31:
        raise UnsupportedModel("a tree too large for the TreeSHAP kernel (over 2^31 vector lanes)")
    return rec.astype(np.int32).ravel(), np.ascontiguousarray(un_flt).ravel()


def _numbers(parts: list[str], dtype) -> np.ndarray:
    text = " ".join(p for p in parts if p)
    return np.fromstring(text, dtype=dtype, sep=" ") if text else np.zeros(0, dtype=dtype)


@dataclass
class _Model:
    M: tuple
    n_features: int
    max_nodes: int
    max_d: int
    max_nch: int
    expected_value: float
    n_trees: int
    n_classic_trees: int


def _parse_model(text: str, class_index: int | None = None) -> _Model:
    """LightGBM's own text format (booster.model_to_string()): every number as the booster
    holds it, inf thresholds included, which dump_model()'s JSON clamps to +-1e300.
    `class_index`: of a multi-output model, keep only the trees of that output."""
    start = text.find("\nTree=")
    end = text.find("\nend of trees")
    header = dict(line.split("=", 1) for line in text[:max(start, 0)].split("\n") if "=" in line)
    n_class = int(header.get("num_class", 1))
    per_iter = int(header.get("num_tree_per_iteration", 1))
    if per_iter != 1 and class_index is None:
        raise UnsupportedModel(
            f"multiclass LightGBM model (num_class={n_class}, num_tree_per_iteration={per_iter}): "
            "TreeShap explains one output at a time; pass class_index")
    if class_index is not None and not 0 <= class_index < per_iter:
        raise ValueError(f"class_index must be in 0..{per_iter - 1}, got {class_index}")
    if "\naverage_output\n" in text[:max(start, 0) + 1]:
        raise UnsupportedModel("LightGBM random-forest models (average_output) are not supported")
    n_features = int(header["max_feature_idx"]) + 1

    trees = []
    if start >= 0:
        for block in text[start + 1:end if end >= 0 else len(text)].split("\nTree=")[0:]:
            lines = block.strip("\n").split("\n")
            fields = dict(line.split("=", 1) for line in lines[1:] if "=" in line)
            fields["index"] = lines[0].removeprefix("Tree=")
            trees.append(fields)
    if per_iter != 1:  # tree i belongs to output i % num_tree_per_iteration
        trees = [tr for tr in trees if int(tr["index"]) % per_iter == class_index]

    node_off, leaf_off, un_off, cat_base = [0], [0], [0], []
    cat_words = 0
    for tr in trees:
        if tr.get("is_linear", "0") != "0":
            raise UnsupportedModel(f"tree {tr['index']}: LightGBM linear trees (linear_tree=true) are not supported")
        L = int(tr["num_leaves"])
        node_off.append(node_off[-1] + L - 1)
        leaf_off.append(leaf_off[-1] + L)
        un_off.append(un_off[-1] + (2 * L - 1 if L > 1 else 0))
        cat_base.append(cat_words)
        if int(tr.get("num_cat", "0")) > 0:
            cat_words += len(tr["cat_threshold"].split())

    i32, i64, f64 = np.int32, np.int64, np.float64
    feat = _numbers([t.get("split_feature", "") for t in trees], i64).astype(i32)
    thr = _numbers([t.get("threshold", "") for t in trees], f64)
    dtype = _numbers([t.get("decision_type", "") for t in trees], i64)
    left = _numbers([t.get("left_child", "") for t in trees], i64).astype(i32)
    right = _numbers([t.get("right_child", "") for t in trees], i64).astype(i32)
    lval = _numbers([t["leaf_value"] for t in trees], f64)
    # counts only matter in trees with splits (a one-leaf tree may write none)
    lcount = _numbers([t.get("leaf_count", "") if int(t["num_leaves"]) > 1 else "0" for t in trees], f64)
    icount = _numbers([t.get("internal_count", "") for t in trees], f64)
    if not (len(feat) == len(thr) == len(dtype) == len(left) == len(right) == len(icount) == node_off[-1]
            and len(lval) == len(lcount) == leaf_off[-1]):
        raise UnsupportedModel("unexpected LightGBM model text: array lengths do not match num_leaves")

    # LightGBM decision_type: bit 0 categorical, bit 1 default left, bits 2-3 missing type
    kind = (((dtype >> 2) & 3) | (((dtype >> 1) & 1) << 2) | ((dtype & 1) << 3)).astype(i32)
    catoff = np.zeros(len(feat), dtype=i64)
    catlen = np.zeros(len(feat), dtype=i64)
    bits = []
    for t, tr in enumerate(trees):
        if int(tr.get("num_cat", "0")) == 0:
            continue
        bounds = np.fromstring(tr["cat_boundaries"], dtype=i64, sep=" ")
        bits.append(np.fromstring(tr["cat_threshold"], dtype=np.uint64, sep=" ").astype(np.uint32))
        nodes = np.arange(node_off[t], node_off[t + 1])
        nodes = nodes[(dtype[nodes] & 1) == 1]
        idx = thr[nodes].astype(i64)
        catoff[nodes] = cat_base[t] + bounds[idx]
        catlen[nodes] = bounds[idx + 1] - bounds[idx]
    cat_bits = np.concatenate(bits) if bits else np.zeros(1, dtype=np.uint32)

    node_off_a = np.asarray(node_off, dtype=i64)
    leaf_off_a = np.asarray(leaf_off, dtype=i64)
    un_off_a = np.asarray(un_off, dtype=i64)
    (un_int, un_flt, un_kid, tree_maxd, tree_zero, tree_ev, lf_d, lf_pe_off, lf_pn_off, lf_pn_len,
     pn_node, pn_left, pn_pos, pe_feat, pe_z) = _build_paths(node_off_a, leaf_off_a, un_off_a, left, right, feat,
                                                             icount, lcount, lval)
    has_split = np.diff(node_off_a) > 0
    # n Gauss points integrate degree <= 2n - 1 exactly; the integrand has degree d - 1:
    # 4 points for d <= 8 (two rows share a vector), else 8 per 16 features (one row, nch chunks).
    # 0: a tree with a zero cover, or a single leaf
    quad = has_split & ~tree_zero
    wide = LANES * -(-tree_maxd // (2 * LANES))
    tree_points = np.where(quad, np.where(tree_maxd <= 2 * HALF_LANES, HALF_LANES, wide), 0).astype(i64)
    tree_nch = np.where(quad, np.maximum(tree_points // LANES, 1), 0).astype(i64)
    tree_rows = np.where(tree_points == HALF_LANES, 2, 1).astype(i64)
    RU, rule_off = _quadrature_rules(tree_points)
    nd_rec, nd_flt = _quad_records(un_off_a, un_int, un_flt, un_kid, tree_nch)
    expected = 0.0
    for ev in tree_ev.tolist():  # in tree order, as PredictContrib accumulates it
        expected += ev
    M = (
        node_off_a, leaf_off_a, feat, thr, kind, catoff, catlen, cat_bits, left, right, lval,
        un_off_a, nd_rec, nd_flt, tree_nch,
        np.asarray([rule_off.get(int(n), 0) for n in tree_points], dtype=i64), RU,
        lf_d, lf_pe_off, lf_pn_off, lf_pn_len, pn_node, pn_left, pn_pos, pe_feat, pe_z,
        tree_rows,
    )
    return _Model(M, n_features, int(np.diff(node_off_a).max(initial=0)), int(tree_maxd.max(initial=1)),
                  int(tree_nch.max(initial=0)), expected, len(trees), int((has_split & tree_zero).sum()))
