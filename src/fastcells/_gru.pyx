"""The GRU kernels, blocks [z, r, h], h_t = z ⊙ h_{t-1} + (1 - z) ⊙ ĥ, both reset variants.

reset_after=True (b = [b_input; b_recurrent], (2, 3H) seen flat as (6H,)): per step ONE GEMM
U = h_{t-1} @ Wh into a work buffer, then one fused C pass; training caches [z, r, ĥ] (G),
uh = U_h + b1_h (UH, needed for ĥ's gradient and r's) and h_{t-1} (Hp, step 0 = h0). Backward
produces dA (input side: dWx, dX, db[0]) and dU (recurrent side: dWh, db[1], dh_{t-1}).

reset_after=False (b (3H,)): per step the z, r columns of the recurrent product first
(G[:, :2H] += h_{t-1} @ Wh[:, :2H]), a C pass giving z, r and rh = r ⊙ h_{t-1}, then
G[:, 2H:] += rh @ Wh[:, 2H:] and a C pass giving ĥ and h_t: two GEMMs on column blocks of Wh
(leading dimension 3H), never a copy of the weights. Training caches [z, r, ĥ] (G), rh (RH) and
h_{t-1} (Hp). Backward mirrors it with two GEMMs per step; after the loop dWh[:, :2H] and
dWh[:, 2H:] are one GEMM each (from Hp and RH).
"""
cimport numpy as cnp
from cython cimport floating
from libc.stdint cimport int64_t

from ._blas cimport gemm, pack, packed_size
from ._fastpath cimport cell_typenum, empty
from ._csrc cimport fc_gru_bwd_step_f32, fc_gru_bwd_step_f64
from ._csrc cimport fc_gru_fwd_step_f32, fc_gru_fwd_step_f64
from ._csrc cimport fc_gru_rb_bwd_gates_f32, fc_gru_rb_bwd_gates_f64
from ._csrc cimport fc_gru_rb_bwd_out_f32, fc_gru_rb_bwd_out_f64
from ._csrc cimport fc_gru_rb_fwd_gates_f32, fc_gru_rb_fwd_gates_f64
from ._csrc cimport fc_gru_rb_fwd_out_f32, fc_gru_rb_fwd_out_f64
from ._seq cimport Layout, colsum, cptr, data, make_layout, packed_or_null, project, ptr
from ._seq cimport project_reversed, scatter_reversed, step_gemm

cnp.import_array()


# ---- dispatch by dtype to the C passes (contracts in csrc/fastcells.h) ----------------------
cdef inline void fwd_step(Py_ssize_t N, Py_ssize_t H, floating *A, Py_ssize_t ld_A,
                          const floating *U, const floating *b, const floating *h_prev,
                          Py_ssize_t ld_hp, floating *h_next, Py_ssize_t ld_hn, floating *y,
                          Py_ssize_t ld_y, floating *uh, Py_ssize_t ld_uh,
                          const int64_t *lengths, Py_ssize_t t) noexcept nogil:
    if floating is float:
        fc_gru_fwd_step_f32(N, H, A, ld_A, U, b, h_prev, ld_hp, h_next, ld_hn, y, ld_y, uh,
                            ld_uh, lengths, t)
    else:
        fc_gru_fwd_step_f64(N, H, A, ld_A, U, b, h_prev, ld_hp, h_next, ld_hn, y, ld_y, uh,
                            ld_uh, lengths, t)


cdef inline void bwd_step(Py_ssize_t N, Py_ssize_t H, const floating *G, Py_ssize_t ld_G,
                          const floating *uh, Py_ssize_t ld_uh, const floating *h_prev,
                          Py_ssize_t ld_hp, const floating *dy, Py_ssize_t ld_dy, floating *dh,
                          floating *dA, floating *dU, Py_ssize_t ld_d, const int64_t *lengths,
                          Py_ssize_t t) noexcept nogil:
    if floating is float:
        fc_gru_bwd_step_f32(N, H, G, ld_G, uh, ld_uh, h_prev, ld_hp, dy, ld_dy, dh, dA, dU,
                            ld_d, lengths, t)
    else:
        fc_gru_bwd_step_f64(N, H, G, ld_G, uh, ld_uh, h_prev, ld_hp, dy, ld_dy, dh, dA, dU,
                            ld_d, lengths, t)


