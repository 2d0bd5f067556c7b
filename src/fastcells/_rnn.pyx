"""The vanilla RNN kernels: h_t = act(x_t @ Wx + h_{t-1} @ Wh + b), act tanh or relu.

Same plan as _lstm.pyx: one GEMM for the input projection, per step one recurrent GEMM and one
fused C pass; backward per step one C pass and one GEMM, then one GEMM each for dWx, dWh, dX.
Training caches h_{t-1} of every step (Hp, step 0 = h0) and h_t = act(pre) (A): act' is a
function of h_t (1 - h² for tanh, [h > 0] for relu), so no pre-activation is kept.
"""
cimport numpy as cnp
from cython cimport floating
from libc.stdint cimport int64_t

from ._blas cimport gemv, pack, parallel
from ._fastpath cimport array_ptrs, cell_typenum, empty, lengths_ptr
from ._csrc cimport fc_rnn_bwd_step_f32, fc_rnn_bwd_step_f64
from ._csrc cimport fc_rnn_fwd_step_f32, fc_rnn_fwd_step_f64
from ._seq cimport Layout, cptr, data, make_layout, packed_or_null, project, ptr
from ._seq cimport Team, panels, project_chunk, project_sequences, rows, scatter_reversed
from ._seq cimport solo, sync, team_colsum, team_gemm, team_own_gemm, team_pack
from ._seq cimport claim_rows, lens_at, row_blocks, run_macs, team_weight_grads
from ._seq cimport gather_units, project_units, unit_range, units_done, units_next

cnp.import_array()


cdef inline void fwd_step(Py_ssize_t N, Py_ssize_t c0, Py_ssize_t c1, int act, floating *A,
                          Py_ssize_t ld_A, const floating *b, const floating *h_prev,
                          Py_ssize_t ld_hp, floating *h_next, Py_ssize_t ld_hn, floating *y,
                          Py_ssize_t ld_y, const int64_t *lengths, Py_ssize_t t) noexcept nogil:
    """The pointwise pass on the columns [c0, c1) of the step (it is elementwise)."""
    if floating is float:
        fc_rnn_fwd_step_f32(N, c1 - c0, act, A + c0, ld_A, b + c0, h_prev + c0, ld_hp,
                            h_next + c0, ld_hn, y + c0, ld_y, lengths, t)
    else:
        fc_rnn_fwd_step_f64(N, c1 - c0, act, A + c0, ld_A, b + c0, h_prev + c0, ld_hp,
                            h_next + c0, ld_hn, y + c0, ld_y, lengths, t)


cdef inline void bwd_step(Py_ssize_t N, Py_ssize_t H, Py_ssize_t c0, Py_ssize_t c1, int act,
                          const floating *A, Py_ssize_t ld_A, const floating *dy,
                          Py_ssize_t ld_dy, floating *dh, floating *dA, Py_ssize_t ld_dA,
                          const int64_t *lengths, Py_ssize_t t) noexcept nogil:
    """The pointwise pass of backward on the columns [c0, c1) (dh: (N, H))."""
    if floating is float:
        fc_rnn_bwd_step_f32(N, c1 - c0, act, A + c0, ld_A, dy + c0, ld_dy, dh + c0, H, dA + c0,
                            ld_dA, lengths, t)
    else:
        fc_rnn_bwd_step_f64(N, c1 - c0, act, A + c0, ld_A, dy + c0, ld_dy, dh + c0, H, dA + c0,
                            ld_dA, lengths, t)


# ---- the loops ---------------------------------------------------------------------------------
# On a team (see _seq.pxd), each thread owns the columns (hidden units) of its panels of the
# per-step product, and the pointwise passes are elementwise: a thread runs its columns' pass
# right after its product, and one barrier per step suffices in training (two in inference,
# whose state is overwritten in place).
cdef struct Steps:  # the arguments of the loops for the threads (void pointers: both dtypes)
    Layout L
    Py_ssize_t D, H, Tc
    int act
    const void *X
    const void *Wx
    const void *wxp
    const void *Wh
    const void *b
    const int64_t *lens
    void *Y
    void *A
    void *hp
    void *hT
    void *wp
    void *wu
    const void *dY
    bint has_dy
    void *dh
    void *P
    void *dX
    void *dWx
    void *dWh
    void *db
    bint dbl
    Py_ssize_t blocks       # rows_infer: blocks of rows, and the next one to claim
    Py_ssize_t next_block


