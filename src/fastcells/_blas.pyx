"""Row-major GEMM over SciPy's BLAS, for the kernels (and a Python hook for its tests)."""
cimport numpy as cnp
from cython cimport floating
from scipy.linalg.cython_blas cimport dgemm, dgemv, sgemm, sgemv

from ._csrc cimport fc_barrier, fc_parallel, fc_pool_limit, fc_pool_ready, fc_pool_stats
from ._csrc cimport fc_round_trip_ns, fc_task
from ._csrc cimport fc_gemm_f32, fc_gemm_f64, fc_gemm_rows, fc_pack_f32
from ._csrc cimport fc_gemm_packed_f32, fc_gemm_packed_f64, fc_gemm_tn2_f32, fc_gemm_tn2_f64
from ._csrc cimport fc_gemv_f32, fc_gemv_f64, fc_pack_f64, fc_packed_size_f32
from ._csrc cimport fc_packed_size_f64

cnp.import_array()


cdef void gemm(bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
               floating alpha, const floating *A, Py_ssize_t lda,
               const floating *B, Py_ssize_t ldb,
               floating beta, floating *C, Py_ssize_t ldc) noexcept nogil:
    """C = alpha * op(A) @ op(B) + beta * C, all row-major with row strides lda, ldb, ldc.

    op(A) is (M, K): A is stored (M, K), or (K, M) when trans_a; likewise op(B) is (K, N).
    BLAS is column-major, so this computes Cᵀ = op(B)ᵀ op(A)ᵀ: the operands swap places and the
    transposes stay as they are. K == 0 gives C = beta * C (BLAS would need valid pointers).
    M == 1 (one row, e.g. a batch of one) is a matrix-vector product: fc_gemv for a @ B (faster
    than BLAS's GEMV at the cells' sizes), BLAS's GEMV otherwise (faster than a one-row GEMM).
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef int m = <int> M, n = <int> N, k = <int> K
    cdef int la = <int> lda, lb = <int> ldb, lc = <int> ldc
    cdef Py_ssize_t i, j
    if M == 0 or N == 0:
        return
    if K == 0:  # an empty sum: C = beta * C
        for i in range(M):
            for j in range(N):
                C[i * ldc + j] = 0 if beta == 0 else beta * C[i * ldc + j]
        return
    cdef int inc_a = la if trans_a else 1, one = 1
    cdef char tv
    cdef int rows, cols
    if M == 1 and not trans_b and alpha == 1 and (beta == 0 or beta == 1):
        # c = a @ B + beta * c, a = op(A)[0] (stride inc_a): our own GEMV (see fastcells.h)
        gemv(K, N, A, inc_a, B, ldb, beta == 1, C, False)
        return
    if M == 1:
        # c = a @ op(B) with a = op(A)[0] (stride inc_a): c = op(B)ᵀ a. Seen column-major, B
        # is op(B)ᵀ (N x K) when not trans_b, op(B) (K x N) when trans_b.
        tv = b'T' if trans_b else b'N'
        rows = k if trans_b else n
        cols = n if trans_b else k
        if floating is float:
            sgemv(&tv, &rows, &cols, &alpha, <float *> B, &lb, <float *> A, &inc_a, &beta,
                  C, &one)
        else:
            dgemv(&tv, &rows, &cols, &alpha, <double *> B, &lb, <double *> A, &inc_a, &beta,
                  C, &one)
        return
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float *> B, &lb, <float *> A, &la, &beta, C, &lc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *> B, &lb, <double *> A, &la, &beta, C, &lc)


cdef void gemv(Py_ssize_t K, Py_ssize_t N, const floating *x, Py_ssize_t incx,
               const floating *W, Py_ssize_t ldw, bint beta, floating *y,
               bint mirror) noexcept nogil:
    """y = x @ W + beta * y (beta 0 or 1) for x (K,) with stride incx, W (K, N) with row stride
    ldw: fc_gemv, each column summed from k = 0 up, or from K-1 down with `mirror`."""
    if floating is float:
        fc_gemv_f32(K, N, x, incx, W, ldw, beta, y, mirror)
    else:
        fc_gemv_f64(K, N, x, incx, W, ldw, beta, y, mirror)


cdef Py_ssize_t packed_size(floating dummy, Py_ssize_t K, Py_ssize_t Nc) noexcept nogil:
    """Elements of the packed form of a (K x Nc) B (`dummy` only selects the dtype)."""
    if floating is float:
        return fc_packed_size_f32(K, Nc)
    else:
        return fc_packed_size_f64(K, Nc)


cdef void pack(Py_ssize_t K, Py_ssize_t Nc, const floating *B, Py_ssize_t ldb, bint trans,
               floating *packed) noexcept nogil:
    """Pack B (K x Nc, row stride ldb; with trans, Bᵀ is given: (Nc x K)) for gemm_packed."""
    if floating is float:
        fc_pack_f32(K, Nc, B, ldb, trans, packed)
    else:
        fc_pack_f64(K, Nc, B, ldb, trans, packed)


cdef void gemm_packed(Py_ssize_t M, Py_ssize_t Nc, Py_ssize_t K, const floating *A,
                      Py_ssize_t lda, const floating *packed, bint beta, floating *C,
                      Py_ssize_t ldc) noexcept nogil:
    """C = A @ B + beta * C (beta 0 or 1) with B packed by `pack`."""
    if floating is float:
        fc_gemm_packed_f32(M, Nc, K, A, lda, packed, beta, C, ldc)
    else:
        fc_gemm_packed_f64(M, Nc, K, A, lda, packed, beta, C, ldc)


cdef void own_gemm(bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                   const floating *A, Py_ssize_t lda, const floating *B, Py_ssize_t ldb,
                   bint beta, floating *C, Py_ssize_t ldc) noexcept nogil:
    """C = op(A) @ op(B) + beta * C (beta 0 or 1), row-major as for gemm, by csrc's fc_gemm."""
    if M == 0 or N == 0:
        return
    if floating is float:
        fc_gemm_f32(trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc)
    else:
        fc_gemm_f64(trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc)


