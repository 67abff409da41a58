"""8-lane vector helpers of the "quad" TreeSHAP kernel (see the package docstring).

LLVM <8 x double> values, legalised to 2 x AVX2 or 4 x SSE where AVX-512 is
missing. Offsets are element offsets into 1-D float64 arrays and are NOT
bounds-checked: the kernels in `kernels` own all the indexing.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

LANES = 8  # quadrature points per vector (one AVX-512 register of doubles)

_V8 = ir.VectorType(ir.DoubleType(), LANES)
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
    mask = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
    return builder.shuffle_vector(v, ir.Constant(_V8, ir.Undefined), mask)


def _factor(context, b, Ut, U, ou, z, of):
    """a(u) = z (1 - u) + of u at the 8 points; U[ou:ou+8] = u, U[ou+8:ou+16] = 1 - u."""
    u = _vload(b, _vptr(context, b, Ut, U, ou))
    omu = _vload(b, _vptr(context, b, Ut, U, b.add(ou, ir.Constant(_I64, LANES))))
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
        ia = b.fdiv(ir.Constant(_V8, [1.0] * LANES), a)
        pp = _vload(b, _vptr(context, b, Pt, P_, op_))
        ipr = _vload(b, _vptr(context, b, It, I_, opr_))
        _vstore(b, ia, _vptr(context, b, It, I_, oc_))
        _vstore(b, b.fmul(b.fmul(pp, a), ipr), _vptr(context, b, Pt, P_, oc_))
        zero = ir.Constant(_V8, [0.0] * LANES)
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
        for i in range(1, LANES):
            s = b.fadd(s, b.extract_element(v, ir.Constant(ir.IntType(32), i)))
        return s

    return sig, codegen
