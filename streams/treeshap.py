"""Exact path-dependent TreeSHAP for LightGBM boosters, compiled with numba.

`TreeShap(booster)` parses `booster.dump_model()` once into flat numpy arrays;
`shap_values(X)` then returns what `shap.TreeExplainer(booster).shap_values(X)`
returns (for a LightGBM booster that is LightGBM's own `pred_contrib` TreeSHAP,
without the bias column), and `expected_value` is its base value in raw margin
space.

Algorithm ("leaf-subset tables", after Fast TreeSHAP v2, Yang 2021)
--------------------------------------------------------------------
Path-dependent TreeSHAP splits into one small game per leaf.  For a leaf with
value v, let P be the d distinct features on its root path, z_j the fraction of
training rows (cover) that follows the path's branches on feature j, and
o_j in {0, 1} whether row x follows all of them.  Then

    phi_i += v (o_i - z_i) * sum_{S in P-i} |S|!(d-|S|-1)!/d! prod_{S} o_j prod_{P-S-i} z_j

Because o is 0/1, only the set Q = {j : o_j = 1} of the row matters:

    i not in Q:  phi_i -= T(Q)
    i in Q:      phi_i += (1 - z_i)/z_i * T(Q - i)
    with T(Q) = v * prod_{P-Q} z_j * sum_s w_d(s) e_{|Q|-s}(z_Q)

(e_m: elementary symmetric polynomials).  T depends on the model only, so it
is tabulated once per leaf (2^d doubles) and a row costs O(d) per leaf: the
per-tree work drops from O(L D^2) (Lundberg's algorithm, which LightGBM and
shap run) to O(L D).  All terms of T are positive, so there is no
cancellation.  Leaves whose path is too deep for the table budget are computed
at run time from the same formula (O(d + |Q|^2) per leaf, no table), and
`algorithm="classic"` keeps Lundberg's extend/unwind on per-leaf paths as a
cross-check.

LightGBM semantics mirrored here (include/LightGBM/tree.h, c_api.cpp):
- numerical split, left iff x <= threshold; NaN becomes 0.0 unless the split's
  missing_type is NaN, in which case NaN goes the default direction; with
  missing_type Zero, values with |x| <= 1e-35 (and so NaN) go the default way;
- dense input rows drop |x| <= kZeroThreshold (1e-35f), i.e. read them as 0.0;
- categorical split, left iff int(x) (truncated) is in the category set; NaN,
  negative ints and values beyond int32 go right;
- covers are internal_count / leaf_count;
- per tree base value sum_l (leaf_count_l / root_count) * v_l, summed over
  trees in order (LightGBM's Tree::ExpectedValue); a single-leaf tree only adds
  its value to the base value.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange

from whystream.errors import WhystreamError

EXPLAINER_NAME = "whystream-treeshap"
EXPLAINER_VERSION = "1.0.0"

# float(np.float32(1e-35)): LightGBM's kZeroThreshold (a float literal)
K_ZERO = 1.0000000180025095e-35

# node kind bits
_MISS_NONE, _MISS_ZERO, _MISS_NAN = 0, 1, 2
_DEFAULT_LEFT = 4
_CATEGORICAL = 8

# algorithms (kernel `mode`)
ALGO_CLASSIC, ALGO_POLY, ALGO_TABLE = 0, 1, 2
ALGO_QUAD = 3
_ALGOS = {"classic": ALGO_CLASSIC, "poly": ALGO_POLY, "table": ALGO_TABLE, "quad": ALGO_QUAD}

# leaves with more distinct path features are never tabulated (2^d doubles)
_TABLE_MAX_DEPTH = 16
# batches smaller than this run on the calling thread only
_PAR_MIN_ROWS = 16
# rows per work item of the parallel batch kernel (tree-major inside a block)
_BLOCK_ROWS = 64


class UnsupportedModel(WhystreamError, ValueError):
    """A LightGBM model this explainer cannot explain exactly (multiclass, linear trees, ...)."""


# --------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------


@njit(nogil=True, cache=True, inline="always")
def _go_left(fval, kind, thr, cat_off, cat_len, cat_bits):
    if kind & 8:  # categorical
        if math.isnan(fval) or fval <= -1.0 or fval >= 2147483648.0:
            return False
        iv = np.int64(fval)  # truncation, as static_cast<int>
        w = iv >> 5
        if w >= cat_len:
            return False
        return ((cat_bits[cat_off + w] >> np.uint32(iv & 31)) & np.uint32(1)) != 0
    mt = kind & 3
    if math.isnan(fval):
        if mt == 2:
            return (kind & 4) != 0
        fval = 0.0
    elif -K_ZERO <= fval <= K_ZERO:
        fval = 0.0
    if mt == 1 and fval == 0.0:
        return (kind & 4) != 0
    return fval <= thr


@njit(nogil=True, cache=True, inline="always")
def _leaf_poly(phi, o, d, v, pe0, pe_feat, pe_z, wrow, e, ep):
    """Run-time contributions of one leaf: O(d + q^2), no table."""
    q = 0
    zc = 1.0
    e[0] = 1.0
    for k in range(d):
        z = pe_z[pe0 + k]
        if o[k]:
            q += 1
            e[q] = 0.0
            for m in range(q, 0, -1):
                e[m] += z * e[m - 1]
        else:
            zc *= z
    if q < d:
        s = 0.0
        for t in range(q + 1):
            s += wrow[t] * e[q - t]
        neg = v * zc * s
        for k in range(d):
            if not o[k]:
                phi[pe_feat[pe0 + k]] -= neg
    if q > 0:
        for k in range(d):
            if o[k]:
                z = pe_z[pe0 + k]
                ep[0] = 1.0
                for m in range(1, q):
                    ep[m] = e[m] - z * ep[m - 1]
                s = 0.0
                for t in range(q):
                    s += wrow[t] * ep[q - 1 - t]
                phi[pe_feat[pe0 + k]] += v * (1.0 - z) * zc * s


@njit(nogil=True, cache=True, inline="always")
def _leaf_classic(phi, o, d, v, pe0, pe_feat, pe_z, pz, po, pw):
    """Lundberg's extend / unwound-path-sum on one leaf's unique path (as LightGBM)."""
    # element 0 is the (feature -1, 1, 1) root element
    pz[0] = 1.0
    po[0] = 1.0
    pw[0] = 1.0
    for ud in range(1, d + 1):
        zf = pe_z[pe0 + ud - 1]
        of = 1.0 if o[ud - 1] else 0.0
        pz[ud] = zf
        po[ud] = of
        pw[ud] = 0.0
        for i in range(ud - 1, -1, -1):
            pw[i + 1] += of * pw[i] * (i + 1) / (ud + 1.0)
            pw[i] = zf * pw[i] * (ud - i) / (ud + 1.0)
    for pi in range(1, d + 1):
        of = po[pi]
        zf = pz[pi]
        nxt = pw[d]
        total = 0.0
        for i in range(d - 1, -1, -1):
            if of != 0.0:
                tmp = nxt * (d + 1) / ((i + 1) * of)
                total += tmp
                nxt = pw[i] - tmp * zf * ((d - i) / (d + 1.0))
            else:
                total += (pw[i] / zf) / ((d - i) / (d + 1.0))
        phi[pe_feat[pe0 + pi - 1]] += total * (of - zf) * v


@njit(nogil=True, cache=True)
def _tree_shap_rows(X, r0, r1, t, M, mode, out, dec, o, e, ep, pz, po, pw):
    (tree_node_off, tree_leaf_off, nd_feat, nd_thr, nd_kind, nd_catoff, nd_catlen, cat_bits,
     lf_val, lf_d, lf_pe_off, lf_pn_off, lf_pn_len, lf_toff, pn_node, pn_left, pn_pos,
     pe_feat, pe_z, pe_r, tab, W, nd_left, nd_right) = M
    n0 = tree_node_off[t]
    n1 = tree_node_off[t + 1]
    l0 = tree_leaf_off[t]
    l1 = tree_leaf_off[t + 1]
    if n1 == n0:
        return  # single-leaf tree: base value only
    for r in range(r0, r1):
        x = X[r]
        phi = out[r]
        for n in range(n0, n1):
            dec[n - n0] = _go_left(x[nd_feat[n]], nd_kind[n], nd_thr[n], nd_catoff[n],
                                   nd_catlen[n], cat_bits)
        for leaf in range(l0, l1):
            d = lf_d[leaf]
            v = lf_val[leaf]
            pe0 = lf_pe_off[leaf]
            p0 = lf_pn_off[leaf]
            p1 = p0 + lf_pn_len[leaf]
            toff = lf_toff[leaf]
            if mode == 2 and toff >= 0:
                q = (np.int64(1) << d) - 1
                for j in range(p0, p1):
                    if dec[pn_node[j]] != pn_left[j]:
                        q &= ~(np.int64(1) << pn_pos[j])
                tq = tab[toff + q]
                for k in range(d):
                    bit = np.int64(1) << k
                    if q & bit:
                        phi[pe_feat[pe0 + k]] += pe_r[pe0 + k] * tab[toff + (q ^ bit)]
                    else:
                        phi[pe_feat[pe0 + k]] -= tq
            else:
                for k in range(d):
                    o[k] = 1
                for j in range(p0, p1):
                    if dec[pn_node[j]] != pn_left[j]:
                        o[pn_pos[j]] = 0
                if mode == 0:
                    _leaf_classic(phi, o, d, v, pe0, pe_feat, pe_z, pz, po, pw)
                else:
                    _leaf_poly(phi, o, d, v, pe0, pe_feat, pe_z, W[d], e, ep)


@njit(nogil=True, cache=True, inline="always")
def _tree_quad_rows(X, r0, r1, t, M, QM, G, out, dec, o, P, S, A, I):
    """Quadrature TreeSHAP of tree t for rows r0..r1: O(N G) per row, N = 2L - 1 nodes.

    phi_f += v_l (o_f - z_f) * int_0^1 prod_{j != f} (o_j u + z_j (1 - u)) du for every
    leaf l, evaluated exactly with G-point Gauss-Legendre; the per-leaf products are
    shared along the tree (top-down pass) and summed bottom-up, so that each edge
    contributes once (repeated features: telescoping over the next occurrences).
    """
    tree_node_off = M[0]
    nd_feat = M[2]
    nd_thr = M[3]
    nd_kind = M[4]
    nd_catoff = M[5]
    nd_catlen = M[6]
    cat_bits = M[7]
    (un_off, un_parent, un_side, un_feat, un_z, un_prev, un_val, GU, GW) = QM
    n0 = tree_node_off[t]
    nint = tree_node_off[t + 1] - n0
    if nint == 0:
        return
    u0 = un_off[t]
    N = un_off[t + 1] - u0  # 2 * nint + 1; row N of the scratch is the "no previous occurrence" sink
    gu = GU[G]
    gw = GW[G]
    for r in range(r0, r1):
        x = X[r]
        phi = out[r]
        for n in range(nint):
            g = n0 + n
            dec[n] = _go_left(x[nd_feat[g]], nd_kind[g], nd_thr[g], nd_catoff[g], nd_catlen[g], cat_bits)
        for g in range(G):
            P[0, g] = 1.0
            I[N, g] = 1.0
        o[N] = True
        # top-down: P_c(u) = P_parent(u) * a_c(u) / a_prev(u)
        for c in range(1, N):
            k = u0 + c
            pr = un_prev[k]
            oc = (dec[un_parent[k]] == un_side[k]) and o[pr]
            o[c] = oc
            z = un_z[k]
            of = 1.0 if oc else 0.0
            p = un_parent[k]
            for g in range(G):
                a = z * (1.0 - gu[g]) + of * gu[g]
                ia = 1.0 / a
                I[c, g] = ia
                P[c, g] = P[p, g] * a * I[pr, g]
        for c in range(nint):
            for g in range(G):
                S[c, g] = 0.0
                A[c, g] = 0.0
        # bottom-up: leaves, then internal nodes (children have larger indices)
        for c in range(N - 1, 0, -1):
            k = u0 + c
            p = un_parent[k]
            pr = un_prev[k]
            s = 0.0
            if c >= nint:
                v = un_val[k]
                for g in range(G):
                    sc = v * P[c, g]
                    S[c, g] = sc
                    s += gw[g] * sc * I[c, g]
                    S[p, g] += sc
                    A[pr, g] += sc
            else:
                for g in range(G):
                    sc = S[c, g]
                    s += gw[g] * (sc - A[c, g]) * I[c, g]
                    S[p, g] += sc
                    A[pr, g] += sc
            of = 1.0 if o[c] else 0.0
            phi[un_feat[k]] += (of - un_z[k]) * s


@njit(nogil=True, cache=True)
def _quad_range(X, r0, r1, M, QM, tree_G, out, max_nodes):
    tree_node_off = M[0]
    gmax = QM[7].shape[1]
    N = 2 * max_nodes + 2
    dec = np.empty(max(max_nodes, 1), dtype=np.bool_)
    o = np.empty(N, dtype=np.bool_)
    P = np.empty((N, gmax))
    S = np.empty((N, gmax))
    A = np.empty((N, gmax))
    I = np.empty((N, gmax))
    for t in range(tree_node_off.shape[0] - 1):
        G = tree_G[t]
        if G <= 8:
            _tree_quad_rows(X, r0, r1, t, M, QM, 8, out, dec, o, P, S, A, I)
        else:
            _tree_quad_rows(X, r0, r1, t, M, QM, G, out, dec, o, P, S, A, I)


@njit(nogil=True, cache=True)
def _quad_serial(X, M, QM, tree_G, out, max_nodes, block):
    n = X.shape[0]
    for r0 in range(0, n, block):
        _quad_range(X, r0, min(n, r0 + block), M, QM, tree_G, out, max_nodes)


@njit(nogil=True, cache=True, parallel=True)
def _quad_parallel(X, M, QM, tree_G, out, max_nodes, block):
    n = X.shape[0]
    nb = (n + block - 1) // block
    for b in prange(nb):
        r0 = b * block
        _quad_range(X, r0, min(n, r0 + block), M, QM, tree_G, out, max_nodes)


@njit(nogil=True, cache=True)
def _shap_range(X, r0, r1, M, mode, out, max_nodes, max_d):
    """Rows r0..r1 on the calling thread, tree-major (a tree's data stays in cache)."""
    tree_node_off = M[0]
    dec = np.empty(max(max_nodes, 1), dtype=np.bool_)
    o = np.empty(max_d + 1, dtype=np.uint8)
    e = np.empty(max_d + 2)
    ep = np.empty(max_d + 2)
    pz = np.empty(max_d + 2)
    po = np.empty(max_d + 2)
    pw = np.empty(max_d + 2)
    for t in range(tree_node_off.shape[0] - 1):
        _tree_shap_rows(X, r0, r1, t, M, mode, out, dec, o, e, ep, pz, po, pw)


@njit(nogil=True, cache=True)
def _shap_serial(X, M, mode, out, max_nodes, max_d, block):
    n = X.shape[0]
    for r0 in range(0, n, block):
        _shap_range(X, r0, min(n, r0 + block), M, mode, out, max_nodes, max_d)


@njit(nogil=True, cache=True, parallel=True)
def _shap_parallel(X, M, mode, out, max_nodes, max_d, block):
    n = X.shape[0]
    nb = (n + block - 1) // block
    for b in prange(nb):
        r0 = b * block
        _shap_range(X, r0, min(n, r0 + block), M, mode, out, max_nodes, max_d)


@njit(nogil=True, cache=True)
def _raw_range(X, r0, r1, M, base, out):
    (tree_node_off, tree_leaf_off, nd_feat, nd_thr, nd_kind, nd_catoff, nd_catlen, cat_bits,
     lf_val, lf_d, lf_pe_off, lf_pn_off, lf_pn_len, lf_toff, pn_node, pn_left, pn_pos,
     pe_feat, pe_z, pe_r, tab, W, nd_left, nd_right) = M
    T = tree_node_off.shape[0] - 1
    for r in range(r0, r1):
        x = X[r]
        s = base
        for t in range(T):
            n0 = tree_node_off[t]
            l0 = tree_leaf_off[t]
            if tree_node_off[t + 1] == n0:
                s += lf_val[l0]
                continue
            node = 0
            while node >= 0:
                g = n0 + node
                if _go_left(x[nd_feat[g]], nd_kind[g], nd_thr[g], nd_catoff[g], nd_catlen[g],
                            cat_bits):
                    node = nd_left[g]
                else:
                    node = nd_right[g]
            s += lf_val[l0 + ~node]
        out[r] = s


@njit(nogil=True, cache=True, parallel=True)
def _raw_parallel(X, M, base, out, block):
    n = X.shape[0]
    nb = (n + block - 1) // block
    for b in prange(nb):
        r0 = b * block
        _raw_range(X, r0, min(n, r0 + block), M, base, out)


@njit(nogil=True, cache=True)
def _build_tables(lf_val, lf_d, lf_pe_off, lf_toff, pe_z, W, tab, max_d):
    size_max = np.int64(1) << max_d
    poly = np.zeros((size_max, max_d + 1))
    prod = np.empty(size_max)
    for leaf in range(lf_val.shape[0]):
        toff = lf_toff[leaf]
        if toff < 0:
            continue
        d = lf_d[leaf]
        v = lf_val[leaf]
        pe0 = lf_pe_off[leaf]
        size = np.int64(1) << d
        full = size - 1
        poly[0, 0] = 1.0
        prod[0] = 1.0
        for q in range(1, size):
            parent = q & (q - 1)
            low = q ^ parent
            k = 0
            while (np.int64(1) << k) != low:
                k += 1
            z = pe_z[pe0 + k]
            prod[q] = prod[parent] * z
            c = 0
            qq = q
            while qq:
                qq &= qq - 1
                c += 1
            poly[q, 0] = 1.0
            for m in range(1, c):
                poly[q, m] = poly[parent, m] + z * poly[parent, m - 1]
            poly[q, c] = z * poly[parent, c - 1]
        for q in range(size):
            c = 0
            qq = q
            while qq:
                qq &= qq - 1
                c += 1
            s = 0.0
            for t in range(min(c, d - 1) + 1):
                s += W[d, t] * poly[q, c - t]
            tab[toff + q] = v * prod[full ^ q] * s


# --------------------------------------------------------------------------
# model parsing
# --------------------------------------------------------------------------


def _shapley_weights(max_d: int) -> np.ndarray:
    """W[d, s] = s! (d-1-s)! / d! = 1 / (d * C(d-1, s))."""
    W = np.zeros((max_d + 1, max_d + 1))
    for d in range(1, max_d + 1):
        for s in range(d):
            W[d, s] = 1.0 / (d * math.comb(d - 1, s))
    return W


def _cat_words(threshold: str) -> np.ndarray:
    cats = [int(c) for c in str(threshold).split("||") if c != ""]
    if not cats:
        return np.zeros(0, dtype=np.uint32)
    words = np.zeros(max(cats) // 32 + 1, dtype=np.uint32)
    for c in cats:
        if c >= 0:
            words[c // 32] |= np.uint32(1 << (c % 32))
    return words


@dataclass
class _Flat:
    arrays: tuple
    quad: tuple
    tree_G: np.ndarray
    max_nodes: int
    max_d: int
    expected_value: float
    n_trees: int
    leaf_depths: np.ndarray


def _flatten(dump: dict, table_budget: int) -> _Flat:
    if dump.get("num_class", 1) != 1 or dump.get("num_tree_per_iteration", 1) != 1:
        raise UnsupportedModel(
            f"multiclass LightGBM models are not supported (num_class={dump.get('num_class')}, "
            f"num_tree_per_iteration={dump.get('num_tree_per_iteration')}); "
            "TreeShap explains single-output models only"
        )
    if dump.get("average_output"):
        raise UnsupportedModel("LightGBM random-forest models (average_output) are not supported")

    tree_node_off = [0]
    tree_leaf_off = [0]
    nd_feat, nd_thr, nd_kind, nd_catoff, nd_catlen = [], [], [], [], []
    nd_left, nd_right = [], []
    cat_words: list[np.ndarray] = []
    n_cat_words = 0
    lf_val, lf_d, lf_pe_off, lf_pn_off, lf_pn_len = [], [], [], [], []
    pn_node, pn_left, pn_pos = [], [], []
    pe_feat, pe_z = [], []
    un_off = [0]
    un_parent, un_side, un_feat, un_z, un_prev, un_val = [], [], [], [], [], []
    tree_G = []
    expected = 0.0
    max_nodes = 0
    max_d = 1

    for ti in dump["tree_info"]:
        root = ti["tree_structure"]
        if "split_index" not in root:  # single leaf
            _check_leaf(root)
            v = float(root["leaf_value"])
            expected += v
            nb = tree_node_off[-1]
            tree_node_off.append(nb)
            tree_leaf_off.append(tree_leaf_off[-1] + 1)
            lf_val.append(v)
            lf_d.append(0)
            lf_pe_off.append(len(pe_feat))
            lf_pn_off.append(len(pn_node))
            lf_pn_len.append(0)
            un_off.append(un_off[-1])
            tree_G.append(1)
            continue
        n_leaves = int(ti["num_leaves"])
        n_int = n_leaves - 1
        max_nodes = max(max_nodes, n_int)
        base_n = tree_node_off[-1]
        base_l = tree_leaf_off[-1]
        t_feat = [0] * n_int
        t_thr = [0.0] * n_int
        t_kind = [0] * n_int
        t_catoff = [0] * n_int
        t_catlen = [0] * n_int
        t_left = [0] * n_int
        t_right = [0] * n_int
        leaves: list = [None] * n_leaves  # (value, count, pn list, pe list)
        root_count = float(root["internal_count"])
        n_un = 2 * n_int + 1
        q_parent = [0] * n_un
        q_side = [False] * n_un
        q_feat = [0] * n_un
        q_z = [1.0] * n_un
        q_prev = [n_un] * n_un  # n_un: no previous occurrence (the kernels' sink row)
        q_val = [0.0] * n_un

        # iterative DFS: (node, path nodes [(split_index, went_left, pos)], feats {f: pos}, z list)
        stack = [(root, [], {}, [], [], {})]
        while stack:
            node, path, fpos, flist, zlist, focc = stack.pop()
            if "split_index" not in node:
                _check_leaf(node)
                li = int(node["leaf_index"])
                leaves[li] = (float(node["leaf_value"]), float(node["leaf_count"]), path, flist, zlist)
                q_val[n_int + li] = float(node["leaf_value"])
                continue
            si = int(node["split_index"])
            f = int(node["split_feature"])
            t_feat[si] = f
            dt = node["decision_type"]
            if dt == "==":
                words = _cat_words(node["threshold"])
                t_kind[si] = _CATEGORICAL
                t_catoff[si] = n_cat_words
                t_catlen[si] = len(words)
                cat_words.append(words)
                n_cat_words += len(words)
            elif dt == "<=":
                t_thr[si] = float(node["threshold"])
                mt = node.get("missing_type", "None")
                kind = {"None": _MISS_NONE, "Zero": _MISS_ZERO, "NaN": _MISS_NAN}.get(mt)
                if kind is None:
                    raise UnsupportedModel(f"unknown missing_type {mt!r} in tree {ti.get('tree_index')}")
                if node.get("default_left", False):
                    kind |= _DEFAULT_LEFT
                t_kind[si] = kind
            else:
                raise UnsupportedModel(f"unknown decision_type {dt!r} in tree {ti.get('tree_index')}")
            count = float(node["internal_count"])
            for side, child in ((1, node["left_child"]), (0, node["right_child"])):
                ccount = float(child["internal_count"] if "split_index" in child else child["leaf_count"])
                code = int(child["split_index"]) if "split_index" in child else ~int(child["leaf_index"])
                if side:
                    t_left[si] = code
                else:
                    t_right[si] = code
                frac = ccount / count if count > 0 else math.nan
                if f in fpos:
                    pos = fpos[f]
                    nfpos, nflist = fpos, flist
                    nz = list(zlist)
                    nz[pos] = nz[pos] * frac
                else:
                    pos = len(flist)
                    nfpos = dict(fpos)
                    nfpos[f] = pos
                    nflist = flist + [f]
                    nz = zlist + [frac]
                uid = code if code >= 0 else n_int + ~code
                q_parent[uid] = si
                q_side[uid] = bool(side)
                q_feat[uid] = f
                q_z[uid] = nz[pos]
                q_prev[uid] = focc.get(f, n_un)
                nfocc = dict(focc)
                nfocc[f] = uid
                stack.append((child, path + [(si, side, pos)], nfpos, nflist, nz, nfocc))

        # LightGBM's Tree::ExpectedValue, in leaf order
        ev = 0.0
        for li in range(n_leaves):
            if leaves[li] is None:
                raise UnsupportedModel(f"tree {ti.get('tree_index')}: leaf {li} missing from the dump")
            v, cnt, _, _, _ = leaves[li]
            ev += (cnt / root_count) * v
        expected += ev

        nd_feat += t_feat
        nd_thr += t_thr
        nd_kind += t_kind
        nd_catoff += t_catoff
        nd_catlen += t_catlen
        nd_left += t_left
        nd_right += t_right
        tree_node_off.append(base_n + n_int)
        tree_leaf_off.append(base_l + n_leaves)
        un_off.append(un_off[-1] + n_un)
        un_parent += q_parent
        un_side += q_side
        un_feat += q_feat
        un_z += q_z
        un_prev += q_prev
        un_val += q_val
        tmax_d = max(len(leaves[li][3]) for li in range(n_leaves))
        # quadrature points for exact integration of degree d-1; 0 = a zero cover (division
        # by zero), computed with the run-time subset formula instead
        tree_G.append((tmax_d + 1) // 2 if all(zz > 0 for zz in q_z[1:]) else 0)
        for li in range(n_leaves):
            v, cnt, path, flist, zlist = leaves[li]
            lf_val.append(v)
            lf_d.append(len(flist))
            max_d = max(max_d, len(flist))
            lf_pe_off.append(len(pe_feat))
            pe_feat += flist
            pe_z += zlist
            lf_pn_off.append(len(pn_node))
            lf_pn_len.append(len(path))
            for si, side, pos in path:
                pn_node.append(si)
                pn_left.append(side)
                pn_pos.append(pos)

    lf_d_a = np.asarray(lf_d, dtype=np.int64)
    pe_z_a = np.asarray(pe_z, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        pe_r_a = (1.0 - pe_z_a) / pe_z_a
    lf_pe_off_a = np.asarray(lf_pe_off, dtype=np.int64)

    # which leaves get a table: smallest d first, within the budget (entries)
    lf_toff = np.full(len(lf_val), -1, dtype=np.int64)
    ok = (lf_d_a >= 1) & (lf_d_a <= _TABLE_MAX_DEPTH)
    # a zero cover on the path would need a division by zero: compute those at run time
    for leaf in np.nonzero(ok)[0]:
        p0 = lf_pe_off_a[leaf]
        if not np.all(pe_z_a[p0:p0 + lf_d_a[leaf]] > 0):
            ok[leaf] = False
    order = np.argsort(lf_d_a, kind="stable")
    total = 0
    for leaf in order:
        if not ok[leaf]:
            continue
        size = 1 << int(lf_d_a[leaf])
        if total + size > table_budget:
            break
        lf_toff[leaf] = total
        total += size
    tab = np.zeros(max(total, 1), dtype=np.float64)
    W = _shapley_weights(max_d)
    tab_max_d = int(lf_d_a[lf_toff >= 0].max()) if total else 0

    i32 = np.int32
    arrays = (
        np.asarray(tree_node_off, dtype=np.int64),
        np.asarray(tree_leaf_off, dtype=np.int64),
        np.asarray(nd_feat, dtype=i32),
        np.asarray(nd_thr, dtype=np.float64),
        np.asarray(nd_kind, dtype=i32),
        np.asarray(nd_catoff, dtype=np.int64),
        np.asarray(nd_catlen, dtype=np.int64),
        np.concatenate(cat_words) if cat_words else np.zeros(1, dtype=np.uint32),
        np.asarray(lf_val, dtype=np.float64),
        lf_d_a,
        lf_pe_off_a,
        np.asarray(lf_pn_off, dtype=np.int64),
        np.asarray(lf_pn_len, dtype=np.int64),
        lf_toff,
        np.asarray(pn_node, dtype=i32),
        np.asarray(pn_left, dtype=np.bool_),
        np.asarray(pn_pos, dtype=i32),
        np.asarray(pe_feat, dtype=i32),
        pe_z_a,
        pe_r_a,
        tab,
        W,
        np.asarray(nd_left, dtype=i32),
        np.asarray(nd_right, dtype=i32),
    )
    if total:
        _build_tables(arrays[8], lf_d_a, lf_pe_off_a, lf_toff, pe_z_a, W, tab, tab_max_d)
    gmax = max(8, max(tree_G) if tree_G else 1)
    GU = np.zeros((gmax + 1, gmax))
    GW = np.zeros((gmax + 1, gmax))
    for g in range(1, gmax + 1):
        xs, ws = np.polynomial.legendre.leggauss(g)
        GU[g, :g] = (xs + 1.0) / 2.0
        GW[g, :g] = ws / 2.0
    quad = (
        np.asarray(un_off, dtype=np.int64),
        np.asarray(un_parent, dtype=i32),
        np.asarray(un_side, dtype=np.bool_),
        np.asarray(un_feat, dtype=i32),
        np.asarray(un_z, dtype=np.float64),
        np.asarray(un_prev, dtype=i32),
        np.asarray(un_val, dtype=np.float64),
        GU,
        GW,
    )
    return _Flat(arrays, quad, np.asarray(tree_G, dtype=np.int64), max_nodes, max_d, expected,
                 len(dump["tree_info"]), lf_d_a)


def _check_leaf(node: dict) -> None:
    if node.get("leaf_coeff") or node.get("leaf_features"):
        raise UnsupportedModel("LightGBM linear trees (linear_tree=true) are not supported")


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------


class TreeShap:
    """Exact path-dependent TreeSHAP of a single-output LightGBM booster.

    `algorithm`: "table" (default; per-leaf subset tables, O(L D) per tree and
    row), "poly" (same formula without tables) or "classic" (Lundberg's
    extend/unwind per leaf, as LightGBM).  `table_budget_mb` caps the memory of
    the tables; leaves that do not fit are computed with "poly".
    """

    def __init__(self, booster, *, algorithm: str = "table", table_budget_mb: float = 64.0):
        if algorithm not in _ALGOS:
            raise ValueError(f"algorithm must be one of {sorted(_ALGOS)}, not {algorithm!r}")
        # all trees, as shap's TreeExplainer (pred_contrib with num_iteration=-1)
        dump = booster.dump_model(num_iteration=-1)
        self._mode = _ALGOS[algorithm]
        budget = int(table_budget_mb * 2**20 / 8) if self._mode == ALGO_TABLE else 0
        flat = _flatten(dump, budget)
        self._M = flat.arrays
        self._QM = flat.quad
        self._tree_G = flat.tree_G
        self._max_nodes = flat.max_nodes
        self._max_d = flat.max_d
        self.feature_names: list[str] = list(dump.get("feature_names") or [])
        self.n_features: int = int(dump["max_feature_idx"]) + 1
        if not self.feature_names:
            self.feature_names = [f"Column_{i}" for i in range(self.n_features)]
        self.expected_value: float = float(flat.expected_value)
        self.n_trees: int = flat.n_trees
        self.algorithm = algorithm
        self.table_bytes: int = int(self._M[20].nbytes) if self._mode == ALGO_TABLE else 0
        self._par_lock = threading.Lock()

    # -- helpers -------------------------------------------------------------
    def _rows(self, X) -> tuple[np.ndarray, bool]:
        X = np.asarray(X)
        single = X.ndim == 1
        if single:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must have shape [n, {self.n_features}], got {np.shape(X)}")
        if X.dtype != np.float64 or not X.flags.c_contiguous:
            X = np.ascontiguousarray(X, dtype=np.float64)
        return X, single

    # -- API -------------------------------------------------------------------
    def shap_values(self, X: np.ndarray) -> np.ndarray:
        """SHAP values [n, F] (float64) of rows X [n, F]; NaN = missing. Thread-safe, releases the GIL."""
        X, single = self._rows(X)
        n = X.shape[0]
        out = np.zeros((n, self.n_features), dtype=np.float64)
        if n >= _PAR_MIN_ROWS and numba.get_num_threads() > 1 and self._par_lock.acquire(blocking=False):
            # one parallel kernel at a time per explainer; concurrent callers run
            # serially on their own thread (safe with any numba threading layer)
            try:
                if self._mode == ALGO_QUAD:
                    _quad_parallel(X, self._M, self._QM, self._tree_G, out, self._max_nodes, _BLOCK_ROWS)
                else:
                    _shap_parallel(X, self._M, self._mode, out, self._max_nodes, self._max_d, _BLOCK_ROWS)
            finally:
                self._par_lock.release()
        elif self._mode == ALGO_QUAD:
            _quad_serial(X, self._M, self._QM, self._tree_G, out, self._max_nodes, _BLOCK_ROWS)
        else:
            _shap_serial(X, self._M, self._mode, out, self._max_nodes, self._max_d, _BLOCK_ROWS)
        return out[0] if single else out

    def raw_score(self, X: np.ndarray) -> np.ndarray:
        """Raw margin (== booster.predict(X, raw_score=True) over all trees)."""
        X, single = self._rows(X)
        n = X.shape[0]
        out = np.empty(n, dtype=np.float64)
        if n >= _PAR_MIN_ROWS * 4 and numba.get_num_threads() > 1 and self._par_lock.acquire(blocking=False):
            try:
                _raw_parallel(X, self._M, 0.0, out, 256)
            finally:
                self._par_lock.release()
        else:
            _raw_range(X, 0, n, self._M, 0.0, out)
        return out[0] if single else out

    def warm_up(self) -> None:
        """Compile (or load from numba's cache) every kernel on a tiny input."""
        X = np.zeros((_PAR_MIN_ROWS * 4, self.n_features))
        X[::2] = np.nan
        self.shap_values(X[:1])
        self.shap_values(X)
        self.raw_score(X[:1])
        self.raw_score(X)
