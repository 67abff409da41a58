"""8-lane vector helpers of the "quad" TreeSHAP kernel (see the package docstring).

LLVM <8 x double> values, legalised to 2 x AVX2 or 4 x SSE where AVX-512 is
missing. A vector holds the quadrature points of one row (8, or a chunk of 16,
24, ...) or of two rows (4 points each, lanes 0-3 and 4-7); `m_lo` / `m_hi`
are the two halves' "the row went this way" (equal when one row fills the
vector). `half` = 1: a row of 4 points without a partner, 4-lane vectors
(one AVX2 register). `_at` reads one element the same way, for the kernels'
per-node loads (numba's own indexing adds a negative-index test to each).
Offsets are element offsets into contiguous 1-D arrays and are NOT
bounds-checked: the kernels in `kernels` own all the indexing.

numba's on-disk cache of the kernels is keyed on the text of `kernels.py` alone:
after changing only this module, delete whystream/treeshap/__pycache__ (or the
kernels will run the intrinsics they were compiled with).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core.errors import TypingError
from numba.extending import intrinsic

LANES = 8  # lanes per vector (one AVX-512 register of doubles)
HALF_LANES = HALF = LANES // 2  # a row's share of a vector it shares with another

_V8 = ir.VectorType(ir.DoubleType(), LANES)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_F64 = types.float64
_INT = types.int64


def _vty(w):
    return ir.VectorType(ir.DoubleType(), w)


def _ptr(context, builder, aryty, ary, off, w=LANES):
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.bitcast(builder.gep(data, [off]), _vty(w).as_pointer())


def _load(context, b, aryty, ary, off, w=LANES):
    return b.load(_ptr(context, b, aryty, ary, off, w), align=8)


def _store(context, b, val, aryty, ary, off):
    b.store(val, _ptr(context, b, aryty, ary, off, val.type.count), align=8)


def _splat(b, x, w=LANES):
    v = b.insert_element(ir.Constant(_vty(w), ir.Undefined), x, ir.Constant(_I32, 0))
    return b.shuffle_vector(v, ir.Constant(_vty(w), ir.Undefined), ir.Constant(ir.VectorType(_I32, w), [0] * w))


def _halves(b, lo, hi, w):
    """lo in lanes 0-3, hi in lanes 4-7 (w = 8); lo (w = 4)."""
    if w == HALF:
        return _splat(b, lo, w)
    v = b.insert_element(ir.Constant(_V8, ir.Undefined), lo, ir.Constant(_I32, 0))
    v = b.insert_element(v, hi, ir.Constant(_I32, 1))
    mask = ir.Constant(ir.VectorType(_I32, LANES), [0] * HALF + [1] * HALF)
    return b.shuffle_vector(v, ir.Constant(_V8, ir.Undefined), mask)


def _edge(context, b, Ot, O, Ut, U, opr, ou, z, m_lo, m_hi, w):
    """o = went-this-way x O[prev] (1 where the row follows every edge on the feature so
    far); a = z (1 - u) + o u, the edge's factor; U[ou:ou+8] = u, U[ou+8:ou+16] = 1 - u."""
    o = b.fmul(_halves(b, m_lo, m_hi, w), _load(context, b, Ot, O, opr, w))
    u = _load(context, b, Ut, U, ou, w)
    omu = _load(context, b, Ut, U, b.add(ou, ir.Constant(_I64, LANES)), w)
    return o, b.fadd(b.fmul(_splat(b, z, w), omu), b.fmul(o, u))


def _phi_add(context, b, Ft, F, lo, hi, upd):
    """Phi[lo:lo+4] += upd[0:4]; Phi[hi:hi+4] += upd[4:8] (hi: the same row's lanes 4-7,
    or the second row's); a 4-lane upd: Phi[lo:lo+4] += upd."""
    parts = ((lo, range(HALF)), (hi, range(HALF, LANES))) if upd.type.count == LANES else ((lo, range(HALF)),)
    for off, lanes in parts:
        part = b.shuffle_vector(upd, ir.Constant(upd.type, ir.Undefined),
                                ir.Constant(ir.VectorType(_I32, HALF), list(lanes)))
        p = _ptr(context, b, Ft, F, off, HALF)
        b.store(b.fadd(b.load(p, align=8), part), p, align=8)


def _by_width(b, half, emit):
    """emit(w) for w = 4 where `half` (a row alone in a tree of 4 points), else w = 8."""
    with b.if_else(b.icmp_signed("!=", half, ir.Constant(_I64, 0))) as (alone, full):
        with alone:
            emit(HALF)
        with full:
            emit(LANES)


