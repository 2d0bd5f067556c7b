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

from ._blas cimport gemv, pack, packed_size, parallel
from ._fastpath cimport array_ptrs, cell_typenum, empty, lengths_ptr
from ._csrc cimport fc_gru_bwd_step_f32, fc_gru_bwd_step_f64
from ._csrc cimport fc_gru_fwd_step_f32, fc_gru_fwd_step_f64
from ._csrc cimport fc_gru_rb_bwd_gates_f32, fc_gru_rb_bwd_gates_f64
from ._csrc cimport fc_gru_rb_bwd_out_f32, fc_gru_rb_bwd_out_f64
from ._csrc cimport fc_gru_rb_fwd_gates_f32, fc_gru_rb_fwd_gates_f64
from ._csrc cimport fc_gru_rb_fwd_out_f32, fc_gru_rb_fwd_out_f64
from ._seq cimport Layout, cptr, data, make_layout, packed_or_null, project, ptr
from ._seq cimport Team, lens_at, project_chunk, project_sequences, rows, scatter_reversed
from ._seq cimport solo, sync, team_colsum, team_gemm, team_own_gemm, team_pack
from ._seq cimport gather_units, project_units, unit_range, units_done, units_next
from ._seq cimport claim_rows, row_blocks, run_macs

cnp.import_array()


# ---- dispatch by dtype to the C passes (contracts in csrc/fastcells.h) ----------------------
# Each runs on this thread's rows of the step [n0, n1) (the whole batch on one thread): every
# row pointer moves by n0 rows (U, dh and drh are contiguous: row strides 3H, H and H).
cdef inline void fwd_step(Team tm, Py_ssize_t N, Py_ssize_t H, floating *A, Py_ssize_t ld_A,
                          const floating *U, const floating *b, const floating *h_prev,
                          Py_ssize_t ld_hp, floating *h_next, Py_ssize_t ld_hn, floating *y,
                          Py_ssize_t ld_y, floating *uh, Py_ssize_t ld_uh,
                          const int64_t *lengths, Py_ssize_t t) noexcept nogil:
    cdef Py_ssize_t n0, n1
    rows(tm, N, &n0, &n1)
    A, U, h_prev, h_next = A + n0 * ld_A, U + n0 * 3 * H, h_prev + n0 * ld_hp, h_next + n0 * ld_hn
    y, uh, lengths = y + n0 * ld_y, uh + n0 * ld_uh, lens_at(lengths, n0)
    if floating is float:
        fc_gru_fwd_step_f32(n1 - n0, H, A, ld_A, U, b, h_prev, ld_hp, h_next, ld_hn, y, ld_y,
                            uh, ld_uh, lengths, t)
    else:
        fc_gru_fwd_step_f64(n1 - n0, H, A, ld_A, U, b, h_prev, ld_hp, h_next, ld_hn, y, ld_y,
                            uh, ld_uh, lengths, t)


cdef inline void bwd_step(Team tm, Py_ssize_t N, Py_ssize_t H, const floating *G,
                          Py_ssize_t ld_G, const floating *uh, Py_ssize_t ld_uh,
                          const floating *h_prev, Py_ssize_t ld_hp, const floating *dy,
                          Py_ssize_t ld_dy, floating *dh, floating *dA, floating *dU,
                          Py_ssize_t ld_d, const int64_t *lengths, Py_ssize_t t) noexcept nogil:
    cdef Py_ssize_t n0, n1
    rows(tm, N, &n0, &n1)
    G, uh, h_prev, dy = G + n0 * ld_G, uh + n0 * ld_uh, h_prev + n0 * ld_hp, dy + n0 * ld_dy
    dh, dA, dU, lengths = dh + n0 * H, dA + n0 * ld_d, dU + n0 * ld_d, lens_at(lengths, n0)
    if floating is float:
        fc_gru_bwd_step_f32(n1 - n0, H, G, ld_G, uh, ld_uh, h_prev, ld_hp, dy, ld_dy, dh, dA,
                            dU, ld_d, lengths, t)
    else:
        fc_gru_bwd_step_f64(n1 - n0, H, G, ld_G, uh, ld_uh, h_prev, ld_hp, dy, ld_dy, dh, dA,
                            dU, ld_d, lengths, t)


cdef inline void rb_fwd_gates(Team tm, Py_ssize_t N, Py_ssize_t H, floating *A,
                              Py_ssize_t ld_A, const floating *b, const floating *h_prev,
                              Py_ssize_t ld_hp, floating *rh, Py_ssize_t ld_rh,
                              const int64_t *lengths, Py_ssize_t t) noexcept nogil:
    cdef Py_ssize_t n0, n1
    rows(tm, N, &n0, &n1)
    A, h_prev, rh = A + n0 * ld_A, h_prev + n0 * ld_hp, rh + n0 * ld_rh
    lengths = lens_at(lengths, n0)
    if floating is float:
        fc_gru_rb_fwd_gates_f32(n1 - n0, H, A, ld_A, b, h_prev, ld_hp, rh, ld_rh, lengths, t)
    else:
        fc_gru_rb_fwd_gates_f64(n1 - n0, H, A, ld_A, b, h_prev, ld_hp, rh, ld_rh, lengths, t)


