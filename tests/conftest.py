"""Shared helpers of the test suite: tolerances, error measure, random problems.

The tests import the installed package (`pip install .[test]`), never the source tree.
"""
import numpy as np
import pytest

DTYPES = [np.float64, np.float32]
# Kernel vs twin, relative to the largest magnitude of the reference (CONVENTIONS' contract).
TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}


def rel_err(actual, expected):
    """max |actual - expected| / max |expected| (0 for two empty arrays)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if expected.size == 0:
        return 0.0
    scale = np.max(np.abs(expected))
    return float(np.max(np.abs(actual - expected)) / (scale if scale > 0 else 1.0))


def assert_close(actual, expected, what, dtype=None):
    dtype = np.dtype(dtype or np.asarray(expected).dtype)
    assert np.asarray(actual).dtype == dtype, f"{what}: dtype {np.asarray(actual).dtype} != {dtype}"
    err = rel_err(actual, expected)
    assert err <= TOL[dtype], f"{what}: relative error {err:.3g} > {TOL[dtype]:g}"


def at_offset(a, offset):
    """A C-contiguous copy of `a` whose data starts `offset` elements past a 64-byte boundary
    (NumPy only promises 16: the kernels must be right, and fast, at any offset)."""
    item = a.dtype.itemsize
    buf = np.empty(a.size + 64 // item + offset, a.dtype)
    start = (-buf.ctypes.data % 64) // item + offset
    out = buf[start:start + a.size].reshape(a.shape)
    out[...] = a
    return out


def random_lengths(rng, N, T):
    """Ragged lengths that include 0 and T (when N allows), the rest random."""
    lengths = rng.integers(0, T + 1, size=N)
    lengths[0] = T
    if N > 1:
        lengths[1] = 0
    return lengths


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# ---- the cell variants, one calling convention for all --------------------------------------
class Cell:
    """A cell variant (e.g. GRU with reset_after=False) and how to call its fast and twin API."""

    def __init__(self, id, name, G, kwargs, n_states):
        self.id, self.name, self.G, self.kwargs, self.n_states = id, name, G, kwargs, n_states

    def __repr__(self):
        return self.id

    def fast(self):
        """The fastcells module, or skip when this cell's kernel has not landed."""
        import fastcells
        if getattr(fastcells, f"{self.name}_forward", None) is None:
            pytest.skip(f"fastcells.{self.name}_forward is not implemented")
        return fastcells

    @staticmethod
    def ref():
        import fastcells.reference
        return fastcells.reference

    def bias_shape(self, H):
        if self.name == "gru" and self.kwargs.get("reset_after", True):
            return (2, 3 * H)
        return (self.G * H,)

    def forward(self, mod, xs, Wx, Wh, b, states, **kw):
        """-> hs, [final states], cache"""
        f = getattr(mod, f"{self.name}_forward")
        out = f(xs, Wx, Wh, b, *states, **self.kwargs, **kw)
        hs, final, cache = out
        return hs, (list(final) if self.n_states == 2 else [final]), cache

    def backward(self, mod, cache, dhs, dfinal):
        return getattr(mod, f"{self.name}_backward")(cache, dhs, *dfinal)

    def problem(self, rng, N, T, D, H, dtype, time_major=False, init_states=True):
        """Random weights, inputs, initial states and upstream gradients of moderate scale."""
        xs = rng.standard_normal((T, N, D) if time_major else (N, T, D))
        Wx = rng.standard_normal((D, self.G * H)) / np.sqrt(max(D, 1))
        Wh = rng.standard_normal((H, self.G * H)) / np.sqrt(max(H, 1))
        b = 0.5 * rng.standard_normal(self.bias_shape(H))
        states = [rng.standard_normal((N, H)) if init_states else None
                  for _ in range(self.n_states)]
        dhs = rng.standard_normal((T, N, H) if time_major else (N, T, H))
        dfinal = [rng.standard_normal((N, H)) for _ in range(self.n_states)]
        cast = lambda a: None if a is None else np.asarray(a, dtype)
        return dict(xs=cast(xs), Wx=cast(Wx), Wh=cast(Wh), b=cast(b),
                    states=[cast(s) for s in states], dhs=cast(dhs),
                    dfinal=[cast(s) for s in dfinal])


CELLS = [
    Cell("lstm", "lstm", 4, {}, 2),
    Cell("gru", "gru", 3, {"reset_after": True}, 1),
    Cell("gru_reset_before", "gru", 3, {"reset_after": False}, 1),
    Cell("rnn_tanh", "rnn", 1, {"nonlinearity": "tanh"}, 1),
    Cell("rnn_relu", "rnn", 1, {"nonlinearity": "relu"}, 1),
]


@pytest.fixture(params=CELLS, ids=repr)
def cell(request):
    return request.param
