"""LSTM over whole sequences: ``lstm_forward`` / ``lstm_backward`` (CONVENTIONS.md).

Blocks [f, g, i, o], weights input-by-output, exactly the book's TimeLSTM::

    A   = x_t @ Wx + h_{t-1} @ Wh + b
    f, g, i, o = σ(A_f), tanh(A_g), σ(A_i), σ(A_o)
    c_t = f ⊙ c_{t-1} + g ⊙ i
    h_t = o ⊙ tanh(c_t)

This module checks and allocates; the fused loops are in _lstm.pyx and csrc/.
"""
import numpy as np

from . import _lstm, threads
from ._common import (Backward, SequenceCache, aligned_empty, chunk_buffer, outputs,
                      packed_input_weights, packed_weights, reverse_buffers,
                      row_product_weights, scratch, states_by_step, units_split)
from ._types import LSTMGrads
from ._validate import Sequence, check_flag

__all__ = ["lstm_forward", "lstm_backward", "LSTMCache"]


class LSTMCache(SequenceCache):
    """SequenceCache plus, as (N*T, width) arrays in the layout of xs: gates (activated
    f, g, i, o), h_prev and c_prev (the state entering each step) and tanh_c (tanh(c_t))."""

    __slots__ = ("gates", "h_prev", "c_prev", "tanh_c")


def lstm_forward(xs, Wx, Wh, b, h0=None, c0=None, *, lengths=None, time_major=False,
                 reverse=False, training=True):
    """Run an LSTM over whole sequences.

    Parameters
    ----------
    xs : (N, T, D) array, or (T, N, D) with ``time_major=True``; float32 or float64.
    Wx : (D, 4H);  Wh : (H, 4H);  b : (4H,). Blocks [f, g, i, o]. Same dtype as xs.
    h0, c0 : (N, H) initial states, zeros when None.
    lengths : optional (N,) integers in 0..T. Sequence n keeps its state unchanged and outputs
        zeros for t >= lengths[n]; its final state is the one after its last valid step.
    reverse : run each sequence from its last valid step to its first (reversed within its
        own length; padding stays at the end, as in ONNX ``direction="reverse"`` and PyTorch's
        packed bidirectional layers). Outputs stay at their input positions; the final state
        is the one after position 0.
    training : when False, nothing is kept for backward and ``cache`` is None.

    Returns
    -------
    hs : (N, T, H) (or (T, N, H)) outputs; (h_T, c_T) : (N, H) final states; cache.
    """
    seq = Sequence("lstm_forward", 4, xs, Wx, Wh, lengths, time_major, reverse)
    training = check_flag("lstm_forward", "training", training)
    N, T, H, dtype = seq.N, seq.T, seq.H, seq.dtype
    b = seq.vector("b", b, (4 * H,), "(4H,)")
    h, c = seq.state("h0", h0), seq.state("c0", c0)
    hs, Y = outputs(seq)
    Wp = packed_weights(dtype, N, T, (H, 4 * H))
    if not training:
        # h, c are updated in place into h_T, c_T; with reverse the kernel walks the reversed
        # positions of xs and hs itself (no reordered copy: the memory is hs plus O(N*H))
        if not seq.empty:
            nth, Wu = units_split(seq, 9)  # a batch of one: per unit 4 gates, 4 biases; h
            by_rows = False
            if nth == 1 and not seq.reverse:
                nth, by_rows = threads.for_batch(N, H, 4, Wp, dtype.itemsize)
            wh = row_product_weights(seq, nth)  # a batch of one: aligned rows
            _lstm.forward_infer(seq.rows, seq.Wx, wh, b, seq.lengths, N, T, seq.time_major,
                                seq.reverse, Y, chunk_buffer(seq, 4 * H), h, c, Wp,
                                packed_input_weights(seq), *reverse_buffers(seq), Wu,
                                nth=nth, by_rows=by_rows)
        return hs, (h, c), None
    cache = LSTMCache(seq)
    cache.gates = aligned_empty((N * T, 4 * H), dtype)
    cache.h_prev, cache.c_prev = states_by_step(seq, h), states_by_step(seq, c)
    cache.tanh_c = aligned_empty((N * T, H), dtype)
    if not seq.empty:
        h, c = np.empty_like(h), np.empty_like(c)
        nth, by_rows = threads.for_batch(N, H, 4, Wp, dtype.itemsize)
        _lstm.forward_train(seq.X, seq.Wx, seq.Wh, b, seq.lengths, N, T, seq.time_major, Y,
                            cache.gates, cache.h_prev, cache.c_prev, cache.tanh_c, h, c, Wp,
                            nth=nth, by_rows=by_rows)
    return seq.order(hs), (h, c), cache


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
    bw = Backward("lstm_backward", "lstm_forward", cache, LSTMCache, dhs,
                  {"dh_T": dh_T, "dc_T": dc_T}, 4, lambda H: (4 * H,))
    dh, dc = bw.states
    if bw.run:
        c = bw.cache
        dA = scratch((c.N * c.T, 4 * c.H), c.dtype)
        Wp = packed_weights(c.dtype, c.N, c.T, (4 * c.H, c.H))
        nth, by_rows = threads.for_batch(c.N, c.H, 4, Wp, c.dtype.itemsize)
        _lstm.backward(c.X, c.Wx, c.Wh, c.gates, c.h_prev, c.c_prev, c.tanh_c, c.lengths,
                       c.N, c.T, c.time_major, bw.dY, bw.has_dy, dh, dc, dA,
                       bw.dX, bw.dWx, bw.dWh, bw.db, Wp, nth=nth, by_rows=by_rows)
    return LSTMGrads(bw.dxs, bw.dWx, bw.dWh, bw.db, dh, dc)