cdef inline void rb_fwd_gates(Py_ssize_t N, Py_ssize_t H, floating *A, Py_ssize_t ld_A,
                              const floating *b, const floating *h_prev, Py_ssize_t ld_hp,
                              floating *rh, Py_ssize_t ld_rh, const int64_t *lengths,
                              Py_ssize_t t) noexcept nogil:
    if floating is float:
        fc_gru_rb_fwd_gates_f32(N, H, A, ld_A, b, h_prev, ld_hp, rh, ld_rh, lengths, t)
    else:
        fc_gru_rb_fwd_gates_f64(N, H, A, ld_A, b, h_prev, ld_hp, rh, ld_rh, lengths, t)


cdef inline void rb_fwd_out(Py_ssize_t N, Py_ssize_t H, floating *A, Py_ssize_t ld_A,
                            const floating *b, const floating *h_prev, Py_ssize_t ld_hp,
                            floating *h_next, Py_ssize_t ld_hn, floating *y, Py_ssize_t ld_y,
                            const int64_t *lengths, Py_ssize_t t) noexcept nogil:
    if floating is float:
        fc_gru_rb_fwd_out_f32(N, H, A, ld_A, b, h_prev, ld_hp, h_next, ld_hn, y, ld_y,
                              lengths, t)
    else:
        fc_gru_rb_fwd_out_f64(N, H, A, ld_A, b, h_prev, ld_hp, h_next, ld_hn, y, ld_y,
                              lengths, t)


cdef inline void rb_bwd_out(Py_ssize_t N, Py_ssize_t H, const floating *G, Py_ssize_t ld_G,
                            const floating *h_prev, Py_ssize_t ld_hp, const floating *dy,
                            Py_ssize_t ld_dy, floating *dh, floating *dA, Py_ssize_t ld_dA,
                            const int64_t *lengths, Py_ssize_t t) noexcept nogil:
    if floating is float:
        fc_gru_rb_bwd_out_f32(N, H, G, ld_G, h_prev, ld_hp, dy, ld_dy, dh, dA, ld_dA,
                              lengths, t)
    else:
        fc_gru_rb_bwd_out_f64(N, H, G, ld_G, h_prev, ld_hp, dy, ld_dy, dh, dA, ld_dA,
                              lengths, t)


cdef inline void rb_bwd_gates(Py_ssize_t N, Py_ssize_t H, const floating *G, Py_ssize_t ld_G,
                              const floating *h_prev, Py_ssize_t ld_hp, const floating *drh,
                              floating *dh, floating *dA, Py_ssize_t ld_dA,
                              const int64_t *lengths, Py_ssize_t t) noexcept nogil:
    if floating is float:
        fc_gru_rb_bwd_gates_f32(N, H, G, ld_G, h_prev, ld_hp, drh, dh, dA, ld_dA, lengths, t)
    else:
        fc_gru_rb_bwd_gates_f64(N, H, G, ld_G, h_prev, ld_hp, drh, dh, dA, ld_dA, lengths, t)


# ---- one step of each variant, shared by training and inference -----------------------------
cdef inline void step_after(Py_ssize_t N, Py_ssize_t H, floating *g, Py_ssize_t ldg,
                            const floating *Wh, const floating *wp, floating *U,
                            const floating *b,
                            const floating *hp, Py_ssize_t ld_hp, floating *hn, Py_ssize_t ld_hn,
                            floating *y, Py_ssize_t ld_y, floating *uh, Py_ssize_t ld_uh,
                            const int64_t *lens, Py_ssize_t t) noexcept nogil:
    # U = h_{t-1} @ Wh
    step_gemm(N, 3 * H, H, hp, ld_hp, Wh, 3 * H, False, wp, 0, U, 3 * H)
    fwd_step(N, H, g, ldg, U, b, hp, ld_hp, hn, ld_hn, y, ld_y, uh, ld_uh, lens, t)


cdef inline void step_before(Py_ssize_t N, Py_ssize_t H, floating *g, Py_ssize_t ldg,
                             const floating *Wh, const floating *wp_zr, const floating *wp_h,
                             const floating *b, const floating *hp,
                             Py_ssize_t ld_hp, floating *hn, Py_ssize_t ld_hn, floating *y,
                             Py_ssize_t ld_y, floating *rh, Py_ssize_t ld_rh,
                             const int64_t *lens, Py_ssize_t t) noexcept nogil:
    # g[:, :2H] += h_{t-1} @ Wh[:, :2H]
    step_gemm(N, 2 * H, H, hp, ld_hp, Wh, 3 * H, False, wp_zr, 1, g, ldg)
    rb_fwd_gates(N, H, g, ldg, b, hp, ld_hp, rh, ld_rh, lens, t)
    # g[:, 2H:] += (r ⊙ h_{t-1}) @ Wh[:, 2H:]
    step_gemm(N, H, H, rh, ld_rh, Wh + 2 * H, 3 * H, False, wp_h, 1, g + 2 * H, ldg)
    rb_fwd_out(N, H, g, ldg, b, hp, ld_hp, hn, ld_hn, y, ld_y, lens, t)


