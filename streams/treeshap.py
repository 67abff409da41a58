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
The per-leaf products are shared along the tree: a top-down pass builds
P_c(u) = prod of the factors on the path to node c at the G points, a
bottom-up pass sums v_l P_l(u) over the leaves under each node, and every edge
adds its feature's share once.  A feature met again deeper on a path replaces
its earlier factor (top-down: multiply by the new one, divide by the old one;
bottom-up: the sums of the deeper occurrences are taken out of the earlier
one's).  Cost: O(N G) per tree and row with N = 2L - 1 nodes, i.e. O(L D)
like Linear TreeSHAP (Yu et al. 2022), but with no polynomial
interpolation, hence no loss of accuracy at depth: every term is a product of
positive factors.  The G points (8 per AVX-512 register; 16, 24, ... for
paths with more than 16 distinct features) are computed as one vector by the
small LLVM intrinsics below.  The quadrature weights ride in the root's
product, so each feature's phi is the plain sum of its 8 lanes at the end.

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
then loaded from streams/__pycache__ in well under a second - numba falls back
to a user cache directory where that is not writable, or NUMBA_CACHE_DIR).
A batch is cut into up to numba.get_num_threads() chunks run by the calling
thread and a shared thread pool; rows within a chunk go through the trees in
blocks of up to 64.  There is no numba `parallel=True`: the pool costs no
compilation, works the same with every numba threading layer, and concurrent
callers share its cores instead of each starting a team of threads.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from whystream.errors import WhystreamError

EXPLAINER_NAME = "whystream-treeshap"
EXPLAINER_VERSION = "1.0.0"

__all__ = ["EXPLAINER_NAME", "EXPLAINER_VERSION", "TreeShap", "UnsupportedModel"]

# float(np.float32(1e-35)): LightGBM's kZeroThreshold is a float literal
K_ZERO = 1.0000000180025095e-35

# a split's kind (nd_kind): bits 0-1 missing type (0 None, 1 Zero, 2 NaN), bit 2 default
# left, bit 3 categorical

_ALGOS = {"quad": 0, "classic": 1}  # the kernels' `mode`

