# The one BLAS shim of fastcells (after scikit-learn's sklearn/utils/_cython_blas): a row-major
# GEMM over scipy.linalg.cython_blas, sgemm or dgemm chosen by the fused type, callable without
# the GIL. Sizes are Py_ssize_t here and SciPy's BLAS int (32-bit) below; the Python layer
# rejects arrays whose sizes do not fit (fastcells._validate).
#
# Beside it, the packed GEMM of csrc/fc_gemm_impl.h for the per-step recurrent products: pack
# the recurrent weights once per call (pack), then C = A @ B + beta*C per step (gemm_packed)
# without BLAS re-packing B on every call.
from cython cimport floating

from ._csrc cimport fc_task

cdef void gemm(bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
               floating alpha, const floating *A, Py_ssize_t lda,
               const floating *B, Py_ssize_t ldb,
               floating beta, floating *C, Py_ssize_t ldc) noexcept nogil

# One row, y = x @ W + beta*y (beta 0 or 1), by csrc's fc_gemv; `mirror` sums from the last row
# (the recurrent loops mirror every other step: see fastcells.h).
cdef void gemv(Py_ssize_t K, Py_ssize_t N, const floating *x, Py_ssize_t incx,
               const floating *W, Py_ssize_t ldw, bint beta, floating *y,
               bint mirror) noexcept nogil

cdef Py_ssize_t packed_size(floating dummy, Py_ssize_t K, Py_ssize_t Nc) noexcept nogil
cdef void pack(Py_ssize_t K, Py_ssize_t Nc, const floating *B, Py_ssize_t ldb, bint trans,
               floating *packed) noexcept nogil
cdef void gemm_packed(Py_ssize_t M, Py_ssize_t Nc, Py_ssize_t K, const floating *A,
                      Py_ssize_t lda, const floating *packed, bint beta, floating *C,
                      Py_ssize_t ldc) noexcept nogil
# ... and for the one-off products of training (projection, weight and input gradients), the
# same micro-kernel with B packed block by block (own_gemm): no BLAS thread pool in training,
# and a product split among fastcells' threads gives the same bits as on one.
cdef void own_gemm(bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                   const floating *A, Py_ssize_t lda, const floating *B, Py_ssize_t ldb,
                   bint beta, floating *C, Py_ssize_t ldc) noexcept nogil

# Two weight gradients at once, C1 = A1ᵀ @ B and C2 = A2ᵀ @ B, B packed once for both.
cdef void own_gemm_tn2(Py_ssize_t M1, const floating *A1, Py_ssize_t lda1, floating *C1,
                       Py_ssize_t ldc1, Py_ssize_t M2, const floating *A2, Py_ssize_t lda2,
                       floating *C2, Py_ssize_t ldc2, Py_ssize_t N, Py_ssize_t K,
                       const floating *B, Py_ssize_t ldb) noexcept nogil

# The recurrent loops' threads (csrc/fc_pool.c, one pool in the process): parallel runs
# task(ctx, tid, nth) on nth threads at once (fewer, down to the caller alone, when the pool
# is busy or its workers are late) and returns the number used; barrier(nth) inside a task
# waits for all of them. `macs`, the run's multiply-adds, sets how long it waits for sleeping
# workers (fc_parallel's patience; see parallel in _blas.pyx).
cdef int parallel(int nth, fc_task task, void *ctx, double macs) noexcept nogil
cdef void barrier(int nth) noexcept nogil