cdef void forward_steps(Team tm, Layout L, Py_ssize_t H, int act, const floating *Wh,
                        const floating *b, const int64_t *lens, floating *Y, floating *a,
                        floating *hp, floating *hT, floating *wp) noexcept nogil:
    """Training forward after the input projection (a holds X @ Wx). Hp (hp): step 0 holds
    h0; only written for T > 1."""
    cdef Py_ssize_t N = L.N, T = L.T
    cdef Py_ssize_t hs = L.ts * H, ldh = L.ns * H
    cdef floating *h_next
    cdef Py_ssize_t t, ld_next, c0, c1, offset
    panels(tm, <floating> 0, H, H, &c0, &c1, &offset)
    team_pack(tm, H, H, Wh, H, False, wp)
    sync(tm)
    for t in range(T):
        # A[t] += h_{t-1} @ Wh  (this thread's columns)
        team_gemm(tm, N, H, H, hp + t * hs, ldh, Wh, H, False, wp, 1, a + t * hs, ldh, t & 1)
        if t + 1 < T:
            h_next, ld_next = hp + (t + 1) * hs, ldh
        else:
            h_next, ld_next = hT, H
        fwd_step(N, c0, c1, act, a + t * hs, ldh, b, hp + t * hs, ldh, h_next, ld_next,
                 Y + t * hs, ldh, lens, t)
        sync(tm)


cdef void backward_steps(Team tm, Layout L, Py_ssize_t H, int act, const floating *Wh,
                         const floating *A, const int64_t *lens, const floating *dY,
                         bint has_dy, floating *dh, floating *d, floating *wp) noexcept nogil:
    """Backward through the steps, writing dA (d) and turning dh into dh0."""
    cdef Py_ssize_t N = L.N, T = L.T
    cdef Py_ssize_t hs = L.ts * H, ldh = L.ns * H
    cdef Py_ssize_t dys = hs if has_dy else 0, ldy = ldh if has_dy else 0
    cdef Py_ssize_t t, c0, c1, offset
    panels(tm, <floating> 0, H, H, &c0, &c1, &offset)
    team_pack(tm, H, H, Wh, H, True, wp)
    sync(tm)
    for t in range(T - 1, -1, -1):
        bwd_step(N, H, c0, c1, act, A + t * hs, ldh, dY + t * dys, ldy, dh, d + t * hs, ldh,
                 lens, t)
        sync(tm)
        # dh_{t-1} += dA_t @ Whᵀ  (this thread's columns: the next pass reads only those)
        team_gemm(tm, N, H, H, d + t * hs, ldh, Wh, H, True, wp, 1, dh, H, False)


cdef void train_loop(Layout L, Py_ssize_t D, Py_ssize_t H, const floating *X,
                     const floating *Wx, const floating *Wh, const floating *b,
                     const int64_t *lens, int act, floating *Y, floating *a, floating *hp,
                     floating *hT, floating *wp) noexcept nogil:
    """Training forward on one thread (the one-step cell)."""
    # A = X @ Wx  (all steps)
    project(L, X, D, 0, L.T, Wx, H, a, L.ts * H, L.ns * H)
    forward_steps(solo(), L, H, act, Wh, b, lens, Y, a, hp, hT, wp)


