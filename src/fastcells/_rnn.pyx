"""The vanilla RNN kernels: h_t = act(x_t @ Wx + h_{t-1} @ Wh + b), act tanh or relu.

Same plan as _lstm.pyx: one GEMM for the input projection, per step one recurrent GEMM and one
fused C pass; backward per step one C pass and one GEMM, then one GEMM each for dWx, dWh, dX.
Training caches h_{t-1} of every step (Hp, step 0 = h0) and h_t = act(pre) (A): act' is a
function of h_t (1 - h² for tanh, [h > 0] for relu), so no pre-activation is kept.
"""
cimport numpy as cnp
from cython cimport floating
from libc.stdint cimport int64_t

from ._blas cimport gemm, pack
from ._fastpath cimport cell_typenum, empty
from ._csrc cimport fc_rnn_bwd_step_f32, fc_rnn_bwd_step_f64
from ._csrc cimport fc_rnn_fwd_step_f32, fc_rnn_fwd_step_f64
from ._seq cimport Layout, colsum, cptr, data, make_layout, packed_or_null, project, ptr
from ._seq cimport project_reversed, scatter_reversed, step_gemm

cnp.import_array()


cdef inline void fwd_step(Py_ssize_t N, Py_ssize_t H, int act, floating *A, Py_ssize_t ld_A,
                          const floating *b, const floating *h_prev, Py_ssize_t ld_hp,
                          floating *h_next, Py_ssize_t ld_hn, floating *y, Py_ssize_t ld_y,
                          const int64_t *lengths, Py_ssize_t t) noexcept nogil:
    if floating is float:
        fc_rnn_fwd_step_f32(N, H, act, A, ld_A, b, h_prev, ld_hp, h_next, ld_hn, y, ld_y,
                            lengths, t)
    else:
        fc_rnn_fwd_step_f64(N, H, act, A, ld_A, b, h_prev, ld_hp, h_next, ld_hn, y, ld_y,
                            lengths, t)


cdef inline void bwd_step(Py_ssize_t N, Py_ssize_t H, int act, const floating *A,
                          Py_ssize_t ld_A, const floating *dy, Py_ssize_t ld_dy, floating *dh,
                          floating *dA, Py_ssize_t ld_dA, const int64_t *lengths,
                          Py_ssize_t t) noexcept nogil:
    if floating is float:
        fc_rnn_bwd_step_f32(N, H, act, A, ld_A, dy, ld_dy, dh, dA, ld_dA, lengths, t)
    else:
        fc_rnn_bwd_step_f64(N, H, act, A, ld_A, dy, ld_dy, dh, dA, ld_dA, lengths, t)


# ---- the loops ---------------------------------------------------------------------------------
cdef void train_loop(Layout L, Py_ssize_t D, Py_ssize_t H, const floating *X,
                     const floating *Wx, const floating *Wh, const floating *b,
                     const int64_t *lens, int act, floating *Y, floating *a, floating *hp,
                     floating *hT, floating *wp) noexcept nogil:
    """Training forward. Hp (hp): step 0 holds h0; only written for T > 1."""
    cdef Py_ssize_t N = L.N, T = L.T
    cdef Py_ssize_t hs = L.ts * H, ldh = L.ns * H
    cdef floating *h_next
    cdef Py_ssize_t t, ld_next
    if wp != NULL:
        pack(H, H, Wh, H, False, wp)
    # A = X @ Wx  (all steps)
    project(L, X, D, 0, T, Wx, H, a, hs, ldh)
    for t in range(T):
        # A[t] += h_{t-1} @ Wh
        step_gemm(N, H, H, hp + t * hs, ldh, Wh, H, False, wp, 1, a + t * hs, ldh)
        if t + 1 < T:
            h_next, ld_next = hp + (t + 1) * hs, ldh
        else:
            h_next, ld_next = hT, H
        fwd_step(N, H, act, a + t * hs, ldh, b, hp + t * hs, ldh, h_next, ld_next,
                 Y + t * hs, ldh, lens, t)


cdef void backward_loop(Layout L, Py_ssize_t D, Py_ssize_t H, const floating *X,
                        const floating *Wx, const floating *Wh, const floating *A,
                        const floating *hp, const int64_t *lens, int act, const floating *dY,
                        bint has_dy, floating *dh, floating *d, floating *dX, floating *dWx,
                        floating *dWh, floating *db, floating *wp) noexcept nogil:
    cdef Py_ssize_t N = L.N, T = L.T
    cdef Py_ssize_t hs = L.ts * H, ldh = L.ns * H
    cdef Py_ssize_t dys = hs if has_dy else 0, ldy = ldh if has_dy else 0
    cdef Py_ssize_t t
    if wp != NULL:
        pack(H, H, Wh, H, True, wp)
    for t in range(T - 1, -1, -1):
        bwd_step(N, H, act, A + t * hs, ldh, dY + t * dys, ldy, dh, d + t * hs, ldh, lens, t)
        # dh_{t-1} += dA_t @ Whᵀ
        step_gemm(N, H, H, d + t * hs, ldh, Wh, H, True, wp, 1, dh, H)
    # dWx = Xᵀ @ dA;  dWh = Hpᵀ @ dA;  dX = dA @ Wxᵀ;  db = dA.sum(0)
    gemm(True, False, D, H, N * T, 1, X, D, d, H, 0, dWx, H)
    gemm(True, False, H, H, N * T, 1, hp, H, d, H, 0, dWh, H)
    gemm(False, True, N * T, D, H, 1, d, H, Wx, H, 0, dX, D)
    colsum(N * T, H, d, H, db)


