"""The LSTM kernels: fused forward and backward over whole sequences, and the one-step cell.

What this module is: loops that trust their arguments (fastcells.lstm and fastcells.layers
validate, allocate and document them), run entirely without the GIL, and allocate nothing.
What it is not: an API. Shapes use N, T, D, H; sequence arrays are (N*T, W) in the layout of
_seq.pxd; blocks are [f, g, i, o] (CONVENTIONS.md).

Forward (haste's plan): gates = X @ Wx for all steps in ONE GEMM; then per step one GEMM
gates[t] += h_{t-1} @ Wh (the packed GEMM, Wh packed once per call) and one fused C pass (bias,
activations, c_t, h_t). Training caches exactly what backward needs: the activated gates,
h_{t-1} and c_{t-1} of every step (Hp, Cp: step 0 holds h0, c0) and tanh(c_t) (TC), all in the
layout of the input. Inference keeps nothing but Tc steps of gates (their input projection one
GEMM per chunk) and, with reverse=True, walks each sequence's positions backwards itself
(rev_pos in _seq.pxd): no reordered copy of xs or hs. Backward: per step (in reverse) one fused C
pass giving dA (the gradient of the pre-activations) and one GEMM dh_{t-1} = dA_t @ Whᵀ; then ONE
GEMM each for dWx, dWh, dX and a column sum for db.

Each loop is a `cdef ... nogil` core over pointers; the `def` wrappers take typed memoryviews
(the sequence API) or, for the one-step cell whose fixed cost per call matters, ndarrays whose
data pointers are read through the NumPy C API (a memoryview argument costs ~0.6 µs).
"""
cimport numpy as cnp
from cython cimport floating
from libc.stdint cimport int64_t

from ._blas cimport gemv, pack, parallel
from ._fastpath cimport array_ptrs, cell_typenum, empty, lengths_ptr
from ._csrc cimport fc_lstm_bwd_step_f32, fc_lstm_bwd_step_f64
from ._csrc cimport fc_lstm_fwd_step_f32, fc_lstm_fwd_step_f64
from ._seq cimport Layout, cptr, data, make_layout, packed_or_null, project, ptr
from ._seq cimport Team, lens_at, project_chunk, rows, scatter_reversed, solo, sync
from ._seq cimport gather_units, project_units, unit_range, units_done, units_next
from ._seq cimport project_sequences, team_colsum, team_gemm, team_own_gemm, team_pack
from ._seq cimport claim_rows, row_blocks, run_macs, team_weight_grads

cnp.import_array()


cdef inline floating *at(floating *a, Py_ssize_t n0, Py_ssize_t ld) noexcept nogil:
    """Row n0 of a (NULL stays NULL)."""
    return NULL if a == NULL else a + n0 * ld


cdef inline void fwd_step(Team tm, Py_ssize_t N, Py_ssize_t H, floating *gates, Py_ssize_t ld_g,
                          const floating *b, const floating *c_prev, Py_ssize_t ld_cp,
                          floating *c_next, Py_ssize_t ld_cn, const floating *h_prev,
                          Py_ssize_t ld_hp, floating *h_next, Py_ssize_t ld_hn, floating *y,
                          Py_ssize_t ld_y, floating *tanh_c, Py_ssize_t ld_tc,
                          const int64_t *lengths, Py_ssize_t t) noexcept nogil:
    """The fused pointwise pass on this thread's rows of the step."""
    cdef Py_ssize_t n0, n1
    rows(tm, N, &n0, &n1)
    gates, c_prev, c_next = gates + n0 * ld_g, c_prev + n0 * ld_cp, c_next + n0 * ld_cn
    h_prev, h_next, y = h_prev + n0 * ld_hp, h_next + n0 * ld_hn, y + n0 * ld_y
    tanh_c = at(tanh_c, n0, ld_tc)
    lengths = lens_at(lengths, n0)
    if floating is float:
        fc_lstm_fwd_step_f32(n1 - n0, H, gates, ld_g, b, c_prev, ld_cp, c_next, ld_cn, h_prev,
                             ld_hp, h_next, ld_hn, y, ld_y, tanh_c, ld_tc, lengths, t)
    else:
        fc_lstm_fwd_step_f64(n1 - n0, H, gates, ld_g, b, c_prev, ld_cp, c_next, ld_cn, h_prev,
                             ld_hp, h_next, ld_hn, y, ld_y, tanh_c, ld_tc, lengths, t)


cdef inline void bwd_step(Team tm, Py_ssize_t N, Py_ssize_t H, const floating *gates,
                          Py_ssize_t ld_g, const floating *c_prev, Py_ssize_t ld_cp,
                          const floating *tanh_c, Py_ssize_t ld_tc, const floating *dy,
                          Py_ssize_t ld_dy, floating *dh, floating *dc, floating *dA,
                          Py_ssize_t ld_dA, const int64_t *lengths, Py_ssize_t t) noexcept nogil:
    """The fused pointwise pass of backward on this thread's rows of the step."""
    cdef Py_ssize_t n0, n1
    rows(tm, N, &n0, &n1)
    gates, c_prev, tanh_c = gates + n0 * ld_g, c_prev + n0 * ld_cp, tanh_c + n0 * ld_tc
    dy, dh, dc, dA = dy + n0 * ld_dy, dh + n0 * H, dc + n0 * H, dA + n0 * ld_dA
    lengths = lens_at(lengths, n0)
    if floating is float:
        fc_lstm_bwd_step_f32(n1 - n0, H, gates, ld_g, c_prev, ld_cp, tanh_c, ld_tc, dy, ld_dy,
                             dh, dc, dA, ld_dA, lengths, t)
    else:
        fc_lstm_bwd_step_f64(n1 - n0, H, gates, ld_g, c_prev, ld_cp, tanh_c, ld_tc, dy, ld_dy,
                             dh, dc, dA, ld_dA, lengths, t)


