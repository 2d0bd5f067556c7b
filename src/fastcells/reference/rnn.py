"""NumPy reference twin of the fused Elman RNN kernel: ``rnn_forward`` / ``rnn_backward``.

This is the ground truth the fast kernels are tested against, written in the style of *Deep
Learning from Scratch 2* (``common/time_layers.py``): a one-step cell whose ``forward`` returns a
cache that its ``backward`` unpacks in the same order, and a time loop over the steps. It is
pure NumPy, vectorized over the batch, and computes in the dtype of its inputs. It is not fast
and does no validation beyond what keeps it correct (see ``fastcells.rnn_forward`` for that).

Layouts and formulas are those of CONVENTIONS.md (b is (H,)):

    h_t = act(x_t @ Wx + h_{t-1} @ Wh + b),    act = tanh (default) or relu

Only the recurrence runs step by step: ``xs @ Wx`` for all steps is one matmul before the loop,
and ``dWx``, ``dWh``, ``db``, ``dxs`` are one matmul (or sum) each after the backward loop.

Each twin module (lstm, gru, rnn) is self-contained on purpose, so that it reads top to bottom
on its own; the small sequence helpers at the end are repeated in each.
"""
import numpy as np

from ._common import from_time_major, gather, schedule, to_time_major
from .._types import RNNGrads

__all__ = ["rnn_forward", "rnn_backward"]

NONLINEARITIES = ("tanh", "relu")


# ----------------------------------------------------------------------------------------------
# One step
# ----------------------------------------------------------------------------------------------

def rnn_cell_forward(a_x, h_prev, Wh, nonlinearity):
    """One RNN step for the whole batch.

    a_x     (N, H)  x_t @ Wx + b, precomputed for all steps before the loop
    h_prev  (N, H)  h_{t-1}
    Wh      (H, H)
    Returns h_next (N, H) and the step's cache.
    """
    # pre = x_t @ Wx + b + h_{t-1} @ Wh                       the only matmul of the step
    pre = a_x + h_prev @ Wh
    # h_t = tanh(pre) or max(pre, 0)
    h_next = np.tanh(pre) if nonlinearity == "tanh" else np.maximum(pre, 0)
    # Backward needs only h_t: tanh' = 1 - h_t², relu' = [h_t > 0]. h_{t-1} sits in the state
    # stack that the time loop keeps for the single dWh matmul.
    cache = (h_next,)
    return h_next, cache


def rnn_cell_backward(dh_next, cache, Wh, nonlinearity, dpre):
    """Backward of one RNN step.

    dh_next (N, H)  dL/dh_t (from the output and from step t+1)
    cache           as returned by rnn_cell_forward
    Wh      (H, H)
    dpre    (N, H)  out: dL/dpre, also dL/d(x_t @ Wx + b) (overwritten)
    Returns dh_prev (N, H).
    """
    (h_next,) = cache
    if nonlinearity == "tanh":
        # dpre = dh ⊙ (1 - h_t²)
        dpre[...] = dh_next * (1 - h_next ** 2)
    else:
        # dpre = dh ⊙ [h_t > 0]   (the derivative at 0 is taken as 0)
        dpre[...] = dh_next * (h_next > 0)
    # dh_{t-1} = dpre @ Wh.T                                  the only matmul of the step
    return dpre @ Wh.T


# ----------------------------------------------------------------------------------------------
# The sequence
# ----------------------------------------------------------------------------------------------

