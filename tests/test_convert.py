"""fastcells.convert: weights from and to PyTorch, Keras, ONNX and the book (CONVENTIONS.md,
"Other layouts").

- PyTorch (when installed): ``load_torch`` runs whole ``nn.RNN``/``LSTM``/``GRU`` modules (1-3
  layers, uni- and bidirectional, both layouts) and matches their outputs and final states;
  the gradients of one layer in both directions match autograd; ``to_torch`` rebuilds an
  equivalent module.
- Keras (never installed here): the published Keras formulas and weight layouts are written
  out below in NumPy and run on the same weights as fastcells.
- The book's bias-less GRU: its formula, written out below.
- ONNX: the weight round trips and argument checks here; onnxruntime in test_onnx.py.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastcells
from fastcells import convert

DTYPES = [np.float64, np.float32]
# max|a - b| / max|b|: fastcells against another implementation of the same formulas
TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}
G = {"rnn": 1, "lstm": 4, "gru": 3}


def assert_close(actual, expected, what, tol=None):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    if expected.size == 0:
        return
    tol = TOL[expected.dtype] if tol is None else tol
    err = float(np.max(np.abs(actual.astype(np.float64) - expected)))
    scale = float(np.max(np.abs(expected))) or 1.0
    assert err / scale <= tol, f"{what}: max|a-b|/max|b| = {err / scale:.3e} > {tol:.0e}"


def forward(p, xs, *states, **kw):
    """hs, [final states] of the functional API, called exactly as the Params docs say."""
    hs, final, _ = getattr(fastcells, f"{p.cell}_forward")(xs, p.Wx, p.Wh, p.b, *states,
                                                           **p.options, **kw)
    return hs, list(final) if p.cell == "lstm" else [final]


def random_params(rng, cell, D, H, dtype, **options):
    b_shape = (2, 3 * H) if cell == "gru" and options.get("reset_after", True) else (G[cell] * H,)
    defaults = {"rnn": {"nonlinearity": "tanh"}, "gru": {"reset_after": True}, "lstm": {}}
    opts = {**defaults[cell], **options}
    return convert.Params(cell, rng.standard_normal((D, G[cell] * H)).astype(dtype) / 2,
                          rng.standard_normal((H, G[cell] * H)).astype(dtype) / 2,
                          rng.standard_normal(b_shape).astype(dtype) / 2, opts)


def assert_params_equal(a, b):
    assert a.cell == b.cell and a.options == b.options
    for name in ("Wx", "Wh", "b"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name


VARIANTS = [
    pytest.param("lstm", {}, id="lstm"),
    pytest.param("gru", {"reset_after": True}, id="gru"),
    pytest.param("gru", {"reset_after": False}, id="gru_reset_before"),
    pytest.param("rnn", {"nonlinearity": "tanh"}, id="rnn_tanh"),
    pytest.param("rnn", {"nonlinearity": "relu"}, id="rnn_relu"),
]


# ============================================================================================
# Params
# ============================================================================================
def test_params_is_a_namedtuple():
    assert convert.Params._fields == ("cell", "Wx", "Wh", "b", "options")
    p = random_params(np.random.default_rng(0), "lstm", 3, 5, np.float32)
    assert (p.input_size, p.hidden_size) == (3, 5)
    cell, Wx, Wh, b, options = p
    assert cell == "lstm" and options == {}


# ============================================================================================
# PyTorch
# ============================================================================================
def _torch():
    return pytest.importorskip("torch")


TORCH_KINDS = [
    pytest.param("lstm", None, id="lstm"),
    pytest.param("gru", None, id="gru"),
    pytest.param("rnn", "tanh", id="rnn_tanh"),
    pytest.param("rnn", "relu", id="rnn_relu"),
]


def make_module(kind, nonlinearity, D, H, dtype, seed, **kw):
    torch = _torch()
    torch.manual_seed(seed)
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind]
    if kind == "rnn":
        kw["nonlinearity"] = nonlinearity
    m = cls(D, H, **kw).to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():  # wider than torch's default init, to exercise the nonlinearities
        for p in m.parameters():
            p.uniform_(-0.6, 0.6)
    return m.eval()


def run_module(m, x, state):
    """module(x, state) as NumPy: output, [h_n(, c_n)]."""
    torch = _torch()
    with torch.no_grad():
        st = None if state is None else (tuple(torch.from_numpy(s) for s in state)
                                         if len(state) == 2 else torch.from_numpy(state[0]))
        out, s = m(torch.from_numpy(x), st)
    return out.numpy(), [t.numpy() for t in (s if isinstance(s, tuple) else (s,))]


def random_input(rng, kind, N, T, D, H, L, dtype, batch_first, with_state):
    x = rng.standard_normal((N, T, D) if batch_first else (T, N, D)).astype(dtype)
    n = 2 if kind == "lstm" else 1
    state = [rng.standard_normal((L, N, H)).astype(dtype) for _ in range(n)] if with_state \
        else None
    return x, state


def as_state(state):
    return None if state is None else (tuple(state) if len(state) == 2 else state[0])


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("kind, nonlinearity", TORCH_KINDS)
def test_load_torch_matches_module(kind, nonlinearity, num_layers, bidirectional, dtype):
    N, T, D, H = 3, 5, 4, 6
    seed = 100 * num_layers + 10 * bidirectional + len(kind)
    batch_first = bool(seed % 2)  # both layouts over the matrix
    m = make_module(kind, nonlinearity, D, H, dtype, seed, num_layers=num_layers,
                    bidirectional=bidirectional, batch_first=batch_first)
    runner = convert.load_torch(m)
    dirs = 2 if bidirectional else 1
    assert (runner.cell, runner.num_layers, runner.bidirectional, runner.batch_first) == \
        (kind, num_layers, bidirectional, batch_first)
    assert len(runner.params) == num_layers and all(len(ps) == dirs for ps in runner.params)
    rng = np.random.default_rng(seed)
    for with_state in (False, True):
        x, state = random_input(rng, kind, N, T, D, H, num_layers * dirs, dtype, batch_first,
                                with_state)
        out_t, state_t = run_module(m, x, state)
        out, st = runner(x, as_state(state))
        assert_close(out, out_t, "output")
        st = list(st) if kind == "lstm" else [st]
        for name, a, b in zip(("h_n", "c_n"), st, state_t):
            assert_close(a, b, name)


@pytest.mark.parametrize("kind, nonlinearity", TORCH_KINDS)
def test_load_torch_packed_sequences(kind, nonlinearity):
    """lengths= equals a module run on pack_padded_sequence(..., enforce_sorted=False)."""
    torch = _torch()
    N, T, D, H, dtype = 4, 6, 3, 5, np.float64
    m = make_module(kind, nonlinearity, D, H, dtype, 7, num_layers=2, bidirectional=True,
                    batch_first=True)
    rng = np.random.default_rng(7)
    x, state = random_input(rng, kind, N, T, D, H, 4, dtype, True, True)
    lengths = np.array([6, 2, 4, 1])
    with torch.no_grad():
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            torch.from_numpy(x), torch.from_numpy(lengths), batch_first=True,
            enforce_sorted=False)
        st = tuple(torch.from_numpy(s) for s in state) if kind == "lstm" \
            else torch.from_numpy(state[0])
        out_t, s_t = m(packed, st)
        out_t, _ = torch.nn.utils.rnn.pad_packed_sequence(out_t, batch_first=True,
                                                          total_length=T)
    s_t = s_t if isinstance(s_t, tuple) else (s_t,)
    out, s = convert.load_torch(m)(x, as_state(state), lengths=lengths)
    assert_close(out, out_t.numpy(), "output")
    for a, b in zip(s if kind == "lstm" else (s,), s_t):
        assert_close(a, b.numpy(), "state")


def test_load_torch_unbatched_input_and_dropout():
    """Unbatched (T, D) input with a (L*dirs, H) state, as torch accepts; a module trained
    with dropout between layers runs as in eval mode."""
    T, D, H, dtype = 5, 3, 4, np.float32
    m = make_module("lstm", None, D, H, dtype, 3, num_layers=2, bidirectional=True,
                    dropout=0.5)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((T, D)).astype(dtype)
    state = [rng.standard_normal((4, H)).astype(dtype) for _ in range(2)]
    out_t, (h_t, c_t) = run_module(m, x, state)
    out, (h, c) = convert.load_torch(m)(x, tuple(state))
    assert out.shape == (T, 2 * H) and h.shape == c.shape == (4, H)
    assert_close(out, out_t, "output")
    assert_close(h, h_t, "h_n")
    assert_close(c, c_t, "c_n")


@pytest.mark.parametrize("kind, nonlinearity", TORCH_KINDS)
def test_load_torch_from_state_dict_of_arrays(kind, nonlinearity):
    """The module's state_dict as NumPy arrays (as saved to .npz) gives the same runner."""
    D, H, dtype = 3, 4, np.float32
    m = make_module(kind, nonlinearity, D, H, dtype, 11, num_layers=2, bidirectional=True,
                    batch_first=True)
    sd = {k: v.numpy().copy() for k, v in m.state_dict().items()}
    runner = convert.load_torch(sd, batch_first=True, nonlinearity=nonlinearity)
    assert (runner.num_layers, runner.bidirectional, runner.batch_first) == (2, True, True)
    x, _ = random_input(np.random.default_rng(11), kind, 2, 5, D, H, 4, dtype, True, False)
    out_t, state_t = run_module(m, x, None)
    out, state = runner(x)
    assert_close(out, out_t, "output")
    for a, b in zip(state if kind == "lstm" else (state,), state_t):
        assert_close(a, b, "state")
    # the dtype option converts the weights
    runner64 = convert.load_torch(sd, batch_first=True, nonlinearity=nonlinearity,
                                  dtype=np.float64)
    out64, _ = runner64(x.astype(np.float64))
    assert out64.dtype == np.float64
    assert_close(out64.astype(np.float32), out_t, "output (float64 weights)", 1e-5)


