"""The vectorized activations of csrc/fc_math.h against NumPy's (the C library's) functions.

Documented bounds, tested over the whole float range including saturation, ±0, ±inf, NaN
(measured maxima in brackets, float32 / float64):
  exp:     relative error <= 2 ulp where the result is normal [0.70 / 1.00]; the argument is
           clamped to [-87, 88] (float32) / [-708, 709] (float64), outside of which sigmoid and
           tanh are saturated anyway
  sigmoid: absolute error <= 2 eps [0.72 / 1.00], relative error <= 3 ulp where the result
           >= 1e-30 [1.05 / 1.37]
  tanh:    relative error <= 3 ulp everywhere [1.33 / 2.18] (through e^y - 1: no cancellation
           near 0; the float64 maximum is at |x| = 0.1733, where y = -2|x| crosses -ln2/2)
  NaN in -> NaN out; ±inf -> the limits.
Over every 7th float32 bit pattern (a C loop, not a test), the float32 maxima are exp 0.65,
sigmoid 1.28, tanh 1.76 ulp.
"""
import numpy as np
import pytest

from fastcells import _math

from conftest import DTYPES


def activation(name, x):
    y = np.empty_like(x)
    _math._activation(name, x, y)
    return y


def sample(dtype):
    """Values across the whole range: log-spaced magnitudes, both signs, special values."""
    finfo = np.finfo(dtype)
    mags = np.append(np.geomspace(float(finfo.tiny), float(finfo.max) / 4, 20000), finfo.max)
    dense = np.linspace(-30, 30, 20001)
    x = np.concatenate([mags, -mags, dense, [0.0, -0.0, 0.2, -0.2, 0.19999, 0.20001]])
    return x.astype(dtype)


def ulps(y, ref, dtype):
    eps = np.finfo(dtype).eps
    ref64 = ref.astype(np.float64)
    return np.abs(y.astype(np.float64) - ref64) / (np.abs(ref64) * eps)


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp(dtype):
    x = sample(dtype)
    lo, hi = (-87.0, 88.0) if dtype == np.float32 else (-708.0, 709.0)
    x = x[(x >= lo) & (x <= hi)]
    y = activation("exp", x)
    ref = np.exp(x.astype(np.float64))
    normal = ref >= np.finfo(dtype).tiny
    assert np.max(ulps(y[normal], ref[normal], dtype)) <= 2


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid(dtype):
    x = sample(dtype)
    y = activation("sigmoid", x)
    with np.errstate(over="ignore"):
        ref = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    eps = np.finfo(dtype).eps
    assert np.max(np.abs(y - ref)) <= 2 * eps
    big = ref >= 1e-30
    assert np.max(ulps(y[big], ref[big], dtype)) <= 3
    assert np.all((y >= 0) & (y <= 1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh(dtype):
    x = sample(dtype)
    y = activation("tanh", x)
    ref = np.tanh(x.astype(np.float64))
    nz = ref != 0
    assert np.max(ulps(y[nz], ref[nz], dtype)) <= 3
    np.testing.assert_array_equal(y[~nz], 0)
    assert np.all(np.abs(y) <= 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["exp", "sigmoid", "tanh"])
def test_special_values(dtype, name):
    x = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30], dtype)
    y = activation(name, x)
    assert np.isnan(y[0])
    expected = {"exp": [np.inf, 0.0], "sigmoid": [1.0, 0.0], "tanh": [1.0, -1.0]}[name]
    for got, want in ((y[1], expected[0]), (y[2], expected[1]), (y[3], expected[0]),
                      (y[4], expected[1])):
        assert got == want  # the exact limits: exp overflows to inf, sigmoid(-inf) is 0
    if name == "exp":  # overflow and underflow where the C library's are
        big = np.array([710.0, 1e300] if dtype == np.float64 else [89.0, 1e30], dtype)
        assert np.all(activation("exp", big) == np.inf)