cdef void own_gemm_tn2(Py_ssize_t M1, const floating *A1, Py_ssize_t lda1, floating *C1,
                       Py_ssize_t ldc1, Py_ssize_t M2, const floating *A2, Py_ssize_t lda2,
                       floating *C2, Py_ssize_t ldc2, Py_ssize_t N, Py_ssize_t K,
                       const floating *B, Py_ssize_t ldb) noexcept nogil:
    """C1 = A1ᵀ @ B and C2 = A2ᵀ @ B (own_gemm's bits), B packed once for both."""
    if N == 0:
        return
    if floating is float:
        fc_gemm_tn2_f32(M1, A1, lda1, C1, ldc1, M2, A2, lda2, C2, ldc2, N, K, B, ldb)
    else:
        fc_gemm_tn2_f64(M1, A1, lda1, C1, ldc1, M2, A2, lda2, C2, ldc2, N, K, B, ldb)


# A run waits for workers that sleep (idle over 1 ms, see csrc/fc_pool.c) for at most
# 1/PATIENCE_SHARE of the time it would take on one thread, estimated from its multiply-adds at
# PATIENCE_MACS_PER_NS (one core here runs the float32 loops at 40-50 a ns; run_macs counts a
# float64 one twice). A worker that comes within that still leaves a run split in two no
# slower than on one thread; a run whose workers do not come goes on with those that did (often
# the caller alone) after waiting half its time at most, plus the wake-up call (10-50 us here).
# A short run, whose patience could not cover a wake-up, does not wake sleeping workers unless
# runs come back to back (fc_parallel).
cdef enum:
    PATIENCE_MACS_PER_NS = 40
    PATIENCE_SHARE = 2


cdef inline long long patience_ns(double macs) noexcept nogil:
    cdef double ns = macs / (PATIENCE_SHARE * PATIENCE_MACS_PER_NS)
    return <long long> (ns if ns < 1e12 else 1e12)


cdef int parallel(int nth, fc_task task, void *ctx, double macs) noexcept nogil:
    return fc_parallel(nth, task, ctx, patience_ns(macs))


