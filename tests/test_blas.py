"""The BLAS shim (fastcells._blas.gemm) against NumPy: both dtypes, every transpose, K = 0."""
import numpy as np
import pytest

from fastcells import _blas

from conftest import DTYPES, assert_close


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (3, 5, 7), (17, 2, 33), (4, 6, 0)])
def test_gemm_matches_numpy(dtype, trans_a, trans_b, M, N, K, rng):
    A = rng.standard_normal((K, M) if trans_a else (M, K)).astype(dtype)
    B = rng.standard_normal((N, K) if trans_b else (K, N)).astype(dtype)
    C = rng.standard_normal((M, N)).astype(dtype)
    alpha, beta = 0.75, -1.5
    expected = alpha * ((A.T if trans_a else A) @ (B.T if trans_b else B)) + beta * C
    _blas._gemm(A, B, C, trans_a, trans_b, alpha, beta)
    assert_close(C, expected.astype(dtype), "C")


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_beta_zero_ignores_c(dtype, rng):
    A = rng.standard_normal((3, 4)).astype(dtype)
    B = rng.standard_normal((4, 2)).astype(dtype)
    C = np.full((3, 2), np.nan, dtype)
    _blas._gemm(A, B, C, False, False, 1.0, 0.0)
    assert_close(C, A @ B, "C")
