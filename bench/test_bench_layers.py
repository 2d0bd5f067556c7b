"""The book's layer interface: the one-step LSTM cell's per-call cost (generation loops call it
once per token) and a stateful TimeLSTM training step, each next to the book-style NumPy code.

Run:  OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python -m pytest bench/test_bench_layers.py \
          --benchmark-only --benchmark-group-by=group
"""
import numpy as np
import pytest

import fastcells
import fastcells.reference as ref


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


class BookLSTM:
    """Deep Learning from Scratch 2, common/time_layers.py: LSTM (one step), verbatim."""

    def __init__(self, Wx, Wh, b):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.cache = None

    def forward(self, x, h_prev, c_prev):
        Wx, Wh, b = self.params
        N, H = h_prev.shape
        A = np.dot(x, Wx) + np.dot(h_prev, Wh) + b
        f = A[:, :H]
        g = A[:, H:2 * H]
        i = A[:, 2 * H:3 * H]
        o = A[:, 3 * H:]
        f = sigmoid(f)
        g = np.tanh(g)
        i = sigmoid(i)
        o = sigmoid(o)
        c_next = f * c_prev + g * i
        h_next = o * np.tanh(c_next)
        self.cache = (x, h_prev, c_prev, i, f, g, o, c_next)
        return h_next, c_next


def lstm_weights(D, H, seed=0):
    rng = np.random.default_rng(seed)
    f = np.float32
    return ((rng.standard_normal((D, 4 * H)) / np.sqrt(D)).astype(f),
            (rng.standard_normal((H, 4 * H)) / np.sqrt(H)).astype(f), np.zeros(4 * H, f))


@pytest.mark.parametrize("impl", ["fastcells", "book"])
def test_lstm_cell_per_call(benchmark, impl):
    """One LSTM step at N=1, D=H=128, float32: what a generation loop pays per token."""
    D = H = 128
    Wx, Wh, b = lstm_weights(D, H)
    x = np.random.default_rng(1).standard_normal((1, D)).astype(np.float32)
    h = np.zeros((1, H), np.float32)
    c = np.zeros((1, H), np.float32)
    cell = (fastcells.LSTM if impl == "fastcells" else BookLSTM)(Wx, Wh, b)
    # verify first: both give the one-step result of the twin
    h_ref, c_ref = (s[:, 0] if s.ndim == 3 else s for s in ref.lstm_forward(
        x[:, None], Wx, Wh, b, h, c)[1])
    h1, c1 = cell.forward(x, h, c)
    np.testing.assert_allclose(h1, h_ref, rtol=1e-4, atol=1e-6)
    benchmark.group = "LSTM cell, one step, N=1 D=H=128"
    benchmark(cell.forward, x, h, c)


@pytest.mark.parametrize("impl", ["fastcells", "twin"])
def test_time_lstm_stateful_training_step(benchmark, impl):
    """The book's language-model shape (N, T, D, H) = (32, 35, 100, 100): stateful TimeLSTM
    forward + backward, next to the NumPy twin carrying the state the same way."""
    N, T, D, H = 32, 35, 100, 100
    Wx, Wh, b = lstm_weights(D, H)
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((N, T, D)).astype(np.float32)
    dhs = rng.standard_normal((N, T, H)).astype(np.float32)
    if impl == "fastcells":
        layer = fastcells.TimeLSTM(Wx, Wh, b, stateful=True)

        def step():
            layer.forward(xs)
            return layer.backward(dhs)
    else:
        state = {"h": None, "c": None}

        def step():
            hs, (state["h"], state["c"]), cache = ref.lstm_forward(xs, Wx, Wh, b, state["h"],
                                                                   state["c"])
            return ref.lstm_backward(cache, dhs).dxs
    # verify first: one step of each from the zero state agrees
    check = fastcells.TimeLSTM(Wx, Wh, b, stateful=True)
    check.forward(xs)
    dxs_fast = check.backward(dhs)
    np.testing.assert_allclose(dxs_fast, ref.lstm_backward(ref.lstm_forward(xs, Wx, Wh, b)[2],
                                                           dhs).dxs, rtol=1e-3, atol=1e-5)
    benchmark.group = "stateful TimeLSTM training step, (32, 35, 100, 100)"
    benchmark(step)