def _pool_ready(double macs):
    """Whether a run of `macs` multiply-adds (float32; float64 counts twice), started now, would
    find the pool's workers: some are awake, or its patience would wake them (fc_pool_ready;
    the second of two cold calls within 1 ms wakes them for the calls after it)."""
    return fc_pool_ready(patience_ns(macs)) != 0


cdef void barrier(int nth) noexcept nogil:
    fc_barrier(nth)


def _round_trip_ns(int trips):
    """The round trip of a cache line between this thread and a worker of the pool, in ns
    (fc_round_trip_ns: the median of bursts' means); -1 when no worker can run, or none comes
    within 0.2 ms and then 1 ms more on a second try."""
    cdef long long ns
    with nogil:
        ns = fc_round_trip_ns(trips)
    return ns


def _pool_stats():
    """(workers, sleeping, wakes, short_runs): the pool's workers, how many of them sleep, how
    many times they were woken (by a run or _pool_ready), and how many runs went on with fewer
    workers than they asked for (fc_pool_stats), for the tests and for measuring."""
    cdef int workers, sleeping
    cdef long long wakes, short_runs
    fc_pool_stats(&workers, &sleeping, &wakes, &short_runs)
    return workers, sleeping, wakes, short_runs


def _pool_limit(int max_workers):
    """Every run from now on takes at most max_workers workers (-1: no limit), for the tests
    of tasks on teams smaller than asked for (fc_pool_limit)."""
    fc_pool_limit(max_workers)


cdef enum:
    PROBE_MAX = 64


cdef struct TeamProbe:
    int runs[PROBE_MAX]  # how many times each thread id ran the task
    int team[PROBE_MAX]  # the team size each one was told
    int met[PROBE_MAX]   # how many had arrived when it left the barrier


cdef void probe_task(void *ctx, int tid, int nth) noexcept nogil:
    cdef TeamProbe *p = <TeamProbe *> ctx
    cdef int k, n = 0
    p.runs[tid] += 1
    p.team[tid] = nth
    barrier(nth)
    for k in range(nth):
        n += p.runs[k]
    p.met[tid] = n
    barrier(nth)  # nobody leaves (and the probe goes) before all have counted


def _team_probe(int nth, long long patience_ns):
    """Run a probe task through fc_parallel(nth, ..., patience_ns), for the tests: returns
    (team, runs, team_seen, met), the team size it returned and, per thread id up to nth, how
    many times that id ran, the team size it was given and how many runs it saw after the
    barrier."""
    if not 1 <= nth <= PROBE_MAX:
        raise ValueError(f"_team_probe: nth must be in [1, {PROBE_MAX}], got {nth}")
    cdef TeamProbe p
    cdef int team, k
    for k in range(PROBE_MAX):
        p.runs[k] = p.team[k] = p.met[k] = 0
    with nogil:
        team = fc_parallel(nth, probe_task, &p, patience_ns)
    return (team, [p.runs[k] for k in range(nth)], [p.team[k] for k in range(nth)],
            [p.met[k] for k in range(nth)])


def _misalignment(cnp.ndarray a):
    """The address of a's data modulo 64, in bytes (for _common.aligned_empty: a.ctypes.data
    costs microseconds)."""
    return <Py_ssize_t> (<size_t> cnp.PyArray_DATA(a) % 64)


def _address(cnp.ndarray a):
    """The address of a's data (for _common's pool: a.ctypes.data costs microseconds)."""
    return <size_t> cnp.PyArray_DATA(a)


def _packed_size(dtype, Py_ssize_t K, Py_ssize_t Nc):
    """Elements of the packed form of a (K x Nc) matrix of `dtype` (for the callers' buffers)."""
    import numpy as np
    return packed_size(<float> 0, K, Nc) if np.dtype(dtype) == np.float32 else \
        packed_size(<double> 0, K, Nc)


def _gemm_rows():
    """The register tile's rows the packed GEMM uses on this CPU (8 with AVX-512)."""
    return fc_gemm_rows()