cdef inline void rb_fwd_out(Team tm, Py_ssize_t N, Py_ssize_t H, floating *A, Py_ssize_t ld_A,
                            const floating *b, const floating *h_prev, Py_ssize_t ld_hp,
                            floating *h_next, Py_ssize_t ld_hn, floating *y, Py_ssize_t ld_y,
                            const int64_t *lengths, Py_ssize_t t) noexcept nogil:
    cdef Py_ssize_t n0, n1
    rows(tm, N, &n0, &n1)
    A, h_prev, h_next, y = A + n0 * ld_A, h_prev + n0 * ld_hp, h_next + n0 * ld_hn, y + n0 * ld_y
    lengths = lens_at(lengths, n0)
    if floating is float:
        fc_gru_rb_fwd_out_f32(n1 - n0, H, A, ld_A, b, h_prev, ld_hp, h_next, ld_hn, y, ld_y,
                              lengths, t)
    else:
        fc_gru_rb_fwd_out_f64(n1 - n0, H, A, ld_A, b, h_prev, ld_hp, h_next, ld_hn, y, ld_y,
                              lengths, t)


cdef inline void rb_bwd_out(Team tm, Py_ssize_t N, Py_ssize_t H, const floating *G,
                            Py_ssize_t ld_G, const floating *h_prev, Py_ssize_t ld_hp,
                            const floating *dy, Py_ssize_t ld_dy, floating *dh, floating *dA,
                            Py_ssize_t ld_dA, const int64_t *lengths,
                            Py_ssize_t t) noexcept nogil:
    cdef Py_ssize_t n0, n1
    rows(tm, N, &n0, &n1)
    G, h_prev, dy, dh = G + n0 * ld_G, h_prev + n0 * ld_hp, dy + n0 * ld_dy, dh + n0 * H
    dA, lengths = dA + n0 * ld_dA, lens_at(lengths, n0)
    if floating is float:
        fc_gru_rb_bwd_out_f32(n1 - n0, H, G, ld_G, h_prev, ld_hp, dy, ld_dy, dh, dA, ld_dA,
                              lengths, t)
    else:
        fc_gru_rb_bwd_out_f64(n1 - n0, H, G, ld_G, h_prev, ld_hp, dy, ld_dy, dh, dA, ld_dA,
                              lengths, t)


cdef inline void rb_bwd_gates(Team tm, Py_ssize_t N, Py_ssize_t H, const floating *G,
                              Py_ssize_t ld_G, const floating *h_prev, Py_ssize_t ld_hp,
                              const floating *drh, floating *dh, floating *dA,
                              Py_ssize_t ld_dA, const int64_t *lengths,
                              Py_ssize_t t) noexcept nogil:
    cdef Py_ssize_t n0, n1
    rows(tm, N, &n0, &n1)
    G, h_prev, drh, dh = G + n0 * ld_G, h_prev + n0 * ld_hp, drh + n0 * H, dh + n0 * H
    dA, lengths = dA + n0 * ld_dA, lens_at(lengths, n0)
    if floating is float:
        fc_gru_rb_bwd_gates_f32(n1 - n0, H, G, ld_G, h_prev, ld_hp, drh, dh, dA, ld_dA,
                                lengths, t)
    else:
        fc_gru_rb_bwd_gates_f64(n1 - n0, H, G, ld_G, h_prev, ld_hp, drh, dh, dA, ld_dA,
                                lengths, t)


# ---- one step of each variant, shared by training and inference -----------------------------
# On a team (see _seq.pxd): products split by column panels, pointwise passes by rows, a
# barrier after each (an in-place state is read whole by a product before any row of it is
# overwritten).
cdef inline void step_after(Team tm, Py_ssize_t N, Py_ssize_t H, floating *g, Py_ssize_t ldg,
                            const floating *Wh, const floating *wp, floating *U,
                            const floating *b,
                            const floating *hp, Py_ssize_t ld_hp, floating *hn, Py_ssize_t ld_hn,
                            floating *y, Py_ssize_t ld_y, floating *uh, Py_ssize_t ld_uh,
                            const int64_t *lens, Py_ssize_t t) noexcept nogil:
    # U = h_{t-1} @ Wh
    team_gemm(tm, N, 3 * H, H, hp, ld_hp, Wh, 3 * H, False, wp, 0, U, 3 * H, t & 1)
    sync(tm)
    fwd_step(tm, N, H, g, ldg, U, b, hp, ld_hp, hn, ld_hn, y, ld_y, uh, ld_uh, lens, t)
    sync(tm)


