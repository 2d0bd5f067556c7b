"""fastcells against PyTorch (LSTM, GRU, RNN) and against the published ONNX GRU formulas.

Every test runs twice, on the NumPy twins (``fastcells.reference``) and on the fast kernels
(``fastcells``).  The torch tests build a ``torch.nn`` module with random weights, map *its*
weights into the native layout of CONVENTIONS.md (the mapping is written out below on purpose:
it is what these tests prove), run both on the same inputs and compare outputs, final states and
every gradient of the scalar loss

    (out * Gy).sum() + (h_n * Gh).sum() [+ (c_n * Gc).sum()]

which fastcells receives as ``dhs=Gy, dh_T=Gh[, dc_T=Gc]``.

Ragged batches go through ``pack_padded_sequence(..., enforce_sorted=False)`` and
``pad_packed_sequence(..., total_length=T)``: padded outputs are zero and ``h_n`` is each
sequence's state after its last valid step, which is exactly fastcells' ``lengths``.

The ONNX GRU tests need no torch: they spell out the ONNX operator's formulas in NumPy.
"""
import numpy as np
import pytest

try:
    import torch
except ImportError:  # the ONNX-formula tests below still run
    torch = None

requires_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")

IMPLS = ["reference", "fastcells"]
DTYPES = [np.float64, np.float32]
# max|actual - expected| / max|expected|
TORCH_TOL = {np.float64: 1e-10, np.float32: 1e-4}
ONNX_TOL = {np.float64: 1e-12, np.float32: 1e-5}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _impl_func(impl, name):
    """The function ``name`` of the implementation under test; skip while it is not written."""
    if impl == "reference":
        import fastcells.reference as mod
    else:
        import fastcells as mod
    func = getattr(mod, name, None)
    if func is None:
        pytest.skip(f"{mod.__name__}.{name} does not exist yet")
    return func


def assert_close(actual, expected, tol, what):
    assert actual is not None, f"{what}: got None"
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    if expected.size == 0:
        return
    err = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
    scale = float(np.max(np.abs(expected)))
    rel = err / scale if scale > 0 else err
    assert rel <= tol, f"{what}: max|a-b|/max|b| = {rel:.3e} > {tol:.0e} (max|b| = {scale:.3e})"


def _snapshot(arrays):
    return [None if a is None else np.array(a, copy=True) for a in arrays]


def _assert_unchanged(arrays, before):
    for a, b in zip(arrays, before):
        if a is not None:
            assert np.array_equal(a, b), "an input array was modified"


# --------------------------------------------------------------------------------------------
# torch -> native layout.  Torch stores weights out-by-in, (G*H, D) and (G*H, H); native
# stores them in-by-out, (D, G*H) and (H, G*H), with its own block order.
# --------------------------------------------------------------------------------------------
def _block(k, H):
    return slice(k * H, (k + 1) * H)


def lstm_reorder(a):
    """Torch's LSTM blocks [i, f, g, o] (axis 0) -> native [f, g, i, o]."""
    H = a.shape[0] // 4
    i, f, g, o = (a[_block(k, H)] for k in range(4))
    return np.concatenate([f, g, i, o], axis=0)


def gru_reorder(a):
    """Torch's GRU blocks [r, z, n] (axis 0) -> native [z, r, h] (h is torch's n)."""
    H = a.shape[0] // 3
    r, z, n = (a[_block(k, H)] for k in range(3))
    return np.concatenate([z, r, n], axis=0)


def rnn_reorder(a):
    """RNN has a single block."""
    return a


def torch_to_native(kind, w_ih, w_hh, b_ih, b_hh):
    """(Wx, Wh, b) in the native layout from torch's four tensors (as NumPy arrays)."""
    reorder = {"lstm": lstm_reorder, "gru": gru_reorder, "rnn": rnn_reorder}[kind]
    Wx = np.ascontiguousarray(reorder(w_ih).T)  # (D, G*H)
    Wh = np.ascontiguousarray(reorder(w_hh).T)  # (H, G*H)
    if kind == "gru":  # reset-after GRU: the two biases stay apart, as rows 0 and 1
        b = np.stack([reorder(b_ih), reorder(b_hh)])  # (2, 3H)
    else:  # LSTM and RNN: both biases add into one
        b = reorder(b_ih) + reorder(b_hh)  # (G*H,)
    return Wx, Wh, b