def test_load_torch_state_dict_needs_no_torch(tmp_path):
    """A state_dict of NumPy arrays runs in a Python where torch cannot be imported."""
    _torch()
    m = make_module("gru", None, 3, 4, np.float64, 5, num_layers=2, bidirectional=True)
    np.savez(tmp_path / "gru.npz", **{k: v.numpy() for k, v in m.state_dict().items()})
    x = np.random.default_rng(5).standard_normal((6, 2, 3))
    np.save(tmp_path / "x.npy", x)
    out_t, (h_t,) = run_module(m, x, None)
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        "import numpy as np\n"
        "from fastcells import convert\n"
        "runner = convert.load_torch(dict(np.load('gru.npz')))\n"
        "out, h = runner(np.load('x.npy'))\n"
        "np.save('out.npy', out); np.save('h.npy', h)\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n")
    env = dict(os.environ)
    src = str(Path(fastcells.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True)
    assert_close(np.load(tmp_path / "out.npy"), out_t, "output")
    assert_close(np.load(tmp_path / "h.npy"), h_t, "h_n")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("kind, nonlinearity", TORCH_KINDS)
def test_gradients_match_autograd(kind, nonlinearity, dtype):
    """One bidirectional layer: fastcells' backward of each direction (reverse=False and
    reverse=True) against torch autograd, through from_torch of the weights *and* of the
    weight gradients (the same linear map)."""
    torch = _torch()
    N, T, D, H = 3, 5, 4, 5
    m = make_module(kind, nonlinearity, D, H, dtype, 21, bidirectional=True, batch_first=True)
    rng = np.random.default_rng(21)
    n = 2 if kind == "lstm" else 1
    x = rng.standard_normal((N, T, D)).astype(dtype)
    states = [rng.standard_normal((2, N, H)).astype(dtype) for _ in range(n)]
    Gy = rng.standard_normal((N, T, 2 * H)).astype(dtype)
    Gs = [rng.standard_normal((2, N, H)).astype(dtype) for _ in range(n)]

    x_t = torch.tensor(x, requires_grad=True)
    s_t = [torch.tensor(s, requires_grad=True) for s in states]
    out_t, fin_t = m(x_t, tuple(s_t) if n == 2 else s_t[0])
    fin_t = fin_t if n == 2 else (fin_t,)
    loss = (out_t * torch.from_numpy(Gy)).sum()
    for f, g in zip(fin_t, Gs):
        loss = loss + (f * torch.from_numpy(g)).sum()
    loss.backward()

    backward = getattr(fastcells, f"{kind}_backward")
    dx = np.zeros_like(x)
    for d, reverse in enumerate((False, True)):
        p = convert.from_torch(m, 0, reverse)
        hs, final, cache = getattr(fastcells, f"{kind}_forward")(
            x, p.Wx, p.Wh, p.b, *[s[d] for s in states], **p.options, reverse=reverse)
        assert_close(hs, out_t.detach().numpy()[..., d * H:(d + 1) * H], f"hs[{d}]")
        grads = backward(cache, Gy[..., d * H:(d + 1) * H], *[g[d] for g in Gs])
        dx += grads.dxs
        sfx = "_l0" + ("_reverse" if reverse else "")
        tg = {name: getattr(m, name + sfx).grad.numpy()
              for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        if kind != "gru":  # b = bias_ih + bias_hh: both get dL/db
            assert_close(tg["bias_hh"], tg["bias_ih"], "torch's two bias gradients")
            tg["bias_hh"] = np.zeros_like(tg["bias_hh"])
        dp = convert.from_torch({k + "_l0": v for k, v in tg.items()},
                                nonlinearity=nonlinearity)
        assert_close(grads.dWx, dp.Wx, f"dWx[{d}]")
        assert_close(grads.dWh, dp.Wh, f"dWh[{d}]")
        assert_close(grads.db, dp.b, f"db[{d}]")
        assert_close(grads.dh0, s_t[0].grad.numpy()[d], f"dh0[{d}]")
        if n == 2:
            assert_close(grads.dc0, s_t[1].grad.numpy()[d], f"dc0[{d}]")
    assert_close(dx, x_t.grad.numpy(), "dxs")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("kind, nonlinearity", TORCH_KINDS)
def test_to_torch_rebuilds_the_module(kind, nonlinearity, dtype):
    torch = _torch()
    D, H = 4, 5
    m = make_module(kind, nonlinearity, D, H, dtype, 31, num_layers=2, bidirectional=True)
    m2 = make_module(kind, nonlinearity, D, H, dtype, 32, num_layers=2, bidirectional=True)
    sd = {}
    for k in range(2):
        for reverse in (False, True):
            p = convert.from_torch(m, k, reverse)
            w = convert.to_torch(p)
            assert sorted(w) == ["bias_hh", "bias_ih", "weight_hh", "weight_ih"]
            assert all(isinstance(a, np.ndarray) and a.dtype == dtype for a in w.values())
            sfx = f"_l{k}" + ("_reverse" if reverse else "")
            sd.update({name + sfx: torch.from_numpy(a) for name, a in w.items()})
            assert_params_equal(convert.from_torch(w_sd(w), nonlinearity=nonlinearity), p)
    m2.load_state_dict(sd)
    x = np.random.default_rng(31).standard_normal((5, 3, D)).astype(dtype)
    out, st = run_module(m, x, None)
    out2, st2 = run_module(m2, x, None)
    # GRU: the same numbers, bit for bit; LSTM/RNN: b_ih + b_hh is added once instead of twice
    tol = 0 if kind == "gru" else {np.float64: 1e-14, np.float32: 1e-6}[dtype]
    assert_close(out2, out, "output", tol)
    for a, b in zip(st2, st):
        assert_close(a, b, "state", tol)


def w_sd(w):
    """to_torch's dict as the state_dict of a one-layer module."""
    return {k + "_l0": v for k, v in w.items()}


def test_from_torch_state_dict_equals_module():
    torch = _torch()
    m = make_module("lstm", None, 3, 4, np.float32, 41, num_layers=2, bidirectional=True)
    sd = m.state_dict()
    wrapped = {"encoder.rnn." + k: v for k, v in sd.items()}  # an enclosing module's prefix
    for k in range(2):
        for reverse in (False, True):
            p = convert.from_torch(m, layer=k, reverse=reverse)
            assert p.Wx.dtype == np.float32 and p.cell == "lstm"
            assert_params_equal(convert.from_torch(sd, k, reverse), p)
            assert_params_equal(convert.from_torch(wrapped, k, reverse), p)
            numpy_sd = {key: v.numpy() for key, v in sd.items()}
            assert_params_equal(convert.from_torch(numpy_sd, k, reverse), p)
    # results own their memory: writing into them leaves the module alone
    p = convert.from_torch(m)
    before = m.weight_ih_l0.detach().clone()
    p.Wx[...] = 0
    assert torch.equal(m.weight_ih_l0.detach(), before)


def test_from_torch_layout_is_the_documented_one():
    """The mapping written out: torch [i, f, g, o] out-by-in -> native [f, g, i, o] in-by-out,
    GRU [r, z, n] -> [z, r, h] with the biases as the rows of b."""
    torch = _torch()
    H = 2
    lstm = make_module("lstm", None, 3, H, np.float64, 1)
    w = lstm.weight_ih_l0.detach().numpy()
    i, f, g, o = (w[k * H:(k + 1) * H] for k in range(4))
    p = convert.from_torch(lstm)
    np.testing.assert_array_equal(p.Wx, np.concatenate([f, g, i, o]).T)
    b = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().numpy()
    np.testing.assert_array_equal(p.b, np.concatenate([b[H:2 * H], b[2 * H:3 * H], b[:H],
                                                       b[3 * H:]]))
    gru = make_module("gru", None, 3, H, np.float64, 2)
    p = convert.from_torch(gru)
    bi, bh = gru.bias_ih_l0.detach().numpy(), gru.bias_hh_l0.detach().numpy()
    reorder = lambda v: np.concatenate([v[H:2 * H], v[:H], v[2 * H:]])  # r, z, n -> z, r, n
    np.testing.assert_array_equal(p.b, np.stack([reorder(bi), reorder(bh)]))
    assert p.options == {"reset_after": True}
    np.testing.assert_array_equal(p.Wh, reorder(gru.weight_hh_l0.detach().numpy()).T)
    del torch


def test_from_torch_without_bias():
    m = make_module("gru", None, 3, 4, np.float32, 51, bias=False)
    p = convert.from_torch(m)
    assert p.b.shape == (2, 12) and not p.b.any() and p.b.dtype == np.float32
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    out_t, _ = run_module(m, x.transpose(1, 0, 2).copy(), None)
    hs, _ = forward(p, x)
    assert_close(hs, out_t.transpose(1, 0, 2), "hs")


def test_from_torch_errors():
    torch = _torch()
    lstm = make_module("lstm", None, 3, 4, np.float32, 61, num_layers=2)
    with pytest.raises(ValueError, match="proj_size"):
        convert.from_torch(torch.nn.LSTM(3, 4, proj_size=2))
    with pytest.raises(ValueError, match="proj_size"):
        convert.load_torch(torch.nn.LSTM(3, 4, proj_size=2))
    with pytest.raises(ValueError, match="proj_size"):
        convert.from_torch(torch.nn.LSTM(3, 4, proj_size=2).state_dict())
    with pytest.raises(ValueError, match="layer=2 is out of range.*2 layer"):
        convert.from_torch(lstm, layer=2)
    with pytest.raises(ValueError, match="layer=2 is out of range"):
        convert.from_torch(lstm.state_dict(), layer=2)
    with pytest.raises(ValueError, match="reverse=True needs a bidirectional"):
        convert.from_torch(lstm, reverse=True)
    with pytest.raises(ValueError, match="reverse=True needs a bidirectional"):
        convert.from_torch(lstm.state_dict(), reverse=True)
    with pytest.raises(TypeError, match="layer must be an integer"):
        convert.from_torch(lstm, layer="0")
    with pytest.raises(ValueError, match="layer must be >= 0"):
        convert.from_torch(lstm, layer=-1)
    with pytest.raises(TypeError, match="torch.nn.RNN, LSTM or GRU module"):
        convert.from_torch(torch.nn.Linear(3, 4))
    with pytest.raises(TypeError, match="torch.nn.RNN, LSTM or GRU module"):
        convert.from_torch(torch.nn.LSTMCell(3, 4))
    with pytest.raises(ValueError, match="nonlinearity is read from the module"):
        convert.from_torch(lstm, nonlinearity="relu")
    with pytest.raises(ValueError, match="nonlinearity applies to an RNN only"):
        convert.from_torch(lstm.state_dict(), nonlinearity="relu")
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        convert.from_torch(torch.nn.RNN(3, 4).state_dict(), nonlinearity="sigmoid")
    with pytest.raises(TypeError, match="float32 or float64, got torch.bfloat16"):
        convert.from_torch(torch.nn.GRU(3, 4).to(torch.bfloat16))
    with pytest.raises(TypeError, match="weight_[ih]h_l0 must have dtype float32 or float64"):
        convert.from_torch(torch.nn.GRU(3, 4).half().state_dict())
    with pytest.raises(ValueError, match="batch_first=False contradicts"):
        convert.load_torch(make_module("gru", None, 3, 4, np.float32, 1, batch_first=True),
                           batch_first=False)
    runner = convert.load_torch(lstm)
    with pytest.raises(TypeError, match="x has dtype float64, the weights float32"):
        runner(np.zeros((5, 2, 3)))
    with pytest.raises(ValueError, match="x has 5 features, the module's input_size is 3"):
        runner(np.zeros((5, 2, 5), np.float32))
    with pytest.raises(ValueError, match="x must be 3-D"):
        runner(np.zeros((5,), np.float32))
    with pytest.raises(TypeError, match=r"tuple \(h_0, c_0\)"):
        runner(np.zeros((5, 2, 3), np.float32), np.zeros((2, 2, 4), np.float32))
    with pytest.raises(ValueError, match=r"state\[1\] \(c_0\) must have shape"):
        runner(np.zeros((5, 2, 3), np.float32),
               (np.zeros((2, 2, 4), np.float32), np.zeros((1, 2, 4), np.float32)))
    p = random_params(np.random.default_rng(0), "gru", 3, 4, np.float32, reset_after=False)
    with pytest.raises(ValueError, match="reset_after=False has no PyTorch equivalent"):
        convert.to_torch(p)


def test_from_torch_state_dict_errors():
    """No torch needed: state_dicts of NumPy arrays."""
    H, D = 4, 3
    rng = np.random.default_rng(0)
    sd = {"weight_ih_l0": rng.standard_normal((3 * H, D)),
          "weight_hh_l0": rng.standard_normal((3 * H, H)),
          "bias_ih_l0": rng.standard_normal(3 * H), "bias_hh_l0": rng.standard_normal(3 * H)}
    assert convert.from_torch(sd).cell == "gru"
    with pytest.raises(ValueError, match="exactly one torch RNN/LSTM/GRU.*found none"):
        convert.from_torch({"weight": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="exactly one torch RNN/LSTM/GRU"):
        convert.from_torch({**sd, **{"b." + k: v for k, v in sd.items()}})
    with pytest.raises(ValueError, match=r"weight_hh_l0 must have shape \(G\*H, H\)"):
        convert.from_torch({**sd, "weight_hh_l0": np.zeros((10, 4))})
    with pytest.raises(ValueError, match=r"weight_ih_l0 must have shape \(3\*H, D\)"):
        convert.from_torch({**sd, "weight_ih_l0": np.zeros((10, 3))})
    with pytest.raises(ValueError, match=r"bias_hh_l0 must have shape \(3\*H,\)"):
        convert.from_torch({**sd, "bias_hh_l0": np.zeros(11)})
    with pytest.raises(ValueError, match="bias_hh_l0 is missing while bias_ih_l0 is present"):
        convert.from_torch({k: v for k, v in sd.items() if k != "bias_hh_l0"})
    with pytest.raises(TypeError, match="weight_ih_l0 has dtype float32, expected float64"):
        convert.from_torch({**sd, "weight_ih_l0": sd["weight_ih_l0"].astype(np.float32)})
    with pytest.raises(TypeError, match="must have dtype float32 or float64, got int64"):
        convert.from_torch({**sd, "weight_hh_l0": np.zeros((3 * H, H), np.int64)})
    with pytest.raises(TypeError, match="module or its state_dict"):
        convert.from_torch([sd])


# ============================================================================================
# Keras 3: the published formulas and layouts (keras/src/layers/rnn/{simple_rnn,lstm,gru}.py)
# ============================================================================================
def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


def keras_simple_rnn(x, h, kernel, recurrent_kernel, bias, activation):
    """SimpleRNNCell: output = activation(x @ kernel + bias + h @ recurrent_kernel)."""
    act = np.tanh if activation == "tanh" else (lambda a: np.maximum(a, 0))
    hs = []
    for t in range(x.shape[1]):
        h = act(x[:, t] @ kernel + bias + h @ recurrent_kernel)
        hs.append(h)
    return np.stack(hs, 1), h


def keras_lstm(x, h, c, kernel, recurrent_kernel, bias):
    """LSTMCell (implementation 2): z = x @ kernel + h @ recurrent_kernel + bias, split into
    [i, f, c, o]; c = f * c + i * tanh(z_c); h = o * tanh(c)."""
    H = h.shape[1]
    hs = []
    for t in range(x.shape[1]):
        z = x[:, t] @ kernel + h @ recurrent_kernel + bias
        i, f = _sigmoid(z[:, :H]), _sigmoid(z[:, H:2 * H])
        c = f * c + i * np.tanh(z[:, 2 * H:3 * H])
        o = _sigmoid(z[:, 3 * H:])
        h = o * np.tanh(c)
        hs.append(h)
    return np.stack(hs, 1), h, c


def keras_gru(x, h, kernel, recurrent_kernel, bias, reset_after):
    """GRUCell: blocks [z, r, h]; bias (2, 3H) = [input_bias; recurrent_bias] with reset_after,
    else (3H,) on the input side; h = z * h_prev + (1 - z) * hh."""
    H = h.shape[1]
    input_bias, recurrent_bias = (bias[0], bias[1]) if reset_after else (bias, 0 * bias)
    hs = []
    for t in range(x.shape[1]):
        mx = x[:, t] @ kernel + input_bias
        x_z, x_r, x_h = mx[:, :H], mx[:, H:2 * H], mx[:, 2 * H:]
        if reset_after:
            mi = h @ recurrent_kernel + recurrent_bias
            z = _sigmoid(x_z + mi[:, :H])
            r = _sigmoid(x_r + mi[:, H:2 * H])
            rh = r * mi[:, 2 * H:]
        else:
            z = _sigmoid(x_z + h @ recurrent_kernel[:, :H])
            r = _sigmoid(x_r + h @ recurrent_kernel[:, H:2 * H])
            rh = (r * h) @ recurrent_kernel[:, 2 * H:]
        hh = np.tanh(x_h + rh)
        h = z * h + (1 - z) * hh
        hs.append(h)
    return np.stack(hs, 1), h


KERAS_CASES = [
    pytest.param("SimpleRNN", {}, id="SimpleRNN"),
    pytest.param("SimpleRNN", {"activation": "relu"}, id="SimpleRNN_relu"),
    pytest.param("LSTM", {}, id="LSTM"),
    pytest.param("GRU", {"reset_after": True}, id="GRU"),
    pytest.param("GRU", {"reset_after": False}, id="GRU_reset_before"),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("kind, kw", KERAS_CASES)
def test_keras_formulas(kind, kw, dtype):
    N, T, D, H = 3, 6, 4, 5
    rng = np.random.default_rng(len(kind) + len(kw))
    g = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}[kind]
    kernel = (rng.standard_normal((D, g * H)) / 2).astype(dtype)
    recurrent_kernel = (rng.standard_normal((H, g * H)) / 2).astype(dtype)
    reset_after = kw.get("reset_after", True)
    b_shape = (2, 3 * H) if kind == "GRU" and reset_after else (g * H,)
    bias = (rng.standard_normal(b_shape) / 2).astype(dtype)
    x = rng.standard_normal((N, T, D)).astype(dtype)
    h0 = rng.standard_normal((N, H)).astype(dtype)
    weights = [kernel, recurrent_kernel, bias]
    p = convert.from_keras(kind, weights, **kw)
    assert p.Wx.dtype == dtype
    # Keras' own formulas, evaluated in float64 on the same (rounded) numbers
    w64 = [a.astype(np.float64) for a in weights]
    x64, h64 = x.astype(np.float64), h0.astype(np.float64)
    if kind == "SimpleRNN":
        hs_k, h_k = keras_simple_rnn(x64, h64, *w64, kw.get("activation", "tanh"))
        hs, (h,) = forward(p, x, h0)
    elif kind == "LSTM":
        c0 = rng.standard_normal((N, H)).astype(dtype)
        hs_k, h_k, c_k = keras_lstm(x64, h64, c0.astype(np.float64), *w64)
        hs, (h, c) = forward(p, x, h0, c0)
        assert_close(c, c_k.astype(dtype), "c_T")
    else:
        hs_k, h_k = keras_gru(x64, h64, *w64, reset_after)
        hs, (h,) = forward(p, x, h0)
    assert_close(hs, hs_k.astype(dtype), "hs")
    assert_close(h, h_k.astype(dtype), "h_T")
    # and back, exactly
    back = convert.to_keras(p)
    assert len(back) == 3
    for a, b in zip(back, weights):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_keras_layout_is_the_documented_one():
    H = 2
    kernel = np.arange(3 * 4 * H, dtype=np.float64).reshape(3, 4 * H)
    p = convert.from_keras("LSTM", [kernel, np.zeros((H, 4 * H)), np.arange(4 * H, dtype=float)])
    i, f, c, o = (kernel[:, k * H:(k + 1) * H] for k in range(4))
    np.testing.assert_array_equal(p.Wx, np.concatenate([f, c, i, o], axis=1))
    np.testing.assert_array_equal(p.b, [2, 3, 4, 5, 0, 1, 6, 7])
    g = convert.from_keras("GRU", [kernel[:, :3 * H], np.zeros((H, 3 * H)),
                                   np.ones((2, 3 * H))])
    np.testing.assert_array_equal(g.Wx, kernel[:, :3 * H])  # [z, r, h] both
    assert g.b.shape == (2, 3 * H) and g.options == {"reset_after": True}


def test_keras_without_bias_and_errors():
    rng = np.random.default_rng(0)
    K, R = rng.standard_normal((3, 12)), rng.standard_normal((4, 12))
    p = convert.from_keras("GRU", [K, R])  # use_bias=False
    assert p.b.shape == (2, 12) and not p.b.any()
    p = convert.from_keras("GRU", [K, R], reset_after=False)
    assert p.b.shape == (12,) and p.options == {"reset_after": False}
    with pytest.raises(ValueError, match="kind must be 'SimpleRNN', 'LSTM' or 'GRU'"):
        convert.from_keras("Bidirectional", [K, R])
    with pytest.raises(ValueError, match=r"bias\) must have shape \(2, 3H\).*reset_after=False"):
        convert.from_keras("GRU", [K, R, np.zeros(12)])
    with pytest.raises(ValueError, match=r"bias\) must have shape \(3H,\)"):
        convert.from_keras("GRU", [K, R, np.zeros((2, 12))], reset_after=False)
    with pytest.raises(ValueError, match="activation='relu' is not supported"):
        convert.from_keras("GRU", [K, R], activation="relu")
    with pytest.raises(ValueError, match="recurrent_activation='hard_sigmoid'"):
        convert.from_keras("GRU", [K, R], recurrent_activation="hard_sigmoid")
    with pytest.raises(ValueError, match="activation='sigmoid' is not supported"):
        convert.from_keras("SimpleRNN", [K[:, :4], R[:, :4]], activation="sigmoid")
    with pytest.raises(ValueError, match="activation=None is not supported"):
        convert.from_keras("LSTM", [K, R], activation=None)
    assert convert.from_keras("GRU", [K, R], activation=np.tanh).cell == "gru"  # a function
    with pytest.raises(ValueError, match=r"recurrent_kernel\) must have shape \(H, 3H\)"):
        convert.from_keras("GRU", [K, R[:, :8]])
    with pytest.raises(ValueError, match=r"kernel\) must have shape \(D, 4H\)"):
        convert.from_keras("LSTM", [K, np.zeros((4, 16))])
    with pytest.raises(TypeError, match="weights must be the list"):
        convert.from_keras("GRU", K)
    with pytest.raises(TypeError, match=r"recurrent_kernel\) has dtype float32"):
        convert.from_keras("GRU", [K, R.astype(np.float32)])


# ============================================================================================
# the book's bias-less GRU (Deep Learning from Scratch 2, chapter 6)
# ============================================================================================
def book_gru(x, h, Wx, Wh, b=None):
    """The book's GRU.forward, step by step, blocks [z, r, h]."""
    H = Wh.shape[0]
    b = np.zeros(3 * H) if b is None else b
    hs = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        z = _sigmoid(xt @ Wx[:, :H] + h @ Wh[:, :H] + b[:H])
        r = _sigmoid(xt @ Wx[:, H:2 * H] + h @ Wh[:, H:2 * H] + b[H:2 * H])
        h_hat = np.tanh(xt @ Wx[:, 2 * H:] + (r * h) @ Wh[:, 2 * H:] + b[2 * H:])
        h = (1 - z) * h + z * h_hat
        hs.append(h)
    return np.stack(hs, 1), h


@pytest.mark.parametrize("with_bias", [False, True], ids=["book", "with_bias"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_book_gru(dtype, with_bias):
    N, T, D, H = 3, 6, 4, 5
    rng = np.random.default_rng(5)
    Wx = rng.standard_normal((D, 3 * H)).astype(dtype)
    Wh = (rng.standard_normal((H, 3 * H)) / 2).astype(dtype)
    b = rng.standard_normal(3 * H).astype(dtype) if with_bias else None
    x = rng.standard_normal((N, T, D)).astype(dtype)
    h0 = rng.standard_normal((N, H)).astype(dtype)
    Wx0, Wh0 = Wx.copy(), Wh.copy()
    p = convert.from_book_gru(Wx, Wh) if b is None else convert.from_book_gru(Wx, Wh, b)
    assert np.array_equal(Wx, Wx0) and np.array_equal(Wh, Wh0)  # inputs untouched
    assert p.cell == "gru" and p.options == {"reset_after": False} and p.b.shape == (3 * H,)
    hs_b, h_b = book_gru(x.astype(np.float64), h0.astype(np.float64), Wx.astype(np.float64),
                         Wh.astype(np.float64), None if b is None else b.astype(np.float64))
    hs, (h,) = forward(p, x, h0)
    assert_close(hs, hs_b.astype(dtype), "hs")
    assert_close(h, h_b.astype(dtype), "h_T")


def test_book_gru_errors():
    with pytest.raises(ValueError, match=r"Wh must have shape \(H, 3H\)"):
        convert.from_book_gru(np.zeros((3, 12)), np.zeros((4, 16)))
    with pytest.raises(ValueError, match=r"Wx must have shape \(D, 3H\)"):
        convert.from_book_gru(np.zeros((3, 16)), np.zeros((4, 12)))
    with pytest.raises(TypeError, match="Wx has dtype float32, expected float64"):
        convert.from_book_gru(np.zeros((3, 12), np.float32), np.zeros((4, 12)))


# ============================================================================================
# ONNX: layouts and checks (onnxruntime itself: test_onnx.py)
# ============================================================================================
def test_onnx_layout_is_the_documented_one():
    H, D = 2, 3
    W = np.arange(4 * H * D, dtype=np.float64).reshape(1, 4 * H, D)
    B = np.arange(8 * H, dtype=np.float64).reshape(1, 8 * H)
    (p,) = convert.from_onnx("LSTM", W, np.zeros((1, 4 * H, H)), B)
    i, o, f, c = (W[0, k * H:(k + 1) * H] for k in range(4))
    np.testing.assert_array_equal(p.Wx, np.concatenate([f, c, i, o]).T)
    Wb, Rb = B[0, :4 * H], B[0, 4 * H:]
    s = Wb + Rb  # [i, o, f, c]
    np.testing.assert_array_equal(p.b, np.concatenate([s[4:6], s[6:8], s[0:2], s[2:4]]))
    Wg = W[:, :3 * H]
    Bg = B[:, :6 * H]
    (g0,) = convert.from_onnx("GRU", Wg, np.zeros((1, 3 * H, H)), Bg)
    assert g0.options == {"reset_after": False}
    np.testing.assert_array_equal(g0.b, Bg[0, :3 * H] + Bg[0, 3 * H:])
    (g1,) = convert.from_onnx("GRU", Wg, np.zeros((1, 3 * H, H)), Bg, linear_before_reset=1)
    assert g1.options == {"reset_after": True}
    np.testing.assert_array_equal(g1.b, Bg[0].reshape(2, 3 * H))
    np.testing.assert_array_equal(g1.Wx, Wg[0].T)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("cell, options", VARIANTS)
def test_onnx_round_trip(cell, options, dtype):
    rng = np.random.default_rng(9)
    for dirs in (1, 2):
        ps = [random_params(rng, cell, 3, 4, dtype, **options) for _ in range(dirs)]
        W, R, B = convert.to_onnx(ps)
        g = G[cell]
        assert W.shape == (dirs, g * 4, 3) and R.shape == (dirs, g * 4, 4)
        assert B.shape == (dirs, 2 * g * 4) and W.dtype == R.dtype == B.dtype == dtype
        attrs = convert.onnx_attributes(ps)
        assert attrs["direction"] == ("bidirectional" if dirs == 2 else "forward")
        assert attrs["hidden_size"] == 4
        # the attributes dict goes straight back into from_onnx
        back = convert.from_onnx(cell.upper(), W, R, B, **attrs)
        assert len(back) == dirs
        for a, b in zip(back, ps):  # exact: the bias comes back as b + 0
            assert_params_equal(a, b)
    assert convert.onnx_attributes(ps[:1], reverse=True)["direction"] == "reverse"


def test_onnx_errors():
    rng = np.random.default_rng(0)
    H, D = 3, 2
    W, R = rng.standard_normal((1, 4 * H, D)), rng.standard_normal((1, 4 * H, H))
    B = rng.standard_normal((1, 8 * H))
    assert len(convert.from_onnx("LSTM", W, R, B, P=np.zeros((1, 3 * H)))) == 1  # zeros: ok
    with pytest.raises(ValueError, match="peepholes"):
        convert.from_onnx("LSTM", W, R, B, P=np.ones((1, 3 * H)))
    with pytest.raises(ValueError, match="clip=1.5 is not supported"):
        convert.from_onnx("LSTM", W, R, B, clip=1.5)
    with pytest.raises(ValueError, match="input_forget=1"):
        convert.from_onnx("LSTM", W, R, B, input_forget=1)
    with pytest.raises(ValueError, match="activations .* are not supported"):
        convert.from_onnx("LSTM", W, R, B, activations=["Sigmoid", "Tanh", "Relu"])
    with pytest.raises(ValueError, match="activations .* are not supported"):
        convert.from_onnx("RNN", W[:, :H], R[:, :H], B[:, :2 * H], activations=["Sigmoid"])
    with pytest.raises(ValueError, match="3 function"):
        convert.from_onnx("LSTM", W, R, B, activations=["Sigmoid", "Tanh"])
    ok = convert.from_onnx("LSTM", W, R, B, activations=[b"Sigmoid", "tanh", "Tanh"],
                           direction=b"forward", hidden_size=H, layout=1)
    assert ok[0].cell == "lstm"
    (relu,) = convert.from_onnx("RNN", W[:, :H], R[:, :H], B[:, :2 * H], activations=["Relu"])
    assert relu.options == {"nonlinearity": "relu"}
    with pytest.raises(ValueError, match="hidden_size=4 contradicts"):
        convert.from_onnx("LSTM", W, R, B, hidden_size=4)
    with pytest.raises(ValueError, match="direction='bidirectional' needs num_directions = 2"):
        convert.from_onnx("LSTM", W, R, B, direction="bidirectional")
    with pytest.raises(ValueError, match="op_type must be"):
        convert.from_onnx("Lstm", W, R, B)
    with pytest.raises(ValueError, match=r"R must have shape \[num_directions, 4\*H, H\]"):
        convert.from_onnx("LSTM", W, R[:, :9], B)
    with pytest.raises(ValueError, match=r"B must have shape \[num_directions, 2\*4\*H\]"):
        convert.from_onnx("LSTM", W, R, B[:, :5])
    with pytest.raises(ValueError, match="num_directions = 1 or 2"):
        convert.from_onnx("LSTM", np.concatenate([W] * 3), np.concatenate([R] * 3))
    with pytest.raises(ValueError, match="linear_before_reset must be 0 or 1"):
        convert.from_onnx("GRU", W[:, :3 * H], R[:, :3 * H], linear_before_reset=2)
    with pytest.raises(ValueError, match="linear_before_reset applies to a GRU only"):
        convert.from_onnx("LSTM", W, R, B, linear_before_reset=1)
    p = random_params(rng, "gru", 2, 3, np.float64)
    q = random_params(rng, "gru", 2, 3, np.float64, reset_after=False)
    with pytest.raises(ValueError, match="options .* differs"):
        convert.to_onnx([p, q])
    with pytest.raises(ValueError, match="at most 2 Params"):
        convert.to_onnx([p, p, p])
    with pytest.raises(ValueError, match="differs from"):
        convert.to_onnx([p, random_params(rng, "gru", 2, 4, np.float64)])
    with pytest.raises(TypeError, match="non-empty list of Params"):
        convert.to_onnx([])
    with pytest.raises(ValueError, match="reverse=True applies to a single direction"):
        convert.onnx_attributes([p, p], reverse=True)


# ============================================================================================
# checks of Params given to the to_* converters
# ============================================================================================
def test_params_checks():
    rng = np.random.default_rng(0)
    p = random_params(rng, "lstm", 3, 4, np.float32)
    with pytest.raises(TypeError, match="p must be a fastcells.convert.Params"):
        convert.to_torch("lstm")
    with pytest.raises(ValueError, match="p.cell must be 'rnn', 'lstm' or 'gru'"):
        convert.to_keras(p._replace(cell="LSTM"))
    with pytest.raises(ValueError, match=r"p.Wh must have shape \(H, 4H\)"):
        convert.to_torch(p._replace(Wh=p.Wh[:, :8]))
    with pytest.raises(ValueError, match=r"p.Wx must have shape \(D, 4H\)"):
        convert.to_torch(p._replace(Wx=p.Wx[:, :8]))
    with pytest.raises(ValueError, match=r"p.b must have shape \(4H,\)"):
        convert.to_keras(p._replace(b=p.b[:8]))
    with pytest.raises(TypeError, match="p.b has dtype float64, expected float32"):
        convert.to_keras(p._replace(b=p.b.astype(np.float64)))
    with pytest.raises(ValueError, match="takes only"):
        convert.to_keras(p._replace(options={"reset_after": True}))
    g = random_params(rng, "gru", 3, 4, np.float32)
    with pytest.raises(ValueError, match=r"p.b must be 2-D of shape \(2, 3H\)"):
        convert.to_torch(g._replace(b=g.b[0]))
    with pytest.raises(TypeError, match="reset_after must be True or False"):
        convert.to_torch(g._replace(options={"reset_after": 1}))
    r = random_params(rng, "rnn", 3, 4, np.float32)
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        convert.to_onnx(r._replace(options={"nonlinearity": "gelu"}))
    # a plain tuple with the right fields is accepted
    assert convert.to_keras(tuple(p))[0].shape == (3, 16)


@pytest.mark.parametrize("cell, options", VARIANTS)
def test_converters_keep_dtype_and_copy(cell, options):
    """float32 stays float32 through every converter, and no result shares memory with its
    arguments."""
    rng = np.random.default_rng(1)
    p = random_params(rng, cell, 3, 4, np.float32, **options)
    outs = convert.to_keras(p) + list(convert.to_onnx([p]))
    if not (cell == "gru" and not options["reset_after"]):
        outs += list(convert.to_torch(p).values())
    for a in outs:
        assert a.dtype == np.float32
        for src in (p.Wx, p.Wh, p.b):
            assert not np.shares_memory(a, src)
    kind = {"rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}[cell]
    w = convert.to_keras(p)
    act = {"activation": options["nonlinearity"]} if cell == "rnn" else {}
    q = convert.from_keras(kind, w, options.get("reset_after", True), **act)
    assert_params_equal(q, p)
    for a in (q.Wx, q.Wh, q.b):
        assert not any(np.shares_memory(a, s) for s in w)


# ============================================================================================
# the Time layers take Params (TimeLSTM.from_params etc.)
# ============================================================================================
@pytest.mark.parametrize("cell, options", VARIANTS)
def test_time_layers_from_params(cell, options):
    name = {"rnn": "TimeRNN", "lstm": "TimeLSTM", "gru": "TimeGRU"}[cell]
    cls = getattr(fastcells, name, None)
    if cls is None or getattr(cls, "from_params", None) is None:
        pytest.skip(f"fastcells.{name}.from_params does not exist yet")
    rng = np.random.default_rng(2)
    p = random_params(rng, cell, 3, 4, np.float64, **options)
    xs = rng.standard_normal((2, 5, 3))
    layer = cls.from_params(p)
    hs = layer.forward(xs)
    expected, _ = forward(p, xs)
    np.testing.assert_allclose(hs, expected, rtol=0, atol=1e-12)
    other = {"rnn": "lstm", "lstm": "gru", "gru": "rnn"}[cell]
    with pytest.raises(ValueError):
        cls.from_params(random_params(rng, other, 3, 4, np.float64))


# ============================================================================================
# the README's example runs as written
# ============================================================================================
README_SECTION = "## Run a trained PyTorch LSTM without PyTorch"


def test_readme_example(tmp_path, monkeypatch, capsys):
    """The section's blocks, in order, in one namespace, in a scratch directory: the export
    (torch), the run from lstm.npz (fenced ```py: tests/test_readme.py runs each ```python
    block alone, and this one needs the file the previous one writes) and the check."""
    readme = Path(__file__).resolve().parents[1] / "README.md"
    if not readme.exists():
        pytest.skip("README.md is not beside tests/")
    text = readme.read_text(encoding="utf-8")
    if README_SECTION not in text:
        pytest.skip("the README has no section on running a PyTorch LSTM")
    _torch()
    section = text.split(README_SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:python|py)\n(.*?)```", section, re.S)
    assert len(blocks) >= 2, "the README section lost its examples"
    monkeypatch.chdir(tmp_path)
    scope = {"__name__": "__readme__"}
    for code in blocks:
        exec(compile(code, str(readme), "exec"), scope)
    printed = capsys.readouterr().out
    assert "TorchRunner(LSTM, input_size=8, hidden_size=16, num_layers=2" in printed
    assert "(4, 10, 32) (4, 4, 16)" in printed
