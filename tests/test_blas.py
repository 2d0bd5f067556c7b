"""The BLAS shim (fastcells._blas.gemm) against NumPy: both dtypes, every transpose, K = 0."""
import numpy as np
import pytest

from fastcells import _blas

from conftest import DTYPES, assert_close, at_offset


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


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N", [1, 5, 15, 16, 17, 40, 127, 128, 129, 200, 512])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_one_row_gemm(dtype, N, beta, rng):
    """M = 1, a @ B (the one-step cells' and single sequences' products): fastcells' own GEMV,
    whose head and tail columns around the 64-byte-aligned body take a separate path. Every
    element offset of B in its cache line, both betas, and widths around the vector sizes;
    each column must also equal its value from the aligned layout bit for bit (one summation
    order, whatever the path)."""
    K = 37
    a = rng.standard_normal((1, K)).astype(dtype)
    B0 = rng.standard_normal((K, N)).astype(dtype)
    C0 = rng.standard_normal((1, N)).astype(dtype)
    expected = a.astype(np.float64) @ B0 + beta * C0
    first = None
    for offset in range(64 // np.dtype(dtype).itemsize):
        B = at_offset(B0, offset)
        C = at_offset(C0, offset)
        _blas._gemm(a, B, C, False, False, 1.0, beta)
        assert_close(C, expected.astype(dtype), f"C (B at element offset {offset})")
        if first is None:
            first = C.copy()
        np.testing.assert_array_equal(C, first, err_msg=f"offset {offset} changed the sums")
        np.testing.assert_array_equal(B, B0)  # inputs unchanged


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N", [16, 17, 64, 100, 192, 256, 300])
def test_one_row_gemm_rounds_each_column_alike(dtype, N, rng):
    """Every column of a one-row product has the bits of the same column computed alone (the
    narrow path) or in any block, edge vector or pass: the batch of one split by hidden units
    computes each thread's columns as a product of their own and must match one thread."""
    K = 64
    a = rng.standard_normal((1, K)).astype(dtype)
    C0 = rng.standard_normal((1, N)).astype(dtype)
    for offset in (0, 1, 3):
        B = at_offset(rng.standard_normal((K, N)).astype(dtype), offset)
        C = C0.copy()
        _blas._gemm(a, B, C, False, False, 1.0, 1.0)
        for j in range(N):
            c = C0[:, j:j + 1].copy()
            _blas._gemm(a, np.ascontiguousarray(B[:, j:j + 1]), c, False, False, 1.0, 1.0)
            assert c[0, 0] == C[0, j], f"column {j} of {N} (B at element offset {offset})"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N", [5, 16, 17, 100, 192, 256, 300])
@pytest.mark.parametrize("beta", [False, True])
@pytest.mark.parametrize("K", [37, 1])
def test_mirrored_gemv_sums_from_the_last_row(dtype, N, beta, K, rng):
    """gemv with `mirror` (the recurrent loops' odd steps) visits the blocks in reverse and
    sums each column from the last row up: bit for bit the forward sum over x and W with
    their rows reversed, for the narrow path, the blocks and the edge vectors at every offset
    of W in its cache line; and it is a different order (some column differs)."""
    x = rng.standard_normal(K).astype(dtype)
    y0 = rng.standard_normal(N).astype(dtype)
    for offset in range(64 // np.dtype(dtype).itemsize):
        W = at_offset(rng.standard_normal((K, N)).astype(dtype), offset)
        W_copy = W.copy()
        y = y0.copy()
        _blas._gemv(x, W, y, beta, True)
        np.testing.assert_array_equal(W, W_copy)  # inputs unchanged
        reversed_ = y0.copy()
        _blas._gemv(x[::-1].copy(), at_offset(W[::-1], offset), reversed_, beta, False)
        np.testing.assert_array_equal(y, reversed_, err_msg=f"offset {offset}")
        assert_close(y, (x.astype(np.float64) @ W + beta * y0).astype(dtype), "y")
        forward = y0.copy()
        _blas._gemv(x, W, forward, beta, False)
        C = y0[None].copy()
        _blas._gemm(x[None], W, C, False, False, 1.0, float(beta))
        np.testing.assert_array_equal(forward, C[0])  # the one-row GEMM is the forward gemv
        if N >= 100 and K > 1:
            assert (y != forward).any(), "mirror must sum in the other order"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mirror", [False, True])
def test_gemv_of_no_rows(dtype, mirror):
    """K = 0: y = beta * y, with no x or W at all (NULL pointers: an empty input
    projection)."""
    for beta in (False, True):
        y = np.arange(1.0, 21.0, dtype=dtype)
        _blas._gemv(np.empty(0, dtype), np.empty((0, 20), dtype), y, beta, mirror)
        np.testing.assert_array_equal(y, np.arange(1.0, 21.0) if beta else np.zeros(20))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,Nc", [(1, 3, 5), (2, 16, 32), (9, 33, 70), (8, 300, 64),
                                    (17, 256, 96)])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("beta", [False, True])
