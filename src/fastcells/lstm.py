"""LSTM over whole sequences: ``lstm_forward`` / ``lstm_backward`` (CONVENTIONS.md).

Blocks [f, g, i, o], weights input-by-output, exactly the book's TimeLSTM::

    A   = x_t @ Wx + h_{t-1} @ Wh + b
    f, g, i, o = σ(A_f), tanh(A_g), σ(A_i), σ(A_o)
    c_t = f ⊙ c_{t-1} + g ⊙ i
    h_t = o ⊙ tanh(c_t)

This module checks and allocates; the fused loops are in _lstm.pyx and csrc/.
"""
import numpy as np

from . import _lstm
from ._types import LSTMGrads
from ._validate import Sequence, check_cache, output_grad, state_grad

__all__ = ["lstm_forward", "lstm_backward", "LSTMCache"]

# Inference keeps the gates of at most this many steps (their input projection is one GEMM per
# chunk), so its memory is the outputs plus O(N*H), whatever T is.
INFERENCE_CHUNK = 64


class LSTMCache:
    """What lstm_forward(training=True) keeps for lstm_backward (treat it as opaque).

    Sequence arrays are (N*T, width) in the layout of xs: X (the input), gates (activated
    f, g, i, o), h_prev and c_prev (the state entering each step; step 0 holds h0, c0) and
    tanh_c (tanh(c_t)); plus Wx, Wh, lengths and the sizes.
    """

    __slots__ = ("X", "Wx", "Wh", "gates", "h_prev", "c_prev", "tanh_c", "lengths",
                 "N", "T", "D", "H", "time_major", "dtype", "xs_shape", "seq_shape")

    def __init__(self, seq, gates, h_prev, c_prev, tanh_c):
        self.X, self.Wx, self.Wh, self.lengths = seq.X, seq.Wx, seq.Wh, seq.lengths
        self.gates, self.h_prev, self.c_prev, self.tanh_c = gates, h_prev, c_prev, tanh_c
        self.N, self.T, self.D, self.H = seq.N, seq.T, seq.D, seq.H
        self.time_major, self.dtype = seq.time_major, seq.dtype
        self.xs_shape, self.seq_shape = seq.xs.shape, seq.seq_shape


def lstm_forward(xs, Wx, Wh, b, h0=None, c0=None, *, lengths=None, time_major=False,
                 training=True):
    """Run an LSTM over whole sequences.

    Parameters
    ----------
    xs : (N, T, D) array, or (T, N, D) with ``time_major=True``; float32 or float64.
    Wx : (D, 4H);  Wh : (H, 4H);  b : (4H,). Blocks [f, g, i, o]. Same dtype as xs.
    h0, c0 : (N, H) initial states, zeros when None.
    lengths : optional (N,) integers in 0..T. Sequence n keeps its state unchanged and outputs
        zeros for t >= lengths[n]; its final state is the one after its last valid step.
    training : when False, nothing is kept for backward and ``cache`` is None.

    Returns
    -------
    hs : (N, T, H) (or (T, N, H)) outputs; (h_T, c_T) : (N, H) final states; cache.
    """
    fn = "lstm_forward"
    seq = Sequence(fn, 4, xs, Wx, Wh, lengths, time_major)
    N, T, H, dtype = seq.N, seq.T, seq.H, seq.dtype
    b = seq.vector("b", b, (4 * H,), "(4H,)")
    h = seq.state("h0", h0)
    c = seq.state("c0", c0)
    hs = np.zeros(seq.seq_shape, dtype)
    Y = hs.reshape(N * T, H)
    if not training:
        if not seq.empty:
            P = np.empty((min(T, INFERENCE_CHUNK) * N, 4 * H), dtype)
            _lstm.forward_infer(seq.X, seq.Wx, seq.Wh, b, seq.lengths, N, T, seq.time_major,
                                Y, P, h, c)
        return hs, (h, c), None
    gates = np.empty((N * T, 4 * H), dtype)
    h_prev = np.empty(seq.seq_shape, dtype)
    c_prev = np.empty(seq.seq_shape, dtype)
    tanh_c = np.empty((N * T, H), dtype)
    if not seq.empty:
        step0 = (0, slice(None)) if seq.time_major else (slice(None), 0)
        h_prev[step0] = h
        c_prev[step0] = c
        h_T, c_T = np.empty_like(h), np.empty_like(c)
        _lstm.forward_train(seq.X, seq.Wx, seq.Wh, b, seq.lengths, N, T, seq.time_major,
                            Y, gates, h_prev.reshape(N * T, H), c_prev.reshape(N * T, H),
                            tanh_c, h_T, c_T)
        h, c = h_T, c_T
    cache = LSTMCache(seq, gates, h_prev.reshape(N * T, H), c_prev.reshape(N * T, H), tanh_c)
    return hs, (h, c), cache


def lstm_backward(cache, dhs, dh_T=None, dc_T=None):
    """Backpropagation through time for ``lstm_forward``.

    Parameters
    ----------
    cache : from ``lstm_forward(..., training=True)``.
    dhs : gradient of the loss with respect to hs (same shape), or None when none arrives
        at the outputs.
    dh_T, dc_T : (N, H) gradients with respect to the final states, zeros when None.

    Returns
    -------
    LSTMGrads(dxs, dWx, dWh, db, dh0, dc0): new arrays, each shaped like its argument.
    """
    fn = "lstm_backward"
    cache = check_cache(fn, cache, LSTMCache, "lstm_forward")
    dY = output_grad(fn, "dhs", dhs, cache)
    dh = state_grad(fn, "dh_T", dh_T, cache)
    dc = state_grad(fn, "dc_T", dc_T, cache)
    N, T, D, H, dtype = cache.N, cache.T, cache.D, cache.H, cache.dtype
    dX = np.zeros((N * T, D), dtype)
    dWx = np.zeros((D, 4 * H), dtype)
    dWh = np.zeros((H, 4 * H), dtype)
    db = np.zeros(4 * H, dtype)
    if N and T and H:
        has_dy = dY is not None
        dY = dY.reshape(N * T, H) if has_dy else np.zeros((1, H), dtype)
        dA = np.empty((N * T, 4 * H), dtype)
        _lstm.backward(cache.X, cache.Wx, cache.Wh, cache.gates, cache.h_prev, cache.c_prev,
                       cache.tanh_c, cache.lengths, N, T, cache.time_major, dY, has_dy,
                       dh, dc, dA, dX, dWx, dWh, db)
    return LSTMGrads(dX.reshape(cache.xs_shape), dWx, dWh, db, dh, dc)