# --------------------------------------------------------------------------------------------
# the torch side
# --------------------------------------------------------------------------------------------
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def run_torch(kind, nonlinearity, xs, h0, c0, lengths, time_major, Gy, Gh, Gc, seed):
    """Run a ``torch.nn`` module with random weights; return its weights, results and grads.

    ``h0``/``c0`` of None: the gradients come from a run with explicit zero initial states (so
    that torch has a gradient for them), the outputs from a second run with ``hx=None``.
    """
    N, T, D = (xs.shape[1], xs.shape[0], xs.shape[2]) if time_major else xs.shape
    H = Gh.shape[1]
    tdtype = torch.float64 if xs.dtype == np.float64 else torch.float32
    batch_first = not time_major
    torch.manual_seed(seed)
    if kind == "lstm":
        module = torch.nn.LSTM(D, H, batch_first=batch_first)
    elif kind == "gru":
        module = torch.nn.GRU(D, H, batch_first=batch_first)
    else:
        module = torch.nn.RNN(D, H, nonlinearity=nonlinearity, batch_first=batch_first)
    module = module.to(tdtype)
    with torch.no_grad():  # wider than torch's default init, to exercise the nonlinearities
        for p in module.parameters():
            p.uniform_(-0.7, 0.7)

    def forward(x, hx):
        if lengths is None:
            out, state = module(x, hx)
        else:
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                x, torch.as_tensor(lengths, dtype=torch.int64), batch_first=batch_first,
                enforce_sorted=False)
            out, state = module(packed, hx)
            out, _ = torch.nn.utils.rnn.pad_packed_sequence(
                out, batch_first=batch_first, total_length=T)
        if kind == "lstm":
            h_n, c_n = state
            return out, h_n[0], c_n[0]
        return out, state[0], None

    x = torch.tensor(xs, requires_grad=True)
    zeros = np.zeros((N, H), dtype=xs.dtype)
    h0_t = torch.tensor((zeros if h0 is None else h0)[None], requires_grad=True)
    c0_t = torch.tensor((zeros if c0 is None else c0)[None], requires_grad=True)
    hx = (h0_t, c0_t) if kind == "lstm" else h0_t
    out, h_n, c_n = forward(x, hx)
    loss = (out * torch.from_numpy(Gy)).sum() + (h_n * torch.from_numpy(Gh)).sum()
    if kind == "lstm":
        loss = loss + (c_n * torch.from_numpy(Gc)).sum()
    loss.backward()

    res = {
        "out": out.detach().numpy(), "h_n": h_n.detach().numpy(),
        "c_n": None if c_n is None else c_n.detach().numpy(),
        "dx": x.grad.numpy(), "dh0": h0_t.grad[0].numpy(),
        "dc0": c0_t.grad[0].numpy() if kind == "lstm" else None,
    }
    if h0 is None:  # outputs with hx=None must equal those with explicit zero states
        with torch.no_grad():
            out2, h_n2, c_n2 = forward(x, None)
        res["out"], res["h_n"] = out2.numpy(), h_n2.numpy()
        res["c_n"] = None if c_n2 is None else c_n2.numpy()
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        p = getattr(module, name)
        res[name] = p.detach().numpy().copy()
        res["grad_" + name] = p.grad.numpy().copy()
    return res


_TORCH_RESULTS = {}