cdef inline void step_before(Team tm, Py_ssize_t N, Py_ssize_t H, floating *g, Py_ssize_t ldg,
                             const floating *Wh, const floating *wp_zr, const floating *wp_h,
                             const floating *b, const floating *hp,
                             Py_ssize_t ld_hp, floating *hn, Py_ssize_t ld_hn, floating *y,
                             Py_ssize_t ld_y, floating *rh, Py_ssize_t ld_rh,
                             const int64_t *lens, Py_ssize_t t) noexcept nogil:
    # g[:, :2H] += h_{t-1} @ Wh[:, :2H]
    team_gemm(tm, N, 2 * H, H, hp, ld_hp, Wh, 3 * H, False, wp_zr, 1, g, ldg, t & 1)
    sync(tm)
    rb_fwd_gates(tm, N, H, g, ldg, b, hp, ld_hp, rh, ld_rh, lens, t)
    sync(tm)
    # g[:, 2H:] += (r ⊙ h_{t-1}) @ Wh[:, 2H:]
    team_gemm(tm, N, H, H, rh, ld_rh, Wh + 2 * H, 3 * H, False, wp_h, 1, g + 2 * H, ldg,
              t & 1)
    sync(tm)
    rb_fwd_out(tm, N, H, g, ldg, b, hp, ld_hp, hn, ld_hn, y, ld_y, lens, t)
    sync(tm)


cdef inline void pack_forward(Team tm, Py_ssize_t H, const floating *Wh, bint reset_after,
                              floating *wp) noexcept nogil:
    """Pack Wh (reset_after) or its column blocks Wh[:, :2H] and Wh[:, 2H:] (reset-before:
    one after the other) for the per-step products; nothing when wp is NULL. No barrier."""
    if wp == NULL:
        return
    if reset_after:
        team_pack(tm, H, 3 * H, Wh, 3 * H, False, wp)
    else:
        team_pack(tm, H, 2 * H, Wh, 3 * H, False, wp)
        team_pack(tm, H, H, Wh + 2 * H, 3 * H, False, wp + packed_size(<floating> 0, H, 2 * H))


cdef inline const floating *second(const floating *wp, Py_ssize_t offset) noexcept nogil:
    return NULL if wp == NULL else wp + offset


# ---- the loops ---------------------------------------------------------------------------------
cdef struct Steps:  # the arguments of the loops for the threads (void pointers: both dtypes)
    Layout L
    Py_ssize_t D, H, Tc, ld_s
    bint reset_after
    const void *X
    const void *Wx
    const void *wxp
    const void *Wh
    const void *b
    const int64_t *lens
    void *Y
    void *g
    void *s
    void *hp
    void *U
    void *hT
    void *wp
    void *wu
    const void *dY
    bint has_dy
    void *dh
    void *d
    void *w2
    void *dX
    void *dWx
    void *dWh
    void *db
    bint dbl
    Py_ssize_t blocks       # rows_infer: blocks of rows, and the next one to claim
    Py_ssize_t next_block


cdef void forward_steps(Team tm, Layout L, Py_ssize_t H, const floating *Wh,
                        const floating *b, const int64_t *lens, bint reset_after, floating *Y,
                        floating *g, floating *s, floating *hp, floating *U, floating *hT,
                        floating *wp) noexcept nogil:
    """Training forward after the input projection (g holds X @ Wx). Hp (hp): step 0 holds
    h0; only written for T > 1."""
    cdef Py_ssize_t N = L.N, T = L.T, G3 = 3 * H
    cdef Py_ssize_t hs = L.ts * H, ldh = L.ns * H
    cdef Py_ssize_t gs = L.ts * G3, ldg = L.ns * G3
    cdef const floating *wp_h = second(wp, packed_size(<floating> 0, H, 2 * H))
    cdef floating *h_next
    cdef Py_ssize_t t, ld_next
    pack_forward(tm, H, Wh, reset_after, wp)
    sync(tm)
    for t in range(T):
        if t + 1 < T:
            h_next, ld_next = hp + (t + 1) * hs, ldh
        else:
            h_next, ld_next = hT, H
        if reset_after:
            step_after(tm, N, H, g + t * gs, ldg, Wh, wp, U, b, hp + t * hs, ldh, h_next,
                       ld_next, Y + t * hs, ldh, s + t * hs, ldh, lens, t)
        else:
            step_before(tm, N, H, g + t * gs, ldg, Wh, wp, wp_h, b, hp + t * hs, ldh, h_next,
                        ld_next, Y + t * hs, ldh, s + t * hs, ldh, lens, t)