cdef inline void pack_forward(Py_ssize_t H, const floating *Wh, bint reset_after,
                              floating *wp) noexcept nogil:
    """Pack Wh (reset_after) or its column blocks Wh[:, :2H] and Wh[:, 2H:] (reset-before:
    one after the other) for the per-step products; nothing when wp is NULL."""
    if wp == NULL:
        return
    if reset_after:
        pack(H, 3 * H, Wh, 3 * H, False, wp)
    else:
        pack(H, 2 * H, Wh, 3 * H, False, wp)
        pack(H, H, Wh + 2 * H, 3 * H, False, wp + packed_size(<floating> 0, H, 2 * H))


cdef inline const floating *second(const floating *wp, Py_ssize_t offset) noexcept nogil:
    return NULL if wp == NULL else wp + offset


# ---- the loops ---------------------------------------------------------------------------------
cdef void train_loop(Layout L, Py_ssize_t D, Py_ssize_t H, const floating *X,
                     const floating *Wx, const floating *Wh, const floating *b,
                     const int64_t *lens, bint reset_after, floating *Y, floating *g,
                     floating *s, floating *hp, floating *U, floating *hT,
                     floating *wp) noexcept nogil:
    """Training forward. Hp (hp): step 0 holds h0; only written for T > 1."""
    cdef Py_ssize_t N = L.N, T = L.T, G3 = 3 * H
    cdef Py_ssize_t hs = L.ts * H, ldh = L.ns * H
    cdef Py_ssize_t gs = L.ts * G3, ldg = L.ns * G3
    cdef const floating *wp_h = second(wp, packed_size(<floating> 0, H, 2 * H))
    cdef floating *h_next
    cdef Py_ssize_t t, ld_next
    pack_forward(H, Wh, reset_after, wp)
    # G = X @ Wx  (all steps)
    project(L, X, D, 0, T, Wx, G3, g, gs, ldg)
    for t in range(T):
        if t + 1 < T:
            h_next, ld_next = hp + (t + 1) * hs, ldh
        else:
            h_next, ld_next = hT, H
        if reset_after:
            step_after(N, H, g + t * gs, ldg, Wh, wp, U, b, hp + t * hs, ldh, h_next, ld_next,
                       Y + t * hs, ldh, s + t * hs, ldh, lens, t)
        else:
            step_before(N, H, g + t * gs, ldg, Wh, wp, wp_h, b, hp + t * hs, ldh, h_next,
                        ld_next, Y + t * hs, ldh, s + t * hs, ldh, lens, t)