def _torch_case(kind, nonlinearity, dtype, N, T, D, H, time_major, with_h0, lengths):
    """Inputs and torch's results of one case; computed once, shared by both implementations
    (each call gets fresh copies)."""
    key = (kind, nonlinearity, np.dtype(dtype).name, N, T, D, H, time_major, with_h0,
           None if lengths is None else tuple(lengths))
    if key not in _TORCH_RESULTS:
        seed = 1000 * N + 100 * T + 10 * D + H + (7 if time_major else 0)
        rng = np.random.default_rng(seed)
        seq_shape = (T, N) if time_major else (N, T)
        xs = rng.standard_normal(seq_shape + (D,)).astype(dtype)
        h0 = rng.standard_normal((N, H)).astype(dtype) if with_h0 else None
        c0 = rng.standard_normal((N, H)).astype(dtype) if with_h0 and kind == "lstm" else None
        Gy = rng.standard_normal(seq_shape + (H,)).astype(dtype)
        Gh = rng.standard_normal((N, H)).astype(dtype)
        Gc = rng.standard_normal((N, H)).astype(dtype) if kind == "lstm" else None
        tr = run_torch(kind, nonlinearity, xs, h0, c0, lengths, time_major, Gy, Gh, Gc, seed)
        _TORCH_RESULTS[key] = ((xs, h0, c0, Gy, Gh, Gc), tr)
    inputs, tr = _TORCH_RESULTS[key]
    copy = lambda a: None if a is None else a.copy()
    return tuple(copy(a) for a in inputs), {k: copy(v) for k, v in tr.items()}


# (N, T, D, H, time_major, with_h0, lengths)
CASES = [
    pytest.param(3, 5, 4, 3, False, True, None, id="N3T5D4H3-batch_first"),
    pytest.param(3, 5, 7, 8, True, True, None, id="N3T5D7H8-time_major"),
    pytest.param(1, 5, 5, 6, False, True, None, id="N1T5-batch_first"),
    pytest.param(1, 5, 6, 4, True, True, None, id="N1T5-time_major"),
    pytest.param(3, 1, 6, 4, True, True, None, id="N3T1-time_major"),
    pytest.param(1, 1, 4, 5, False, True, None, id="N1T1-batch_first"),
    pytest.param(3, 5, 5, 4, False, False, None, id="no_h0-batch_first"),
    pytest.param(3, 5, 4, 5, False, True, [5, 1, 3], id="ragged-batch_first"),
    pytest.param(3, 5, 6, 3, True, True, [2, 4, 1], id="ragged_all_short-time_major"),
    pytest.param(3, 5, 5, 7, True, False, [1, 5, 5], id="ragged_no_h0-time_major"),
    pytest.param(1, 5, 4, 3, False, True, [3], id="ragged_N1-batch_first"),
    pytest.param(3, 1, 4, 4, False, True, [1, 1, 1], id="ragged_T1-batch_first"),
]

KINDS = [
    pytest.param("lstm", None, id="lstm"),
    pytest.param("gru", None, id="gru"),
    pytest.param("rnn", "tanh", id="rnn_tanh"),
    pytest.param("rnn", "relu", id="rnn_relu"),
]