cdef void backward_loop(Layout L, Py_ssize_t D, Py_ssize_t H, const floating *X,
                        const floating *Wx, const floating *Wh, const floating *A,
                        const floating *hp, const int64_t *lens, int act, const floating *dY,
                        bint has_dy, floating *dh, floating *d, floating *dX, floating *dWx,
                        floating *dWh, floating *db, floating *wp, int nth) noexcept nogil:
    """All of backward on a team of nth threads (backward_task)."""
    cdef Steps s
    s.L, s.D, s.H, s.act, s.X, s.Wx, s.Wh, s.A = L, D, H, act, X, Wx, Wh, <void *> A
    s.hp, s.lens = <void *> hp, lens  # (only read)
    s.dY, s.has_dy, s.dh, s.P, s.wp = dY, has_dy, dh, d, wp
    s.dX, s.dWx, s.dWh, s.db, s.dbl = dX, dWx, dWh, db, floating is double
    parallel(nth, backward_task, &s, 2 * run_macs(L, D, H, 1, floating is double))


cdef void backward_all(Team tm, Layout L, Py_ssize_t D, Py_ssize_t H, int act,
                       const floating *X, const floating *Wx, const floating *Wh,
                       const floating *A, const floating *hp, const int64_t *lens,
                       const floating *dY, bint has_dy, floating *dh, floating *d,
                       floating *dX, floating *dWx, floating *dWh, floating *db,
                       floating *wp) noexcept nogil:
    """The steps (backward_steps), then the one-off products on the same team."""
    cdef Py_ssize_t NT = L.N * L.T
    backward_steps(tm, L, H, act, Wh, A, lens, dY, has_dy, dh, d, wp)
    sync(tm)
    # dWx = Xᵀ @ dA;  dWh = Hpᵀ @ dA;  dX = dA @ Wxᵀ;  db = dA.sum(0)
    team_weight_grads(tm, NT, H, D, X, H, hp, d, H, dWx, dWh)
    team_own_gemm(tm, False, True, NT, D, H, d, H, Wx, H, dX, D)
    team_colsum(tm, NT, H, d, H, db)


cdef void infer_steps(Team tm, Py_ssize_t N, Py_ssize_t H, int act, Py_ssize_t t0,
                      Py_ssize_t t1, const floating *Wh, const floating *b,
                      const int64_t *lens, floating *P, floating *h, floating *y,
                      Py_ssize_t ys, Py_ssize_t ldy, const floating *wp) noexcept nogil:
    """Inference steps t0 <= t < t1: P holds their input projections ((t1 - t0)*N, H); h
    (N, H) is updated in place; step t's outputs go to y + t*ys (row stride ldy)."""
    cdef Py_ssize_t t, c0, c1, offset
    cdef floating *p
    panels(tm, <floating> 0, H, H, &c0, &c1, &offset)
    for t in range(t0, t1):
        p = P + (t - t0) * N * H
        # p += h_{t-1} @ Wh; then h is overwritten in place by h_t (after every thread has
        # read h_{t-1})
        team_gemm(tm, N, H, H, h, H, Wh, H, False, wp, 1, p, H, t & 1)
        sync(tm)
        fwd_step(N, c0, c1, act, p, H, b, h, H, h, H, y + t * ys, ldy, lens, t)
        sync(tm)


