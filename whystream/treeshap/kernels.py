"""The numba kernels of TreeSHAP: "quad" (Gauss-Legendre quadrature over each
tree) and "classic" (Lundberg's extend / unwound-path-sum on each leaf's unique
path), and the raw score; the package docstring says what they compute.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from whystream.treeshap.vector import HALF_LANES, LANES, _at, _v_copy, _v_down, _v_leaf, _v_set, _v_sum, _v_up

# float(np.float32(1e-35)): LightGBM's kZeroThreshold is a float literal
K_ZERO = 1.0000000180025095e-35

# a split's kind (nd_kind): bits 0-1 missing type (0 None, 1 Zero, 2 NaN), bit 2 default
# left, bit 3 categorical

# M, the model, is a tuple of flat arrays; its layout is fixed by _parse_model():
#  0 tree_node_off  int64[T+1]  internal nodes of tree t: tree_node_off[t] + split_index
#  1 tree_leaf_off  int64[T+1]  leaves of tree t: tree_leaf_off[t] + leaf_index
#  2 nd_feat int32   3 nd_thr f64   4 nd_kind int32   5 nd_catoff int64   6 nd_catlen int64
#  7 cat_bits uint32 (category bitsets, 32 categories a word)
#  8 nd_left int32   9 nd_right int32  (child: split_index >= 0, or ~leaf_index)
# 10 lf_val f64
# 11 un_off int64[T+1]  quad nodes of tree t, numbered 0..nint-1 internal, nint.. leaves
# 12 nd_rec int32[8 U]   per quad node: parent slot, prev slot (prev: the node below the
#                        path's previous edge on the same feature, or N_t = none), feature * 8,
#                        went-left, parent's split index, left child slot, right child slot, 0;
#                        a slot is node * lanes of a pass (8 * tree_nch)
# 13 nd_flt f64[2 U]     combined cover fraction z of that feature on the path, leaf value
# 14 tree_nch int64[T]   8-lane chunks a pass over the tree takes (0: run "classic" on this tree)
# 15 ru_off int64[T]     offset of the tree's rule in RU
# 16 RU f64[:]           rules: per chunk u[8], 1-u[8], w[8]
# 17 lf_d int64  18 lf_pe_off int64  19 lf_pn_off int64  20 lf_pn_len int64
# 21 pn_node int32  22 pn_left bool  23 pn_pos int32  24 pe_feat int32  25 pe_z f64
#    (per-leaf unique paths, for "classic")
# 26 tree_rows int64[T]  rows a pass explains: 2 (4 points each, d <= 8) or 1


@njit(nogil=True, cache=True, inline="always")
def _go_left(fval, kind, thr, cat_off, cat_len, cat_bits):
    if kind & 8:  # categorical
        if math.isnan(fval) or fval <= -1.0 or fval >= 2147483648.0:
            return False
        iv = np.int64(fval)  # truncation toward zero, as static_cast<int>
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
def _decide(x, n0, nint, M, dec):
    nd_feat, nd_thr, nd_kind, nd_catoff, nd_catlen, cat_bits = M[2], M[3], M[4], M[5], M[6], M[7]
    for n in range(nint):
        g = n0 + n
        dec[n] = _go_left(_at(x, _at(nd_feat, g)), _at(nd_kind, g), _at(nd_thr, g), _at(nd_catoff, g),
                          _at(nd_catlen, g), cat_bits)


@njit(nogil=True, cache=True)
def _classic_tree(phi, t, M, dec, o, pz, po, pw):
    """Lundberg's extend / unwound-path-sum on each leaf's unique path (LightGBM's arithmetic).

    `dec` holds the row's decisions at the tree's internal nodes."""
    tree_leaf_off, lf_val = M[1], M[10]
    lf_d, lf_pe_off, lf_pn_off, lf_pn_len = M[17], M[18], M[19], M[20]
    pn_node, pn_left, pn_pos, pe_feat, pe_z = M[21], M[22], M[23], M[24], M[25]
    for leaf in range(tree_leaf_off[t], tree_leaf_off[t + 1]):
        d = lf_d[leaf]
        v = lf_val[leaf]
        pe0 = lf_pe_off[leaf]
        for k in range(d):
            o[k] = 1.0
        for j in range(lf_pn_off[leaf], lf_pn_off[leaf] + lf_pn_len[leaf]):
            if dec[pn_node[j]] != pn_left[j]:
                o[pn_pos[j]] = 0.0
        # element 0 is LightGBM's (feature -1, zero 1, one 1) root element
        pz[0] = 1.0
        po[0] = 1.0
        pw[0] = 1.0
        for ud in range(1, d + 1):
            zf = pe_z[pe0 + ud - 1]
            of = o[ud - 1]
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


@njit(nogil=True, cache=True, inline="always")
def _quad_pass(nch, gw, u0, nint, N, ro, nd, fl, RU, P, I, K, O, S, Phi, dec_lo, dec_hi, fo, hi_shift, half):
    """One pass of "quad" over a tree for one row (or two sharing the vectors), its shares
    added to Phi from offset fo; half = 1: one row of 4 points, on 4 lanes. Inlined, so
    that nch = 1 and half are constants where the caller knows them."""
    # top-down over internal nodes (a parent's index is smaller than its children's)
    for c in range(1, nint):
        r = 8 * (u0 + c)
        side = _at(nd, r + 3)
        m_lo = np.float64(1 - (_at(dec_lo, _at(nd, r + 4)) ^ side))
        m_hi = np.float64(1 - (_at(dec_hi, _at(nd, r + 4)) ^ side))
        z = _at(fl, 2 * (u0 + c))
        for k in range(nch):
            kk = LANES * k
            _v_down(P, I, K, O, RU, c * gw + kk, _at(nd, r) + kk, _at(nd, r + 1) + kk, ro + 3 * kk, z, m_lo, m_hi, half)
    for c in range(nint, N):
        r = 8 * (u0 + c)
        side = _at(nd, r + 3)
        m_lo = np.float64(1 - (_at(dec_lo, _at(nd, r + 4)) ^ side))
        m_hi = np.float64(1 - (_at(dec_hi, _at(nd, r + 4)) ^ side))
        z = _at(fl, 2 * (u0 + c))
        v = _at(fl, 2 * (u0 + c) + 1)
        ophi = fo + _at(nd, r + 2)
        for k in range(nch):
            kk = LANES * k
            _v_leaf(P, I, K, O, S, Phi, RU, c * gw + kk, _at(nd, r) + kk, _at(nd, r + 1) + kk, ro + 3 * kk,
                    ophi, ophi + hi_shift, z, m_lo, m_hi, v, half)
    # bottom-up over internal nodes (children first)
    for c in range(nint - 1, 0, -1):
        r = 8 * (u0 + c)
        ophi = fo + _at(nd, r + 2)
        for k in range(nch):
            kk = LANES * k
            _v_up(S, K, Phi, c * gw + kk, _at(nd, r + 5) + kk, _at(nd, r + 6) + kk, _at(nd, r + 1) + kk,
                  ophi, ophi + hi_shift, half)


@njit(nogil=True, cache=True, error_model="numpy")
def _shap_rows(X, r0, r1, block, M, mode, out, max_nodes, max_d, max_nch):
    """SHAP values of rows r0..r1 added into out, on the calling thread, `block` rows at a
    time; tree-major within a block, so that a tree's arrays stay in cache while the
    block's rows go through it (two rows at a time where they share the vectors)."""
    tree_node_off, un_off, nd, fl = M[0], M[11], M[12], M[13]
    tree_nch, ru_off, RU, tree_rows = M[14], M[15], M[16], M[26]
    F = X.shape[1]
    T = tree_node_off.shape[0] - 1
    gw_max = LANES * max(max_nch, 1)
    n_slots = (2 * max_nodes + 2) * gw_max  # nodes + the "no previous occurrence" slot
    dec_lo = np.empty(max(max_nodes, 1), dtype=np.uint8)
    dec_hi = np.empty(max(max_nodes, 1), dtype=np.uint8)
    P = np.empty(n_slots)
    I = np.empty(n_slots)
    K = np.empty(n_slots)
    O = np.empty(n_slots)
    S = np.empty(n_slots)
    Phi = np.empty(min(block, r1 - r0) * F * LANES)  # per row and feature 8 lanes
    o = np.empty(max_d + 1)
    pz = np.empty(max_d + 2)
    po = np.empty(max_d + 2)
    pw = np.empty(max_d + 2)
    for b0 in range(r0, r1, block):
        B = min(block, r1 - b0)
        Phi[:B * F * LANES] = 0.0
        for t in range(T):
            n0 = tree_node_off[t]
            nint = tree_node_off[t + 1] - n0
            if nint == 0:
                continue  # single leaf: base value only
            nch = tree_nch[t]
            if mode == 1 or nch == 0:
                for rr in range(B):
                    _decide(X[b0 + rr], n0, nint, M, dec_lo)
                    _classic_tree(out[b0 + rr], t, M, dec_lo, o, pz, po, pw)
                continue
            u0 = un_off[t]
            N = un_off[t + 1] - u0
            gw = LANES * nch
            ro = ru_off[t]
            R = tree_rows[t]
            # lanes 4-7 of a vector: the same row's (R = 1) or the next row's (R = 2)
            hi_shift = HALF_LANES + (F * LANES if R == 2 else 0)
            for k in range(nch):
                kk = LANES * k
                _v_copy(P, kk, RU, ro + 3 * kk + 2 * LANES)  # root: the weights
                _v_set(O, N * gw + kk, 1.0)  # "no previous occurrence" of the feature
                _v_set(I, N * gw + kk, 1.0)
                _v_set(K, N * gw + kk, 0.0)
            for rr in range(0, B, R):
                _decide(X[b0 + rr], n0, nint, M, dec_lo)
                half = 0
                dec_h = dec_lo  # one row: both halves its own
                if R == 2 and rr + 1 < B:
                    _decide(X[b0 + rr + 1], n0, nint, M, dec_hi)
                    dec_h = dec_hi
                elif R == 2:  # no partner: the row alone on 4 lanes
                    half = 1
                if nch == 1 and half == 0:
                    _quad_pass(1, LANES, u0, nint, N, ro, nd, fl, RU, P, I, K, O, S, Phi, dec_lo, dec_h,
                               rr * F * LANES, hi_shift, 0)
                elif nch == 1:
                    _quad_pass(1, LANES, u0, nint, N, ro, nd, fl, RU, P, I, K, O, S, Phi, dec_lo, dec_h,
                               rr * F * LANES, hi_shift, 1)
                else:
                    _quad_pass(nch, gw, u0, nint, N, ro, nd, fl, RU, P, I, K, O, S, Phi, dec_lo, dec_h,
                               rr * F * LANES, hi_shift, 0)
        for rr in range(B):
            row = out[b0 + rr]
            for f in range(F):
                row[f] += _v_sum(Phi, (rr * F + f) * LANES)


@njit(nogil=True, cache=True)
def _raw_block(X, r0, r1, M, out):
    tree_node_off, tree_leaf_off = M[0], M[1]
    nd_feat, nd_thr, nd_kind, nd_catoff, nd_catlen, cat_bits = M[2], M[3], M[4], M[5], M[6], M[7]
    nd_left, nd_right, lf_val = M[8], M[9], M[10]
    T = tree_node_off.shape[0] - 1
    for r in range(r0, r1):
        x = X[r]
        s = 0.0
        for t in range(T):
            n0 = tree_node_off[t]
            l0 = tree_leaf_off[t]
            if tree_node_off[t + 1] == n0:
                s += lf_val[l0]
                continue
            node = 0
            while node >= 0:
                g = n0 + node
                if _go_left(x[nd_feat[g]], nd_kind[g], nd_thr[g], nd_catoff[g], nd_catlen[g], cat_bits):
                    node = nd_left[g]
                else:
                    node = nd_right[g]
            s += lf_val[l0 + ~node]
        out[r] = s
