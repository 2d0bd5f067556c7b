# The one BLAS shim of fastcells (after scikit-learn's sklearn/utils/_cython_blas): a row-major
# GEMM over scipy.linalg.cython_blas, sgemm or dgemm chosen by the fused type, callable without
# the GIL. Sizes are Py_ssize_t here and SciPy's BLAS int (32-bit) below; the Python layer
# rejects arrays whose sizes do not fit (fastcells._validate).
from cython cimport floating

cdef void gemm(bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
               floating alpha, const floating *A, Py_ssize_t lda,
               const floating *B, Py_ssize_t ldb,
               floating beta, floating *C, Py_ssize_t ldc) noexcept nogil
