"""Tests of the NumPy reference twins (``fastcells.reference``), the ground truth of the kernels.

- Forward: against a naive per-sequence loop written straight from the formulas of
  CONVENTIONS.md (no batching, no masks, no gathers; variable lengths by truncation, reverse by
  iterating positions backwards).
- Backward: every gradient against central finite differences in float64 on the random scalar
  loss  L = Σ hs ⊙ Gy + Σ h_T ⊙ Gh (+ Σ c_T ⊙ Gc for LSTM), checking every element.
- Semantics: padding, final states, reverse = forward on each sequence flipped within its length,
  training=False, float32, inputs never modified, errors.

All random draws use fixed seeds.
"""
import numpy as np
import pytest

from fastcells._types import GRUGrads, LSTMGrads, RNNGrads
from fastcells.reference import (gru_backward, gru_forward, lstm_backward, lstm_forward,
                                 rnn_backward, rnn_forward)

KINDS = ["lstm", "gru_reset_after", "gru_reset_before", "rnn_tanh", "rnn_relu"]
GATES = {"lstm": 4, "gru_reset_after": 3, "gru_reset_before": 3, "rnn_tanh": 1, "rnn_relu": 1}
GRAD_TYPES = {"lstm": LSTMGrads, "gru_reset_after": GRUGrads, "gru_reset_before": GRUGrads,
              "rnn_tanh": RNNGrads, "rnn_relu": RNNGrads}


# ----------------------------------------------------------------------------------------------
# Uniform access to the three twins
# ----------------------------------------------------------------------------------------------

def make_args(kind, N, T, D, H, seed, *, time_major=False, dtype=np.float64):
    """Random arguments of the forward, as a dict in the order of the grads' fields."""
    rng = np.random.default_rng(seed)
    G = GATES[kind]
    args = {
        "xs": rng.standard_normal((T, N, D) if time_major else (N, T, D)),
        "Wx": rng.standard_normal((D, G * H)) * 0.6,
        "Wh": rng.standard_normal((H, G * H)) * 0.6,
        "b": rng.standard_normal((2, 3 * H) if kind == "gru_reset_after" else (G * H,)) * 0.3,
        "h0": rng.standard_normal((N, H)) * 0.5,
    }
    if kind == "lstm":
        args["c0"] = rng.standard_normal((N, H)) * 0.5
    return {k: v.astype(dtype) for k, v in args.items()}


def forward(kind, args, **kw):
    """-> hs, finals (h_T,) or (h_T, c_T), cache"""
    if kind == "lstm":
        hs, (h_T, c_T), cache = lstm_forward(**args, **kw)
        return hs, (h_T, c_T), cache
    if kind.startswith("gru"):
        hs, h_T, cache = gru_forward(**args, reset_after=kind == "gru_reset_after", **kw)
        return hs, (h_T,), cache
    hs, h_T, cache = rnn_forward(**args, nonlinearity=kind[4:], **kw)
    return hs, (h_T,), cache


def backward(kind, cache, dhs, dfinals):
    if kind == "lstm":
        return lstm_backward(cache, dhs, *dfinals)
    if kind.startswith("gru"):
        return gru_backward(cache, dhs, *dfinals)
    return rnn_backward(cache, dhs, *dfinals)


def n_finals(kind):
    return 2 if kind == "lstm" else 1


# ----------------------------------------------------------------------------------------------
# Naive reference, straight from the formulas: one sequence at a time, one position at a time
# ----------------------------------------------------------------------------------------------

def _sig(x):
    return 1 / (1 + np.exp(-x))