# ---- the loops ---------------------------------------------------------------------------------
# Each recurrence runs on a team (see _seq.pxd): `parallel` hands it to nth threads through a
# struct of its arguments (one struct type per loop, both dtypes: `dbl`).
# The arguments of forward_steps / backward_steps / infer_steps for the threads (void
# pointers: one struct for both dtypes).
cdef struct Steps:
    Layout L
    Py_ssize_t D, H, Tc
    const void *X
    const void *Wx
    const void *wxp
    const void *Wh
    const void *b
    const int64_t *lens
    void *Y
    void *G
    void *hp
    void *cp
    void *TC
    void *hT
    void *cT
    void *wp
    void *wu
    const void *dY
    bint has_dy
    void *dh
    void *dc
    void *A
    void *dX
    void *dWx
    void *dWh
    void *db
    bint dbl
    Py_ssize_t blocks       # rows_infer: blocks of rows, and the next one to claim
    Py_ssize_t next_block


cdef void forward_recurrence(Team tm, Layout L, Py_ssize_t H, const floating *Wh,
                             const floating *b, const int64_t *lens, floating *Y, floating *G,
                             floating *hp, floating *cp, floating *TC, floating *hT,
                             floating *cT, const floating *wp) noexcept nogil:
    """The steps of training forward, Wh packed (wp). Hp (hp), Cp (cp): step 0 holds h0, c0;
    only written for T > 1."""
    cdef Py_ssize_t N = L.N, T = L.T, G4 = 4 * H
    cdef Py_ssize_t hs = L.ts * H, ldh = L.ns * H     # width-H arrays: step offset, row stride
    cdef Py_ssize_t gs = L.ts * G4, ldg = L.ns * G4   # width-4H arrays
    cdef floating *h_next
    cdef floating *c_next
    cdef Py_ssize_t t, ld_next
    for t in range(T):
        # gates[t] += h_{t-1} @ Wh
        team_gemm(tm, N, G4, H, hp + t * hs, ldh, Wh, G4, False, wp, 1, G + t * gs, ldg, t & 1)
        sync(tm)
        if t + 1 < T:
            h_next, c_next, ld_next = hp + (t + 1) * hs, cp + (t + 1) * hs, ldh
        else:
            h_next, c_next, ld_next = hT, cT, H
        fwd_step(tm, N, H, G + t * gs, ldg, b, cp + t * hs, ldh, c_next, ld_next,
                 hp + t * hs, ldh, h_next, ld_next, Y + t * hs, ldh, TC + t * hs, ldh, lens, t)
        sync(tm)


cdef void forward_steps(Team tm, Layout L, Py_ssize_t H, const floating *Wh, const floating *b,
                        const int64_t *lens, floating *Y, floating *G, floating *hp,
                        floating *cp, floating *TC, floating *hT, floating *cT,
                        floating *wp, Py_ssize_t *next_block, Py_ssize_t blocks) noexcept nogil:
    """Training forward after the input projection (G holds X @ Wx): Wh packed by the team,
    then the steps, on the whole team or, with `blocks`, split by sequences (the threads claim
    blocks of rows and run their steps alone, as rows_infer)."""
    cdef Py_ssize_t n0, n1, o, G4 = 4 * H
    cdef Layout sub = L
    team_pack(tm, H, G4, Wh, G4, False, wp)
    sync(tm)
    if blocks == 0:
        forward_recurrence(tm, L, H, Wh, b, lens, Y, G, hp, cp, TC, hT, cT, wp)
        return
    while claim_rows(next_block, blocks, L.N, &n0, &n1):
        sub.N, o = n1 - n0, n0 * L.ns * H  # o: the block's first row in width-H arrays
        forward_recurrence(solo(), sub, H, Wh, b, lens_at(lens, n0), Y + o, G + 4 * o, hp + o,
                           cp + o, TC + o, hT + n0 * H, cT + n0 * H, wp)


cdef void backward_recurrence(Team tm, Layout L, Py_ssize_t H, const floating *Wh,
                              const floating *G, const floating *cp, const floating *TC,
                              const int64_t *lens, const floating *dY, bint has_dy,
                              floating *dh, floating *dc, floating *A,
                              const floating *wp) noexcept nogil:
    """The steps of backward, Whᵀ packed (wp): writes dA (A), turns dh, dc into dh0, dc0."""
    cdef Py_ssize_t N = L.N, T = L.T, G4 = 4 * H
    cdef Py_ssize_t hs = L.ts * H, ldh = L.ns * H
    cdef Py_ssize_t gs = L.ts * G4, ldg = L.ns * G4
    cdef Py_ssize_t dys = hs if has_dy else 0, ldy = ldh if has_dy else 0
    cdef Py_ssize_t t
    for t in range(T - 1, -1, -1):
        bwd_step(tm, N, H, G + t * gs, ldg, cp + t * hs, ldh, TC + t * hs, ldh, dY + t * dys,
                 ldy, dh, dc, A + t * gs, ldg, lens, t)
        sync(tm)
        # dh_{t-1} += dA_t @ Whᵀ
        team_gemm(tm, N, H, G4, A + t * gs, ldg, Wh, G4, True, wp, 1, dh, H, False)
        sync(tm)


