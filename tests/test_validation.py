"""Bad arguments raise ValueError/TypeError naming the argument, the expected and the actual
value, before any kernel runs: wrong ndim, shapes, dtypes, lengths, flags, caches."""
import re

import numpy as np
import pytest


def call_forward(cell, p, **kw):
    return cell.forward(cell.fast(), p["xs"], p["Wx"], p["Wh"], p["b"], p["states"], **kw)


def expect(exc, *fragments):
    """pytest.raises that also checks the message contains every fragment."""
    return pytest.raises(exc, match=".*".join(re.escape(f) for f in fragments))


@pytest.fixture
def p(cell, rng):
    return cell.problem(rng, 3, 4, 5, 6, np.float64)


def test_xs_ndim(cell, p):
    p["xs"] = p["xs"][0]
    with expect(ValueError, "xs", "3-D", "(N, T, D)", "2-D", "(4, 5)"):
        call_forward(cell, p)


def test_xs_ndim_time_major_names_layout(cell, p):
    p["xs"] = p["xs"][0]
    with expect(ValueError, "xs", "(T, N, D)"):
        call_forward(cell, p, time_major=True)


def test_Wx_shape(cell, p):
    p["Wx"] = p["Wx"][:-1]
    with expect(ValueError, "Wx", f"(5, {cell.G * 6})", f"(4, {cell.G * 6})"):
        call_forward(cell, p)


def test_Wh_shape(cell, p):
    p["Wh"] = p["Wh"][:, :-1]
    with expect(ValueError, "Wh", f"(6, {cell.G * 6})", f"(6, {cell.G * 6 - 1})"):
        call_forward(cell, p)


def test_Wh_ndim(cell, p):
    p["Wh"] = p["Wh"].ravel()
    with expect(ValueError, "Wh", "2-D", "1-D"):
        call_forward(cell, p)


def test_b_shape(cell, p):
    p["b"] = np.zeros(7)
    with expect(ValueError, "b", "(7,)"):
        call_forward(cell, p)


def test_initial_state_shape(cell, p):
    p["states"][0] = p["states"][0][:2]
    with expect(ValueError, "h0", "(N, H)", "(3, 6)", "(2, 6)"):
        call_forward(cell, p)


def test_second_state_shape(cell, p):
    if cell.n_states < 2:
        pytest.skip("one state")
    p["states"][1] = p["states"][1].T
    with expect(ValueError, "c0", "(3, 6)", "(6, 3)"):
        call_forward(cell, p)


@pytest.mark.parametrize("name", ["Wx", "Wh", "b", "h0"])
def test_mixed_dtypes(cell, p, name):
    if name == "h0":
        p["states"][0] = p["states"][0].astype(np.float32)
    else:
        p[name] = p[name].astype(np.float32)
    with expect(TypeError, name, "float32", "float64"):
        call_forward(cell, p)


@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.complex128, object, np.bool_])
def test_non_float_dtypes(cell, p, dtype):
    p["xs"] = p["xs"].astype(dtype)
    with expect(TypeError, "xs", "float32 or float64", np.dtype(dtype).name):
        call_forward(cell, p)


def test_none_array(cell, p):
    p["Wx"] = None
    with expect(TypeError, "Wx", "None"):
        call_forward(cell, p)


@pytest.mark.parametrize("lengths,exc,fragments", [
    ([4, 5, 0], ValueError, ("lengths", "0..T = 0..4", "lengths[1] = 5")),
    ([4, -1, 0], ValueError, ("lengths", "lengths[1] = -1")),
    ([4, 4], ValueError, ("lengths", "(3,)", "(2,)")),
    ([4.0, 1.0, 0.0], TypeError, ("lengths", "integers", "float64")),
    ([True, False, True], TypeError, ("lengths", "integers", "bool")),
])
def test_lengths(cell, p, lengths, exc, fragments):
    with expect(exc, *fragments):
        call_forward(cell, p, lengths=np.array(lengths))