cdef void backward_loop(Layout L, Py_ssize_t D, Py_ssize_t H, const floating *X,
                        const floating *Wx, const floating *w, const floating *G,
                        const floating *s, const floating *hp, const int64_t *lens,
                        bint reset_after, const floating *dY, bint has_dy, floating *dhp,
                        floating *d, floating *w2, floating *dX, floating *dWx, floating *dWh,
                        floating *db, floating *wp) noexcept nogil:
    """w2: dU (N*T, 3H) when reset_after, else one step's drh (N, H)."""
    cdef Py_ssize_t N = L.N, T = L.T, G3 = 3 * H, NT = N * T
    cdef Py_ssize_t hs = L.ts * H, ldh = L.ns * H
    cdef Py_ssize_t gs = L.ts * G3, ldg = L.ns * G3
    cdef Py_ssize_t dys = hs if has_dy else 0, ldy = ldh if has_dy else 0
    cdef Py_ssize_t t
    # packed: Whᵀ (reset_after); Wh[:, 2H:]ᵀ then Wh[:, :2H]ᵀ (reset-before)
    cdef floating *wp_zr = <floating *> second(wp, packed_size(<floating> 0, H, H))
    if wp != NULL and reset_after:
        pack(G3, H, w, G3, True, wp)
    elif wp != NULL:
        pack(H, H, w + 2 * H, G3, True, wp)
        pack(2 * H, H, w, G3, True, wp_zr)
    for t in range(T - 1, -1, -1):
        if reset_after:
            bwd_step(N, H, G + t * gs, ldg, s + t * hs, ldh, hp + t * hs, ldh, dY + t * dys, ldy,
                     dhp, d + t * gs, w2 + t * gs, ldg, lens, t)
            # dh_{t-1} += dU_t @ Whᵀ
            step_gemm(N, H, G3, w2 + t * gs, ldg, w, G3, True, wp, 1, dhp, H)
        else:
            rb_bwd_out(N, H, G + t * gs, ldg, hp + t * hs, ldh, dY + t * dys, ldy, dhp,
                       d + t * gs, ldg, lens, t)
            # drh = dA_h @ Wh[:, 2H:]ᵀ
            step_gemm(N, H, H, d + t * gs + 2 * H, ldg, w + 2 * H, G3, True, wp, 0, w2, H)
            rb_bwd_gates(N, H, G + t * gs, ldg, hp + t * hs, ldh, w2, dhp, d + t * gs, ldg,
                         lens, t)
            # dh_{t-1} += dA_zr @ Wh[:, :2H]ᵀ
            step_gemm(N, H, 2 * H, d + t * gs, ldg, w, G3, True, wp_zr, 1, dhp, H)
    # dWx = Xᵀ @ dA;  dX = dA @ Wxᵀ;  db (input side) = dA.sum(0)
    gemm(True, False, D, G3, NT, 1, X, D, d, G3, 0, dWx, G3)
    gemm(False, True, NT, D, G3, 1, d, G3, Wx, G3, 0, dX, D)
    colsum(NT, G3, d, G3, db)
    if reset_after:
        # dWh = Hpᵀ @ dU;  db[1] = dU.sum(0)
        gemm(True, False, H, G3, NT, 1, hp, H, w2, G3, 0, dWh, G3)
        colsum(NT, G3, w2, G3, db + G3)
    else:
        # dWh[:, :2H] = Hpᵀ @ dA[:, :2H];  dWh[:, 2H:] = RHᵀ @ dA[:, 2H:]
        gemm(True, False, H, 2 * H, NT, 1, hp, H, d, G3, 0, dWh, G3)
        gemm(True, False, H, H, NT, 1, s, H, d + 2 * H, G3, 0, dWh + 2 * H, G3)


# ---- the sequence API (typed memoryviews) -----------------------------------------------------
def forward_train(const floating[:, ::1] X,       # (N*T, D)
                  const floating[:, ::1] Wx,      # (D, 3H)
                  const floating[:, ::1] Wh,      # (H, 3H)
                  const floating[::1] b,          # (6H,) reset_after, else (3H,)
                  const int64_t[::1] lengths,     # (N,) or None
                  Py_ssize_t N, Py_ssize_t T, bint time_major, bint reset_after,
                  floating[:, ::1] Y,             # out (N*T, H): hs
                  floating[:, ::1] G,             # out (N*T, 3H): z, r, ĥ
                  floating[:, ::1] S,             # out (N*T, H): uh (reset_after) or rh
                  floating[:, ::1] Hp,            # in/out (N*T, H): h_{t-1}; step 0 holds h0
                  floating[:, ::1] U,             # work (N, 3H) (reset_after only)
                  floating[:, ::1] hT,            # out (N, H)
                  floating[::1] Wp):              # work: Wh packed, or empty (use BLAS)
    cdef const int64_t *lens = NULL if lengths is None else &lengths[0]
    with nogil:
        train_loop(make_layout(N, T, time_major), X.shape[1], Wh.shape[0], cptr(X), cptr(Wx),
                   &Wh[0, 0], &b[0], lens, reset_after, &Y[0, 0], &G[0, 0], &S[0, 0],
                   &Hp[0, 0], &U[0, 0], &hT[0, 0], packed_or_null(Wp))