_LANES = 8  # quadrature points per vector (one AVX-512 register of doubles)
_PHI_BLOCK_BYTES = 1 << 18  # per-thread lane accumulators of a row block: ~256 KiB (L2)
_MAX_BLOCK_ROWS = 64
_MIN_CHUNK_ROWS = 4  # a batch is cut into at most n / 4 chunks, one a thread


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """Worker threads shared by all explainers (the kernels release the GIL)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 1) - 1),
                                       thread_name_prefix="treeshap")
        return _POOL


class UnsupportedModel(WhystreamError, ValueError):
    """A LightGBM model this explainer cannot explain exactly (linear trees, random forests, ...)."""


# --------------------------------------------------------------------------
# 8-lane vector helpers (LLVM <8 x double>; legalised to 2 x AVX2 or 4 x SSE
# where AVX-512 is missing).  Offsets are element offsets into 1-D float64
# arrays and are NOT bounds-checked: the callers below own all the indexing.
# --------------------------------------------------------------------------

_V8 = ir.VectorType(ir.DoubleType(), _LANES)
_I64 = ir.IntType(64)


def _vptr(context, builder, aryty, ary, off):
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.bitcast(builder.gep(data, [off]), _V8.as_pointer())


def _vload(builder, ptr):
    return builder.load(ptr, align=8)


def _vstore(builder, val, ptr):
    builder.store(val, ptr, align=8)


def _vsplat(builder, x):
    v = builder.insert_element(ir.Constant(_V8, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
    mask = ir.Constant(ir.VectorType(ir.IntType(32), _LANES), [0] * _LANES)
    return builder.shuffle_vector(v, ir.Constant(_V8, ir.Undefined), mask)


def _factor(context, b, Ut, U, ou, z, of):
    """a(u) = z (1 - u) + of u at the 8 points; U[ou:ou+8] = u, U[ou+8:ou+16] = 1 - u."""
    u = _vload(b, _vptr(context, b, Ut, U, ou))
    omu = _vload(b, _vptr(context, b, Ut, U, b.add(ou, ir.Constant(_I64, _LANES))))
    return b.fadd(b.fmul(_vsplat(b, z), omu), b.fmul(_vsplat(b, of), u))


@intrinsic
def _v_internal_down(typingctx, P, I, S, A, U, oc, op, opr, ou, z, of):
    """Internal node c: a = factor; I[c] = 1/a; P[c] = P[parent] a I[prev]; S[c] = A[c] = 0."""
    sig = types.void(P, I, S, A, U, types.int64, types.int64, types.int64, types.int64,
                     types.float64, types.float64)

    def codegen(context, b, signature, args):
        P_, I_, S_, A_, U_, oc_, op_, opr_, ou_, z_, of_ = args
        Pt, It, St, At, Ut = signature.args[:5]
        a = _factor(context, b, Ut, U_, ou_, z_, of_)
        ia = b.fdiv(ir.Constant(_V8, [1.0] * _LANES), a)
        pp = _vload(b, _vptr(context, b, Pt, P_, op_))
        ipr = _vload(b, _vptr(context, b, It, I_, opr_))
        _vstore(b, ia, _vptr(context, b, It, I_, oc_))
        _vstore(b, b.fmul(b.fmul(pp, a), ipr), _vptr(context, b, Pt, P_, oc_))
        zero = ir.Constant(_V8, [0.0] * _LANES)
        _vstore(b, zero, _vptr(context, b, St, S_, oc_))
        _vstore(b, zero, _vptr(context, b, At, A_, oc_))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _v_leaf(typingctx, P, I, S, Phi, U, oc, op, opr, ou, ophi, z, of, v):
    """Leaf c: q = v P[parent] I[prev] (= S_c / a); S[c] = q a; S[parent] += S[c];
    Phi[f] += (of - z) q."""
    sig = types.void(P, I, S, Phi, U, types.int64, types.int64, types.int64, types.int64, types.int64,
                     types.float64, types.float64, types.float64)

    def codegen(context, b, signature, args):
        P_, I_, S_, F_, U_, oc_, op_, opr_, ou_, of_off, z_, of_, v_ = args
        Pt, It, St, Ft, Ut = signature.args[:5]
        a = _factor(context, b, Ut, U_, ou_, z_, of_)
        pp = _vload(b, _vptr(context, b, Pt, P_, op_))
        ipr = _vload(b, _vptr(context, b, It, I_, opr_))
        q = b.fmul(_vsplat(b, v_), b.fmul(pp, ipr))
        sc = b.fmul(q, a)
        _vstore(b, sc, _vptr(context, b, St, S_, oc_))
        ps = _vptr(context, b, St, S_, op_)
        _vstore(b, b.fadd(_vload(b, ps), sc), ps)
        pf = _vptr(context, b, Ft, F_, of_off)
        _vstore(b, b.fadd(_vload(b, pf), b.fmul(_vsplat(b, b.fsub(of_, z_)), q)), pf)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _v_internal_up(typingctx, S, A, I, Phi, oc, op, ophi, coef):
    """Internal node c: S[parent] += S[c]; Phi[f] += coef (S[c] - A[c]) I[c]."""
    sig = types.void(S, A, I, Phi, types.int64, types.int64, types.int64, types.float64)

    def codegen(context, b, signature, args):
        S_, A_, I_, F_, oc_, op_, of_off, coef_ = args
        St, At, It, Ft = signature.args[:4]
        sc = _vload(b, _vptr(context, b, St, S_, oc_))
        ac = _vload(b, _vptr(context, b, At, A_, oc_))
        ic = _vload(b, _vptr(context, b, It, I_, oc_))
        ps = _vptr(context, b, St, S_, op_)
        _vstore(b, b.fadd(_vload(b, ps), sc), ps)
        pf = _vptr(context, b, Ft, F_, of_off)
        _vstore(b, b.fadd(_vload(b, pf), b.fmul(_vsplat(b, coef_), b.fmul(b.fsub(sc, ac), ic))), pf)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _v_add(typingctx, D, od, S, os_):
    """D[od:od+8] += S[os:os+8]"""
    sig = types.void(D, types.int64, S, types.int64)

    def codegen(context, b, signature, args):
        D_, od_, S_, os2 = args
        pd = _vptr(context, b, signature.args[0], D_, od_)
        _vstore(b, b.fadd(_vload(b, pd), _vload(b, _vptr(context, b, signature.args[2], S_, os2))), pd)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _v_set(typingctx, D, od, val):
    """D[od:od+8] = val"""
    sig = types.void(D, types.int64, types.float64)

    def codegen(context, b, signature, args):
        D_, od_, v_ = args
        _vstore(b, _vsplat(b, v_), _vptr(context, b, signature.args[0], D_, od_))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _v_copy(typingctx, D, od, S, os_):
    """D[od:od+8] = S[os:os+8]"""
    sig = types.void(D, types.int64, S, types.int64)

    def codegen(context, b, signature, args):
        D_, od_, S_, os2 = args
        v = _vload(b, _vptr(context, b, signature.args[2], S_, os2))
        _vstore(b, v, _vptr(context, b, signature.args[0], D_, od_))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _v_sum(typingctx, D, od):
    """sum(D[od:od+8]), lanes added in order"""
    sig = types.float64(D, types.int64)

    def codegen(context, b, signature, args):
        D_, od_ = args
        v = _vload(b, _vptr(context, b, signature.args[0], D_, od_))
        s = b.extract_element(v, ir.Constant(ir.IntType(32), 0))
        for i in range(1, _LANES):
            s = b.fadd(s, b.extract_element(v, ir.Constant(ir.IntType(32), i)))
        return s

    return sig, codegen


# --------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------

# M, the model, is a tuple of flat arrays; its layout is fixed by _parse_model():
#  0 tree_node_off  int64[T+1]  internal nodes of tree t: tree_node_off[t] + split_index
#  1 tree_leaf_off  int64[T+1]  leaves of tree t: tree_leaf_off[t] + leaf_index
#  2 nd_feat int32   3 nd_thr f64   4 nd_kind int32   5 nd_catoff int64   6 nd_catlen int64
#  7 cat_bits uint32 (category bitsets, 32 categories a word)
#  8 nd_left int32   9 nd_right int32  (child: split_index >= 0, or ~leaf_index)
# 10 lf_val f64
# 11 un_off int64[T+1]  quad nodes of tree t, numbered 0..nint-1 internal, nint.. leaves
# 12 un_int int32[:, 4]  parent, prev (node below the previous edge on the same feature,
#                        or N_t = none), feature of the edge into the node, went-left
# 13 un_flt f64[:, 2]    combined cover fraction z of that feature on the path, leaf value
# 14 tree_nch int64[T]   8-lane chunks of quadrature points (0: run "classic" on this tree)
# 15 ru_off int64[T]     offset of the tree's rule in RU
# 16 RU f64[:]           rules: per chunk u[8], 1-u[8], w[8]
# 17 lf_d int64  18 lf_pe_off int64  19 lf_pn_off int64  20 lf_pn_len int64
# 21 pn_node int32  22 pn_left bool  23 pn_pos int32  24 pe_feat int32  25 pe_z f64
#    (per-leaf unique paths, for "classic")


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
        dec[n] = _go_left(x[nd_feat[g]], nd_kind[g], nd_thr[g], nd_catoff[g], nd_catlen[g], cat_bits)


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


@njit(nogil=True, cache=True, error_model="numpy")
def _shap_rows(X, r0, r1, block, M, mode, out, max_nodes, max_d, max_nch):
    """SHAP values of rows r0..r1 added into out, on the calling thread, `block` rows at a
    time; tree-major within a block, so that a tree's arrays stay in cache while the
    block's rows go through it."""
    tree_node_off, un_off, un_int, un_flt = M[0], M[11], M[12], M[13]
    tree_nch, ru_off, RU = M[14], M[15], M[16]
    F = X.shape[1]
    T = tree_node_off.shape[0] - 1
    gw_max = _LANES * max(max_nch, 1)
    n_rows = 2 * max_nodes + 2  # nodes + the "no previous occurrence" row
    dec = np.empty(max(max_nodes, 1), dtype=np.bool_)
    o = np.empty(max(n_rows, max_d + 1))
    P = np.empty(n_rows * gw_max)
    I = np.empty(n_rows * gw_max)
    S = np.empty(n_rows * gw_max)
    A = np.empty(n_rows * gw_max)
    Phi = np.empty(min(block, r1 - r0) * F * _LANES)  # per row and feature: 8 lanes
    pz = np.empty(max_d + 2)
    po = np.empty(max_d + 2)
    pw = np.empty(max_d + 2)
    for b0 in range(r0, r1, block):
        B = min(block, r1 - b0)
        Phi[:B * F * _LANES] = 0.0
        for t in range(T):
            n0 = tree_node_off[t]
            nint = tree_node_off[t + 1] - n0
            if nint == 0:
                continue  # single leaf: base value only
            nch = tree_nch[t]
            if mode == 1 or nch == 0:
                for rr in range(B):
                    _decide(X[b0 + rr], n0, nint, M, dec)
                    _classic_tree(out[b0 + rr], t, M, dec, o, pz, po, pw)
                continue
            u0 = un_off[t]
            N = un_off[t + 1] - u0
            gw = _LANES * nch
            ro = ru_off[t]
            for rr in range(B):
                _decide(X[b0 + rr], n0, nint, M, dec)
                fo = rr * F
                for k in range(nch):
                    kk = _LANES * k
                    _v_copy(P, kk, RU, ro + 3 * kk + 2 * _LANES)  # root: the weights
                    _v_set(S, kk, 0.0)
                    _v_set(A, kk, 0.0)
                    _v_set(I, N * gw + kk, 1.0)  # "no previous occurrence": a = 1
                o[N] = 1.0
                # top-down over internal nodes (a parent's index is smaller than its children's)
                for c in range(1, nint):
                    e = u0 + c
                    p = un_int[e, 0]
                    pr = un_int[e, 1]
                    of = np.float64(dec[p] == un_int[e, 3]) * o[pr]
                    o[c] = of
                    z = un_flt[e, 0]
                    for k in range(nch):
                        kk = _LANES * k
                        _v_internal_down(P, I, S, A, RU, c * gw + kk, p * gw + kk, pr * gw + kk,
                                         ro + 3 * kk, z, of)
                # leaves: top-down and their bottom-up step at once
                for c in range(nint, N):
                    e = u0 + c
                    p = un_int[e, 0]
                    pr = un_int[e, 1]
                    of = np.float64(dec[p] == un_int[e, 3]) * o[pr]
                    ophi = (fo + un_int[e, 2]) * _LANES
                    for k in range(nch):
                        kk = _LANES * k
                        _v_leaf(P, I, S, Phi, RU, c * gw + kk, p * gw + kk, pr * gw + kk, ro + 3 * kk,
                                ophi, un_flt[e, 0], of, un_flt[e, 1])
                    if pr < N:
                        for k in range(nch):
                            _v_add(A, pr * gw + _LANES * k, S, c * gw + _LANES * k)
                # bottom-up over internal nodes (children first)
                for c in range(nint - 1, 0, -1):
                    e = u0 + c
                    p = un_int[e, 0]
                    pr = un_int[e, 1]
                    coef = o[c] - un_flt[e, 0]
                    ophi = (fo + un_int[e, 2]) * _LANES
                    for k in range(nch):
                        kk = _LANES * k
                        _v_internal_up(S, A, I, Phi, c * gw + kk, p * gw + kk, ophi, coef)
                    if pr < N:
                        for k in range(nch):
                            _v_add(A, pr * gw + _LANES * k, S, c * gw + _LANES * k)
        for rr in range(B):
            row = out[b0 + rr]
            for f in range(F):
                row[f] += _v_sum(Phi, (rr * F + f) * _LANES)


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


