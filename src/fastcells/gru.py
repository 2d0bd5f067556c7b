"""GRU over whole sequences: ``gru_forward`` / ``gru_backward`` (CONVENTIONS.md).

Blocks [z, r, h] (the book's, Keras', ONNX's order), h_t = z ⊙ h_{t-1} + (1 - z) ⊙ ĥ.

reset_after=True (default; PyTorch, cuDNN, Keras' default, ONNX linear_before_reset=1),
b of shape (2, 3H) = [input bias; recurrent bias]::

    a = x_t @ Wx + b[0]          u = h_{t-1} @ Wh + b[1]
    z = σ(a_z + u_z)    r = σ(a_r + u_r)    ĥ = tanh(a_h + r ⊙ u_h)

reset_after=False (the book, ONNX's default), b of shape (3H,)::

    z = σ(x_t @ Wx_z + h_{t-1} @ Wh_z + b_z)    r = σ(x_t @ Wx_r + h_{t-1} @ Wh_r + b_r)
    ĥ = tanh(x_t @ Wx_h + (r ⊙ h_{t-1}) @ Wh_h + b_h)

This module checks and allocates; the fused loops are in _gru.pyx and csrc/.
"""
import numpy as np

from . import _gru, threads
from ._common import (Backward, SequenceCache, aligned_empty, chunk_buffer, outputs,
                      packed_input_weights, packed_weights, reverse_buffers,
                      row_product_weights, scratch, states_by_step, units_split)
from ._types import GRUGrads
from ._validate import Sequence, check_flag

__all__ = ["gru_forward", "gru_backward", "GRUCache"]


def _bias_shape(reset_after, H):
    return (2, 3 * H) if reset_after else (3 * H,)


class GRUCache(SequenceCache):
    """SequenceCache plus (N*T, width) arrays in the layout of xs: gates ([z, r, ĥ]), extra
    (uh = h_{t-1} @ Wh_h + b[1]_h when reset_after, else rh = r ⊙ h_{t-1}) and h_prev (the
    state entering each step); the variant."""

    __slots__ = ("gates", "extra", "h_prev", "reset_after")


def gru_forward(xs, Wx, Wh, b, h0=None, *, reset_after=True, lengths=None, time_major=False,
                reverse=False, training=True):
    """Run a GRU over whole sequences.

    Parameters
    ----------
    xs : (N, T, D), or (T, N, D) with ``time_major=True``; float32 or float64.
    Wx : (D, 3H);  Wh : (H, 3H); blocks [z, r, h]. Same dtype as xs.
    b : (2, 3H) when ``reset_after`` (row 0 input bias, row 1 recurrent bias), else (3H,).
    h0 : (N, H) initial state, zeros when None.
    reset_after : where the reset gate applies (see the module docstring).
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
    fn = "gru_forward"
    reset_after = check_flag(fn, "reset_after", reset_after)
    seq = Sequence(fn, 3, xs, Wx, Wh, lengths, time_major, reverse)
    training = check_flag(fn, "training", training)
    N, T, H, dtype = seq.N, seq.T, seq.H, seq.dtype
    shape = _bias_shape(reset_after, H)
    b = seq.vector("b", b, shape, "(2, 3H)" if reset_after else "(3H,)").reshape(-1)
    h = seq.state("h0", h0)
    hs, Y = outputs(seq)
    U = scratch((N, 3 * H) if reset_after else (1, 1), dtype, slot="U")  # h_{t-1} @ Wh, a step
    # the per-step products: h @ Wh, or h @ Wh[:, :2H] and rh @ Wh[:, 2H:]
    Wp = packed_weights(dtype, N, T, *([(H, 3 * H)] if reset_after else [(H, 2 * H), (H, H)]))
    if not training:
        # h is updated in place into h_T; with reverse the kernel walks the reversed positions
        # of xs and hs itself (no reordered copy: the memory is hs plus O(N*H))
        if not seq.empty:
            S = scratch((N, H), dtype, slot="S")  # uh scratch, or rh
            # a batch of one, reset_after only (reset-before has two dependent products per
            # step): per unit 3 + 3 gate sums, 6 biases, uh; the second h buffer
            nth, Wu = units_split(seq, 14, reset_after)
            by_rows = False
            if nth == 1 and not seq.reverse:
                nth, by_rows = threads.for_batch(N, H, 3, Wp, dtype.itemsize)
            wh = row_product_weights(seq, nth)  # a batch of one: aligned rows
            _gru.forward_infer(seq.rows, seq.Wx, wh, b, seq.lengths, N, T, seq.time_major,
                               seq.reverse, reset_after, Y, chunk_buffer(seq, 3 * H), S, U, h,
                               Wp, packed_input_weights(seq), *reverse_buffers(seq), Wu,
                               nth=nth, by_rows=by_rows)
        return hs, h, None
    cache = GRUCache(seq)
    cache.reset_after = reset_after
    cache.gates = aligned_empty((N * T, 3 * H), dtype)
    cache.extra = aligned_empty((N * T, H), dtype)
    cache.h_prev = states_by_step(seq, h)
    if not seq.empty:
        h = np.empty_like(h)
        _gru.forward_train(seq.X, seq.Wx, seq.Wh, b, seq.lengths, N, T, seq.time_major,
                           reset_after, Y, cache.gates, cache.extra, cache.h_prev, U, h, Wp,
                           nth=threads.for_loop(N, H, 3 * H, Wp))
    return seq.order(hs), h, cache


def gru_backward(cache, dhs, dh_T=None):
    """Backpropagation through time for ``gru_forward``.

    dhs : like hs, or None; dh_T : (N, H) or None (zeros).
    Returns GRUGrads(dxs, dWx, dWh, db, dh0): new arrays, each shaped like its argument
    (db is (2, 3H) for reset_after=True).
    """
    reset_after = getattr(cache, "reset_after", True)
    bw = Backward("gru_backward", "gru_forward", cache, GRUCache, dhs, {"dh_T": dh_T}, 3,
                  lambda H: _bias_shape(reset_after, H))
    (dh,) = bw.states
    if bw.run:
        c = bw.cache
        dA = scratch((c.N * c.T, 3 * c.H), c.dtype)
        # the recurrent-side gradients dU (reset_after), or one step's drh
        W2 = scratch((c.N * c.T, 3 * c.H) if reset_after else (c.N, c.H), c.dtype, slot=1)
        Wp = packed_weights(c.dtype, c.N, c.T, *([(3 * c.H, c.H)] if reset_after else
                                                 [(c.H, c.H), (2 * c.H, c.H)]))
        _gru.backward(c.X, c.Wx, c.Wh, c.gates, c.extra, c.h_prev, c.lengths, c.N, c.T,
                      c.time_major, reset_after, bw.dY, bw.has_dy, dh, dA, W2, bw.dX,
                      bw.dWx, bw.dWh, bw.db.reshape(-1), Wp,
                      nth=threads.for_loop(c.N, c.H, 3 * c.H, Wp))
    return GRUGrads(bw.dxs, bw.dWx, bw.dWh, bw.db, dh)