def _gemm_packed(const floating[:, ::1] A, const floating[:, ::1] B, floating[:, ::1] C,
                 bint trans_b, bint beta, floating[::1] work, bint do_pack=True):
    """Test hook: C[...] = A @ op(B) + beta * C through pack + gemm_packed (shapes trusted;
    work has _packed_size elements; do_pack=False reuses what work holds, for timing)."""
    cdef Py_ssize_t M = C.shape[0], Nc = C.shape[1], K = A.shape[1]
    cdef const floating *b = NULL if B.size == 0 else &B[0, 0]
    cdef const floating *a = NULL if A.size == 0 else &A[0, 0]
    if C.size == 0:
        return
    with nogil:
        if do_pack:
            pack(K, Nc, b, B.shape[1], trans_b, &work[0])
        gemm_packed(M, Nc, K, a, A.shape[1], &work[0], beta, &C[0, 0], C.shape[1])


def _gemm(const floating[:, ::1] A, const floating[:, ::1] B, floating[:, ::1] C,
          bint trans_a, bint trans_b, floating alpha, floating beta):
    """Test hook: C[...] = alpha * op(A) @ op(B) + beta * C through the shim (shapes trusted)."""
    cdef Py_ssize_t M = C.shape[0], N = C.shape[1]
    cdef Py_ssize_t K = A.shape[0] if trans_a else A.shape[1]
    cdef const floating *a = NULL if A.size == 0 else &A[0, 0]
    cdef const floating *b = NULL if B.size == 0 else &B[0, 0]
    if C.size == 0:
        return
    with nogil:
        gemm(trans_a, trans_b, M, N, K, alpha, a, max(1, A.shape[1]), b, max(1, B.shape[1]),
             beta, &C[0, 0], C.shape[1])


def _gemv(const floating[::1] x, const floating[:, ::1] W, floating[::1] y, bint beta,
          bint mirror):
    """Test hook: y[...] = x @ W + beta * y through gemv (shapes trusted)."""
    cdef const floating *xp = NULL if x.size == 0 else &x[0]
    cdef const floating *w = NULL if W.size == 0 else &W[0, 0]
    if y.size == 0:
        return
    with nogil:
        gemv(W.shape[0], W.shape[1], xp, 1, w, W.shape[1], beta, &y[0], mirror)


def _own_gemm_tn2(const floating[:, ::1] A1, const floating[:, ::1] A2,
                  const floating[:, ::1] B, floating[:, ::1] C1, floating[:, ::1] C2):
    """Test hook: C1[...] = A1ᵀ @ B, C2[...] = A2ᵀ @ B through own_gemm_tn2 (shapes trusted)."""
    cdef Py_ssize_t M1 = C1.shape[0], M2 = C2.shape[0], N = C1.shape[1], K = B.shape[0]
    cdef const floating *a1 = NULL if A1.size == 0 else &A1[0, 0]
    cdef const floating *a2 = NULL if A2.size == 0 else &A2[0, 0]
    cdef const floating *b = NULL if B.size == 0 else &B[0, 0]
    cdef floating *c1 = NULL if C1.size == 0 else &C1[0, 0]
    cdef floating *c2 = NULL if C2.size == 0 else &C2[0, 0]
    with nogil:
        own_gemm_tn2(M1, a1, max(1, A1.shape[1]), c1, N, M2, a2, max(1, A2.shape[1]), c2, N, N,
                     K, b, max(1, B.shape[1]))


def _own_gemm(const floating[:, ::1] A, const floating[:, ::1] B, floating[:, ::1] C,
              bint trans_a, bint trans_b, bint beta):
    """Test hook: C[...] = op(A) @ op(B) + beta * C through own_gemm (shapes trusted)."""
    cdef Py_ssize_t M = C.shape[0], N = C.shape[1]
    cdef Py_ssize_t K = A.shape[0] if trans_a else A.shape[1]
    cdef const floating *a = NULL if A.size == 0 else &A[0, 0]
    cdef const floating *b = NULL if B.size == 0 else &B[0, 0]
    if C.size == 0:
        return
    with nogil:
        own_gemm(trans_a, trans_b, M, N, K, a, max(1, A.shape[1]), b, max(1, B.shape[1]), beta,
                 &C[0, 0], C.shape[1])