def naive_forward(kind, args, *, lengths=None, time_major=False, reverse=False):
    """-> hs (layout of xs), finals, and the list of every RNN pre-activation (for relu kinks)."""
    xs = args["xs"].swapaxes(0, 1) if time_major else args["xs"]
    Wx, Wh, b, h0 = args["Wx"], args["Wh"], args["b"], args["h0"]
    N, T, _ = xs.shape
    H = Wh.shape[0]
    hs = np.zeros((N, T, H))
    h_T, c_T = np.zeros((N, H)), np.zeros((N, H))
    pres = []
    for n in range(N):
        L = T if lengths is None else lengths[n]
        h = h0[n].copy()
        c = args["c0"][n].copy() if kind == "lstm" else None
        for t in (reversed(range(L)) if reverse else range(L)):
            x = xs[n, t]
            if kind == "lstm":
                f, g, i, o = np.split(x @ Wx + h @ Wh + b, 4)
                c = _sig(f) * c + np.tanh(g) * _sig(i)
                h = _sig(o) * np.tanh(c)
            elif kind == "gru_reset_after":
                a_z, a_r, a_h = np.split(x @ Wx + b[0], 3)
                u_z, u_r, u_h = np.split(h @ Wh + b[1], 3)
                z, r = _sig(a_z + u_z), _sig(a_r + u_r)
                h = z * h + (1 - z) * np.tanh(a_h + r * u_h)
            elif kind == "gru_reset_before":
                Wx_z, Wx_r, Wx_h = np.split(Wx, 3, axis=1)
                Wh_z, Wh_r, Wh_h = np.split(Wh, 3, axis=1)
                b_z, b_r, b_h = np.split(b, 3)
                z = _sig(x @ Wx_z + h @ Wh_z + b_z)
                r = _sig(x @ Wx_r + h @ Wh_r + b_r)
                h = z * h + (1 - z) * np.tanh(x @ Wx_h + (r * h) @ Wh_h + b_h)
            else:
                pre = x @ Wx + h @ Wh + b
                pres.append(pre)
                h = np.tanh(pre) if kind == "rnn_tanh" else np.maximum(pre, 0)
            hs[n, t] = h
        h_T[n] = h
        if kind == "lstm":
            c_T[n] = c
    finals = (h_T, c_T) if kind == "lstm" else (h_T,)
    return (hs.swapaxes(0, 1) if time_major else hs), finals, pres


# ----------------------------------------------------------------------------------------------
# Scenarios shared by the forward and the finite-difference tests
# ----------------------------------------------------------------------------------------------

# name: (N, T, D, H, forward keywords, loss uses hs (else dhs=None and only dh_T))
SCENARIOS = {
    "basic": (3, 4, 3, 2, {}, True),
    "N1_T1": (1, 1, 2, 3, {}, True),
    "dhs_none_only_dh_T": (2, 3, 3, 2, {}, False),
    "time_major": (2, 3, 2, 3, {"time_major": True}, True),
    "ragged": (4, 4, 3, 2, {"lengths": np.array([4, 0, 2, 3])}, True),
    "ragged_dhs_none": (4, 3, 2, 2, {"lengths": np.array([1, 3, 0, 2])}, False),
    "reverse_ragged": (4, 4, 3, 2, {"lengths": np.array([2, 4, 0, 3]), "reverse": True}, True),
    "reverse_time_major": (3, 3, 2, 2,
                           {"lengths": [3, 1, 2], "reverse": True, "time_major": True}, True),
    "reverse_full": (2, 3, 3, 2, {"reverse": True}, True),
}


def scenario_args(kind, name):
    N, T, D, H, kw, with_hs = SCENARIOS[name]
    seed = 1000 * KINDS.index(kind) + list(SCENARIOS).index(name)
    args = make_args(kind, N, T, D, H, seed, time_major=kw.get("time_major", False))
    return args, kw, with_hs, seed


@pytest.mark.parametrize("name", list(SCENARIOS))
@pytest.mark.parametrize("kind", KINDS)
def test_forward_matches_naive_loop(kind, name):
    args, kw, _, _ = scenario_args(kind, name)
    hs, finals, cache = forward(kind, args, **kw)
    hs_ref, finals_ref, _ = naive_forward(kind, args, **kw)
    assert cache is not None
    np.testing.assert_allclose(hs, hs_ref, rtol=1e-12, atol=1e-12)
    for got, ref in zip(finals, finals_ref):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Finite differences
# ----------------------------------------------------------------------------------------------

EPS = 1e-6     # central differences in float64: truncation ~EPS², round-off ~1e-16/EPS
RTOL = 1e-6    # max|num - ana| / max|ana| per gradient


def _loss(kind, args, kw, Gy, Gfin):
    hs, finals, cache = forward(kind, args, training=False, **kw)
    assert cache is None
    loss = 0.0 if Gy is None else np.sum(hs * Gy)
    for final, G in zip(finals, Gfin):
        if G is not None:
            loss += np.sum(final * G)
    return loss