cdef void infer_chunks(Team tm, Layout L, Py_ssize_t D, Py_ssize_t H, int act, Py_ssize_t Tc,
                       const floating *X, const floating *Wx, const floating *wxp,
                       const floating *Wh, const floating *b, const int64_t *lens,
                       floating *P, floating *h, floating *Y,
                       const floating *wp) noexcept nogil:
    """All of inference on a team (see _lstm.infer_chunks)."""
    cdef Py_ssize_t N = L.N, T = L.T, chunk, t0, t1, n0, n1
    rows(tm, N, &n0, &n1)
    for chunk in range((T + Tc - 1) // Tc):
        t0 = chunk * Tc
        t1 = min(T, t0 + Tc)
        # P[t - t0, n] = X[n, t] @ Wx  for this thread's sequences
        project_sequences(L, X, D, t0, t1, n0, n1, Wx, H, P, L.N * H, H,
                          wxp)
        sync(tm)
        infer_steps(tm, N, H, act, t0, t1, Wh, b, lens, P, h, Y, L.ts * H, L.ns * H, wp)


cdef void forward_task(void *arg, int tid, int nth) noexcept nogil:
    cdef Steps *s = <Steps *> arg
    cdef Team tm
    tm.tid, tm.nth = tid, nth
    cdef Py_ssize_t NT = s.L.N * s.L.T, D = s.D, H = s.H
    # A = X @ Wx  (all steps: X and A share the layout)
    if s.dbl:
        team_own_gemm(tm, False, False, NT, H, D, <const double *> s.X, D,
                      <const double *> s.Wx, H, <double *> s.A, H)
    else:
        team_own_gemm(tm, False, False, NT, H, D, <const float *> s.X, D,
                      <const float *> s.Wx, H, <float *> s.A, H)
    sync(tm)
    if s.dbl:
        forward_steps(tm, s.L, s.H, s.act, <const double *> s.Wh, <const double *> s.b, s.lens,
                      <double *> s.Y, <double *> s.A, <double *> s.hp, <double *> s.hT,
                      <double *> s.wp)
    else:
        forward_steps(tm, s.L, s.H, s.act, <const float *> s.Wh, <const float *> s.b, s.lens,
                      <float *> s.Y, <float *> s.A, <float *> s.hp, <float *> s.hT,
                      <float *> s.wp)


cdef void backward_task(void *arg, int tid, int nth) noexcept nogil:
    cdef Steps *s = <Steps *> arg
    cdef Team tm
    tm.tid, tm.nth = tid, nth
    if s.dbl:
        backward_all(tm, s.L, s.D, s.H, s.act, <const double *> s.X, <const double *> s.Wx,
                     <const double *> s.Wh, <const double *> s.A, <const double *> s.hp,
                     s.lens, <const double *> s.dY, s.has_dy, <double *> s.dh,
                     <double *> s.P, <double *> s.dX, <double *> s.dWx, <double *> s.dWh,
                     <double *> s.db, <double *> s.wp)
    else:
        backward_all(tm, s.L, s.D, s.H, s.act, <const float *> s.X, <const float *> s.Wx,
                     <const float *> s.Wh, <const float *> s.A, <const float *> s.hp,
                     s.lens, <const float *> s.dY, s.has_dy, <float *> s.dh,
                     <float *> s.P, <float *> s.dX, <float *> s.dWx, <float *> s.dWh,
                     <float *> s.db, <float *> s.wp)


cdef void infer_task(void *arg, int tid, int nth) noexcept nogil:
    cdef Steps *s = <Steps *> arg
    cdef Team tm
    tm.tid, tm.nth = tid, nth
    if s.dbl:
        infer_chunks(tm, s.L, s.D, s.H, s.act, s.Tc, <const double *> s.X,
                     <const double *> s.Wx, <const double *> s.wxp, <const double *> s.Wh,
                     <const double *> s.b, s.lens, <double *> s.P, <double *> s.hT,
                     <double *> s.Y, <const double *> s.wp)
    else:
        infer_chunks(tm, s.L, s.D, s.H, s.act, s.Tc, <const float *> s.X,
                     <const float *> s.Wx, <const float *> s.wxp, <const float *> s.Wh,
                     <const float *> s.b, s.lens, <float *> s.P, <float *> s.hT,
                     <float *> s.Y, <const float *> s.wp)


cdef void rows_infer(Steps *s, floating dummy) noexcept nogil:
    """Inference on a team split by sequences (see _lstm.rows_infer)."""
    cdef Py_ssize_t n0, n1
    cdef Layout L = s.L
    while claim_rows(&s.next_block, s.blocks, s.L.N, &n0, &n1):
        L.N = n1 - n0
        infer_chunks(solo(), L, s.D, s.H, s.act, s.Tc, <const floating *> s.X + n0 * L.ns * s.D,
                     <const floating *> s.Wx, <const floating *> s.wxp,
                     <const floating *> s.Wh, <const floating *> s.b, lens_at(s.lens, n0),
                     <floating *> s.P + s.Tc * n0 * s.H, <floating *> s.hT + n0 * s.H,
                     <floating *> s.Y + n0 * L.ns * s.H, <const floating *> s.wp)


cdef void rows_task(void *arg, int tid, int nth) noexcept nogil:
    if (<Steps *> arg).dbl:
        rows_infer(<Steps *> arg, <double> 0)
    else:
        rows_infer(<Steps *> arg, <float> 0)


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
                  floating[::1] Wp,               # work: Wh packed, or empty (use BLAS)
                  int nth=1):                     # threads (more than 1 needs Wp)
    cdef Layout L = make_layout(N, T, time_major)
    cdef Py_ssize_t D = X.shape[1], H = Wh.shape[0]
    cdef Steps s
    s.L, s.D, s.H, s.act, s.X, s.Wx = L, D, H, act, cptr(X), cptr(Wx)
    s.Wh, s.b = &Wh[0, 0], &b[0]
    s.lens = NULL if lengths is None else &lengths[0]
    s.Y, s.A, s.hp, s.hT = &Y[0, 0], &A[0, 0], &Hp[0, 0], &hT[0, 0]
    s.wp, s.dbl = packed_or_null(Wp), floating is double
    with nogil:  # the input projection, then the steps, on a team (forward_task)
        parallel(nth, forward_task, &s, run_macs(L, D, H, 1, floating is double))