cdef void backward_steps(Team tm, Layout L, Py_ssize_t H, const floating *w,
                         const floating *G, const floating *s, const floating *hp,
                         const int64_t *lens, bint reset_after, const floating *dY,
                         bint has_dy, floating *dhp, floating *d, floating *w2,
                         floating *wp) noexcept nogil:
    """Backward through the steps: d (dA), w2 (dU, or one step's drh) and dh into dh0."""
    cdef Py_ssize_t N = L.N, T = L.T, G3 = 3 * H
    cdef Py_ssize_t hs = L.ts * H, ldh = L.ns * H
    cdef Py_ssize_t gs = L.ts * G3, ldg = L.ns * G3
    cdef Py_ssize_t dys = hs if has_dy else 0, ldy = ldh if has_dy else 0
    cdef Py_ssize_t t
    # packed: Whᵀ (reset_after); Wh[:, 2H:]ᵀ then Wh[:, :2H]ᵀ (reset-before)
    cdef floating *wp_zr = <floating *> second(wp, packed_size(<floating> 0, H, H))
    if wp != NULL and reset_after:
        team_pack(tm, G3, H, w, G3, True, wp)
    elif wp != NULL:
        team_pack(tm, H, H, w + 2 * H, G3, True, wp)
        team_pack(tm, 2 * H, H, w, G3, True, wp_zr)
    sync(tm)
    for t in range(T - 1, -1, -1):
        if reset_after:
            bwd_step(tm, N, H, G + t * gs, ldg, s + t * hs, ldh, hp + t * hs, ldh,
                     dY + t * dys, ldy, dhp, d + t * gs, w2 + t * gs, ldg, lens, t)
            sync(tm)
            # dh_{t-1} += dU_t @ Whᵀ
            team_gemm(tm, N, H, G3, w2 + t * gs, ldg, w, G3, True, wp, 1, dhp, H, False)
            sync(tm)
        else:
            rb_bwd_out(tm, N, H, G + t * gs, ldg, hp + t * hs, ldh, dY + t * dys, ldy, dhp,
                       d + t * gs, ldg, lens, t)
            sync(tm)
            # drh = dA_h @ Wh[:, 2H:]ᵀ
            team_gemm(tm, N, H, H, d + t * gs + 2 * H, ldg, w + 2 * H, G3, True, wp, 0, w2, H,
                      False)
            sync(tm)
            rb_bwd_gates(tm, N, H, G + t * gs, ldg, hp + t * hs, ldh, w2, dhp, d + t * gs,
                         ldg, lens, t)
            sync(tm)
            # dh_{t-1} += dA_zr @ Wh[:, :2H]ᵀ
            team_gemm(tm, N, H, 2 * H, d + t * gs, ldg, w, G3, True, wp_zr, 1, dhp, H, False)
            sync(tm)


cdef void train_loop(Layout L, Py_ssize_t D, Py_ssize_t H, const floating *X,
                     const floating *Wx, const floating *Wh, const floating *b,
                     const int64_t *lens, bint reset_after, floating *Y, floating *g,
                     floating *s, floating *hp, floating *U, floating *hT,
                     floating *wp) noexcept nogil:
    """Training forward on one thread (the one-step cell)."""
    # G = X @ Wx  (all steps)
    project(L, X, D, 0, L.T, Wx, 3 * H, g, L.ts * 3 * H, L.ns * 3 * H)
    forward_steps(solo(), L, H, Wh, b, lens, reset_after, Y, g, s, hp, U, hT, wp)


cdef void backward_loop(Layout L, Py_ssize_t D, Py_ssize_t H, const floating *X,
                        const floating *Wx, const floating *w, const floating *G,
                        const floating *s, const floating *hp, const int64_t *lens,
                        bint reset_after, const floating *dY, bint has_dy, floating *dhp,
                        floating *d, floating *w2, floating *dX, floating *dWx, floating *dWh,
                        floating *db, floating *wp, int nth) noexcept nogil:
    """All of backward on a team of nth threads (backward_task). w2: dU (N*T, 3H) when
    reset_after, else one step's drh (N, H)."""
    cdef Steps a
    a.L, a.D, a.H, a.X, a.Wx, a.Wh = L, D, H, X, Wx, w
    a.g, a.s, a.hp = <void *> G, <void *> s, <void *> hp  # (only read)
    a.lens, a.reset_after, a.dY, a.has_dy, a.dh = lens, reset_after, dY, has_dy, dhp
    a.d, a.w2, a.wp = d, w2, wp
    a.dX, a.dWx, a.dWh, a.db, a.dbl = dX, dWx, dWh, db, floating is double
    parallel(nth, backward_task, &a, 2 * run_macs(L, D, H, 3, floating is double))


cdef void backward_all(Team tm, Layout L, Py_ssize_t D, Py_ssize_t H, const floating *X,
                       const floating *Wx, const floating *w, const floating *G,
                       const floating *s, const floating *hp, const int64_t *lens,
                       bint reset_after, const floating *dY, bint has_dy, floating *dhp,
                       floating *d, floating *w2, floating *dX, floating *dWx, floating *dWh,
                       floating *db, floating *wp) noexcept nogil:
    """The steps (backward_steps), then the one-off products on the same team."""
    cdef Py_ssize_t G3 = 3 * H, NT = L.N * L.T
    backward_steps(tm, L, H, w, G, s, hp, lens, reset_after, dY, has_dy, dhp, d, w2, wp)
    sync(tm)
    # dWx = Xᵀ @ dA;  dX = dA @ Wxᵀ;  db (input side) = dA.sum(0)
    team_own_gemm(tm, True, False, D, G3, NT, X, D, d, G3, dWx, G3)
    team_own_gemm(tm, False, True, NT, D, G3, d, G3, Wx, G3, dX, D)
    team_colsum(tm, NT, G3, d, G3, db)
    if reset_after:
        # dWh = Hpᵀ @ dU;  db[1] = dU.sum(0)
        team_own_gemm(tm, True, False, H, G3, NT, hp, H, w2, G3, dWh, G3)
        team_colsum(tm, NT, G3, w2, G3, db + G3)
    else:
        # dWh[:, :2H] = Hpᵀ @ dA[:, :2H];  dWh[:, 2H:] = RHᵀ @ dA[:, 2H:]
        team_own_gemm(tm, True, False, H, 2 * H, NT, hp, H, d, G3, dWh, G3)
        team_own_gemm(tm, True, False, H, H, NT, s, H, d + 2 * H, G3, dWh + 2 * H, G3)