@intrinsic
def _v_down(typingctx, P, I, K, O, U, oc, op, opr, ou, z, m_lo, m_hi, half):
    """Internal node c below its parent p, prev = the node below the path's previous edge
    on the same feature: O[c] = o; I[c] = 1/a; P[c] = P[p] a I[prev] (the path's product,
    the earlier factor of the feature replaced); K[c] = (o - z) / a."""
    sig = types.void(P, I, K, O, U, _INT, _INT, _INT, _INT, _F64, _F64, _F64, _INT)

    def codegen(context, b, signature, args):
        P_, I_, K_, O_, U_, oc_, op_, opr_, ou_, z_, lo_, hi_, half_ = args
        Pt, It, Kt, Ot, Ut = signature.args[:5]

        def emit(w):
            o, a = _edge(context, b, Ot, O_, Ut, U_, opr_, ou_, z_, lo_, hi_, w)
            ia = b.fdiv(ir.Constant(_vty(w), [1.0] * w), a)
            pc = b.fmul(b.fmul(_load(context, b, Pt, P_, op_, w), a), _load(context, b, It, I_, opr_, w))
            _store(context, b, o, Ot, O_, oc_)
            _store(context, b, ia, It, I_, oc_)
            _store(context, b, pc, Pt, P_, oc_)
            _store(context, b, b.fmul(b.fsub(o, _splat(b, z_, w)), ia), Kt, K_, oc_)

        _by_width(b, half_, emit)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _v_leaf(typingctx, P, I, K, O, S, Phi, U, oc, op, opr, ou, lo, hi, z, m_lo, m_hi, v, half):
    """Leaf c with value v: q = v P[p] I[prev] (its product without the edge's factor);
    S[c] = q a; Phi[f] += (o - z) q - K[prev] S[c] (the edge's share, less what the
    feature's previous edge counted for this leaf)."""
    sig = types.void(P, I, K, O, S, Phi, U, _INT, _INT, _INT, _INT, _INT, _INT, _F64, _F64, _F64, _F64, _INT)

    def codegen(context, b, signature, args):
        P_, I_, K_, O_, S_, F_, U_, oc_, op_, opr_, ou_, lo_, hi_, z_, mlo_, mhi_, v_, half_ = args
        Pt, It, Kt, Ot, St, Ft, Ut = signature.args[:7]

        def emit(w):
            o, a = _edge(context, b, Ot, O_, Ut, U_, opr_, ou_, z_, mlo_, mhi_, w)
            q = b.fmul(_splat(b, v_, w), b.fmul(_load(context, b, Pt, P_, op_, w), _load(context, b, It, I_, opr_, w)))
            s = b.fmul(q, a)
            _store(context, b, s, St, S_, oc_)
            upd = b.fsub(b.fmul(b.fsub(o, _splat(b, z_, w)), q), b.fmul(_load(context, b, Kt, K_, opr_, w), s))
            _phi_add(context, b, Ft, F_, lo_, hi_, upd)

        _by_width(b, half_, emit)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _v_up(typingctx, S, K, Phi, oc, ol, orr, opr, lo, hi, half):
    """Internal node c with children l, r: S[c] = S[l] + S[r] (v P summed over its
    leaves); Phi[f] += (K[c] - K[prev]) S[c]."""
    sig = types.void(S, K, Phi, _INT, _INT, _INT, _INT, _INT, _INT, _INT)

    def codegen(context, b, signature, args):
        S_, K_, F_, oc_, ol_, or_, opr_, lo_, hi_, half_ = args
        St, Kt, Ft = signature.args[:3]

        def emit(w):
            s = b.fadd(_load(context, b, St, S_, ol_, w), _load(context, b, St, S_, or_, w))
            _store(context, b, s, St, S_, oc_)
            upd = b.fmul(b.fsub(_load(context, b, Kt, K_, oc_, w), _load(context, b, Kt, K_, opr_, w)), s)
            _phi_add(context, b, Ft, F_, lo_, hi_, upd)

        _by_width(b, half_, emit)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _at(typingctx, D, i):
    """D[i] as D's element type, without numba's negative-index wraparound (i >= 0)."""
    if not (isinstance(D, types.Array) and D.ndim == 1 and D.layout == "C"):
        raise TypingError(f"_at needs a contiguous 1-D array, not {D}")
    sig = D.dtype(D, _INT)

    def codegen(context, b, signature, args):
        D_, i_ = args
        data = context.make_array(signature.args[0])(context, b, D_).data
        return b.load(b.gep(data, [i_]))

    return sig, codegen


@intrinsic
def _v_set(typingctx, D, od, val):
    """D[od:od+8] = val"""
    sig = types.void(D, _INT, _F64)

    def codegen(context, b, signature, args):
        D_, od_, v_ = args
        _store(context, b, _splat(b, v_), signature.args[0], D_, od_)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _v_copy(typingctx, D, od, S, os_):
    """D[od:od+8] = S[os:os+8]"""
    sig = types.void(D, _INT, S, _INT)

    def codegen(context, b, signature, args):
        D_, od_, S_, os2 = args
        _store(context, b, _load(context, b, signature.args[2], S_, os2), signature.args[0], D_, od_)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _v_sum(typingctx, D, od):
    """sum(D[od:od+8]), lanes added in order"""
    sig = types.float64(D, _INT)

    def codegen(context, b, signature, args):
        D_, od_ = args
        v = _load(context, b, signature.args[0], D_, od_)
        s = b.extract_element(v, ir.Constant(_I32, 0))
        for i in range(1, LANES):
            s = b.fadd(s, b.extract_element(v, ir.Constant(_I32, i)))
        return s

    return sig, codegen
