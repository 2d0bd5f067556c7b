# Sequence plumbing shared by the cell kernels (_lstm, _gru, _rnn): where a (sequence, step) row
# lives in a batch-first or time-major array, the input projection, and typed pointers.
#
# A sequence array of width W is stored as an (N*T, W) C-contiguous matrix whose row of sequence
# n at step t is  t*ts + n*ns  (time-major: ts = N, ns = 1; batch-first: ts = 1, ns = T). So the
# N rows of step t start at element t*ts*W and lie ns*W elements apart: one pointer and one
# leading dimension describe them, for the GEMMs and for the pointwise C passes alike.
#
# reverse=True in inference: processing step t of sequence n reads and writes position
# rev_pos(n, t) = lengths[n]-1-t for t < lengths[n] (the sequence reversed within its length),
# else t (a padding step: padding stays where it is); without lengths T-1-t. Those rows do not
# lie one stride apart, so a chunk's input rows are gathered into a small buffer in processing
# order (project_reversed: still one GEMM per chunk) and each step's outputs are scattered from
# an (N, H) scratch (scatter_reversed). Training permutes xs in Python instead (its cache is
# O(N*T) anyway).
cimport numpy as cnp
from cython cimport floating
from libc.stdint cimport int64_t
from libc.string cimport memcpy
from ._blas cimport barrier, gemm, gemm_packed, gemv, own_gemm, own_gemm_tn2, pack, packed_size
from ._csrc cimport fc_colsum_f32, fc_colsum_f64


cdef struct Layout:
    Py_ssize_t N, T
    Py_ssize_t ts  # rows from step t to step t+1
    Py_ssize_t ns  # rows from sequence n to sequence n+1


cdef inline Layout make_layout(Py_ssize_t N, Py_ssize_t T, bint time_major) noexcept nogil:
    cdef Layout L
    L.N = N
    L.T = T
    L.ts = N if time_major else 1
    L.ns = 1 if time_major else T
    return L


cdef inline double run_macs(Layout L, Py_ssize_t D, Py_ssize_t H, int G,
                            bint dbl) noexcept nogil:
    """The multiply-adds of a forward pass over L's sequences (the products with Wx and Wh,
    G gates), counted twice in float64 (dbl), which runs at half the rate: what a run of the
    loop is worth, for parallel's patience (backward: about two passes)."""
    return <double> L.N * L.T * G * H * (D + H) * (2 if dbl else 1)


# Rows from which one_off uses fc_gemm (measured on the one-step LSTM cell: BLAS faster at 8
# rows, fc_gemm at 16 and more).
cdef enum:
    ONE_OFF_MIN_ROWS = 16


cdef inline void one_off(Py_ssize_t M, Py_ssize_t Nc, Py_ssize_t K, const floating *A,
                         Py_ssize_t lda, const floating *B, Py_ssize_t ldb, bint trans_b,
                         bint beta, floating *C, Py_ssize_t ldc) noexcept nogil:
    """C (M x Nc) = A (M x K) @ op(B) + beta * C, beta 0 or 1, for a product B is not packed
    for: from ONE_OFF_MIN_ROWS rows on by fastcells' own GEMM (fc_gemm), fewer by _blas.gemm
    (one row: a GEMV). fc_gemm packs op(B) on every call, which only pays for itself over
    enough rows; BLAS's GEMM wakes its thread pool for a product of more than 2^18
    multiply-adds (OpenBLAS), which then spins and takes a core from what runs next, whatever
    fastcells' thread setting (measured: a batch-of-one inference ~20% slower with it)."""
    if M >= ONE_OFF_MIN_ROWS:
        own_gemm(False, trans_b, M, Nc, K, A, lda, B, ldb, beta, C, ldc)
    else:
        gemm(False, trans_b, M, Nc, K, 1, A, lda, B, ldb, beta, C, ldc)