@requires_torch
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("kind, nonlinearity", KINDS)
@pytest.mark.parametrize("N, T, D, H, time_major, with_h0, lengths", CASES)
def test_matches_torch(impl, dtype, kind, nonlinearity, N, T, D, H, time_major, with_h0,
                       lengths):
    forward = _impl_func(impl, f"{kind}_forward")
    backward = _impl_func(impl, f"{kind}_backward")
    tol = TORCH_TOL[dtype]
    (xs, h0, c0, Gy, Gh, Gc), tr = _torch_case(kind, nonlinearity, dtype, N, T, D, H,
                                               time_major, with_h0, lengths)
    lens = None if lengths is None else np.asarray(lengths, dtype=np.int64)
    Wx, Wh, b = torch_to_native(kind, tr["weight_ih_l0"], tr["weight_hh_l0"],
                                tr["bias_ih_l0"], tr["bias_hh_l0"])
    assert Wx.shape == (D, GATES[kind] * H) and Wh.shape == (H, GATES[kind] * H)
    assert Wx.dtype == Wh.dtype == b.dtype == dtype

    inputs = [xs, Wx, Wh, b, h0, c0, Gy, Gh, Gc, lens]
    before = _snapshot(inputs)
    kw = dict(lengths=lens, time_major=time_major)
    if kind == "lstm":
        call = lambda training: forward(xs, Wx, Wh, b, h0, c0, training=training, **kw)
    elif kind == "gru":
        call = lambda training: forward(xs, Wx, Wh, b, h0, reset_after=True,
                                        training=training, **kw)
    else:
        call = lambda training: forward(xs, Wx, Wh, b, h0, nonlinearity=nonlinearity,
                                        training=training, **kw)

    # forward, training=True
    if kind == "lstm":
        hs, (h_T, c_T), cache = call(True)
        assert_close(c_T, tr["c_n"], tol, "c_T")
    else:
        hs, h_T, cache = call(True)
    assert_close(hs, tr["out"], tol, "hs")
    assert_close(h_T, tr["h_n"], tol, "h_T")

    # backward
    if kind == "lstm":
        grads = backward(cache, Gy, Gh, Gc)
    else:
        grads = backward(cache, Gy, Gh)
    assert_close(grads.dxs, tr["dx"], tol, "dxs")
    reorder = {"lstm": lstm_reorder, "gru": gru_reorder, "rnn": rnn_reorder}[kind]
    assert_close(grads.dWx, reorder(tr["grad_weight_ih_l0"]).T, tol, "dWx")
    assert_close(grads.dWh, reorder(tr["grad_weight_hh_l0"]).T, tol, "dWh")
    if kind == "gru":
        assert_close(grads.db, np.stack([gru_reorder(tr["grad_bias_ih_l0"]),
                                         gru_reorder(tr["grad_bias_hh_l0"])]), tol, "db")
    else:  # b = bias_ih + bias_hh, so d/db equals the gradient of each of them
        assert_close(grads.db, reorder(tr["grad_bias_ih_l0"]), tol, "db vs grad bias_ih")
        assert_close(grads.db, reorder(tr["grad_bias_hh_l0"]), tol, "db vs grad bias_hh")
    # h0/c0 given: the gradient of the given state.  Not given: the gradient of the zero
    # initial state (None is tolerated, as the contract does not say).
    if with_h0 or grads.dh0 is not None:
        assert_close(grads.dh0, tr["dh0"], tol, "dh0")
    if kind == "lstm" and (with_h0 or grads.dc0 is not None):
        assert_close(grads.dc0, tr["dc0"], tol, "dc0")

    # forward, training=False: same results, nothing cached
    if kind == "lstm":
        hs2, (h_T2, c_T2), cache2 = call(False)
        assert_close(c_T2, tr["c_n"], tol, "c_T (training=False)")
    else:
        hs2, h_T2, cache2 = call(False)
    assert cache2 is None
    assert_close(hs2, tr["out"], tol, "hs (training=False)")
    assert_close(h_T2, tr["h_n"], tol, "h_T (training=False)")

    _assert_unchanged(inputs, before)


