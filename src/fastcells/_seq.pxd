# Sequence plumbing shared by the cell kernels (_lstm, _gru, _rnn): where a (sequence, step) row
# lives in a batch-first or time-major array, the input projection, and typed pointers.
#
# A sequence array of width W is stored as an (N*T, W) C-contiguous matrix whose row of sequence
# n at step t is  t*ts + n*ns  (time-major: ts = N, ns = 1; batch-first: ts = 1, ns = T). So the
# N rows of step t start at element t*ts*W and lie ns*W elements apart: one pointer and one
# leading dimension describe them, for BLAS and for the pointwise C passes alike.
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
from ._blas cimport gemm, gemm_packed
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


cdef inline void step_gemm(Py_ssize_t N, Py_ssize_t Nc, Py_ssize_t K, const floating *A,
                           Py_ssize_t lda, const floating *B, Py_ssize_t ldb, bint trans_b,
                           const floating *packed, bint beta, floating *C,
                           Py_ssize_t ldc) noexcept nogil:
    """A per-step recurrent product C (N x Nc) = A (N x K) @ op(B) + beta * C.

    With `packed` (op(B) packed once per call by _blas.pack) the packed GEMM, which does not
    re-pack B on every step as BLAS does; without (NULL: a batch of one, or a single step)
    BLAS, whose GEMV serves the one-row case (see _blas.gemm).
    """
    if packed != NULL:
        gemm_packed(N, Nc, K, A, lda, packed, beta, C, ldc)
    else:
        gemm(False, trans_b, N, Nc, K, 1, A, lda, B, ldb, beta, C, ldc)


cdef inline void project(Layout L, const floating *X, Py_ssize_t D, Py_ssize_t t0,
                         Py_ssize_t t1, const floating *W, Py_ssize_t GW,
                         floating *P, Py_ssize_t p_step, Py_ssize_t p_row,
                         const floating *Wp=NULL) noexcept nogil:
    """P[(t - t0)*p_step + n*p_row, :GW] = X[row(n, t)] @ W  for t in [t0, t1), every n.

    One GEMM when the rows of X and of P line up with one stride (time-major input, or all
    steps of a batch-first input into a buffer of the same layout); otherwise one per sequence,
    with W packed (Wp, by the caller, once per call) when given, so that BLAS does not re-pack
    W for each of them.
    """
    cdef Py_ssize_t n
    if L.ts == L.N and p_step == L.N * p_row:  # time-major rows t0*N .. t1*N, in order
        # P = X[t0*N:t1*N] @ W
        gemm(False, False, (t1 - t0) * L.N, GW, D, 1, X + t0 * L.N * D, D, W, GW,
             0, P, p_row)
    elif L.ns == L.T and t0 == 0 and t1 == L.T and p_row == L.T * p_step:
        # P = X @ W  (batch-first, whole sequences)
        gemm(False, False, L.N * L.T, GW, D, 1, X, D, W, GW, 0, P, p_step)
    else:
        for n in range(L.N):
            # P[:, n] = X[n, t0:t1] @ W
            step_gemm(t1 - t0, GW, D, X + (n * L.ns + t0 * L.ts) * D, L.ts * D, W, GW, False,
                      Wp, 0, P + n * p_row, p_step)


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
    gemm(False, False, (t1 - t0) * N, GW, D, 1, Xr, D, W, GW, 0, P, GW)


cdef inline void scatter_reversed(Layout L, const floating *Ys, Py_ssize_t H,
                                  const int64_t *lens, Py_ssize_t t,
                                  floating *Y) noexcept nogil:
    """Y[row(n, rev_pos(n, t))] = Ys[n] for every n: step t's outputs (N, H) into place."""
    cdef Py_ssize_t n
    for n in range(L.N):
        memcpy(Y + (rev_pos(L, lens, n, t) * L.ts + n * L.ns) * H, Ys + n * H,
               H * sizeof(floating))


cdef inline void colsum(Py_ssize_t rows, Py_ssize_t cols, const floating *A, Py_ssize_t lda,
                        floating *out) noexcept nogil:
    """out = A.sum(axis=0) for a (rows, cols) matrix with row stride lda."""
    if floating is float:
        fc_colsum_f32(rows, cols, A, lda, out)
    else:
        fc_colsum_f64(rows, cols, A, lda, out)


# Pointers to the first element (NULL when empty: a zero-width X has no element, and BLAS
# is then not called with it).
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
