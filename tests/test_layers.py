"""The book's layer interface: Time layers over stateful chunks (truncated BPTT), one-step
cells, bidirectional layers, clip_grads, and a small model that must remember across chunks."""
import numpy as np
import pytest

import fastcells
import fastcells.reference as ref

from conftest import CELLS, DTYPES, assert_close

TIME = {"lstm": fastcells.TimeLSTM, "gru": fastcells.TimeGRU, "rnn": fastcells.TimeRNN}
BI = {"lstm": fastcells.TimeBiLSTM, "gru": fastcells.TimeBiGRU, "rnn": fastcells.TimeBiRNN}
ONE = {"lstm": fastcells.LSTM, "gru": fastcells.GRU, "rnn": fastcells.RNN}


def weights(cell, rng, D, H, dtype):
    p = cell.problem(rng, 1, 1, D, H, dtype)
    return p["Wx"], p["Wh"], p["b"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stateful", [True, False])
def test_time_layer_chunks_match_twin(cell, dtype, stateful, rng):
    """Three consecutive chunks, an in-place SGD update of params between chunks: outputs,
    states, dh and every grad equal the twin run chunk by chunk with the state carried over
    (or reset) and no gradient crossing a chunk boundary."""
    N, T, D, H = 3, 4, 5, 6
    Wx, Wh, b = weights(cell, rng, D, H, dtype)
    layer = TIME[cell.name](Wx, Wh, b, stateful, **cell.kwargs)
    assert all(p is q for p, q in zip(layer.params, (Wx, Wh, b)))
    grads_ids = [id(g) for g in layer.grads]
    states = [None] * cell.n_states
    for chunk in range(3):
        xs = rng.standard_normal((N, T, D)).astype(dtype)
        dhs = rng.standard_normal((N, T, H)).astype(dtype)
        hs = layer.forward(xs)
        dxs = layer.backward(dhs)
        hs_r, fin_r, cache = cell.forward(ref, xs, Wx, Wh, b, states if stateful else
                                          [None] * cell.n_states)
        g = cell.backward(ref, cache, dhs, [None] * cell.n_states)
        assert_close(hs, hs_r, "hs", dtype)
        assert_close(dxs, g.dxs, "dxs", dtype)
        assert_close(layer.h, fin_r[0], "h", dtype)
        if cell.n_states == 2:
            assert_close(layer.c, fin_r[1], "c", dtype)
        assert_close(layer.dh, g.dh0, "dh", dtype)
        for mine, theirs, name in zip(layer.grads, g[1:4], ("dWx", "dWh", "db")):
            assert_close(mine, theirs, name, dtype)
        assert [id(x) for x in layer.grads] == grads_ids, "grads must be overwritten in place"
        states = fin_r
        for p, gr in zip(layer.params, layer.grads):  # the book's SGD: in place
            p -= dtype(0.1) * gr


def test_time_layer_set_and_reset_state(rng):
    cell = CELLS[0]
    Wx, Wh, b = weights(cell, rng, 3, 4, np.float64)
    layer = fastcells.TimeLSTM(Wx, Wh, b, stateful=True)
    xs = rng.standard_normal((2, 5, 3))
    h0, c0 = rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    layer.set_state(h0, c0)
    hs = layer.forward(xs)
    hs_r, _, _ = ref.lstm_forward(xs, Wx, Wh, b, h0, c0)
    assert_close(hs, hs_r, "hs after set_state")
    layer.set_state(h0)  # c=None: zeros, as in the book
    assert_close(layer.forward(xs), ref.lstm_forward(xs, Wx, Wh, b, h0)[0], "hs, c0 = 0")
    layer.reset_state()
    assert layer.h is None and layer.c is None
    assert_close(layer.forward(xs), ref.lstm_forward(xs, Wx, Wh, b)[0], "hs after reset")


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_step_cells_match_sequence_step(cell, dtype, rng):
    N, D, H = 3, 5, 4
    Wx, Wh, b = weights(cell, rng, D, H, dtype)
    opts = {k: v for k, v in cell.kwargs.items()}
    layer = ONE[cell.name](Wx, Wh, b, **opts)
    x = rng.standard_normal((N, D)).astype(dtype)
    states = [rng.standard_normal((N, H)).astype(dtype) for _ in range(cell.n_states)]
    douts = [rng.standard_normal((N, H)).astype(dtype) for _ in range(cell.n_states)]
    out = layer.forward(x, *states)
    out = list(out) if cell.n_states == 2 else [out]
    hs_r, fin_r, cache = cell.forward(ref, x[:, None], Wx, Wh, b, states)
    for a, r in zip(out, fin_r):
        assert_close(a, r, "next state", dtype)
    back = layer.backward(*douts)
    g = cell.backward(ref, cache, None, douts)
    assert_close(back[0], g.dxs[:, 0], "dx", dtype)
    assert_close(back[1], g.dh0, "dh_prev", dtype)
    if cell.n_states == 2:
        assert_close(back[2], g.dc0, "dc_prev", dtype)
    for mine, theirs, name in zip(layer.grads, g[1:4], ("dWx", "dWh", "db")):
        assert_close(mine, theirs, name, dtype)


def test_one_step_cell_validates(rng):
    Wx, Wh, b = weights(CELLS[0], rng, 5, 4, np.float32)
    cell = fastcells.LSTM(Wx, Wh, b)
    h = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match="h_prev"):
        cell.forward(np.zeros((2, 5), np.float32), h[:1], h)
    with pytest.raises(TypeError, match="x has dtype float64, expected float32"):
        cell.forward(np.zeros((2, 5)), h, h)
    with pytest.raises(TypeError, match="xs has dtype float64, expected float32"):
        fastcells.TimeLSTM(Wx, Wh, b).forward(np.zeros((2, 3, 5)))
    # non-contiguous but valid inputs work and give the same result
    x = rng.standard_normal((2, 10)).astype(np.float32)
    a = cell.forward(x[:, ::2], h, h)
    b2 = cell.forward(np.ascontiguousarray(x[:, ::2]), h, h)
    np.testing.assert_array_equal(a[0], b2[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_bidirectional_matches_twin(cell, dtype, rng):
    """TimeBi*: [forward direction, reverse direction] on the feature axis, with the reverse
    half reversed within each sequence's length; book's params/grads order."""
    N, T, D, H = 4, 5, 3, 6
    w1, w2 = weights(cell, rng, D, H, dtype), weights(cell, rng, D, H, dtype)
    layer = BI[cell.name](*w1, *w2, **cell.kwargs)
    assert all(p is q for p, q in zip(layer.params, w1 + w2))
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    dhs = rng.standard_normal((N, T, 2 * H)).astype(dtype)
    lengths = np.array([5, 2, 0, 4])
    hs = layer.forward(xs, lengths)
    dxs = layer.backward(dhs)
    none = [None] * cell.n_states
    h1, _, c1 = cell.forward(ref, xs, *w1, none, lengths=lengths)
    h2, _, c2 = cell.forward(ref, xs, *w2, none, lengths=lengths, reverse=True)
    g1 = cell.backward(ref, c1, dhs[:, :, :H], none)
    g2 = cell.backward(ref, c2, dhs[:, :, H:], none)
    assert_close(hs, np.concatenate([h1, h2], axis=2), "hs", dtype)
    assert_close(dxs, g1.dxs + g2.dxs, "dxs", dtype)
    for mine, theirs, name in zip(layer.grads, list(g1[1:4]) + list(g2[1:4]), "123456"):
        assert_close(mine, theirs, f"grad {name}", dtype)


def test_book_style_negative_stride_input(rng):
    """The book's TimeBiLSTM feeds xs[:, ::-1] to a TimeLSTM: reversed views work."""
    Wx, Wh, b = weights(CELLS[0], rng, 3, 4, np.float32)
    layer = fastcells.TimeLSTM(Wx, Wh, b)
    xs = rng.standard_normal((2, 5, 3)).astype(np.float32)
    hs = layer.forward(xs[:, ::-1])
    dxs = layer.backward(np.ones((2, 5, 4), np.float32)[:, ::-1])
    hs_r, _, cache = ref.lstm_forward(np.ascontiguousarray(xs[:, ::-1]), Wx, Wh, b)
    assert_close(hs, hs_r, "hs")
    assert_close(dxs, ref.lstm_backward(cache, np.ones((2, 5, 4), np.float32)).dxs, "dxs")


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_bidirectional_matches_torch_packed(kind, rng):
    """TimeBiLSTM/TimeBiGRU with lengths == torch's bidirectional layer on packed sequences:
    outputs, final states and gradients."""
    torch = pytest.importorskip("torch")
    N, T, D, H = 3, 6, 4, 5
    lengths = np.array([6, 2, 4])
    torch.manual_seed(0)
    m = getattr(torch.nn, kind)(D, H, batch_first=True, bidirectional=True).double()

    def native(sfx):
        Wi = getattr(m, f"weight_ih_l0{sfx}").detach().numpy()
        Whh = getattr(m, f"weight_hh_l0{sfx}").detach().numpy()
        bi = getattr(m, f"bias_ih_l0{sfx}").detach().numpy()
        bh = getattr(m, f"bias_hh_l0{sfx}").detach().numpy()
        # torch blocks: LSTM [i, f, g, o] -> [f, g, i, o]; GRU [r, z, n] -> [z, r, h]
        order = [1, 2, 0, 3] if kind == "LSTM" else [1, 0, 2]
        re = lambda a: np.concatenate([a[k * H:(k + 1) * H] for k in order], axis=0)
        Wx, Wh_ = np.ascontiguousarray(re(Wi).T), np.ascontiguousarray(re(Whh).T)
        b = re(bi) + re(bh) if kind == "LSTM" else np.stack([re(bi), re(bh)])
        return Wx, Wh_, b, order
    Wx1, Wh1, b1, order = native("")
    Wx2, Wh2, b2, _ = native("_reverse")
    layer = (fastcells.TimeBiLSTM if kind == "LSTM" else fastcells.TimeBiGRU)(
        Wx1, Wh1, b1, Wx2, Wh2, b2)
    xs = rng.standard_normal((N, T, D))
    Gy = rng.standard_normal((N, T, 2 * H))
    hs = layer.forward(xs, lengths)
    dxs = layer.backward(Gy)

    x = torch.tensor(xs, requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths),
                                                     batch_first=True, enforce_sorted=False)
    out, state = m(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    (out * torch.tensor(Gy)).sum().backward()
    assert_close(hs, out.detach().numpy(), "hs")
    h_n = (state[0] if kind == "LSTM" else state).detach().numpy()
    assert_close(layer.forward_layer.h, h_n[0], "h_T forward")
    assert_close(layer.backward_layer.h, h_n[1], "h_T reverse")
    assert_close(dxs, x.grad.numpy(), "dxs")
    re = lambda a: np.concatenate([a[k * H:(k + 1) * H] for k in order], axis=0)
    assert_close(layer.grads[0], re(m.weight_ih_l0.grad.numpy()).T, "dWx forward")
    assert_close(layer.grads[4], re(m.weight_hh_l0_reverse.grad.numpy()).T, "dWh reverse")


def test_clip_grads():
    g1 = np.array([3.0, 0.0])
    g2 = np.array([[0.0, 4.0]], np.float32)
    norm = fastcells.clip_grads([g1, g2], 1.0)
    assert norm == pytest.approx(5.0)
    assert g1[0] == pytest.approx(3.0 / (5.0 + 1e-6)) and g2.dtype == np.float32
    assert np.sqrt(np.sum(g1 ** 2) + np.sum(g2 ** 2)) == pytest.approx(1.0, rel=1e-6)
    g3 = np.array([0.3, 0.4])
    assert fastcells.clip_grads([g3], 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(g3, [0.3, 0.4])  # below the threshold: unchanged
    with pytest.raises(ValueError, match="max_norm"):
        fastcells.clip_grads([g3], -1.0)


def test_truncated_bptt_learns_across_chunk_boundaries():
    """A stateful TimeLSTM trained with truncated BPTT on chunks of T=6 steps learns to output
    the symbol seen K=4 steps earlier. At the first K positions of a chunk that symbol was
    seen in the previous chunk: only the carried state can know it. The loss there falls far
    below chance (ln V), and resetting the state at each chunk brings it back to chance."""
    rng = np.random.default_rng(7)
    V, H, N, T, K = 4, 24, 32, 6, 4
    f = np.float32
    Wx = (rng.standard_normal((V, 4 * H)) / np.sqrt(V)).astype(f)
    Wh = (rng.standard_normal((H, 4 * H)) / np.sqrt(H)).astype(f)
    b = np.zeros(4 * H, f)
    b[:H] = 1.0  # forget-gate bias 1: remember by default
    Wo = (rng.standard_normal((H, V)) / np.sqrt(H)).astype(f)
    bo = np.zeros(V, f)
    lstm = fastcells.TimeLSTM(Wx, Wh, b, stateful=True)
    params, grads = lstm.params + [Wo, bo], lstm.grads + [np.zeros_like(Wo), np.zeros_like(bo)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    stream = rng.integers(0, V, size=(N, 40000))
    eye = np.eye(V, dtype=f)

    def chunk_loss(k, train, stateful=True):
        sl = slice(k * T, (k + 1) * T)
        if not stateful:
            lstm.reset_state()
        xs = eye[stream[:, sl]]
        target = stream[:, k * T - K:(k + 1) * T - K]
        hs = lstm.forward(xs)
        logits = hs @ Wo + bo
        logits -= logits.max(axis=2, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=2, keepdims=True)
        nll = -np.log(np.take_along_axis(p, target[..., None], axis=2)[..., 0] + 1e-12)
        if train:
            dlogits = p.copy()  # softmax cross-entropy: p - onehot(target), mean over N*T
            np.put_along_axis(dlogits, target[..., None],
                              np.take_along_axis(p, target[..., None], axis=2) - 1, axis=2)
            dlogits /= N * T
            grads[3][...] = np.einsum("nth,ntv->hv", hs, dlogits)
            grads[4][...] = dlogits.sum(axis=(0, 1))
            lstm.backward(dlogits @ Wo.T)
            fastcells.clip_grads(grads, 5.0)
            for i, (pp, g) in enumerate(zip(params, grads)):  # Adam, in place as the book's
                m[i] = 0.9 * m[i] + 0.1 * g
                v[i] = 0.999 * v[i] + 0.001 * g * g
                pp -= (0.01 * m[i] / (np.sqrt(v[i]) + 1e-7)).astype(f)
        return nll[:, :K].mean()  # the positions whose answer lies in the previous chunk

    lstm.forward(eye[stream[:, :T]])  # warm the state on chunk 0
    for k in range(1, 1501):
        chunk_loss(k, train=True)
    stateful_loss = np.mean([chunk_loss(k, False) for k in range(1600, 1700)])
    reset_loss = np.mean([chunk_loss(k, False, stateful=False) for k in range(1700, 1800)])
    chance = np.log(V)
    assert stateful_loss < 0.25 * chance, (stateful_loss, chance)
    assert reset_loss > 0.8 * chance, (reset_loss, chance)