# --------------------------------------------------------------------------
# model parsing
# --------------------------------------------------------------------------


@njit(nogil=True, cache=True, error_model="numpy")
def _build_paths(node_off, leaf_off, un_off, left, right, feat, icount, lcount, lval):
    """From each tree's child / feature / count arrays: the quad node arrays (parent, previous
    occurrence of the edge's feature, combined cover fraction z), per tree the largest number
    of distinct features on a path, whether a cover is zero, its expected value, and the
    per-leaf unique paths of "classic"."""
    T = node_off.shape[0] - 1
    U = un_off[T]
    un_int = np.zeros((U, 4), dtype=np.int32)
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
    return (un_int, un_flt, tree_maxd, tree_zero, tree_ev, lf_d, lf_pe_off, lf_pn_off, lf_pn_len,
            pn_node, pn_left, pn_pos, pe_feat, pe_z)


def _quadrature_rules(nchs) -> tuple[np.ndarray, dict]:
    """Gauss-Legendre rules on [0, 1] with 8 * nch points, laid out per 8-lane chunk as
    u[8], 1 - u[8], w[8]."""
    parts, offsets, pos = [], {}, 0
    for nch in sorted(set(int(n) for n in nchs)):
        if nch == 0:
            continue
        xs, ws = np.polynomial.legendre.leggauss(_LANES * nch)
        u, w = (xs + 1.0) / 2.0, ws / 2.0
        rule = np.concatenate([np.concatenate([u[k:k + _LANES], 1.0 - u[k:k + _LANES], w[k:k + _LANES]])
                               for k in range(0, _LANES * nch, _LANES)])
        offsets[nch] = pos
        parts.append(rule)
        pos += len(rule)
    return (np.concatenate(parts) if parts else np.zeros(3 * _LANES)), offsets


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
    (un_int, un_flt, tree_maxd, tree_zero, tree_ev, lf_d, lf_pe_off, lf_pn_off, lf_pn_len,
     pn_node, pn_left, pn_pos, pe_feat, pe_z) = _build_paths(node_off_a, leaf_off_a, un_off_a, left, right, feat,
                                                             icount, lcount, lval)
    has_split = np.diff(node_off_a) > 0
    # 8 * nch points integrate degree <= 16 nch - 1 exactly; the integrand has degree d - 1.
    # 0: a tree with a zero cover, or a single leaf
    tree_nch = np.where(has_split & ~tree_zero, -(-tree_maxd // (2 * _LANES)), 0).astype(i64)
    RU, rule_off = _quadrature_rules(tree_nch)
    expected = 0.0
    for ev in tree_ev.tolist():  # in tree order, as PredictContrib accumulates it
        expected += ev
    M = (
        node_off_a, leaf_off_a, feat, thr, kind, catoff, catlen, cat_bits, left, right, lval,
        un_off_a, un_int, un_flt, tree_nch,
        np.asarray([rule_off.get(int(n), 0) for n in tree_nch], dtype=i64), RU,
        lf_d, lf_pe_off, lf_pn_off, lf_pn_len, pn_node, pn_left, pn_pos, pe_feat, pe_z,
    )
    return _Model(M, n_features, int(np.diff(node_off_a).max(initial=0)), int(tree_maxd.max(initial=1)),
                  int(tree_nch.max(initial=0)), expected, len(trees), int((has_split & tree_zero).sum()))


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------


class TreeShap:
    """Exact path-dependent TreeSHAP of a single-output LightGBM booster.

    >>> ts = TreeShap(booster); ts.warm_up()
    >>> phi = ts.shap_values(X)           # [n, F]; phi.sum(1) + ts.expected_value == raw margin

    All trees of the booster are explained (as shap's TreeExplainer does, whatever
    booster.best_iteration says); of a multiclass booster, those of `class_index`.  `algorithm`: "quad" (default) or "classic"
    (Lundberg's O(L D^2) recursion as LightGBM runs it; a cross-check).
    """

    def __init__(self, booster, *, algorithm: str = "quad", class_index: int | None = None):
        if algorithm not in _ALGOS:
            raise ValueError(f"algorithm must be one of {sorted(_ALGOS)}, not {algorithm!r}")
        model = _parse_model(booster.model_to_string(num_iteration=-1), class_index)
        self.class_index = class_index
        self._M = model.M
        self._mode = _ALGOS[algorithm]
        self._max_nodes = model.max_nodes
        self._max_d = model.max_d
        self._max_nch = model.max_nch
        self.algorithm = algorithm
        self.n_features: int = model.n_features
        names = list(booster.feature_name())
        self.feature_names: list[str] = names if len(names) == self.n_features else [
            f"Column_{i}" for i in range(self.n_features)]
        self.expected_value: float = float(model.expected_value)
        self.n_trees: int = model.n_trees
        self.n_classic_trees: int = model.n_classic_trees  # zero-cover trees run "classic"
        # rows per block: the block's lane accumulators (rows x F x 8 doubles) stay in L2
        self._block = max(1, min(_MAX_BLOCK_ROWS, _PHI_BLOCK_BYTES // (self.n_features * _LANES * 8)))

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

    def _run(self, X: np.ndarray, r0: int, r1: int, out: np.ndarray) -> None:
        _shap_rows(X, r0, r1, self._block, self._M, self._mode, out, self._max_nodes, self._max_d,
                   self._max_nch)

    def shap_values(self, X: np.ndarray) -> np.ndarray:
        """SHAP values [n, F] (float64) of rows X [n, F] (NaN = missing); a 1-D row gives [F].

        A batch is spread over numba.get_num_threads() threads (the calling thread and a
        shared pool); the kernel releases the GIL, so concurrent callers run in parallel
        too and share the pool's cores."""
        X, single = self._rows(X)
        n = X.shape[0]
        out = np.zeros((n, self.n_features), dtype=np.float64)
        n_chunks = min(numba.get_num_threads(), n // _MIN_CHUNK_ROWS) if n >= 2 * _MIN_CHUNK_ROWS else 1
        if n_chunks <= 1:
            self._run(X, 0, n, out)
        else:
            edges = np.linspace(0, n, n_chunks + 1).astype(int)
            pool = _pool()
            futures = [pool.submit(self._run, X, int(a), int(b), out) for a, b in zip(edges[1:-1], edges[2:])]
            try:
                self._run(X, 0, int(edges[1]), out)
            finally:
                for f in futures:
                    f.result()
        return out[0] if single else out

    def raw_score(self, X: np.ndarray) -> np.ndarray:
        """Raw margin, == booster.predict(X, raw_score=True) over all trees."""
        X, single = self._rows(X)
        n = X.shape[0]
        out = np.empty(n, dtype=np.float64)
        if n:
            _raw_block(X, 0, n, self._M, out)  # ~10 us a row: no need for threads
        return out[0] if single else out

    def warm_up(self) -> None:
        """Compile (or load from numba's on-disk cache) the kernels, on a tiny input."""
        X = np.zeros((2, self.n_features))
        X[1] = np.nan
        self.shap_values(X)
        self.raw_score(X)
