"""Vanilla RNN over whole sequences: ``rnn_forward`` / ``rnn_backward`` (CONVENTIONS.md)::

    h_t = act(x_t @ Wx + h_{t-1} @ Wh + b),   act = tanh (default) or relu

This module checks and allocates; the fused loops are in _rnn.pyx and csrc/.
"""
import numpy as np

from . import _rnn, threads
from ._common import (Backward, SequenceCache, aligned_empty, chunk_buffer, outputs,
                      packed_input_weights, packed_weights, reverse_buffers,
                      row_product_weights, scratch, states_by_step, units_split)
from ._types import RNNGrads
from ._validate import Sequence, check_flag

__all__ = ["rnn_forward", "rnn_backward", "RNNCache"]

_ACTIVATIONS = {"tanh": 0, "relu": 1}  # FC_TANH, FC_RELU of csrc/fastcells.h


class RNNCache(SequenceCache):
    """SequenceCache plus (N*T, H) arrays in the layout of xs: h_next (h_t = act(pre), whose
    derivative backward needs) and h_prev (the state entering each step); the nonlinearity."""

    __slots__ = ("h_next", "h_prev", "act")


def _activation(fn, nonlinearity):
    if not isinstance(nonlinearity, str) or nonlinearity not in _ACTIVATIONS:
        raise ValueError(
            f"{fn}: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return _ACTIVATIONS[nonlinearity]


def rnn_forward(xs, Wx, Wh, b, h0=None, *, nonlinearity="tanh", lengths=None,
                time_major=False, reverse=False, training=True):
    """Run a vanilla (Elman) RNN over whole sequences.

    Parameters
    ----------
    xs : (N, T, D), or (T, N, D) with ``time_major=True``; float32 or float64.
    Wx : (D, H);  Wh : (H, H);  b : (H,). Same dtype as xs.
    h0 : (N, H) initial state, zeros when None.
    nonlinearity : "tanh" (default) or "relu".
    lengths : optional (N,) integers in 0..T (see ``lstm_forward``).
    reverse : run each sequence from its last valid step to its first (reversed within its
        own length; padding stays at the end, as in ONNX ``direction="reverse"`` and PyTorch's
        packed bidirectional layers). Outputs stay at their input positions; the final state
        is the one after position 0.
    training : when False, nothing is kept for backward and ``cache`` is None.

    Returns
    -------
    hs : (N, T, H) (or (T, N, H)); h_T : (N, H); cache.
    """
    fn = "rnn_forward"
    act = _activation(fn, nonlinearity)
    seq = Sequence(fn, 1, xs, Wx, Wh, lengths, time_major, reverse)
    training = check_flag(fn, "training", training)
    N, T, H = seq.N, seq.T, seq.H
    b = seq.vector("b", b, (H,), "(H,)")
    h = seq.state("h0", h0)
    hs, Y = outputs(seq)
    Wp = packed_weights(seq.dtype, N, T, (H, H))
    if not training:
        # h is updated in place into h_T; with reverse the kernel walks the reversed positions
        # of xs and hs itself (no reordered copy: the memory is hs plus O(N*H))
        if not seq.empty:
            nth, Wu = units_split(seq, 1)  # a batch of one: the second h buffer
            by_rows = False
            if nth == 1 and not seq.reverse:
                nth, by_rows = threads.for_batch(N, H, 1, Wp, seq.dtype.itemsize)
            wh = row_product_weights(seq, nth)  # a batch of one: aligned rows
            _rnn.forward_infer(seq.rows, seq.Wx, wh, b, seq.lengths, N, T, seq.time_major,
                               seq.reverse, act, Y, chunk_buffer(seq, H), h, Wp,
                               packed_input_weights(seq), *reverse_buffers(seq), Wu, nth=nth,
                               by_rows=by_rows)
        return hs, h, None
    cache = RNNCache(seq)
    cache.act = act
    cache.h_next = aligned_empty((N * T, H), seq.dtype)
    cache.h_prev = states_by_step(seq, h)
    if not seq.empty:
        h = np.empty_like(h)
        _rnn.forward_train(seq.X, seq.Wx, seq.Wh, b, seq.lengths, N, T, seq.time_major, act,
                           Y, cache.h_next, cache.h_prev, h, Wp,
                           nth=threads.for_loop(N, H, H, Wp))
    return seq.order(hs), h, cache


def rnn_backward(cache, dhs, dh_T=None):
    """Backpropagation through time for ``rnn_forward``.

    dhs : like hs, or None; dh_T : (N, H) or None (zeros).
    Returns RNNGrads(dxs, dWx, dWh, db, dh0): new arrays, each shaped like its argument.
    """
    bw = Backward("rnn_backward", "rnn_forward", cache, RNNCache, dhs, {"dh_T": dh_T}, 1,
                  lambda H: (H,))
    (dh,) = bw.states
    if bw.run:
        c = bw.cache
        dA = scratch((c.N * c.T, c.H), c.dtype)
        Wp = packed_weights(c.dtype, c.N, c.T, (c.H, c.H))
        _rnn.backward(c.X, c.Wx, c.Wh, c.h_next, c.h_prev, c.lengths, c.N, c.T, c.time_major,
                      c.act, bw.dY, bw.has_dy, dh, dA, bw.dX, bw.dWx, bw.dWh, bw.db, Wp,
                      nth=threads.for_loop(c.N, c.H, c.H, Wp))
    return RNNGrads(bw.dxs, bw.dWx, bw.dWh, bw.db, dh)