def forward_infer(const floating[:, ::1] X,       # (N*T, D) xs, layout rows (not reordered)
                  const floating[:, ::1] Wx, const floating[:, ::1] Wh,
                  const floating[::1] b, const int64_t[::1] lengths, Py_ssize_t N,
                  Py_ssize_t T, bint time_major, bint reverse, bint reset_after,
                  floating[:, ::1] Y,             # out (N*T, H): hs
                  floating[:, ::1] P,             # work (Tc*N, 3H): gates of Tc steps
                  floating[:, ::1] S,             # work (1, H) uh scratch, or (N, H) rh
                  floating[:, ::1] U,             # work (N, 3H) (reset_after only)
                  floating[:, ::1] hT,            # in h0, out h_T (N, H), updated in place
                  floating[::1] Wp,               # work: Wh packed, or empty (use BLAS)
                  floating[::1] Wxp,              # work: Wx packed, or empty (see project)
                  floating[:, ::1] Xr,            # work (Tc*N, D) with reverse, else empty
                  floating[:, ::1] Ys):           # work (N, H) with reverse, else empty
    """Inference (see _lstm.forward_infer): h updated in place, Tc steps of gates held; with
    reverse the input rows are gathered through Xr and the outputs scattered from Ys."""
    cdef Layout L = make_layout(N, T, time_major)
    cdef Py_ssize_t D = X.shape[1], H = Wh.shape[0], G3 = 3 * H
    cdef Py_ssize_t Tc = P.shape[0] // N
    cdef Py_ssize_t hs = L.ts * H, ldh = L.ns * H
    cdef const int64_t *lens = NULL if lengths is None else &lengths[0]
    cdef floating *h = &hT[0, 0]
    cdef floating *p
    cdef Py_ssize_t chunk, t0, t1, t
    cdef floating *wxp = packed_or_null(Wxp)
    cdef floating *wp = packed_or_null(Wp)
    cdef const floating *wp_h = second(wp, packed_size(<floating> 0, H, 2 * H))
    # step t's outputs: Y + t*hs (row stride ldh), or with reverse the scratch Ys
    cdef floating *y = ptr(Ys) if reverse else &Y[0, 0]
    cdef Py_ssize_t ys = 0 if reverse else hs, ldy = H if reverse else ldh
    with nogil:
        if wxp != NULL:
            pack(D, G3, &Wx[0, 0], G3, False, wxp)
        pack_forward(H, &Wh[0, 0], reset_after, wp)
        for chunk in range((T + Tc - 1) // Tc):
            t0 = chunk * Tc
            t1 = min(T, t0 + Tc)
            if reverse:
                # P[t - t0] = X[:, rev_pos(:, t)] @ Wx  (gathered through Xr)
                project_reversed(L, cptr(X), D, lens, t0, t1, cptr(Wx), G3, ptr(Xr), &P[0, 0])
            else:
                # P[t - t0] = X[:, t] @ Wx  for t0 <= t < t1
                project(L, cptr(X), D, t0, t1, cptr(Wx), G3, &P[0, 0], N * G3, G3, wxp)
            for t in range(t0, t1):
                p = &P[0, 0] + (t - t0) * N * G3
                # h is overwritten in place by h_t (every read of h_{t-1} precedes its write)
                if reset_after:
                    step_after(N, H, p, G3, &Wh[0, 0], wp, &U[0, 0], &b[0], h, H, h, H,
                               y + t * ys, ldy, &S[0, 0], 0, lens, t)
                else:
                    step_before(N, H, p, G3, &Wh[0, 0], wp, wp_h, &b[0], h, H, h, H,
                                y + t * ys, ldy, &S[0, 0], H, lens, t)
                if reverse:
                    # Y[:, rev_pos(:, t)] = Ys
                    scatter_reversed(L, y, H, lens, t, &Y[0, 0])


def backward(const floating[:, ::1] X, const floating[:, ::1] Wx, const floating[:, ::1] Wh,
             const floating[:, ::1] G,            # (N*T, 3H) z, r, ĥ (cache)
             const floating[:, ::1] S,            # (N*T, H) uh or rh (cache)
             const floating[:, ::1] Hp,           # (N*T, H) h_{t-1} (cache)
             const int64_t[::1] lengths, Py_ssize_t N, Py_ssize_t T, bint time_major,
             bint reset_after,
             const floating[:, ::1] dY, bint has_dy,  # (N*T, H) dL/dhs, or (1, H) zeros
             floating[:, ::1] dh,                 # in dL/dh_T, out dL/dh0 (N, H)
             floating[:, ::1] dA,                 # out (N*T, 3H): input-side gate gradients
             floating[:, ::1] W2,                 # work: dU (N*T, 3H) after, drh (N, H) before
             floating[:, ::1] dX, floating[:, ::1] dWx, floating[:, ::1] dWh,
             floating[::1] db,                    # out (6H,) reset_after, else (3H,)
             floating[::1] Wp):                   # work: Whᵀ packed, or empty (use BLAS)
    cdef const int64_t *lens = NULL if lengths is None else &lengths[0]
    with nogil:
        backward_loop(make_layout(N, T, time_major), X.shape[1], Wh.shape[0], cptr(X),
                      cptr(Wx), &Wh[0, 0], &G[0, 0], &S[0, 0], &Hp[0, 0], lens, reset_after,
                      &dY[0, 0], has_dy, &dh[0, 0], &dA[0, 0], &W2[0, 0], ptr(dX), ptr(dWx),
                      &dWh[0, 0], &db[0], packed_or_null(Wp))


# ---- the one-step cell (ndarrays, checked by fastcells.layers.GRU) -----------------------------
def cell_forward(x, h, Wx, Wh, b, bint reset_after):
    """One step: x (N, D), h (N, H) -> (h_next (N, H), G (N, 3H), S (N, H)), new arrays; G and
    S are what cell_backward needs. b is (2, 3H) when reset_after, else (3H,). None, with
    nothing run, unless every argument is ready for the kernel (_fastpath.cell_typenum): the
    caller then checks and converts them (fastcells.layers.GRU). h is only read (T = 1: Hp is
    h itself)."""
    cdef int typenum = cell_typenum(3, x, h, None, Wx, Wh, b, reset_after)
    if typenum < 0:
        return None
    cdef Py_ssize_t N = cnp.PyArray_DIMS(<cnp.ndarray> x)[0]
    cdef Py_ssize_t D = cnp.PyArray_DIMS(<cnp.ndarray> x)[1]
    cdef Py_ssize_t H = cnp.PyArray_DIMS(<cnp.ndarray> Wh)[0]
    cdef cnp.ndarray G = empty(N, 3 * H, typenum), S = empty(N, H, typenum)
    cdef cnp.ndarray h_next = empty(N, H, typenum)
    cdef cnp.ndarray U = empty(N, 3 * H, typenum) if reset_after else empty(1, 1, typenum)
    cdef Layout L = make_layout(N, 1, False)
    cdef void *p[9]
    p[0], p[1], p[2], p[3], p[4] = data(x), data(h), data(Wx), data(Wh), data(b)
    p[5], p[6], p[7], p[8] = data(G), data(S), data(U), data(h_next)
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            train_loop(L, D, H, <float *> p[0], <float *> p[2], <float *> p[3], <float *> p[4],
                       NULL, reset_after, <float *> p[8], <float *> p[5], <float *> p[6],
                       <float *> p[1], <float *> p[7], <float *> p[8], NULL)
    else:
        with nogil:
            train_loop(L, D, H, <double *> p[0], <double *> p[2], <double *> p[3],
                       <double *> p[4], NULL, reset_after, <double *> p[8], <double *> p[5],
                       <double *> p[6], <double *> p[1], <double *> p[7], <double *> p[8], NULL)
    return h_next, G, S


def cell_backward(cnp.ndarray x, cnp.ndarray h, cnp.ndarray Wx, cnp.ndarray Wh, cnp.ndarray G,
                  cnp.ndarray S, bint reset_after, cnp.ndarray dh_next, cnp.ndarray dh,
                  cnp.ndarray dA, cnp.ndarray W2, cnp.ndarray dx, cnp.ndarray dWx,
                  cnp.ndarray dWh, cnp.ndarray db):
    """Backward of cell_forward: dh (zeros in) becomes dh_prev; dA (N, 3H) and W2 ((N, 3H)
    reset_after, else (N, H)) are work; db flat."""
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], H = Wh.shape[0]
    cdef Layout L = make_layout(N, 1, False)
    cdef void *p[15]
    cdef int k
    for k, a in enumerate((x, h, Wx, Wh, G, S, dh_next, dh, dA, W2, dx, dWx, dWh, db)):
        p[k] = data(a)
    if x.descr.type_num == cnp.NPY_FLOAT32:
        with nogil:
            backward_loop(L, D, H, <float *> p[0], <float *> p[2], <float *> p[3],
                          <float *> p[4], <float *> p[5], <float *> p[1], NULL, reset_after,
                          <float *> p[6], True, <float *> p[7], <float *> p[8], <float *> p[9],
                          <float *> p[10], <float *> p[11], <float *> p[12], <float *> p[13],
                          NULL)
    else:
        with nogil:
            backward_loop(L, D, H, <double *> p[0], <double *> p[2], <double *> p[3],
                          <double *> p[4], <double *> p[5], <double *> p[1], NULL,
                          reset_after, <double *> p[6], True, <double *> p[7],
                          <double *> p[8], <double *> p[9], <double *> p[10],
                          <double *> p[11], <double *> p[12], <double *> p[13], NULL)