# --------------------------------------------------------------------------------------------
# ONNX GRU, from the operator spec (ai.onnx GRU, f = Sigmoid, g = Tanh, one direction).
# W (3H, D), R (3H, H), Wb (3H,), Rb (3H,) in ONNX's block order [z, r, h];
# X (T, N, D), H0 (N, H); sequence_lens as in CONVENTIONS.md (outputs past the end are zero,
# Y_h is the last valid state).
# --------------------------------------------------------------------------------------------
def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def onnx_gru(X, W, R, Wb, Rb, H0, linear_before_reset, sequence_lens=None):
    T, N, _ = X.shape
    H = R.shape[1]
    Wz, Wr, Wh = W[0:H], W[H:2 * H], W[2 * H:3 * H]
    Rz, Rr, Rh = R[0:H], R[H:2 * H], R[2 * H:3 * H]
    Wbz, Wbr, Wbh = Wb[0:H], Wb[H:2 * H], Wb[2 * H:3 * H]
    Rbz, Rbr, Rbh = Rb[0:H], Rb[H:2 * H], Rb[2 * H:3 * H]
    if sequence_lens is None:
        sequence_lens = np.full(N, T)
    Ht = H0.copy()
    Y = np.zeros((T, N, H), dtype=X.dtype)
    for t in range(T):
        Xt = X[t]
        zt = _sigmoid(Xt @ Wz.T + Ht @ Rz.T + Wbz + Rbz)
        rt = _sigmoid(Xt @ Wr.T + Ht @ Rr.T + Wbr + Rbr)
        if linear_before_reset:
            ht = np.tanh(Xt @ Wh.T + rt * (Ht @ Rh.T + Rbh) + Wbh)
        else:
            ht = np.tanh(Xt @ Wh.T + (rt * Ht) @ Rh.T + Rbh + Wbh)
        Hnew = (1 - zt) * ht + zt * Ht
        valid = (t < np.asarray(sequence_lens))[:, None]
        Y[t] = np.where(valid, Hnew, 0.0)
        Ht = np.where(valid, Hnew, Ht)
    return Y, Ht


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("linear_before_reset", [0, 1])
@pytest.mark.parametrize("N, T, D, H, time_major, with_h0, lengths", [
    pytest.param(3, 5, 4, 3, False, True, None, id="N3T5D4H3-batch_first"),
    pytest.param(3, 5, 7, 8, True, True, None, id="N3T5D7H8-time_major"),
    pytest.param(1, 1, 5, 4, False, False, None, id="N1T1-no_h0"),
    pytest.param(3, 5, 6, 5, True, True, [5, 0, 2], id="ragged-time_major"),
    pytest.param(4, 5, 4, 6, False, True, [3, 5, 1, 0], id="ragged-batch_first"),
])
def test_gru_matches_onnx_formula(impl, dtype, linear_before_reset, N, T, D, H, time_major,
                                  with_h0, lengths):
    forward = _impl_func(impl, "gru_forward")
    tol = ONNX_TOL[dtype]
    rng = np.random.default_rng(7 * N + 11 * T + 13 * D + 17 * H + linear_before_reset)
    # ONNX's tensors, rounded to dtype; the formula then runs in float64 on those values
    X = rng.standard_normal((T, N, D)).astype(dtype)
    W = rng.uniform(-0.8, 0.8, (3 * H, D)).astype(dtype)
    R = rng.uniform(-0.8, 0.8, (3 * H, H)).astype(dtype)
    Wb = rng.uniform(-0.5, 0.5, 3 * H).astype(dtype)
    Rb = rng.uniform(-0.5, 0.5, 3 * H).astype(dtype)
    H0 = rng.standard_normal((N, H)).astype(dtype) if with_h0 else None
    lens = None if lengths is None else np.asarray(lengths, dtype=np.int64)

    f64 = lambda a: a.astype(np.float64)
    Y, Y_h = onnx_gru(f64(X), f64(W), f64(R), f64(Wb), f64(Rb),
                      np.zeros((N, H)) if H0 is None else f64(H0), linear_before_reset, lens)

    # ONNX -> native: same block order [z, r, h]; transpose the weights
    Wx = np.ascontiguousarray(W.T)  # (D, 3H)
    Wh = np.ascontiguousarray(R.T)  # (H, 3H)
    if linear_before_reset:
        b = np.stack([Wb, Rb])  # (2, 3H), reset_after=True
    else:
        b = Wb + Rb  # (3H,), reset_after=False
    xs = X if time_major else np.ascontiguousarray(X.transpose(1, 0, 2))
    hs, h_T, _ = forward(xs, Wx, Wh, b, H0, reset_after=bool(linear_before_reset),
                         lengths=lens, time_major=time_major)
    expected_hs = Y if time_major else Y.transpose(1, 0, 2)
    assert_close(hs, expected_hs.astype(dtype), tol, "hs")
    assert_close(h_T, Y_h.astype(dtype), tol, "h_T")
    if lens is not None:  # outputs past each sequence's end are exactly zero
        for n, L in enumerate(lens):
            pad = hs[L:, n] if time_major else hs[n, L:]
            assert not np.any(pad), f"hs of sequence {n} is not zero past its length {L}"