cdef void backward_steps(Team tm, Layout L, Py_ssize_t H, const floating *Wh,
                         const floating *G, const floating *cp, const floating *TC,
                         const int64_t *lens, const floating *dY, bint has_dy, floating *dh,
                         floating *dc, floating *A, floating *wp, Py_ssize_t *next_block,
                         Py_ssize_t blocks) noexcept nogil:
    """Backward through the steps: Whᵀ packed by the team, then the steps on the whole team
    or, with `blocks`, split by sequences (as forward_steps: the gradients of a sequence's
    states never meet another's)."""
    cdef Py_ssize_t n0, n1, o, G4 = 4 * H
    cdef Layout sub = L
    team_pack(tm, G4, H, Wh, G4, True, wp)
    sync(tm)
    if blocks == 0:
        backward_recurrence(tm, L, H, Wh, G, cp, TC, lens, dY, has_dy, dh, dc, A, wp)
        return
    while claim_rows(next_block, blocks, L.N, &n0, &n1):
        sub.N, o = n1 - n0, n0 * L.ns * H
        backward_recurrence(solo(), sub, H, Wh, G + 4 * o, cp + o, TC + o, lens_at(lens, n0),
                            dY + o if has_dy else dY, has_dy, dh + n0 * H, dc + n0 * H,
                            A + 4 * o, wp)


cdef void train_loop(Layout L, Py_ssize_t D, Py_ssize_t H, const floating *X,
                     const floating *Wx, const floating *Wh, const floating *b,
                     const int64_t *lens, floating *Y, floating *G, floating *hp,
                     floating *cp, floating *TC, floating *hT, floating *cT,
                     floating *wp) noexcept nogil:
    """Training forward on one thread (the one-step cell)."""
    # gates = X @ Wx  (all steps)
    project(L, X, D, 0, L.T, Wx, 4 * H, G, L.ts * 4 * H, L.ns * 4 * H)
    forward_steps(solo(), L, H, Wh, b, lens, Y, G, hp, cp, TC, hT, cT, wp, NULL, 0)


cdef void backward_loop(Layout L, Py_ssize_t D, Py_ssize_t H, const floating *X,
                        const floating *Wx, const floating *Wh, const floating *G,
                        const floating *hp, const floating *cp, const floating *TC,
                        const int64_t *lens, const floating *dY, bint has_dy, floating *dh,
                        floating *dc, floating *A, floating *dX, floating *dWx,
                        floating *dWh, floating *db, floating *wp, int nth,
                        bint by_rows) noexcept nogil:
    """All of backward on a team of nth threads (backward_task), its steps split by sequences
    with by_rows."""
    cdef Steps s
    s.blocks, s.next_block = row_blocks(L.N, nth, by_rows), 0
    s.L, s.D, s.H, s.X, s.Wx, s.Wh, s.lens = L, D, H, X, Wx, Wh, lens
    s.G, s.hp, s.cp, s.TC = <void *> G, <void *> hp, <void *> cp, <void *> TC  # only read
    s.dY, s.has_dy, s.dh, s.dc, s.A, s.wp = dY, has_dy, dh, dc, A, wp
    s.dX, s.dWx, s.dWh, s.db, s.dbl = dX, dWx, dWh, db, floating is double
    parallel(nth, backward_task, &s, 2 * run_macs(L, D, H, 4, floating is double))


cdef void backward_all(Team tm, Layout L, Py_ssize_t D, Py_ssize_t H, const floating *X,
                       const floating *Wx, const floating *Wh, const floating *G,
                       const floating *hp, const floating *cp, const floating *TC,
                       const int64_t *lens, const floating *dY, bint has_dy, floating *dh,
                       floating *dc, floating *A, floating *dX, floating *dWx,
                       floating *dWh, floating *db, floating *wp, Py_ssize_t *next_block,
                       Py_ssize_t blocks) noexcept nogil:
    """The steps (backward_steps), then the one-off products on the same team."""
    cdef Py_ssize_t NT = L.N * L.T, G4 = 4 * H
    backward_steps(tm, L, H, Wh, G, cp, TC, lens, dY, has_dy, dh, dc, A, wp, next_block,
                   blocks)
    sync(tm)
    # dWx = Xᵀ @ dA;  dWh = Hpᵀ @ dA;  dX = dA @ Wxᵀ;  db = dA.sum(0)
    team_weight_grads(tm, NT, G4, D, X, H, hp, A, G4, dWx, dWh)
    team_own_gemm(tm, False, True, NT, D, G4, A, G4, Wx, G4, dX, D)
    team_colsum(tm, NT, G4, A, G4, db)