def numerical_gradient(kind, args, name, kw, Gy, Gfin):
    """Central differences of the loss w.r.t. every element of args[name]."""
    base = args[name]
    grad = np.zeros_like(base)
    for idx in np.ndindex(base.shape):
        perturbed = {}
        for sign in (+1, -1):
            x = base.copy()
            x[idx] += sign * EPS
            perturbed[sign] = _loss(kind, {**args, name: x}, kw, Gy, Gfin)
        grad[idx] = (perturbed[+1] - perturbed[-1]) / (2 * EPS)
    return grad


@pytest.mark.parametrize("name", list(SCENARIOS))
@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_finite_differences(kind, name):
    args, kw, with_hs, seed = scenario_args(kind, name)
    rng = np.random.default_rng(seed + 500)
    hs, finals, cache = forward(kind, args, **kw)
    Gy = rng.standard_normal(hs.shape) if with_hs else None
    if with_hs:
        Gfin = tuple(rng.standard_normal(f.shape) for f in finals)
    else:
        # dhs=None and only dh_T (dc_T=None for the LSTM)
        Gfin = (rng.standard_normal(finals[0].shape),) + (None,) * (n_finals(kind) - 1)

    if kind == "rnn_relu":
        # The loss must be differentiable at this point: no pre-activation within reach of the
        # kink at 0 (perturbations move them by ~EPS).
        _, _, pres = naive_forward(kind, args, **kw)
        assert min(np.abs(p).min() for p in pres) > 1e-4
        assert any((p > 0).any() for p in pres)

    grads = backward(kind, cache, Gy, Gfin)
    assert isinstance(grads, GRAD_TYPES[kind])
    assert len(grads) == len(args)
    for (arg_name, arg), grad_name in zip(args.items(), grads._fields):
        assert grad_name == "d" + arg_name
        ana = getattr(grads, grad_name)
        assert ana.shape == arg.shape, grad_name
        assert ana.dtype == np.float64, grad_name
        num = numerical_gradient(kind, args, arg_name, kw, Gy, Gfin)
        scale = np.abs(ana).max()
        if scale == 0:
            assert np.abs(num).max() < 1e-8, grad_name
        else:
            err = np.abs(num - ana).max() / scale
            assert err <= RTOL, f"{grad_name}: relative error {err:.2e}"


# ----------------------------------------------------------------------------------------------
# Variable lengths, reverse, defaults
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_padding_is_zero_and_final_state_is_last_valid_step(kind, reverse):
    N, T, D, H = 4, 5, 3, 2
    lengths = np.array([5, 0, 2, 1])
    args = make_args(kind, N, T, D, H, seed=7)
    hs, finals, cache = forward(kind, args, lengths=lengths, reverse=reverse)
    h_T = finals[0]
    for n, L in enumerate(lengths):
        assert np.all(hs[n, L:] == 0)                 # exactly zero
        if L == 0:
            assert np.array_equal(h_T[n], args["h0"][n])
            if kind == "lstm":
                assert np.array_equal(finals[1][n], args["c0"][n])
        else:
            last = 0 if reverse else L - 1            # position of the last step processed
            assert np.array_equal(h_T[n], hs[n, last])
            if kind != "rnn_relu":                    # (relu outputs can be 0 anywhere)
                assert np.all(hs[n, :L] != 0)

    # Gradients: none for the padded inputs, dhs at padded positions is ignored, and for a
    # length-0 sequence the final-state gradient arrives unchanged at the initial state.
    rng = np.random.default_rng(8)
    dhs = rng.standard_normal(hs.shape)
    dfinals = tuple(rng.standard_normal(f.shape) for f in finals)
    grads = backward(kind, cache, dhs, dfinals)
    noisy = dhs.copy()
    for n, L in enumerate(lengths):
        assert np.all(grads.dxs[n, L:] == 0)
        noisy[n, L:] = 1e3 * rng.standard_normal(noisy[n, L:].shape)
    grads_noisy = backward(kind, cache, noisy, dfinals)
    for g, g_noisy in zip(grads, grads_noisy):
        assert np.array_equal(g, g_noisy)
    assert np.array_equal(grads.dh0[1], dfinals[0][1])
    if kind == "lstm":
        assert np.array_equal(grads.dc0[1], dfinals[1][1])