def rnn_forward(xs, Wx, Wh, b, h0=None, *, nonlinearity="tanh", lengths=None, time_major=False,
                reverse=False, training=True):
    """Elman RNN over a batch of sequences.

    xs      (N, T, D), or (T, N, D) when time_major
    Wx      (D, H)    Wh (H, H)    b (H,)
    h0      (N, H), or None for zeros
    nonlinearity  "tanh" or "relu"
    lengths (N,) ints in 0..T, or None: step t >= lengths[n] keeps sequence n's state and
            outputs zero
    reverse run each sequence from its last valid position down to position 0; the output for
            input position t is still written at position t
    Returns hs (like xs with H features), h_T (N, H), and cache (None unless training).
    """
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
    xs, Wx, Wh, b = (np.asarray(a) for a in (xs, Wx, Wh, b))
    dtype = np.result_type(xs, Wx, Wh, b)
    xs, Wx, Wh, b = (np.asarray(a, dtype=dtype) for a in (xs, Wx, Wh, b))
    xs_tm = to_time_major(xs, time_major)                        # (T, N, D) view
    T, N, D = xs_tm.shape
    H = Wh.shape[0]
    order, active = schedule(lengths, N, T, reverse)

    # Step s of sequence n reads position order[s, n]: X is xs in step order.   (T*N, D)
    X = np.ascontiguousarray(gather(xs_tm, order)).reshape(T * N, D)
    # Input projection for all steps at once: AX = X @ Wx + b                   (T, N, H)
    AX = (X @ Wx + b).reshape(T, N, H)

    # State stack in step order, hstate[0] = h0, hstate[s + 1] = state after step s.
    hstate = np.empty((T + 1, N, H), dtype=dtype)
    hstate[0] = 0 if h0 is None else np.asarray(h0, dtype=dtype)
    cell_caches = []
    for s in range(T):
        h, cell_cache = rnn_cell_forward(AX[s], hstate[s], Wh, nonlinearity)
        if active is not None:
            # Padded steps keep the state: h_t = h_{t-1} where s >= lengths[n]
            h = np.where(active[s][:, None], h, hstate[s])
        hstate[s + 1] = h
        if training:
            cell_caches.append(cell_cache)

    # Outputs: zero at padded steps, then back from step order to position order and layout.
    hs_steps = hstate[1:] if active is None else np.where(active[..., None], hstate[1:], 0)
    hs = from_time_major(gather(hs_steps, order), time_major).copy()
    # Padded steps kept the state, so the last row is each sequence's final state.
    h_T = hstate[T].copy()
    if not training:
        return hs, h_T, None
    # Forward cache, unpacked in this order by rnn_backward.
    cache = (X, Wx, Wh, hstate, cell_caches, order, active, time_major, nonlinearity)
    return hs, h_T, cache


def rnn_backward(cache, dhs, dh_T=None):
    """Gradients of rnn_forward.

    cache   from rnn_forward(..., training=True)
    dhs     like hs, or None for no gradient at the outputs (ignored at padded positions)
    dh_T    (N, H), or None for zeros
    Returns RNNGrads(dxs, dWx, dWh, db, dh0), each shaped like its argument.
    """
    if cache is None:
        raise ValueError("rnn_backward: cache is None because the forward ran with "
                         "training=False; run rnn_forward with training=True to backpropagate")
    X, Wx, Wh, hstate, cell_caches, order, active, time_major, nonlinearity = cache
    T = len(cell_caches)
    N, H = hstate.shape[1:]
    D = Wx.shape[0]
    dtype = hstate.dtype

    # dhs in step order (T, N, H), or None
    dhs_steps = None
    if dhs is not None:
        dhs_steps = gather(to_time_major(np.asarray(dhs, dtype=dtype), time_major), order)
    dh = np.zeros((N, H), dtype=dtype) if dh_T is None else np.array(dh_T, dtype=dtype)

    dpre_all = np.empty((T, N, H), dtype=dtype)
    for s in reversed(range(T)):
        dh_step = dh if dhs_steps is None else dh + dhs_steps[s]
        dh_prev = rnn_cell_backward(dh_step, cell_caches[s], Wh, nonlinearity, dpre_all[s])
        if active is not None:
            # Padded steps: no pre-activation gradient, the state gradient passes through
            # unchanged, and dhs there is ignored (dh, not dh_step).
            m = active[s][:, None]
            dpre_all[s] *= m
            dh_prev = np.where(m, dh_prev, dh)
        dh = dh_prev

    dpre = dpre_all.reshape(T * N, H)
    # dWx = X.T @ dpre,  dWh = Hprev.T @ dpre,  db = Σ dpre,  dxs = dpre @ Wx.T (position order)
    dWx = X.T @ dpre
    dWh = hstate[:-1].reshape(T * N, H).T @ dpre
    db = dpre.sum(axis=0)
    dxs = from_time_major(gather((dpre @ Wx.T).reshape(T, N, D), order), time_major).copy()
    return RNNGrads(dxs, dWx, dWh, db, dh)


# ----------------------------------------------------------------------------------------------
# Helpers (repeated in lstm.py and gru.py)
# ----------------------------------------------------------------------------------------------