def test_time_major_must_be_bool(cell, p):
    with expect(TypeError, "time_major", "True or False", "'yes'"):
        call_forward(cell, p, time_major="yes")


def test_backward_of_inference_cache(cell, p):
    _, _, cache = call_forward(cell, p, training=False)
    assert cache is None
    with expect(ValueError, "cache is None", "training=False"):
        cell.backward(cell.fast(), cache, p["dhs"], p["dfinal"])


def test_backward_wrong_cache_type(cell, p):
    with expect(TypeError, "cache", "dict"):
        cell.backward(cell.fast(), {}, p["dhs"], p["dfinal"])


def test_backward_dhs_shape(cell, p):
    _, _, cache = call_forward(cell, p)
    with expect(ValueError, "dhs", "(3, 4, 6)", "(3, 3, 6)"):
        cell.backward(cell.fast(), cache, p["dhs"][:, :3], p["dfinal"])


def test_backward_dhs_dtype(cell, p):
    _, _, cache = call_forward(cell, p)
    with expect(TypeError, "dhs", "float32", "float64"):
        cell.backward(cell.fast(), cache, p["dhs"].astype(np.float32), p["dfinal"])


def test_backward_final_gradient_shape(cell, p):
    _, _, cache = call_forward(cell, p)
    p["dfinal"][0] = p["dfinal"][0][:, :2]
    with expect(ValueError, "dh_T", "(3, 6)", "(3, 2)"):
        cell.backward(cell.fast(), cache, p["dhs"], p["dfinal"])


def test_sequence_kernel_checks_the_arrays_it_is_given(rng):
    """The sequence kernels' entry points take ndarrays (not typed memoryviews, whose
    acquisition costs more than a small call's work) and check each before using its data
    pointer: an array the Python layer should have made C-contiguous and of the call's dtype
    raises TypeError rather than handing the loop the wrong memory. Called right, the entry
    point gives what lstm_forward gives."""
    import fastcells
    from fastcells import _lstm
    N, T, D, H = 3, 5, 4, 8
    xs = rng.standard_normal((N, T, D))
    Wx, Wh = rng.standard_normal((D, 4 * H)), rng.standard_normal((H, 4 * H))
    b = rng.standard_normal(4 * H)
    h0, c0 = rng.standard_normal((N, H)), rng.standard_normal((N, H))
    none = np.empty((0, 0))

    def run(**over):
        a = dict(X=xs.reshape(N * T, D), Y=np.empty((N * T, H)), P=np.empty((T * N, 4 * H)),
                 hT=h0.copy(), cT=c0.copy())
        a.update(over)
        _lstm.forward_infer(a["X"], Wx, Wh, b, None, N, T, False, False, a["Y"], a["P"],
                            a["hT"], a["cT"], np.empty(0), np.empty(0), none, none, np.empty(0),
                            nth=1)
        return a

    out = run()
    hs, (h, c), _ = fastcells.lstm_forward(xs, Wx, Wh, b, h0, c0, training=False)
    np.testing.assert_allclose(out["Y"].reshape(N, T, H), hs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["hT"], h, rtol=0, atol=1e-12)
    with expect(TypeError, "C-contiguous aligned float64 array", "C-contiguous False"):
        run(Y=np.asfortranarray(np.empty((N * T, H))))
    with expect(TypeError, "float64 array, got float32"):
        run(cT=c0.astype(np.float32))
    with expect(TypeError, "float64 array, got float32"):
        run(X=xs.reshape(N * T, D).astype(np.float32))
    with expect(TypeError, "lengths"):
        _lstm.forward_infer(xs.reshape(N * T, D), Wx, Wh, b, np.full(N, T, np.int32), N, T,
                            False, False, np.empty((N * T, H)), np.empty((T * N, 4 * H)),
                            h0.copy(), c0.copy(), np.empty(0), np.empty(0), none, none,
                            np.empty(0))