cdef void forward_task(void *arg, int tid, int nth) noexcept nogil:
    cdef Steps *s = <Steps *> arg
    cdef Team tm
    tm.tid, tm.nth = tid, nth
    cdef Py_ssize_t NT = s.L.N * s.L.T, D = s.D, G4 = 4 * s.H
    # gates = X @ Wx  (all steps: X and the gates share the layout)
    if s.dbl:
        team_own_gemm(tm, False, False, NT, G4, D, <const double *> s.X, D,
                      <const double *> s.Wx, G4, <double *> s.G, G4)
    else:
        team_own_gemm(tm, False, False, NT, G4, D, <const float *> s.X, D,
                      <const float *> s.Wx, G4, <float *> s.G, G4)
    sync(tm)
    if s.dbl:
        forward_steps(tm, s.L, s.H, <const double *> s.Wh, <const double *> s.b, s.lens,
                      <double *> s.Y, <double *> s.G, <double *> s.hp, <double *> s.cp,
                      <double *> s.TC, <double *> s.hT, <double *> s.cT, <double *> s.wp,
                      &s.next_block, s.blocks)
    else:
        forward_steps(tm, s.L, s.H, <const float *> s.Wh, <const float *> s.b, s.lens,
                      <float *> s.Y, <float *> s.G, <float *> s.hp, <float *> s.cp,
                      <float *> s.TC, <float *> s.hT, <float *> s.cT, <float *> s.wp,
                      &s.next_block, s.blocks)


cdef void backward_task(void *arg, int tid, int nth) noexcept nogil:
    cdef Steps *s = <Steps *> arg
    cdef Team tm
    tm.tid, tm.nth = tid, nth
    if s.dbl:
        backward_all(tm, s.L, s.D, s.H, <const double *> s.X, <const double *> s.Wx,
                     <const double *> s.Wh, <const double *> s.G, <const double *> s.hp,
                     <const double *> s.cp, <const double *> s.TC, s.lens,
                     <const double *> s.dY, s.has_dy, <double *> s.dh, <double *> s.dc,
                     <double *> s.A, <double *> s.dX, <double *> s.dWx, <double *> s.dWh,
                     <double *> s.db, <double *> s.wp, &s.next_block, s.blocks)
    else:
        backward_all(tm, s.L, s.D, s.H, <const float *> s.X, <const float *> s.Wx,
                     <const float *> s.Wh, <const float *> s.G, <const float *> s.hp,
                     <const float *> s.cp, <const float *> s.TC, s.lens,
                     <const float *> s.dY, s.has_dy, <float *> s.dh, <float *> s.dc,
                     <float *> s.A, <float *> s.dX, <float *> s.dWx, <float *> s.dWh,
                     <float *> s.db, <float *> s.wp, &s.next_block, s.blocks)


cdef void infer_steps(Team tm, Py_ssize_t N, Py_ssize_t H, Py_ssize_t t0, Py_ssize_t t1,
                      const floating *Wh, const floating *b, const int64_t *lens,
                      floating *P, floating *h, floating *c, floating *y, Py_ssize_t ys,
                      Py_ssize_t ldy, const floating *wp) noexcept nogil:
    """Inference steps t0 <= t < t1: P holds their input projections ((t1 - t0)*N, 4H); the
    state h, c (N, H) is updated in place; step t's outputs go to y + t*ys (row stride ldy)."""
    cdef Py_ssize_t G4 = 4 * H, t
    cdef floating *p
    for t in range(t0, t1):
        p = P + (t - t0) * N * G4
        # p += h_{t-1} @ Wh, then the state is overwritten in place by h_t, c_t
        team_gemm(tm, N, G4, H, h, H, Wh, G4, False, wp, 1, p, G4, t & 1)
        sync(tm)
        fwd_step(tm, N, H, p, G4, b, c, H, c, H, h, H, h, H, y + t * ys, ldy,
                 <floating *> NULL, 0, lens, t)
        sync(tm)