cdef inline void step_gemm(Py_ssize_t N, Py_ssize_t Nc, Py_ssize_t K, const floating *A,
                           Py_ssize_t lda, const floating *B, Py_ssize_t ldb, bint trans_b,
                           const floating *packed, bint beta, floating *C, Py_ssize_t ldc,
                           bint mirror) noexcept nogil:
    """A per-step recurrent product C (N x Nc) = A (N x K) @ op(B) + beta * C.

    With `packed` (op(B) packed once per call by _blas.pack) the packed GEMM, which does not
    re-pack B on every step; without (NULL: a batch of one, or a single step) one_off, or for
    one row and B as given _blas.gemv, mirrored as asked: the recurrent loops pass `mirror` on
    every other step (t & 1), so that a B larger than the L1 cache is read from where the
    previous step left off (fastcells.h, fc_gemv).
    """
    if packed != NULL:
        gemm_packed(N, Nc, K, A, lda, packed, beta, C, ldc)
    elif N == 1 and not trans_b:
        gemv(K, Nc, A, 1, B, ldb, beta, C, mirror)
    else:
        one_off(N, Nc, K, A, lda, B, ldb, trans_b, beta, C, ldc)


# ---- threads ------------------------------------------------------------------------------------
# A recurrent loop runs on a team of nth threads (fastcells.threads chooses nth; nth = 1 is the
# plain loop). Per step, the packed GEMM is split by column panels of its output and the
# pointwise pass by rows, with a barrier after each: every element is computed by one thread
# in the same order whatever nth is, so results do not depend on the number of threads.
cdef struct Team:
    int tid, nth


cdef inline Team solo() noexcept nogil:
    cdef Team tm
    tm.tid, tm.nth = 0, 1
    return tm


cdef inline void sync(Team tm) noexcept nogil:
    if tm.nth > 1:
        barrier(tm.nth)


cdef inline void rows(Team tm, Py_ssize_t N, Py_ssize_t *n0, Py_ssize_t *n1) noexcept nogil:
    """This thread's share [n0, n1) of N rows."""
    n0[0] = N * tm.tid // tm.nth
    n1[0] = N * (tm.tid + 1) // tm.nth


cdef extern from *:
    """
    /* the next block of work: a relaxed atomic counter (the pool orders the results) */
    static inline Py_ssize_t fc_claim(Py_ssize_t *next)
    {
        return __atomic_fetch_add(next, 1, __ATOMIC_RELAXED);
    }
    """
    Py_ssize_t fc_claim(Py_ssize_t *next) noexcept nogil