# ---- the sequence API (typed memoryviews) -----------------------------------------------------
def forward_train(const floating[:, ::1] X,       # (N*T, D)
                  const floating[:, ::1] Wx,      # (D, H)
                  const floating[:, ::1] Wh,      # (H, H)
                  const floating[::1] b,          # (H,)
                  const int64_t[::1] lengths,     # (N,) or None
                  Py_ssize_t N, Py_ssize_t T, bint time_major, int act,
                  floating[:, ::1] Y,             # out (N*T, H): hs
                  floating[:, ::1] A,             # out (N*T, H): h_t = act(pre)
                  floating[:, ::1] Hp,            # in/out (N*T, H): h_{t-1}; step 0 holds h0
                  floating[:, ::1] hT,            # out (N, H)
                  floating[::1] Wp):              # work: Wh packed, or empty (use BLAS)
    cdef const int64_t *lens = NULL if lengths is None else &lengths[0]
    with nogil:
        train_loop(make_layout(N, T, time_major), X.shape[1], Wh.shape[0], cptr(X), cptr(Wx),
                   &Wh[0, 0], &b[0], lens, act, &Y[0, 0], &A[0, 0], &Hp[0, 0], &hT[0, 0],
                   packed_or_null(Wp))


def forward_infer(const floating[:, ::1] X,       # (N*T, D) xs, layout rows (not reordered)
                  const floating[:, ::1] Wx, const floating[:, ::1] Wh,
                  const floating[::1] b, const int64_t[::1] lengths, Py_ssize_t N,
                  Py_ssize_t T, bint time_major, bint reverse, int act,
                  floating[:, ::1] Y,             # out (N*T, H): hs
                  floating[:, ::1] P,             # work (Tc*N, H): pre-activations of Tc steps
                  floating[:, ::1] hT,            # in h0, out h_T (N, H), updated in place
                  floating[::1] Wp,               # work: Wh packed, or empty (use BLAS)
                  floating[::1] Wxp,              # work: Wx packed, or empty (see project)
                  floating[:, ::1] Xr,            # work (Tc*N, D) with reverse, else empty
                  floating[:, ::1] Ys):           # work (N, H) with reverse, else empty
    """Inference (see _lstm.forward_infer): h updated in place, Tc steps held; with reverse
    the input rows are gathered through Xr and the outputs scattered from Ys."""
    cdef Layout L = make_layout(N, T, time_major)
    cdef Py_ssize_t D = X.shape[1], H = Wh.shape[0]
    cdef Py_ssize_t Tc = P.shape[0] // N
    cdef Py_ssize_t hs = L.ts * H, ldh = L.ns * H
    cdef const int64_t *lens = NULL if lengths is None else &lengths[0]
    cdef floating *h = &hT[0, 0]
    cdef floating *p
    cdef Py_ssize_t chunk, t0, t1, t
    cdef floating *wxp = packed_or_null(Wxp)
    cdef floating *wp = packed_or_null(Wp)
    # step t's outputs: Y + t*hs (row stride ldh), or with reverse the scratch Ys
    cdef floating *y = ptr(Ys) if reverse else &Y[0, 0]
    cdef Py_ssize_t ys = 0 if reverse else hs, ldy = H if reverse else ldh
    with nogil:
        if wxp != NULL:
            pack(D, H, &Wx[0, 0], H, False, wxp)
        if wp != NULL:
            pack(H, H, &Wh[0, 0], H, False, wp)
        for chunk in range((T + Tc - 1) // Tc):
            t0 = chunk * Tc
            t1 = min(T, t0 + Tc)
            if reverse:
                # P[t - t0] = X[:, rev_pos(:, t)] @ Wx  (gathered through Xr)
                project_reversed(L, cptr(X), D, lens, t0, t1, cptr(Wx), H, ptr(Xr), &P[0, 0])
            else:
                # P[t - t0] = X[:, t] @ Wx  for t0 <= t < t1
                project(L, cptr(X), D, t0, t1, cptr(Wx), H, &P[0, 0], N * H, H, wxp)
            for t in range(t0, t1):
                p = &P[0, 0] + (t - t0) * N * H
                # p += h_{t-1} @ Wh; then h is overwritten in place by h_t
                step_gemm(N, H, H, h, H, &Wh[0, 0], H, False, wp, 1, p, H)
                fwd_step(N, H, act, p, H, &b[0], h, H, h, H, y + t * ys, ldy, lens, t)
                if reverse:
                    # Y[:, rev_pos(:, t)] = Ys
                    scatter_reversed(L, y, H, lens, t, &Y[0, 0])


def backward(const floating[:, ::1] X, const floating[:, ::1] Wx, const floating[:, ::1] Wh,
             const floating[:, ::1] A,            # (N*T, H) h_t (cache)
             const floating[:, ::1] Hp,           # (N*T, H) h_{t-1} (cache)
             const int64_t[::1] lengths, Py_ssize_t N, Py_ssize_t T, bint time_major, int act,
             const floating[:, ::1] dY, bint has_dy,  # (N*T, H) dL/dhs, or (1, H) zeros
             floating[:, ::1] dh,                 # in dL/dh_T, out dL/dh0 (N, H)
             floating[:, ::1] dA,                 # out (N*T, H): dL/d(pre-activation)
             floating[:, ::1] dX, floating[:, ::1] dWx, floating[:, ::1] dWh,
             floating[::1] db,
             floating[::1] Wp):                   # work: Whᵀ packed, or empty (use BLAS)
    cdef const int64_t *lens = NULL if lengths is None else &lengths[0]
    with nogil:
        backward_loop(make_layout(N, T, time_major), X.shape[1], Wh.shape[0], cptr(X),
                      cptr(Wx), &Wh[0, 0], &A[0, 0], &Hp[0, 0], lens, act, &dY[0, 0], has_dy,
                      &dh[0, 0], &dA[0, 0], ptr(dX), ptr(dWx), &dWh[0, 0], &db[0],
                      packed_or_null(Wp))


# ---- the one-step cell (ndarrays, checked by fastcells.layers.RNN) -----------------------------
def cell_forward(x, h, Wx, Wh, b, int act):
    """One step: x (N, D), h (N, H) -> (h_next, A), new (N, H) arrays; A (h_next again, kept
    apart from the returned one) is what cell_backward needs. None, with nothing run, unless
    every argument is ready for the kernel (_fastpath.cell_typenum): the caller then checks
    and converts them (fastcells.layers.RNN). h is only read (T = 1: Hp is h itself)."""
    cdef int typenum = cell_typenum(1, x, h, None, Wx, Wh, b, False)
    if typenum < 0:
        return None
    cdef Py_ssize_t N = cnp.PyArray_DIMS(<cnp.ndarray> x)[0]
    cdef Py_ssize_t D = cnp.PyArray_DIMS(<cnp.ndarray> x)[1]
    cdef Py_ssize_t H = cnp.PyArray_DIMS(<cnp.ndarray> Wh)[0]
    cdef cnp.ndarray A = empty(N, H, typenum), h_next = empty(N, H, typenum)
    cdef Layout L = make_layout(N, 1, False)
    cdef void *p[7]
    p[0], p[1], p[2], p[3], p[4], p[5], p[6] = (data(x), data(h), data(Wx), data(Wh), data(b),
                                                data(A), data(h_next))
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            train_loop(L, D, H, <float *> p[0], <float *> p[2], <float *> p[3], <float *> p[4],
                       NULL, act, <float *> p[6], <float *> p[5], <float *> p[1],
                       <float *> p[6], NULL)
    else:
        with nogil:
            train_loop(L, D, H, <double *> p[0], <double *> p[2], <double *> p[3],
                       <double *> p[4], NULL, act, <double *> p[6], <double *> p[5],
                       <double *> p[1], <double *> p[6], NULL)
    return h_next, A


def cell_backward(cnp.ndarray x, cnp.ndarray h, cnp.ndarray Wx, cnp.ndarray Wh, cnp.ndarray A,
                  int act, cnp.ndarray dh_next, cnp.ndarray dh, cnp.ndarray dA, cnp.ndarray dx,
                  cnp.ndarray dWx, cnp.ndarray dWh, cnp.ndarray db):
    """Backward of cell_forward: dh (zeros in) becomes dh_prev; dA (N, H) is work."""
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], H = Wh.shape[0]
    cdef Layout L = make_layout(N, 1, False)
    cdef void *p[11]
    cdef int k
    for k, a in enumerate((x, h, Wx, Wh, A, dh_next, dh, dA, dx, dWx, dWh)):
        p[k] = data(a)
    cdef void *pdb = data(db)
    if x.descr.type_num == cnp.NPY_FLOAT32:
        with nogil:
            backward_loop(L, D, H, <float *> p[0], <float *> p[2], <float *> p[3],
                          <float *> p[4], <float *> p[1], NULL, act, <float *> p[5], True,
                          <float *> p[6], <float *> p[7], <float *> p[8], <float *> p[9],
                          <float *> p[10], <float *> pdb, NULL)
    else:
        with nogil:
            backward_loop(L, D, H, <double *> p[0], <double *> p[2], <double *> p[3],
                          <double *> p[4], <double *> p[1], NULL, act, <double *> p[5], True,
                          <double *> p[6], <double *> p[7], <double *> p[8], <double *> p[9],
                          <double *> p[10], <double *> pdb, NULL)