def test_packed_gemm(dtype, M, K, Nc, trans_b, beta, rng):
    """The packed recurrent GEMM (pack once, then C = A @ op(B) + beta C): row counts around
    the register tile's, K across the KC blocking, widths that leave a partial last panel,
    and a packed buffer at an offset that is not 64-byte aligned."""
    A = rng.standard_normal((M, K)).astype(dtype)
    B = rng.standard_normal((Nc, K) if trans_b else (K, Nc)).astype(dtype)
    C = rng.standard_normal((M, Nc)).astype(dtype)
    expected = A.astype(np.float64) @ (B.T if trans_b else B) + (C if beta else 0)
    size = _blas._packed_size(dtype, K, Nc)
    work = at_offset(np.zeros(size, dtype), 4 if dtype == np.float32 else 2)
    _blas._gemm_packed(A, B, C, trans_b, beta, work)
    assert_close(C, expected.astype(dtype), "C")
    assert _blas._gemm_rows() in (2, 8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,Nc", [(1, 1, 1), (3, 7, 5), (9, 33, 70), (130, 300, 40),
                                    (70, 260, 300), (5, 20, 2100), (12, 0, 9)])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("beta", [False, True])
def test_own_gemm(dtype, M, K, Nc, trans_a, trans_b, beta, rng):
    """fastcells' GEMM for the one-off products of training, C = op(A) @ op(B) + beta C: rows
    across the register tile and the 64 KB A block, K across the KC blocking (and K = 0),
    narrow products (A read in place) and wide ones (A packed; Nc = 2100 crosses the float
    B block of 2048 columns), every transposition."""
    A = rng.standard_normal((K, M) if trans_a else (M, K)).astype(dtype)
    B = rng.standard_normal((Nc, K) if trans_b else (K, Nc)).astype(dtype)
    C = rng.standard_normal((M, Nc)).astype(dtype)
    expected = ((A.T if trans_a else A).astype(np.float64) @ (B.T if trans_b else B)
                + (C if beta else 0))
    _blas._own_gemm(A, B, C, trans_a, trans_b, beta)
    assert_close(C, expected.astype(dtype), "C")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K,M1,M2,Nc", [(1, 1, 1, 1), (0, 3, 5, 7), (530, 75, 19, 160),
                                        (260, 64, 128, 2100), (33, 0, 9, 70), (33, 9, 0, 70)])
def test_own_gemm_tn2_has_the_bits_of_two_products(dtype, K, M1, M2, Nc, rng):
    """The weight gradients of backward, C1 = A1ᵀ @ B and C2 = A2ᵀ @ B with B packed once for
    both: each must come out with the very bits of its own product (own_gemm), across the KC
    blocking, the B block of 2048 float columns, K = 0 and an empty operand; no other output
    element is touched."""
    A1 = rng.standard_normal((K, M1)).astype(dtype)
    A2 = rng.standard_normal((K, M2)).astype(dtype)
    B = rng.standard_normal((K, Nc)).astype(dtype)
    C1, C2 = np.full((M1, Nc), np.nan, dtype), np.full((M2, Nc), np.nan, dtype)
    _blas._own_gemm_tn2(A1, A2, B, C1, C2)
    for A, C in ((A1, C1), (A2, C2)):
        alone = np.full_like(C, np.nan)
        _blas._own_gemm(A, B, alone, True, False, False)
        np.testing.assert_array_equal(C, alone)
        assert_close(C, (A.T.astype(np.float64) @ B).astype(dtype), "C")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
def test_own_gemm_bits_do_not_depend_on_the_split(dtype, trans_a, rng):
    """The threads split a product by column panels or by rows (_seq.team_own_gemm): each
    part must come out with the very bits of the whole product."""
    M, K, Nc = 75, 530, 160
    A = rng.standard_normal((K, M) if trans_a else (M, K)).astype(dtype)
    B = rng.standard_normal((K, Nc)).astype(dtype)
    whole = np.zeros((M, Nc), dtype)
    _blas._own_gemm(A, B, whole, trans_a, False, False)
    NR = 128 // np.dtype(dtype).itemsize // 2 * 2  # two 64-byte vectors: the panel width
    cols = np.zeros((M, Nc - NR), dtype)
    _blas._own_gemm(A, np.ascontiguousarray(B[:, NR:]), cols, trans_a, False, False)
    np.testing.assert_array_equal(cols, whole[:, NR:])
    rows = np.zeros((M - 19, Nc), dtype)
    A_rows = np.ascontiguousarray(A[:, 19:] if trans_a else A[19:])
    _blas._own_gemm(A_rows, B, rows, trans_a, False, False)
    np.testing.assert_array_equal(rows, whole[19:])