cdef void infer_steps(Team tm, Py_ssize_t N, Py_ssize_t H, Py_ssize_t t0, Py_ssize_t t1,
                      bint reset_after, const floating *Wh, const floating *wp,
                      const floating *b, const int64_t *lens, floating *P, floating *U,
                      floating *S, Py_ssize_t ld_s, floating *h, floating *y, Py_ssize_t ys,
                      Py_ssize_t ldy) noexcept nogil:
    """Inference steps t0 <= t < t1: P holds their input projections ((t1 - t0)*N, 3H); h
    (N, H) is overwritten in place by h_t (every read of h_{t-1} precedes its write); step
    t's outputs go to y + t*ys (row stride ldy). S: uh scratch, or rh (row stride ld_s)."""
    cdef Py_ssize_t G3 = 3 * H, t
    cdef const floating *wp_h = second(wp, packed_size(<floating> 0, H, 2 * H))
    cdef floating *p
    for t in range(t0, t1):
        p = P + (t - t0) * N * G3
        if reset_after:
            step_after(tm, N, H, p, G3, Wh, wp, U, b, h, H, h, H, y + t * ys, ldy, S, ld_s,
                       lens, t)
        else:
            step_before(tm, N, H, p, G3, Wh, wp, wp_h, b, h, H, h, H, y + t * ys, ldy, S,
                        ld_s, lens, t)