cdef void infer_chunks(Team tm, Layout L, Py_ssize_t D, Py_ssize_t H, Py_ssize_t Tc,
                       const floating *X, const floating *Wx, const floating *wxp,
                       const floating *Wh, const floating *b, const int64_t *lens,
                       floating *P, floating *h, floating *c, floating *Y,
                       const floating *wp) noexcept nogil:
    """All of inference on a team: per chunk of Tc steps, each thread projects the input of
    its own sequences (Wx packed: wxp), then the steps run (infer_steps)."""
    cdef Py_ssize_t N = L.N, T = L.T, chunk, t0, t1, n0, n1
    rows(tm, N, &n0, &n1)
    for chunk in range((T + Tc - 1) // Tc):
        t0 = chunk * Tc
        t1 = min(T, t0 + Tc)
        # P[t - t0, n] = X[n, t] @ Wx  for this thread's sequences
        project_sequences(L, X, D, t0, t1, n0, n1, Wx, 4 * H, P, L.N * 4 * H, 4 * H,
                          wxp)
        sync(tm)
        infer_steps(tm, N, H, t0, t1, Wh, b, lens, P, h, c, Y, L.ts * H, L.ns * H, wp)


cdef void infer_task(void *arg, int tid, int nth) noexcept nogil:
    cdef Steps *s = <Steps *> arg
    cdef Team tm
    tm.tid, tm.nth = tid, nth
    if s.dbl:
        infer_chunks(tm, s.L, s.D, s.H, s.Tc, <const double *> s.X, <const double *> s.Wx,
                     <const double *> s.wxp, <const double *> s.Wh, <const double *> s.b,
                     s.lens, <double *> s.G, <double *> s.hT, <double *> s.cT,
                     <double *> s.Y, <const double *> s.wp)
    else:
        infer_chunks(tm, s.L, s.D, s.H, s.Tc, <const float *> s.X, <const float *> s.Wx,
                     <const float *> s.wxp, <const float *> s.Wh, <const float *> s.b,
                     s.lens, <float *> s.G, <float *> s.hT, <float *> s.cT,
                     <float *> s.Y, <const float *> s.wp)


cdef void rows_infer(Steps *s, floating dummy) noexcept nogil:
    """Inference on a team split by sequences: the threads claim blocks of rows (s.blocks of
    them, in order) until none is left, and each runs all the steps of its block alone
    (infer_chunks on one thread, the block's share of the chunk buffer) with no barrier: the
    sequences of a batch do not meet in inference, and the bits of a row do not depend on the
    rows computed with it. A thread that starts late (a worker waking up) takes fewer blocks
    instead of holding the others at a barrier every step. Each thread reads all of Wh."""
    cdef Py_ssize_t n0, n1, G4 = 4 * s.H
    cdef Layout L = s.L  # the same strides between steps and sequences, fewer sequences
    while claim_rows(&s.next_block, s.blocks, s.L.N, &n0, &n1):
        L.N = n1 - n0
        infer_chunks(solo(), L, s.D, s.H, s.Tc, <const floating *> s.X + n0 * L.ns * s.D,
                     <const floating *> s.Wx, <const floating *> s.wxp,
                     <const floating *> s.Wh, <const floating *> s.b, lens_at(s.lens, n0),
                     <floating *> s.G + s.Tc * n0 * G4, <floating *> s.hT + n0 * s.H,
                     <floating *> s.cT + n0 * s.H, <floating *> s.Y + n0 * L.ns * s.H,
                     <const floating *> s.wp)


cdef void rows_task(void *arg, int tid, int nth) noexcept nogil:
    if (<Steps *> arg).dbl:
        rows_infer(<Steps *> arg, <double> 0)
    else:
        rows_infer(<Steps *> arg, <float> 0)


cdef void units_infer(Team tm, Layout L, Py_ssize_t D, Py_ssize_t H, Py_ssize_t Tc,
                      const floating *X, const floating *Wx, const floating *Wh,
                      const floating *b, const int64_t *lens, floating *P, floating *h,
                      floating *c, floating *Y, floating *wu) noexcept nogil:
    """Inference of a batch of one on a team split by hidden units (see _seq.pxd). wu holds
    the threads' slices of Wh (H x 4H in all), then per unit 4 gate sums and 4 biases, then
    the second h buffer (H)."""
    cdef Py_ssize_t G4 = 4 * H, ys = L.ts * H, u0, u1, chunk, t0, t1, t
    unit_range(tm, H, &u0, &u1)
    cdef Py_ssize_t Hu = u1 - u0
    cdef floating *wt = wu + G4 * u0                  # (H, 4Hu): this thread's columns of Wh
    cdef floating *gates = wu + H * G4 + 4 * u0       # (4Hu,): its gate sums of a step
    cdef floating *bias = wu + H * G4 + G4 + 4 * u0   # (4Hu,): its columns of b
    cdef floating *h_cur = h
    cdef floating *h_next = wu + H * G4 + 2 * G4      # (H,): h_t, while h_{t-1} is read
    gather_units(H, 4, H, u0, u1, Wh, G4, wt)
    gather_units(1, 4, H, u0, u1, b, G4, bias)
    for chunk in range((L.T + Tc - 1) // Tc):
        t0 = chunk * Tc
        t1 = min(L.T, t0 + Tc)
        # P[t - t0] = X[t] @ Wx  (this thread's columns, or all of them on thread 0)
        project_units(tm, L, X, D, t0, t1, Wx, 4, H, u0, u1, P)
        for t in range(t0, t1):
            if Hu > 0:
                # gates = P[t - t0] + h_{t-1} @ Wh  (this thread's columns), then its units of
                # c_t (in place) and h_t (into the other buffer)
                gather_units(1, 4, H, u0, u1, P + (t - t0) * G4, G4, gates)
                gemv(H, 4 * Hu, h_cur, 1, wt, 4 * Hu, 1, gates, t & 1)
                fwd_step(solo(), 1, Hu, gates, 4 * Hu, bias, c + u0, H, c + u0, H, h_cur + u0,
                         H, h_next + u0, H, Y + t * ys + u0, H, <floating *> NULL, 0, lens, t)
            units_next(tm, &h_cur, &h_next)
    units_done(h, h_cur, u0, u1)


cdef void units_task(void *arg, int tid, int nth) noexcept nogil:
    cdef Steps *s = <Steps *> arg
    cdef Team tm
    tm.tid, tm.nth = tid, nth
    if s.dbl:
        units_infer(tm, s.L, s.D, s.H, s.Tc, <const double *> s.X, <const double *> s.Wx,
                    <const double *> s.Wh, <const double *> s.b, s.lens, <double *> s.G,
                    <double *> s.hT, <double *> s.cT, <double *> s.Y, <double *> s.wu)
    else:
        units_infer(tm, s.L, s.D, s.H, s.Tc, <const float *> s.X, <const float *> s.Wx,
                    <const float *> s.Wh, <const float *> s.b, s.lens, <float *> s.G,
                    <float *> s.hT, <float *> s.cT, <float *> s.Y, <float *> s.wu)


# ---- the sequence API (typed memoryviews) -----------------------------------------------------
def forward_train(const floating[:, ::1] X,       # (N*T, D) input, layout rows
                  const floating[:, ::1] Wx,      # (D, 4H)
                  const floating[:, ::1] Wh,      # (H, 4H)
                  const floating[::1] b,          # (4H,)
                  const int64_t[::1] lengths,     # (N,) or None
                  Py_ssize_t N, Py_ssize_t T, bint time_major,
                  floating[:, ::1] Y,             # out (N*T, H): hs
                  floating[:, ::1] gates,         # out (N*T, 4H): activated f, g, i, o
                  floating[:, ::1] Hp,            # in/out (N*T, H): h_{t-1}; step 0 holds h0
                  floating[:, ::1] Cp,            # in/out (N*T, H): c_{t-1}; step 0 holds c0
                  floating[:, ::1] TC,            # out (N*T, H): tanh(c_t)
                  floating[:, ::1] hT,            # out (N, H)
                  floating[:, ::1] cT,            # out (N, H)
                  floating[::1] Wp,               # work: Wh packed, or empty (use BLAS)
                  int nth=1,                      # threads (more than 1 needs Wp)
                  bint by_rows=False):            # the steps split by sequences
    cdef Layout L = make_layout(N, T, time_major)
    cdef Py_ssize_t D = X.shape[1], H = Wh.shape[0]
    cdef Steps s
    s.blocks, s.next_block = row_blocks(N, nth, by_rows), 0
    s.L, s.D, s.H, s.X, s.Wx, s.Wh, s.b = L, D, H, cptr(X), cptr(Wx), &Wh[0, 0], &b[0]
    s.lens = NULL if lengths is None else &lengths[0]
    s.Y, s.G, s.hp, s.cp, s.TC = &Y[0, 0], &gates[0, 0], &Hp[0, 0], &Cp[0, 0], &TC[0, 0]
    s.hT, s.cT, s.wp, s.dbl = &hT[0, 0], &cT[0, 0], packed_or_null(Wp), floating is double
    with nogil:  # the input projection, then the steps, on a team (forward_task)
        parallel(nth, forward_task, &s, run_macs(L, D, H, 4, floating is double))


cdef void infer_run(Layout L, Py_ssize_t D, Py_ssize_t H, Py_ssize_t Tc, bint reverse,
                    const floating *X, const floating *Wx, const floating *Wh,
                    const floating *b, const int64_t *lens, floating *Y, floating *P,
                    floating *h, floating *c, floating *wp, floating *wxp, floating *Xr,
                    floating *Ys, floating *wu, int nth, bint by_rows) noexcept nogil:
    """forward_infer's loop: with wu (a batch of one), on a team split by hidden units;
    otherwise Wh, Wx packed (when wp, wxp), then the chunks, on a team of nth threads or, on
    one, step by step through Xr and Ys with reverse."""
    cdef Py_ssize_t N = L.N, T = L.T, G4 = 4 * H
    cdef Py_ssize_t chunk, t0, t1, t
    # step t's outputs: Y + t*hs (row stride ldh), or with reverse the scratch Ys
    cdef floating *y = Ys if reverse else Y
    cdef Py_ssize_t ys = 0 if reverse else L.ts * H, ldy = H if reverse else L.ns * H
    cdef Steps s
    s.L, s.D, s.H, s.Tc, s.X, s.Wx, s.wxp = L, D, H, Tc, X, Wx, wxp
    s.Wh, s.b, s.lens, s.G, s.hT, s.cT = Wh, b, lens, P, h, c
    s.Y, s.wp, s.wu, s.dbl = Y, wp, wu, floating is double
    if wu != NULL:  # (needs no reverse)
        parallel(nth, units_task, &s, run_macs(L, D, H, 4, floating is double))
        return
    if wxp != NULL:
        pack(D, G4, Wx, G4, False, wxp)
    if wp != NULL:
        pack(H, G4, Wh, G4, False, wp)
    if nth > 1:  # the whole loop on a team (needs wxp and wp; not with reverse)
        s.blocks, s.next_block = row_blocks(N, nth, by_rows), 0
        if s.blocks:  # the threads claim blocks of rows (rows_infer)
            parallel(nth, rows_task, &s, run_macs(L, D, H, 4, floating is double))
        else:
            parallel(nth, infer_task, &s, run_macs(L, D, H, 4, floating is double))
        return
    for chunk in range((T + Tc - 1) // Tc):
        t0 = chunk * Tc
        t1 = min(T, t0 + Tc)
        project_chunk(L, X, D, reverse, lens, t0, t1, Wx, G4, Xr, P, wxp)
        if reverse:  # one thread, step by step: Y[:, rev_pos(:, t)] = Ys after step t
            for t in range(t0, t1):
                infer_steps(solo(), N, H, t, t + 1, Wh, b, lens, P + (t - t0) * N * G4, h, c,
                            y, 0, H, wp)
                scatter_reversed(L, y, H, lens, t, Y)
        else:
            infer_steps(solo(), N, H, t0, t1, Wh, b, lens, P, h, c, y, ys, ldy, wp)


def forward_infer(cnp.ndarray X,                  # (N*T, D) xs, layout rows (not reordered)
                  cnp.ndarray Wx,                 # (D, 4H)
                  cnp.ndarray Wh,                 # (H, 4H)
                  cnp.ndarray b,                  # (4H,)
                  lengths,                        # (N,) int64, or None
                  Py_ssize_t N, Py_ssize_t T, bint time_major, bint reverse,
                  cnp.ndarray Y,                  # out (N*T, H): hs
                  cnp.ndarray P,                  # work (Tc*N, 4H): gates of Tc steps
                  cnp.ndarray hT,                 # in h0, out h_T (N, H)
                  cnp.ndarray cT,                 # in c0, out c_T (N, H)
                  cnp.ndarray Wp,                 # work: Wh packed, or empty (use BLAS)
                  cnp.ndarray Wxp,                # work: Wx packed, or empty (see project)
                  cnp.ndarray Xr,                 # work (Tc*N, D) with reverse, else empty
                  cnp.ndarray Ys,                 # work (N, H) with reverse, else empty
                  cnp.ndarray Wu,                 # work (4H*H + 9H,): N = 1 split by units
                  int nth=1,                      # threads (more than 1: Wp, Wxp or Wu, no
                                                  # reverse)
                  bint by_rows=False):            # a team split by sequences (rows_infer)
    """Inference: the state is updated in place in hT, cT; only Tc steps of gates are held
    (Tc = P.shape[0] // N), their input projection one GEMM per chunk. With reverse, step t
    of sequence n is at position rev_pos(n, t) (_seq.pxd): its input rows are gathered
    through Xr, its outputs scattered from Ys. The arrays (ndarrays: array_ptr) are all of
    Wh's dtype, float32 or float64."""
    cdef int tn = cnp.PyArray_TYPE(Wh)
    cdef Layout L = make_layout(N, T, time_major)
    cdef Py_ssize_t D = cnp.PyArray_DIMS(X)[1], H = cnp.PyArray_DIMS(Wh)[0]
    cdef Py_ssize_t Tc = cnp.PyArray_DIMS(P)[0] // N
    cdef const int64_t *lens = lengths_ptr(lengths)
    cdef void *p[13]
    array_ptrs((X, Wx, Wh, b, Y, P, hT, cT, Wp, Wxp, Xr, Ys, Wu), tn, p)
    if tn == cnp.NPY_FLOAT32:
        with nogil:
            infer_run(L, D, H, Tc, reverse, <const float *> p[0], <const float *> p[1],
                      <const float *> p[2], <const float *> p[3], lens, <float *> p[4],
                      <float *> p[5], <float *> p[6], <float *> p[7], <float *> p[8],
                      <float *> p[9], <float *> p[10], <float *> p[11], <float *> p[12], nth,
                      by_rows)
    elif tn == cnp.NPY_FLOAT64:
        with nogil:
            infer_run(L, D, H, Tc, reverse, <const double *> p[0], <const double *> p[1],
                      <const double *> p[2], <const double *> p[3], lens, <double *> p[4],
                      <double *> p[5], <double *> p[6], <double *> p[7], <double *> p[8],
                      <double *> p[9], <double *> p[10], <double *> p[11], <double *> p[12],
                      nth, by_rows)
    else:
        raise TypeError(f"forward_infer: float32 or float64 arrays, got {Wh.dtype}")


def backward(const floating[:, ::1] X,            # (N*T, D) the forward's input
             const floating[:, ::1] Wx,           # (D, 4H)
             const floating[:, ::1] Wh,           # (H, 4H)
             const floating[:, ::1] gates,        # (N*T, 4H) activated gates (cache)
             const floating[:, ::1] Hp,           # (N*T, H) h_{t-1} (cache)
             const floating[:, ::1] Cp,           # (N*T, H) c_{t-1} (cache)
             const floating[:, ::1] TC,           # (N*T, H) tanh(c_t) (cache)
             const int64_t[::1] lengths,          # (N,) or None
             Py_ssize_t N, Py_ssize_t T, bint time_major,
             const floating[:, ::1] dY,           # (N*T, H) dL/dhs, or (1, H) zeros if not has_dy
             bint has_dy,
             floating[:, ::1] dh,                 # in dL/dh_T, out dL/dh0 (N, H)
             floating[:, ::1] dc,                 # in dL/dc_T, out dL/dc0 (N, H)
             floating[:, ::1] dA,                 # out (N*T, 4H): dL/d(pre-activations)
             floating[:, ::1] dX,                 # out (N*T, D)
             floating[:, ::1] dWx,                # out (D, 4H)
             floating[:, ::1] dWh,                # out (H, 4H)
             floating[::1] db,                    # out (4H,)
             floating[::1] Wp,                    # work: Whᵀ packed, or empty (use BLAS)
             int nth=1,                           # threads (more than 1 needs Wp)
             bint by_rows=False):                 # the steps split by sequences
    cdef Layout L = make_layout(N, T, time_major)
    cdef const int64_t *lens = NULL if lengths is None else &lengths[0]
    with nogil:
        backward_loop(L, X.shape[1], Wh.shape[0], cptr(X), cptr(Wx), &Wh[0, 0], &gates[0, 0],
                      &Hp[0, 0], &Cp[0, 0], &TC[0, 0], lens, &dY[0, 0], has_dy, &dh[0, 0],
                      &dc[0, 0], &dA[0, 0], ptr(dX), ptr(dWx), &dWh[0, 0], &db[0],
                      packed_or_null(Wp), nth, by_rows)


# ---- the one-step cell (ndarrays, checked by fastcells.layers.LSTM) ----------------------------
cdef void cell_forward_t(floating *x, floating *h, floating *c, floating *Wx, floating *Wh,
                         floating *b, floating *gates, floating *tanh_c, floating *h_next,
                         floating *c_next, Py_ssize_t N, Py_ssize_t D,
                         Py_ssize_t H) noexcept nogil:
    # T = 1: Hp, Cp are h, c themselves (only step 0 is read); hs and h_T are both h_next
    train_loop(make_layout(N, 1, False), D, H, x, Wx, Wh, b, NULL, h_next, gates, h, c, tanh_c,
               h_next, c_next, NULL)


def cell_forward(x, h, c, Wx, Wh, b):
    """One step: x (N, D), h, c (N, H) -> (h_next, c_next, gates, tanh_c), new arrays; gates
    (N, 4H) and tanh_c (N, H) are what cell_backward needs. None, with nothing run, unless
    every argument is ready for the kernel (_fastpath.cell_typenum): the caller then checks
    and converts them (fastcells.layers.LSTM)."""
    cdef int typenum = cell_typenum(4, x, h, c, Wx, Wh, b, False)
    if typenum < 0:
        return None
    cdef Py_ssize_t N = cnp.PyArray_DIMS(<cnp.ndarray> x)[0]
    cdef Py_ssize_t D = cnp.PyArray_DIMS(<cnp.ndarray> x)[1]
    cdef Py_ssize_t H = cnp.PyArray_DIMS(<cnp.ndarray> Wh)[0]
    cdef cnp.ndarray gates = empty(N, 4 * H, typenum), tanh_c = empty(N, H, typenum)
    cdef cnp.ndarray h_next = empty(N, H, typenum), c_next = empty(N, H, typenum)
    cdef void *p[10]
    p[0], p[1], p[2], p[3], p[4] = data(x), data(h), data(c), data(Wx), data(Wh)
    p[5], p[6], p[7], p[8], p[9] = data(b), data(gates), data(tanh_c), data(h_next), data(c_next)
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            cell_forward_t(<float *> p[0], <float *> p[1], <float *> p[2], <float *> p[3],
                           <float *> p[4], <float *> p[5], <float *> p[6], <float *> p[7],
                           <float *> p[8], <float *> p[9], N, D, H)
    else:
        with nogil:
            cell_forward_t(<double *> p[0], <double *> p[1], <double *> p[2], <double *> p[3],
                           <double *> p[4], <double *> p[5], <double *> p[6], <double *> p[7],
                           <double *> p[8], <double *> p[9], N, D, H)
    return h_next, c_next, gates, tanh_c


cdef void cell_backward_t(floating *x, floating *h, floating *c, floating *Wx, floating *Wh,
                          floating *gates, floating *tanh_c, floating *dh_next, floating *dh,
                          floating *dc, floating *dA, floating *dx, floating *dWx,
                          floating *dWh, floating *db, Py_ssize_t N, Py_ssize_t D,
                          Py_ssize_t H) noexcept nogil:
    backward_loop(make_layout(N, 1, False), D, H, x, Wx, Wh, gates, h, c, tanh_c, NULL,
                  dh_next, True, dh, dc, dA, dx, dWx, dWh, db, NULL, 1, False)


def cell_backward(cnp.ndarray x, cnp.ndarray h, cnp.ndarray c, cnp.ndarray Wx, cnp.ndarray Wh,
                  cnp.ndarray gates, cnp.ndarray tanh_c, cnp.ndarray dh_next, cnp.ndarray dh,
                  cnp.ndarray dc, cnp.ndarray dA, cnp.ndarray dx, cnp.ndarray dWx,
                  cnp.ndarray dWh, cnp.ndarray db):
    """Backward of cell_forward: dh (zeros in) and dc (dc_next in) become dh_prev and dc_prev;
    dA (N, 4H) is work; dx, dWx, dWh, db are written."""
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], H = Wh.shape[0]
    cdef void *p[15]
    cdef int k
    for k, a in enumerate((x, h, c, Wx, Wh, gates, tanh_c, dh_next, dh, dc, dA, dx, dWx, dWh,
                           db)):
        p[k] = data(a)
    if x.descr.type_num == cnp.NPY_FLOAT32:
        with nogil:
            cell_backward_t(<float *> p[0], <float *> p[1], <float *> p[2], <float *> p[3],
                            <float *> p[4], <float *> p[5], <float *> p[6], <float *> p[7],
                            <float *> p[8], <float *> p[9], <float *> p[10], <float *> p[11],
                            <float *> p[12], <float *> p[13], <float *> p[14], N, D, H)
    else:
        with nogil:
            cell_backward_t(<double *> p[0], <double *> p[1], <double *> p[2], <double *> p[3],
                            <double *> p[4], <double *> p[5], <double *> p[6], <double *> p[7],
                            <double *> p[8], <double *> p[9], <double *> p[10],
                            <double *> p[11], <double *> p[12], <double *> p[13],
                            <double *> p[14], N, D, H)