cdef inline Py_ssize_t row_blocks(Py_ssize_t N, int nth, bint by_rows) noexcept nogil:
    """Blocks of rows for a team split by sequences (claim_rows): nth or a multiple of it, of
    a register tile of rows (8, threads.ROWS_PER_THREAD) at least; 0 (no split) without
    by_rows or on one thread."""
    return nth * max(1, N // (8 * nth)) if by_rows and nth > 1 else 0


cdef inline bint claim_rows(Py_ssize_t *next_block, Py_ssize_t blocks, Py_ssize_t N,
                            Py_ssize_t *n0, Py_ssize_t *n1) noexcept nogil:
    """Claims the next of `blocks` blocks of N rows, [n0, n1), for this thread; False when
    none is left. The threads of a team share *next_block (0 at the start)."""
    cdef Py_ssize_t blk = fc_claim(next_block)
    if blk >= blocks:
        return False
    n0[0] = N * blk // blocks
    n1[0] = N * (blk + 1) // blocks
    return True


cdef inline const int64_t *lens_at(const int64_t *lengths, Py_ssize_t n0) noexcept nogil:
    """The lengths from sequence n0 on (NULL stays NULL): for a thread's rows."""
    return NULL if lengths == NULL else lengths + n0


cdef inline void panels(Team tm, floating dummy, Py_ssize_t K, Py_ssize_t Nc, Py_ssize_t *c0,
                        Py_ssize_t *c1, Py_ssize_t *offset) noexcept nogil:
    """This thread's columns [c0, c1) of an Nc-wide packed product, whole panels, and where
    their panels start in the packed buffer."""
    cdef Py_ssize_t NR = packed_size(dummy, 1, 1)  # the panel width
    cdef Py_ssize_t P = (Nc + NR - 1) // NR
    cdef Py_ssize_t p0 = P * tm.tid // tm.nth, p1 = P * (tm.tid + 1) // tm.nth
    c0[0] = min(Nc, p0 * NR)
    c1[0] = min(Nc, p1 * NR)
    offset[0] = p0 * NR * K


cdef inline void team_pack(Team tm, Py_ssize_t K, Py_ssize_t Nc, const floating *B,
                           Py_ssize_t ldb, bint trans, floating *packed) noexcept nogil:
    """pack (see _blas) by the whole team, each thread its own panels; no barrier."""
    cdef Py_ssize_t c0, c1, offset
    if packed == NULL:
        return
    panels(tm, <floating> 0, K, Nc, &c0, &c1, &offset)
    if c1 > c0:
        pack(K, c1 - c0, B + (c0 * ldb if trans else c0), ldb, trans, packed + offset)


cdef inline void team_gemm(Team tm, Py_ssize_t N, Py_ssize_t Nc, Py_ssize_t K,
                           const floating *A, Py_ssize_t lda, const floating *B,
                           Py_ssize_t ldb, bint trans_b, const floating *packed, bint beta,
                           floating *C, Py_ssize_t ldc, bint mirror) noexcept nogil:
    """step_gemm by the whole team: each thread its own column panels (a team of more than
    one thread always has `packed`, so `mirror` only matters to one); no barrier."""
    cdef Py_ssize_t c0, c1, offset
    if tm.nth == 1:
        step_gemm(N, Nc, K, A, lda, B, ldb, trans_b, packed, beta, C, ldc, mirror)
        return
    panels(tm, <floating> 0, K, Nc, &c0, &c1, &offset)
    if c1 > c0:
        gemm_packed(N, c1 - c0, K, A, lda, packed + offset, beta, C + c0, ldc)


cdef inline void colsum(Py_ssize_t rows, Py_ssize_t cols, const floating *A, Py_ssize_t lda,
                        floating *out) noexcept nogil:
    """out = A.sum(axis=0) for a (rows, cols) matrix with row stride lda."""
    if floating is float:
        fc_colsum_f32(rows, cols, A, lda, out)
    else:
        fc_colsum_f64(rows, cols, A, lda, out)


cdef inline void team_own_gemm(Team tm, bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t Nc,
                               Py_ssize_t K, const floating *A, Py_ssize_t lda,
                               const floating *B, Py_ssize_t ldb, floating *C,
                               Py_ssize_t ldc) noexcept nogil:
    """C = op(A) @ op(B) (own_gemm) by the whole team: each thread its own column panels, or,
    for a product narrower than two panels a thread, its own rows; no barrier. Every element is
    summed in the same order whatever the split (fc_gemm), so the bits do not depend on nth."""
    cdef Py_ssize_t c0, c1, offset, r0, r1
    cdef Py_ssize_t NR = packed_size(<floating> 0, 1, 1)
    if tm.nth == 1 or M == 0 or Nc == 0 or K == 0:  # (an empty product: zeros, by one thread)
        if tm.tid == 0:
            own_gemm(trans_a, trans_b, M, Nc, K, A, lda, B, ldb, 0, C, ldc)
    elif Nc >= 2 * NR * tm.nth:
        panels(tm, <floating> 0, K, Nc, &c0, &c1, &offset)
        if c1 > c0:
            own_gemm(trans_a, trans_b, M, c1 - c0, K, A, lda, B + (c0 * ldb if trans_b else c0),
                     ldb, 0, C + c0, ldc)
    else:
        rows(tm, M, &r0, &r1)
        if r1 > r0:
            own_gemm(trans_a, trans_b, r1 - r0, Nc, K, A + (r0 if trans_a else r0 * lda), lda,
                     B, ldb, 0, C + r0 * ldc, ldc)


cdef inline void team_weight_grads(Team tm, Py_ssize_t NT, Py_ssize_t Nc, Py_ssize_t D,
                                   const floating *X, Py_ssize_t H, const floating *hp,
                                   const floating *dA, Py_ssize_t ld_dA, floating *dWx,
                                   floating *dWh) noexcept nogil:
    """dWx (D, Nc) = Xᵀ @ dA and dWh (H, Nc) = Hpᵀ @ dA for X (NT, D), Hp (NT, H), dA (NT, Nc):
    team_own_gemm's bits. Split by column panels, each thread packs its block of dA once for
    both products (measured at (NT, D, H) = (800, 64, 128), cold caches: 1.78 -> 1.65 ms);
    a product too narrow for that is split by rows, one product after the other."""
    cdef Py_ssize_t c0, c1, offset
    cdef Py_ssize_t NR = packed_size(<floating> 0, 1, 1)
    if tm.nth == 1:
        if tm.tid == 0:
            own_gemm_tn2(D, X, D, dWx, Nc, H, hp, H, dWh, Nc, Nc, NT, dA, ld_dA)
    elif Nc >= 2 * NR * tm.nth and NT > 0:
        panels(tm, <floating> 0, NT, Nc, &c0, &c1, &offset)
        if c1 > c0:
            own_gemm_tn2(D, X, D, dWx + c0, Nc, H, hp, H, dWh + c0, Nc, c1 - c0, NT, dA + c0,
                         ld_dA)
    else:
        team_own_gemm(tm, True, False, D, Nc, NT, X, D, dA, ld_dA, dWx, Nc)
        team_own_gemm(tm, True, False, H, Nc, NT, hp, H, dA, ld_dA, dWh, Nc)


cdef inline void team_colsum(Team tm, Py_ssize_t rows_, Py_ssize_t cols, const floating *A,
                             Py_ssize_t lda, floating *out) noexcept nogil:
    """colsum by the whole team, each thread its own columns; no barrier."""
    cdef Py_ssize_t c0, c1
    rows(tm, cols, &c0, &c1)
    if c1 > c0:
        colsum(rows_, c1 - c0, A + c0, lda, out + c0)


cdef inline void project_sequences(Layout L, const floating *X, Py_ssize_t D, Py_ssize_t t0,
                                   Py_ssize_t t1, Py_ssize_t n0, Py_ssize_t n1,
                                   const floating *W, Py_ssize_t GW, floating *P,
                                   Py_ssize_t p_step, Py_ssize_t p_row,
                                   const floating *Wp) noexcept nogil:
    """P[(t - t0)*p_step + n*p_row, :GW] = X[row(n, t)] @ W  for t in [t0, t1) and the
    sequences n0 <= n < n1 (all of them, or a thread's share), one GEMM per sequence in either
    layout: packed (Wp: W packed by the caller) when given, so that W is not packed again for
    each of them."""
    cdef Py_ssize_t n
    for n in range(n0, n1):
        # P[:, n] = X[n, t0:t1] @ W
        step_gemm(t1 - t0, GW, D, X + (n * L.ns + t0 * L.ts) * D, L.ts * D, W, GW, False,
                  Wp, 0, P + n * p_row, p_step, False)


cdef inline void project(Layout L, const floating *X, Py_ssize_t D, Py_ssize_t t0,
                         Py_ssize_t t1, const floating *W, Py_ssize_t GW,
                         floating *P, Py_ssize_t p_step, Py_ssize_t p_row,
                         const floating *Wp=NULL) noexcept nogil:
    """P[(t - t0)*p_step + n*p_row, :GW] = X[row(n, t)] @ W  for t in [t0, t1), every n.

    One GEMM when the rows of X and of P line up with one stride (time-major input, or all
    steps of a batch-first input into a buffer of the same layout); otherwise one per sequence
    (project_sequences).
    With W packed (Wp, by the caller, once per call: inference), the per-sequence products and
    the time-major one are packed GEMMs (no re-packing of W per sequence, and the same rounding
    as project_sequences on a team); otherwise one_off.
    """
    if L.ts == L.N and p_step == L.N * p_row:  # time-major rows t0*N .. t1*N, in order
        # P = X[t0*N:t1*N] @ W  (with Wp the packed GEMM, whose rows come out exactly as from
        # project_sequences: inference gives the same bits on any number of threads)
        if Wp != NULL:
            gemm_packed((t1 - t0) * L.N, GW, D, X + t0 * L.N * D, D, Wp, 0, P, p_row)
        else:
            one_off((t1 - t0) * L.N, GW, D, X + t0 * L.N * D, D, W, GW, False, 0, P, p_row)
    elif L.ns == L.T and t0 == 0 and t1 == L.T and p_row == L.T * p_step:
        # P = X @ W  (batch-first, whole sequences)
        one_off(L.N * L.T, GW, D, X, D, W, GW, False, 0, P, p_step)
    else:
        project_sequences(L, X, D, t0, t1, 0, L.N, W, GW, P, p_step, p_row, Wp)


cdef inline Py_ssize_t rev_pos(Layout L, const int64_t *lens, Py_ssize_t n,
                               Py_ssize_t t) noexcept nogil:
    """The position that processing step t of sequence n reads and writes with reverse=True."""
    cdef Py_ssize_t length = L.T if lens == NULL else lens[n]
    return length - 1 - t if t < length else t


cdef inline void project_reversed(Layout L, const floating *X, Py_ssize_t D,
                                  const int64_t *lens, Py_ssize_t t0, Py_ssize_t t1,
                                  const floating *W, Py_ssize_t GW, floating *Xr,
                                  floating *P) noexcept nogil:
    """P[(t - t0)*N + n, :GW] = X[row(n, rev_pos(n, t))] @ W  for t in [t0, t1), every n.

    The rows are first gathered into Xr ((t1 - t0)*N, D) in processing order, so that the
    product is one GEMM whatever the layout and the lengths.
    """
    cdef Py_ssize_t N = L.N, t, n
    if D > 0:  # (a zero-width X has no element to copy; the GEMM then writes zeros)
        for t in range(t0, t1):
            for n in range(N):
                # Xr[(t - t0)*N + n] = X[row(n, rev_pos(n, t))]
                memcpy(Xr + ((t - t0) * N + n) * D,
                       X + (rev_pos(L, lens, n, t) * L.ts + n * L.ns) * D,
                       D * sizeof(floating))
    # P = Xr @ W
    one_off((t1 - t0) * N, GW, D, Xr, D, W, GW, False, 0, P, GW)


cdef inline void project_chunk(Layout L, const floating *X, Py_ssize_t D, bint reverse,
                               const int64_t *lens, Py_ssize_t t0, Py_ssize_t t1,
                               const floating *W, Py_ssize_t GW, floating *Xr, floating *P,
                               const floating *Wp) noexcept nogil:
    """Inference on one thread: the input projection of the steps [t0, t1) into P
    ((t1 - t0)*N, GW), in processing order."""
    if reverse:
        # P[t - t0] = X[:, rev_pos(:, t)] @ W  (gathered through Xr)
        project_reversed(L, X, D, lens, t0, t1, W, GW, Xr, P)
    else:
        # P[t - t0] = X[:, t] @ W
        project(L, X, D, t0, t1, W, GW, P, L.N * GW, GW, Wp)


# ---- a batch of one on a team: split by hidden units ----------------------------------------
# With N = 1 there are no rows to share and the per-step product is one row (a GEMV, which
# streams all of Wh from cache every step). Instead each thread takes whole blocks of
# UNIT_BLOCK hidden units: it copies its units' columns of every gate block of Wh, side by
# side, into a contiguous slice of its own (which stays in its own core's caches: each core
# streams 1/nth of Wh per step instead of one core all of it), and per step computes its units'
# gate sums (fc_gemv on that slice, each column summed exactly as by the one-thread GEMV),
# their pointwise pass and its units of h_t, into the other of two h buffers: one barrier per
# step, after which every thread reads all of h_t. A unit's numbers are those of one thread,
# whatever the split.
cdef enum:
    UNIT_BLOCK = 16


cdef inline void unit_range(Team tm, Py_ssize_t H, Py_ssize_t *u0, Py_ssize_t *u1) noexcept nogil:
    """This thread's hidden units [u0, u1): whole blocks of UNIT_BLOCK (the last may be short)."""
    cdef Py_ssize_t B = (H + UNIT_BLOCK - 1) // UNIT_BLOCK
    u0[0] = min(H, UNIT_BLOCK * (B * tm.tid // tm.nth))
    u1[0] = min(H, UNIT_BLOCK * (B * (tm.tid + 1) // tm.nth))


cdef inline void gather_units(Py_ssize_t rows, Py_ssize_t G, Py_ssize_t H, Py_ssize_t u0,
                              Py_ssize_t u1, const floating *src, Py_ssize_t lds,
                              floating *dst) noexcept nogil:
    """dst (rows x G*(u1 - u0), contiguous) = columns [g*H + u0, g*H + u1) of each of the G
    blocks of src (rows x G*H, row stride lds), side by side."""
    cdef Py_ssize_t Hu = u1 - u0, r, g
    if Hu > 0:
        for r in range(rows):
            for g in range(G):
                memcpy(dst + (r * G + g) * Hu, src + r * lds + g * H + u0, Hu * sizeof(floating))


cdef inline void project_units(Team tm, Layout L, const floating *X, Py_ssize_t D, Py_ssize_t t0,
                               Py_ssize_t t1, const floating *W, Py_ssize_t G, Py_ssize_t H,
                               Py_ssize_t u0, Py_ssize_t u1, floating *P) noexcept nogil:
    """The input projection of steps [t0, t1) of a batch of one into P ((t1 - t0), G*H), as
    project_chunk computes it on one thread: from ONE_OFF_MIN_ROWS steps on, fc_gemm (which sums
    every element alike whatever columns it is given), so each thread projects its own units'
    columns; fewer steps go to BLAS, whose rounding may depend on the columns, so thread 0 does
    all of them. A barrier follows."""
    cdef Py_ssize_t g, GH = G * H
    if t1 - t0 >= ONE_OFF_MIN_ROWS:
        if u1 > u0:
            for g in range(G):
                own_gemm(False, False, t1 - t0, u1 - u0, D, X + t0 * L.ts * D, L.ts * D,
                         W + g * H + u0, GH, 0, P + g * H + u0, GH)
    elif tm.tid == 0:
        project(L, X, D, t0, t1, W, GH, P, GH, GH)
    sync(tm)


cdef inline void units_next(Team tm, floating **h_cur, floating **h_next) noexcept nogil:
    """The end of a step of the units split: the barrier, then the two h buffers trade roles
    (h_t is the state the next step reads)."""
    cdef floating *swap = h_cur[0]
    sync(tm)
    h_cur[0] = h_next[0]
    h_next[0] = swap


cdef inline void units_done(floating *h, const floating *h_cur, Py_ssize_t u0,
                            Py_ssize_t u1) noexcept nogil:
    """After the last step: this thread's units of h_T into h, if h_T is in the other buffer."""
    if h_cur != h and u1 > u0:
        memcpy(h + u0, h_cur + u0, (u1 - u0) * sizeof(floating))


cdef inline void scatter_reversed(Layout L, const floating *Ys, Py_ssize_t H,
                                  const int64_t *lens, Py_ssize_t t,
                                  floating *Y) noexcept nogil:
    """Y[row(n, rev_pos(n, t))] = Ys[n] for every n: step t's outputs (N, H) into place."""
    cdef Py_ssize_t n
    for n in range(L.N):
        memcpy(Y + (rev_pos(L, lens, n, t) * L.ts + n * L.ns) * H, Ys + n * H,
               H * sizeof(floating))


# Pointers to the first element (NULL when empty: a zero-width X has no element, and no
# product reads it).
cdef inline floating *ptr(floating[:, ::1] a) noexcept nogil:
    return NULL if a.shape[0] == 0 or a.shape[1] == 0 else &a[0, 0]


cdef inline const floating *cptr(const floating[:, ::1] a) noexcept nogil:
    return NULL if a.shape[0] == 0 or a.shape[1] == 0 else &a[0, 0]


cdef inline floating *packed_or_null(floating[::1] buffer) noexcept nogil:
    """The packed-weights work buffer, or NULL when the caller gave none (size 0)."""
    return NULL if buffer.shape[0] == 0 else &buffer[0]


cdef inline void *data(cnp.ndarray a) noexcept:
    """An ndarray's data pointer (for the one-step cells, whose callers checked the array)."""
    return cnp.PyArray_DATA(a)