cdef void infer_chunks(Team tm, Layout L, Py_ssize_t D, Py_ssize_t H, Py_ssize_t Tc,
                       bint reset_after, const floating *X, const floating *Wx,
                       const floating *wxp, const floating *Wh, const floating *wp,
                       const floating *b, const int64_t *lens, floating *P, floating *U,
                       floating *S, Py_ssize_t ld_s, floating *h, floating *Y) noexcept nogil:
    """All of inference on a team (see _lstm.infer_chunks)."""
    cdef Py_ssize_t N = L.N, T = L.T, chunk, t0, t1, n0, n1
    rows(tm, N, &n0, &n1)
    for chunk in range((T + Tc - 1) // Tc):
        t0 = chunk * Tc
        t1 = min(T, t0 + Tc)
        # P[t - t0, n] = X[n, t] @ Wx  for this thread's sequences
        project_sequences(L, X, D, t0, t1, n0, n1, Wx, 3 * H, P, L.N * 3 * H, 3 * H,
                          wxp)
        sync(tm)
        infer_steps(tm, N, H, t0, t1, reset_after, Wh, wp, b, lens, P, U, S, ld_s, h, Y,
                    L.ts * H, L.ns * H)


cdef void forward_task(void *arg, int tid, int nth) noexcept nogil:
    cdef Steps *a = <Steps *> arg
    cdef Team tm
    tm.tid, tm.nth = tid, nth
    cdef Py_ssize_t NT = a.L.N * a.L.T, D = a.D, G3 = 3 * a.H
    # G = X @ Wx  (all steps: X and G share the layout)
    if a.dbl:
        team_own_gemm(tm, False, False, NT, G3, D, <const double *> a.X, D,
                      <const double *> a.Wx, G3, <double *> a.g, G3)
    else:
        team_own_gemm(tm, False, False, NT, G3, D, <const float *> a.X, D,
                      <const float *> a.Wx, G3, <float *> a.g, G3)
    sync(tm)
    if a.dbl:
        forward_steps(tm, a.L, a.H, <const double *> a.Wh, <const double *> a.b, a.lens,
                      a.reset_after, <double *> a.Y, <double *> a.g, <double *> a.s,
                      <double *> a.hp, <double *> a.U, <double *> a.hT, <double *> a.wp)
    else:
        forward_steps(tm, a.L, a.H, <const float *> a.Wh, <const float *> a.b, a.lens,
                      a.reset_after, <float *> a.Y, <float *> a.g, <float *> a.s,
                      <float *> a.hp, <float *> a.U, <float *> a.hT, <float *> a.wp)


cdef void backward_task(void *arg, int tid, int nth) noexcept nogil:
    cdef Steps *a = <Steps *> arg
    cdef Team tm
    tm.tid, tm.nth = tid, nth
    if a.dbl:
        backward_all(tm, a.L, a.D, a.H, <const double *> a.X, <const double *> a.Wx,
                     <const double *> a.Wh, <const double *> a.g, <const double *> a.s,
                     <const double *> a.hp, a.lens, a.reset_after, <const double *> a.dY,
                     a.has_dy, <double *> a.dh, <double *> a.d, <double *> a.w2,
                     <double *> a.dX, <double *> a.dWx, <double *> a.dWh, <double *> a.db,
                     <double *> a.wp)
    else:
        backward_all(tm, a.L, a.D, a.H, <const float *> a.X, <const float *> a.Wx,
                     <const float *> a.Wh, <const float *> a.g, <const float *> a.s,
                     <const float *> a.hp, a.lens, a.reset_after, <const float *> a.dY,
                     a.has_dy, <float *> a.dh, <float *> a.d, <float *> a.w2,
                     <float *> a.dX, <float *> a.dWx, <float *> a.dWh, <float *> a.db,
                     <float *> a.wp)


cdef void infer_task(void *arg, int tid, int nth) noexcept nogil:
    cdef Steps *a = <Steps *> arg
    cdef Team tm
    tm.tid, tm.nth = tid, nth
    if a.dbl:
        infer_chunks(tm, a.L, a.D, a.H, a.Tc, a.reset_after, <const double *> a.X,
                     <const double *> a.Wx, <const double *> a.wxp, <const double *> a.Wh,
                     <const double *> a.wp, <const double *> a.b, a.lens, <double *> a.g,
                     <double *> a.U, <double *> a.s, a.ld_s, <double *> a.hT, <double *> a.Y)
    else:
        infer_chunks(tm, a.L, a.D, a.H, a.Tc, a.reset_after, <const float *> a.X,
                     <const float *> a.Wx, <const float *> a.wxp, <const float *> a.Wh,
                     <const float *> a.wp, <const float *> a.b, a.lens, <float *> a.g,
                     <float *> a.U, <float *> a.s, a.ld_s, <float *> a.hT, <float *> a.Y)


cdef void rows_infer(Steps *a, floating dummy) noexcept nogil:
    """Inference on a team split by sequences (see _lstm.rows_infer): each block of rows its
    share of the chunk buffer and of the scratch rows S and U."""
    cdef Py_ssize_t n0, n1, G3 = 3 * a.H
    cdef Layout L = a.L
    while claim_rows(&a.next_block, a.blocks, a.L.N, &n0, &n1):
        L.N = n1 - n0
        infer_chunks(solo(), L, a.D, a.H, a.Tc, a.reset_after,
                     <const floating *> a.X + n0 * L.ns * a.D, <const floating *> a.Wx,
                     <const floating *> a.wxp, <const floating *> a.Wh,
                     <const floating *> a.wp, <const floating *> a.b, lens_at(a.lens, n0),
                     <floating *> a.g + a.Tc * n0 * G3,
                     <floating *> a.U + n0 * G3 if a.U != NULL else <floating *> NULL,
                     <floating *> a.s + n0 * a.ld_s, a.ld_s, <floating *> a.hT + n0 * a.H,
                     <floating *> a.Y + n0 * L.ns * a.H)


cdef void rows_task(void *arg, int tid, int nth) noexcept nogil:
    if (<Steps *> arg).dbl:
        rows_infer(<Steps *> arg, <double> 0)
    else:
        rows_infer(<Steps *> arg, <float> 0)


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
                  floating[::1] Wp,               # work: Wh packed, or empty (use BLAS)
                  int nth=1):                     # threads (more than 1 needs Wp)
    cdef Layout L = make_layout(N, T, time_major)
    cdef Py_ssize_t D = X.shape[1], H = Wh.shape[0]
    cdef Steps a
    a.L, a.D, a.H, a.X, a.Wx = L, D, H, cptr(X), cptr(Wx)
    a.Wh, a.b, a.reset_after = &Wh[0, 0], &b[0], reset_after
    a.lens = NULL if lengths is None else &lengths[0]
    a.Y, a.g, a.s, a.hp, a.U, a.hT = &Y[0, 0], &G[0, 0], &S[0, 0], &Hp[0, 0], &U[0, 0], &hT[0, 0]
    a.wp, a.dbl = packed_or_null(Wp), floating is double
    with nogil:  # the input projection, then the steps, on a team (forward_task)
        parallel(nth, forward_task, &a, run_macs(L, D, H, 3, floating is double))