cdef void units_infer(Team tm, Layout L, Py_ssize_t D, Py_ssize_t H, Py_ssize_t Tc, int act,
                      const floating *X, const floating *Wx, const floating *Wh,
                      const floating *b, const int64_t *lens, floating *P, floating *h,
                      floating *Y, floating *wu) noexcept nogil:
    """Inference of a batch of one on a team split by hidden units (see _seq.pxd and
    _lstm.units_infer). wu holds the threads' slices of Wh (H x H in all), then the second h
    buffer (H)."""
    cdef Py_ssize_t ys = L.ts * H, u0, u1, chunk, t0, t1, t
    unit_range(tm, H, &u0, &u1)
    cdef Py_ssize_t Hu = u1 - u0
    cdef floating *wt = wu + H * u0         # (H, Hu): this thread's columns of Wh
    cdef floating *h_cur = h
    cdef floating *h_next = wu + H * H      # (H,): h_t, while h_{t-1} is read
    cdef floating *p
    gather_units(H, 1, H, u0, u1, Wh, H, wt)
    for chunk in range((L.T + Tc - 1) // Tc):
        t0 = chunk * Tc
        t1 = min(L.T, t0 + Tc)
        # P[t - t0] = X[t] @ Wx  (this thread's columns, or all of them on thread 0)
        project_units(tm, L, X, D, t0, t1, Wx, 1, H, u0, u1, P)
        for t in range(t0, t1):
            if Hu > 0:
                # p += h_{t-1} @ Wh, then h_t, on this thread's columns
                p = P + (t - t0) * H
                gemv(H, Hu, h_cur, 1, wt, Hu, 1, p + u0, t & 1)
                fwd_step(1, u0, u1, act, p, H, b, h_cur, H, h_next, H, Y + t * ys, L.ns * H,
                         lens, t)
            units_next(tm, &h_cur, &h_next)
    units_done(h, h_cur, u0, u1)


cdef void units_task(void *arg, int tid, int nth) noexcept nogil:
    cdef Steps *s = <Steps *> arg
    cdef Team tm
    tm.tid, tm.nth = tid, nth
    if s.dbl:
        units_infer(tm, s.L, s.D, s.H, s.Tc, s.act, <const double *> s.X,
                    <const double *> s.Wx, <const double *> s.Wh, <const double *> s.b, s.lens,
                    <double *> s.P, <double *> s.hT, <double *> s.Y, <double *> s.wu)
    else:
        units_infer(tm, s.L, s.D, s.H, s.Tc, s.act, <const float *> s.X,
                    <const float *> s.Wx, <const float *> s.Wh, <const float *> s.b, s.lens,
                    <float *> s.P, <float *> s.hT, <float *> s.Y, <float *> s.wu)


cdef void infer_run(Layout L, Py_ssize_t D, Py_ssize_t H, Py_ssize_t Tc, bint reverse, int act,
                    const floating *X, const floating *Wx, const floating *Wh,
                    const floating *b, const int64_t *lens, floating *Y, floating *P,
                    floating *h, floating *wp, floating *wxp, floating *Xr, floating *Ys,
                    floating *wu, int nth, bint by_rows) noexcept nogil:
    """forward_infer's loop: with wu (a batch of one), on a team split by hidden units;
    otherwise Wh, Wx packed (when wp, wxp), then the chunks, on a team of nth threads or, on
    one, step by step through Xr and Ys with reverse."""
    cdef Py_ssize_t N = L.N, T = L.T
    cdef Py_ssize_t chunk, t0, t1, t
    # step t's outputs: Y + t*hs (row stride ldh), or with reverse the scratch Ys
    cdef floating *y = Ys if reverse else Y
    cdef Py_ssize_t ys = 0 if reverse else L.ts * H, ldy = H if reverse else L.ns * H
    cdef Steps s
    s.L, s.D, s.H, s.act, s.Tc, s.X, s.Wx, s.wxp = L, D, H, act, Tc, X, Wx, wxp
    s.Wh, s.b, s.lens, s.P, s.hT, s.Y = Wh, b, lens, P, h, Y
    s.wp, s.wu, s.dbl = wp, wu, floating is double
    if wu != NULL:  # (needs no reverse)
        parallel(nth, units_task, &s, run_macs(L, D, H, 1, floating is double))
        return
    if wxp != NULL:
        pack(D, H, Wx, H, False, wxp)
    if wp != NULL:
        pack(H, H, Wh, H, False, wp)
    if nth > 1:  # the whole loop on a team (needs wxp and wp; not with reverse)
        s.blocks, s.next_block = row_blocks(N, nth, by_rows), 0
        if s.blocks:  # the threads claim blocks of rows (rows_infer)
            parallel(nth, rows_task, &s, run_macs(L, D, H, 1, floating is double))
        else:
            parallel(nth, infer_task, &s, run_macs(L, D, H, 1, floating is double))
        return
    for chunk in range((T + Tc - 1) // Tc):
        t0 = chunk * Tc
        t1 = min(T, t0 + Tc)
        project_chunk(L, X, D, reverse, lens, t0, t1, Wx, H, Xr, P, wxp)
        if reverse:  # step by step: Y[:, rev_pos(:, t)] = Ys after step t
            for t in range(t0, t1):
                infer_steps(solo(), N, H, act, t, t + 1, Wh, b, lens, P + (t - t0) * N * H, h,
                            y, 0, H, wp)
                scatter_reversed(L, y, H, lens, t, Y)
        else:
            infer_steps(solo(), N, H, act, t0, t1, Wh, b, lens, P, h, y, ys, ldy, wp)


def forward_infer(cnp.ndarray X,                  # (N*T, D) xs, layout rows (not reordered)
                  cnp.ndarray Wx,                 # (D, H)
                  cnp.ndarray Wh,                 # (H, H)
                  cnp.ndarray b,                  # (H,)
                  lengths,                        # (N,) int64, or None
                  Py_ssize_t N, Py_ssize_t T, bint time_major, bint reverse, int act,
                  cnp.ndarray Y,                  # out (N*T, H): hs
                  cnp.ndarray P,                  # work (Tc*N, H): pre-activations of Tc steps
                  cnp.ndarray hT,                 # in h0, out h_T (N, H), updated in place
                  cnp.ndarray Wp,                 # work: Wh packed, or empty (use BLAS)
                  cnp.ndarray Wxp,                # work: Wx packed, or empty (see project)
                  cnp.ndarray Xr,                 # work (Tc*N, D) with reverse, else empty
                  cnp.ndarray Ys,                 # work (N, H) with reverse, else empty
                  cnp.ndarray Wu,                 # work (H*H + H,): N = 1 split by units
                  int nth=1,                      # threads (more than 1: Wp, Wxp or Wu, no
                                                  # reverse)
                  bint by_rows=False):            # a team split by sequences (rows_infer)
    """Inference (see _lstm.forward_infer): h updated in place, Tc steps held; with reverse
    the input rows are gathered through Xr and the outputs scattered from Ys."""
    cdef int tn = cnp.PyArray_TYPE(Wh)
    cdef Layout L = make_layout(N, T, time_major)
    cdef Py_ssize_t D = cnp.PyArray_DIMS(X)[1], H = cnp.PyArray_DIMS(Wh)[0]
    cdef Py_ssize_t Tc = cnp.PyArray_DIMS(P)[0] // N
    cdef const int64_t *lens = lengths_ptr(lengths)
    cdef void *p[12]
    array_ptrs((X, Wx, Wh, b, Y, P, hT, Wp, Wxp, Xr, Ys, Wu), tn, p)
    if tn == cnp.NPY_FLOAT32:
        with nogil:
            infer_run(L, D, H, Tc, reverse, act, <const float *> p[0], <const float *> p[1],
                      <const float *> p[2], <const float *> p[3], lens, <float *> p[4],
                      <float *> p[5], <float *> p[6], <float *> p[7], <float *> p[8],
                      <float *> p[9], <float *> p[10], <float *> p[11], nth, by_rows)
    elif tn == cnp.NPY_FLOAT64:
        with nogil:
            infer_run(L, D, H, Tc, reverse, act, <const double *> p[0], <const double *> p[1],
                      <const double *> p[2], <const double *> p[3], lens, <double *> p[4],
                      <double *> p[5], <double *> p[6], <double *> p[7], <double *> p[8],
                      <double *> p[9], <double *> p[10], <double *> p[11], nth,
                      by_rows)
    else:
        raise TypeError(f"forward_infer: float32 or float64 arrays, got {Wh.dtype}")


def backward(const floating[:, ::1] X, const floating[:, ::1] Wx, const floating[:, ::1] Wh,
             const floating[:, ::1] A,            # (N*T, H) h_t (cache)
             const floating[:, ::1] Hp,           # (N*T, H) h_{t-1} (cache)
             const int64_t[::1] lengths, Py_ssize_t N, Py_ssize_t T, bint time_major, int act,
             const floating[:, ::1] dY, bint has_dy,  # (N*T, H) dL/dhs, or (1, H) zeros
             floating[:, ::1] dh,                 # in dL/dh_T, out dL/dh0 (N, H)
             floating[:, ::1] dA,                 # out (N*T, H): dL/d(pre-activation)
             floating[:, ::1] dX, floating[:, ::1] dWx, floating[:, ::1] dWh,
             floating[::1] db,
             floating[::1] Wp,                    # work: Whᵀ packed, or empty (use BLAS)
             int nth=1):                          # threads (more than 1 needs Wp)
    cdef const int64_t *lens = NULL if lengths is None else &lengths[0]
    with nogil:
        backward_loop(make_layout(N, T, time_major), X.shape[1], Wh.shape[0], cptr(X),
                      cptr(Wx), &Wh[0, 0], &A[0, 0], &Hp[0, 0], lens, act, &dY[0, 0], has_dy,
                      &dh[0, 0], &dA[0, 0], ptr(dX), ptr(dWx), &dWh[0, 0], &db[0],
                      packed_or_null(Wp), nth)


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
                          <float *> p[10], <float *> pdb, NULL, 1)
    else:
        with nogil:
            backward_loop(L, D, H, <double *> p[0], <double *> p[2], <double *> p[3],
                          <double *> p[4], <double *> p[1], NULL, act, <double *> p[5], True,
                          <double *> p[6], <double *> p[7], <double *> p[8], <double *> p[9],
                          <double *> p[10], <double *> pdb, NULL, 1)