def flip_within_lengths(a, lengths):
    """Reverse each sequence n of a (N, T, ...) within its first lengths[n] positions."""
    out = a.copy()
    for n, L in enumerate(lengths):
        out[n, :L] = a[n, :L][::-1]
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_reverse_equals_forward_on_sequences_flipped_within_their_lengths(kind):
    N, T, D, H = 4, 5, 3, 2
    lengths = np.array([5, 3, 0, 1])
    args = make_args(kind, N, T, D, H, seed=11)
    rng = np.random.default_rng(12)

    hs_rev, fin_rev, cache_rev = forward(kind, args, lengths=lengths, reverse=True)
    flipped = {**args, "xs": flip_within_lengths(args["xs"], lengths)}
    hs_fwd, fin_fwd, cache_fwd = forward(kind, flipped, lengths=lengths)
    np.testing.assert_allclose(hs_rev, flip_within_lengths(hs_fwd, lengths), rtol=1e-13,
                               atol=1e-14)
    for a, b in zip(fin_rev, fin_fwd):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)

    dhs = rng.standard_normal(hs_rev.shape)
    dfinals = tuple(rng.standard_normal(f.shape) for f in fin_rev)
    g_rev = backward(kind, cache_rev, dhs, dfinals)
    g_fwd = backward(kind, cache_fwd, flip_within_lengths(dhs, lengths), dfinals)
    np.testing.assert_allclose(g_rev.dxs, flip_within_lengths(g_fwd.dxs, lengths), rtol=1e-12,
                               atol=1e-13)
    for name in g_rev._fields[1:]:
        np.testing.assert_allclose(getattr(g_rev, name), getattr(g_fwd, name), rtol=1e-12,
                                   atol=1e-13, err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_time_major_is_the_transpose_of_batch_first(kind):
    args = make_args(kind, 3, 4, 2, 3, seed=13)
    hs, finals, cache = forward(kind, args, lengths=[4, 2, 0], reverse=True)
    args_tm = {**args, "xs": args["xs"].transpose(1, 0, 2).copy()}
    hs_tm, finals_tm, cache_tm = forward(kind, args_tm, lengths=[4, 2, 0], reverse=True,
                                         time_major=True)
    np.testing.assert_array_equal(hs_tm, hs.transpose(1, 0, 2))
    for a, b in zip(finals, finals_tm):
        np.testing.assert_array_equal(a, b)
    dhs = np.random.default_rng(14).standard_normal(hs.shape)
    g = backward(kind, cache, dhs, finals)
    g_tm = backward(kind, cache_tm, dhs.transpose(1, 0, 2), finals)
    np.testing.assert_allclose(g_tm.dxs, g.dxs.transpose(1, 0, 2), rtol=1e-13, atol=1e-15)
    for name in g._fields[1:]:
        np.testing.assert_allclose(getattr(g_tm, name), getattr(g, name), rtol=1e-13,
                                   atol=1e-15, err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_none_means_zeros(kind):
    args = make_args(kind, 2, 3, 3, 2, seed=15)
    zero_states = {k: np.zeros_like(v) for k, v in args.items() if k in ("h0", "c0")}
    no_states = {k: v for k, v in args.items() if k not in ("h0", "c0")}
    hs, finals, cache = forward(kind, {**args, **zero_states})
    hs_none, finals_none, cache_none = forward(kind, no_states)
    np.testing.assert_array_equal(hs, hs_none)
    for a, b in zip(finals, finals_none):
        np.testing.assert_array_equal(a, b)

    dhs = np.random.default_rng(16).standard_normal(hs.shape)
    zeros = tuple(np.zeros_like(f) for f in finals)
    for got, want in zip(backward(kind, cache_none, dhs, (None,) * n_finals(kind)),
                         backward(kind, cache, dhs, zeros)):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(backward(kind, cache, None, finals),
                         backward(kind, cache, np.zeros_like(hs), finals)):
        np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------------------------
# training=False, errors, dtypes, no mutation
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_training_false_same_outputs_and_no_cache(kind):
    args = make_args(kind, 3, 4, 2, 3, seed=17)
    kw = {"lengths": [4, 1, 0], "reverse": True}
    hs, finals, cache = forward(kind, args, **kw)
    hs_inf, finals_inf, cache_inf = forward(kind, args, training=False, **kw)
    assert cache is not None and cache_inf is None
    np.testing.assert_array_equal(hs, hs_inf)
    for a, b in zip(finals, finals_inf):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_backward_without_cache_raises(kind):
    hs, finals, cache = forward(kind, make_args(kind, 2, 3, 2, 2, seed=18), training=False)
    with pytest.raises(ValueError, match="training=False"):
        backward(kind, cache, np.ones_like(hs), (None,) * n_finals(kind))


def test_rnn_unknown_nonlinearity_raises():
    args = make_args("rnn_tanh", 2, 3, 2, 2, seed=19)
    with pytest.raises(ValueError, match="nonlinearity"):
        rnn_forward(**args, nonlinearity="sigmoid")


@pytest.mark.parametrize("kind", KINDS)
def test_float32_in_float32_out(kind):
    args64 = make_args(kind, 3, 4, 3, 2, seed=20)
    args32 = {k: v.astype(np.float32) for k, v in args64.items()}
    kw = {"lengths": [4, 2, 0], "reverse": True}
    hs, finals, cache = forward(kind, args32, **kw)
    hs64, finals64, cache64 = forward(kind, args64, **kw)
    rng = np.random.default_rng(21)
    dhs = rng.standard_normal(hs.shape)
    dfinals = tuple(rng.standard_normal(f.shape) for f in finals)
    grads = backward(kind, cache, dhs.astype(np.float32),
                     tuple(d.astype(np.float32) for d in dfinals))
    grads64 = backward(kind, cache64, dhs, dfinals)
    for got, want in zip((hs, *finals, *grads), (hs64, *finals64, *grads64)):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_saturated_units_do_not_warn(kind):
    # σ of a very negative float32 argument overflows exp to inf; the result must be 0 quietly.
    args = {k: (v * 1e3).astype(np.float32) for k, v in make_args(kind, 2, 3, 2, 2, 22).items()}
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        hs, finals, cache = forward(kind, args)
        grads = backward(kind, cache, np.ones_like(hs), finals)
    for a in (hs, *finals, *grads):
        assert np.all(np.isfinite(a))


@pytest.mark.parametrize("ragged_reverse", [False, True])
@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_inputs_unchanged_and_results_are_new_arrays(kind, time_major, ragged_reverse):
    args = make_args(kind, 3, 4, 3, 2, seed=23, time_major=time_major)
    lengths = np.array([4, 0, 2])
    kw = {"time_major": time_major}
    if ragged_reverse:
        kw.update(lengths=lengths, reverse=True)
    rng = np.random.default_rng(24)
    saved = {k: v.copy() for k, v in args.items()}
    saved_lengths = lengths.copy()

    hs, finals, cache = forward(kind, args, **kw)
    dhs = rng.standard_normal(hs.shape)
    dfinals = tuple(rng.standard_normal(f.shape) for f in finals)
    saved_grad_inputs = [dhs.copy()] + [d.copy() for d in dfinals]
    grads = backward(kind, cache, dhs, dfinals)

    for k in args:
        np.testing.assert_array_equal(args[k], saved[k])
    np.testing.assert_array_equal(lengths, saved_lengths)
    for a, b in zip([dhs, *dfinals], saved_grad_inputs):
        np.testing.assert_array_equal(a, b)
    results = [hs, *finals, *grads]
    for r in results:
        for a in [*args.values(), dhs, *dfinals]:
            assert not np.shares_memory(r, a)

    # The results do not alias the cache either: scribbling on them leaves backward unchanged,
    # and backward can be run twice with the same result.
    for r in (hs, *finals, *grads):
        r[...] = np.nan
    grads_again = backward(kind, cache, dhs, dfinals)
    hs2, finals2, cache2 = forward(kind, args, **kw)
    for a, b in zip(grads_again, backward(kind, cache2, dhs, dfinals)):
        np.testing.assert_array_equal(a, b)