cdef void units_infer(Team tm, Layout L, Py_ssize_t D, Py_ssize_t H, Py_ssize_t Tc,
                      const floating *X, const floating *Wx, const floating *Wh,
                      const floating *b, const int64_t *lens, floating *P, floating *h,
                      floating *Y, floating *wu) noexcept nogil:
    """Inference of a batch of one with reset_after on a team split by hidden units (see
    _seq.pxd and _lstm.units_infer). wu holds the threads' slices of Wh (H x 3H in all), then
    per unit 3 input-side gate sums, 3 recurrent ones, 6 biases and its uh, then the second h
    buffer (H)."""
    cdef Py_ssize_t G3 = 3 * H, ys = L.ts * H, u0, u1, chunk, t0, t1, t
    unit_range(tm, H, &u0, &u1)
    cdef Py_ssize_t Hu = u1 - u0
    cdef floating *rest = wu + H * G3
    cdef floating *wt = wu + G3 * u0          # (H, 3Hu): this thread's columns of Wh
    cdef floating *a = rest + 3 * u0          # (3Hu,): x_t @ Wx, its columns
    cdef floating *u = rest + G3 + 3 * u0     # (3Hu,): h_{t-1} @ Wh, its columns
    cdef floating *bias = rest + 2 * G3 + 6 * u0  # (6Hu,): its columns of both rows of b
    cdef floating *uh = rest + 4 * G3 + u0    # (Hu,)
    cdef floating *h_cur = h
    cdef floating *h_next = rest + 4 * G3 + H  # (H,): h_t, while h_{t-1} is read
    gather_units(H, 3, H, u0, u1, Wh, G3, wt)
    gather_units(1, 6, H, u0, u1, b, 2 * G3, bias)
    for chunk in range((L.T + Tc - 1) // Tc):
        t0 = chunk * Tc
        t1 = min(L.T, t0 + Tc)
        # P[t - t0] = X[t] @ Wx  (this thread's columns, or all of them on thread 0)
        project_units(tm, L, X, D, t0, t1, Wx, 3, H, u0, u1, P)
        for t in range(t0, t1):
            if Hu > 0:
                # u = h_{t-1} @ Wh, then h_t, on this thread's units
                gather_units(1, 3, H, u0, u1, P + (t - t0) * G3, G3, a)
                gemv(H, 3 * Hu, h_cur, 1, wt, 3 * Hu, 0, u, t & 1)
                fwd_step(solo(), 1, Hu, a, 3 * Hu, u, bias, h_cur + u0, H, h_next + u0, H,
                         Y + t * ys + u0, H, uh, 0, lens, t)
            units_next(tm, &h_cur, &h_next)
    units_done(h, h_cur, u0, u1)


cdef void units_task(void *arg, int tid, int nth) noexcept nogil:
    cdef Steps *s = <Steps *> arg
    cdef Team tm
    tm.tid, tm.nth = tid, nth
    if s.dbl:
        units_infer(tm, s.L, s.D, s.H, s.Tc, <const double *> s.X, <const double *> s.Wx,
                    <const double *> s.Wh, <const double *> s.b, s.lens, <double *> s.g,
                    <double *> s.hT, <double *> s.Y, <double *> s.wu)
    else:
        units_infer(tm, s.L, s.D, s.H, s.Tc, <const float *> s.X, <const float *> s.Wx,
                    <const float *> s.Wh, <const float *> s.b, s.lens, <float *> s.g,
                    <float *> s.hT, <float *> s.Y, <float *> s.wu)


cdef void infer_run(Layout L, Py_ssize_t D, Py_ssize_t H, Py_ssize_t Tc, bint reverse,
                    bint reset_after, const floating *X, const floating *Wx,
                    const floating *Wh, const floating *b, const int64_t *lens, floating *Y,
                    floating *P, floating *S, floating *U, floating *h, floating *wp,
                    floating *wxp, floating *Xr, floating *Ys, floating *wu,
                    int nth, bint by_rows) noexcept nogil:
    """forward_infer's loop: with wu (a batch of one, reset_after), on a team split by hidden
    units; otherwise Wh, Wx packed (when wp, wxp), then the chunks, on a team of nth threads
    or, on one, step by step through Xr and Ys with reverse."""
    cdef Py_ssize_t N = L.N, T = L.T, G3 = 3 * H
    cdef Py_ssize_t chunk, t0, t1, t
    # step t's outputs: Y + t*hs (row stride ldh), or with reverse the scratch Ys
    cdef floating *y = Ys if reverse else Y
    cdef Py_ssize_t ys = 0 if reverse else L.ts * H, ldy = H if reverse else L.ns * H
    cdef Steps a
    a.L, a.D, a.H, a.Tc, a.reset_after, a.X, a.Wx = L, D, H, Tc, reset_after, X, Wx
    a.wxp, a.Wh, a.wp, a.b, a.lens, a.g, a.U = wxp, Wh, wp, b, lens, P, U
    a.s, a.ld_s, a.hT, a.Y, a.wu, a.dbl = S, H, h, Y, wu, floating is double
    if wu != NULL:  # (needs reset_after, no reverse)
        parallel(nth, units_task, &a, run_macs(L, D, H, 3, floating is double))
        return
    if wxp != NULL:
        pack(D, G3, Wx, G3, False, wxp)
    pack_forward(solo(), H, Wh, reset_after, wp)
    if nth > 1:  # the whole loop on a team (needs wxp and wp; not with reverse)
        a.blocks, a.next_block = row_blocks(N, nth, by_rows), 0
        if a.blocks:  # the threads claim blocks of rows (rows_infer)
            parallel(nth, rows_task, &a, run_macs(L, D, H, 3, floating is double))
        else:
            parallel(nth, infer_task, &a, run_macs(L, D, H, 3, floating is double))
        return
    for chunk in range((T + Tc - 1) // Tc):
        t0 = chunk * Tc
        t1 = min(T, t0 + Tc)
        project_chunk(L, X, D, reverse, lens, t0, t1, Wx, G3, Xr, P, wxp)
        if reverse:  # step by step: Y[:, rev_pos(:, t)] = Ys after step t
            for t in range(t0, t1):
                infer_steps(solo(), N, H, t, t + 1, reset_after, Wh, wp, b, lens,
                            P + (t - t0) * N * G3, U, S, H, h, y, 0, H)
                scatter_reversed(L, y, H, lens, t, Y)
        else:
            infer_steps(solo(), N, H, t0, t1, reset_after, Wh, wp, b, lens, P, U, S, H, h, y,
                        ys, ldy)


def forward_infer(cnp.ndarray X,                  # (N*T, D) xs, layout rows (not reordered)
                  cnp.ndarray Wx,                 # (D, 3H)
                  cnp.ndarray Wh,                 # (H, 3H)
                  cnp.ndarray b,                  # (6H,) reset_after, else (3H,)
                  lengths,                        # (N,) int64, or None
                  Py_ssize_t N, Py_ssize_t T, bint time_major, bint reverse, bint reset_after,
                  cnp.ndarray Y,                  # out (N*T, H): hs
                  cnp.ndarray P,                  # work (Tc*N, 3H): gates of Tc steps
                  cnp.ndarray S,                  # work (N, H): uh scratch, or rh
                  cnp.ndarray U,                  # work (N, 3H) (reset_after only)
                  cnp.ndarray hT,                 # in h0, out h_T (N, H), updated in place
                  cnp.ndarray Wp,                 # work: Wh packed, or empty (use BLAS)
                  cnp.ndarray Wxp,                # work: Wx packed, or empty (see project)
                  cnp.ndarray Xr,                 # work (Tc*N, D) with reverse, else empty
                  cnp.ndarray Ys,                 # work (N, H) with reverse, else empty
                  cnp.ndarray Wu,                 # work (3H*H + 14H,): N = 1 split by units
                  int nth=1,                      # threads (more than 1: Wp, Wxp or Wu, no
                                                  # reverse)
                  bint by_rows=False):            # a team split by sequences (rows_infer)
    """Inference (see _lstm.forward_infer): h updated in place, Tc steps of gates held; with
    reverse the input rows are gathered through Xr and the outputs scattered from Ys."""
    cdef int tn = cnp.PyArray_TYPE(Wh)
    cdef Layout L = make_layout(N, T, time_major)
    cdef Py_ssize_t D = cnp.PyArray_DIMS(X)[1], H = cnp.PyArray_DIMS(Wh)[0]
    cdef Py_ssize_t Tc = cnp.PyArray_DIMS(P)[0] // N
    cdef const int64_t *lens = lengths_ptr(lengths)
    cdef void *p[14]
    array_ptrs((X, Wx, Wh, b, Y, P, S, U, hT, Wp, Wxp, Xr, Ys, Wu), tn, p)
    if tn == cnp.NPY_FLOAT32:
        with nogil:
            infer_run(L, D, H, Tc, reverse, reset_after, <const float *> p[0],
                      <const float *> p[1], <const float *> p[2], <const float *> p[3], lens,
                      <float *> p[4], <float *> p[5], <float *> p[6], <float *> p[7],
                      <float *> p[8], <float *> p[9], <float *> p[10], <float *> p[11],
                      <float *> p[12], <float *> p[13], nth, by_rows)
    elif tn == cnp.NPY_FLOAT64:
        with nogil:
            infer_run(L, D, H, Tc, reverse, reset_after, <const double *> p[0],
                      <const double *> p[1], <const double *> p[2], <const double *> p[3], lens,
                      <double *> p[4], <double *> p[5], <double *> p[6], <double *> p[7],
                      <double *> p[8], <double *> p[9], <double *> p[10], <double *> p[11],
                      <double *> p[12], <double *> p[13], nth, by_rows)
    else:
        raise TypeError(f"forward_infer: float32 or float64 arrays, got {Wh.dtype}")


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
             floating[::1] Wp,                    # work: Whᵀ packed, or empty (use BLAS)
             int nth=1):                          # threads (more than 1 needs Wp)
    cdef const int64_t *lens = NULL if lengths is None else &lengths[0]
    with nogil:
        backward_loop(make_layout(N, T, time_major), X.shape[1], Wh.shape[0], cptr(X),
                      cptr(Wx), &Wh[0, 0], &G[0, 0], &S[0, 0], &Hp[0, 0], lens, reset_after,
                      &dY[0, 0], has_dy, &dh[0, 0], &dA[0, 0], &W2[0, 0], ptr(dX), ptr(dWx),
                      &dWh[0, 0], &db[0], packed_or_null(Wp), nth)


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
                          NULL, 1)
    else:
        with nogil:
            backward_loop(L, D, H, <double *> p[0], <double *> p[2], <double *> p[3],
                          <double *> p[4], <double *> p[5], <double *> p[1], NULL,
                          reset_after, <double *> p[6], True, <double *> p[7],
                          <double *> p[8], <double *> p[9], <double *> p[10],
                          <double *> p[11], <double *> p[12], <double *> p[13], NULL, 1)
