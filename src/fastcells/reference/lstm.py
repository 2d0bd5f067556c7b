"""NumPy reference twin of the fused LSTM kernel: ``lstm_forward`` / ``lstm_backward``.

This is the ground truth the fast kernels are tested against, written in the style of *Deep
Learning from Scratch 2* (``common/time_layers.py``): a one-step cell whose ``forward`` returns a
cache that its ``backward`` unpacks in the same order, and a time loop over the steps. It is
pure NumPy, vectorized over the batch, and computes in the dtype of its inputs. It is not fast
and does no validation beyond what keeps it correct (see ``fastcells.lstm_forward`` for that).

Layouts and formulas are those of CONVENTIONS.md. Blocks of the gate axis are **[f, g, i, o]**:

    A   = x_t @ Wx + h_{t-1} @ Wh + b
    f   = σ(A_f)    g = tanh(A_g)    i = σ(A_i)    o = σ(A_o)
    c_t = f ⊙ c_{t-1} + g ⊙ i
    h_t = o ⊙ tanh(c_t)

Only the recurrence runs step by step: ``xs @ Wx`` for all steps is one matmul before the loop,
and ``dWx``, ``dWh``, ``db``, ``dxs`` are one matmul (or sum) each after the backward loop.

Each twin module (lstm, gru, rnn) is self-contained on purpose, so that it reads top to bottom
on its own; the small sequence helpers at the end are repeated in each.
"""
import numpy as np

from ._common import from_time_major, gather, schedule, sigmoid, to_time_major
from .._types import LSTMGrads

__all__ = ["lstm_forward", "lstm_backward"]


# ----------------------------------------------------------------------------------------------
# One step
# ----------------------------------------------------------------------------------------------

def lstm_cell_forward(a_x, h_prev, c_prev, Wh):
    """One LSTM step for the whole batch.

    a_x     (N, 4H)  x_t @ Wx + b, precomputed for all steps before the loop
    h_prev  (N, H)   h_{t-1}
    c_prev  (N, H)   c_{t-1}
    Wh      (H, 4H)
    Returns h_next (N, H), c_next (N, H) and the step's cache.
    """
    H = h_prev.shape[1]
    # A = x_t @ Wx + b + h_{t-1} @ Wh                       (N, 4H), the only matmul of the step
    A = a_x + h_prev @ Wh
    f = sigmoid(A[:, :H])
    g = np.tanh(A[:, H:2 * H])
    i = sigmoid(A[:, 2 * H:3 * H])
    o = sigmoid(A[:, 3 * H:])
    # c_t = f ⊙ c_{t-1} + g ⊙ i,   h_t = o ⊙ tanh(c_t)
    c_next = f * c_prev + g * i
    tanh_c_next = np.tanh(c_next)
    h_next = o * tanh_c_next
    # Backward needs c_{t-1}, the four activated gates and tanh(c_t) (cached, not recomputed).
    # h_{t-1} is not needed by the step: it sits in the state stack that the time loop keeps
    # for the single dWh matmul.
    cache = (c_prev, f, g, i, o, tanh_c_next)
    return h_next, c_next, cache


def lstm_cell_backward(dh_next, dc_next, cache, Wh, dA):
    """Backward of one LSTM step.

    dh_next (N, H)   dL/dh_t (from the output and from step t+1)
    dc_next (N, H)   dL/dc_t (from step t+1)
    cache            as returned by lstm_cell_forward
    Wh      (H, 4H)
    dA      (N, 4H)  out: dL/dA, the gradient of the pre-activations (overwritten)
    Returns dh_prev (N, H), dc_prev (N, H).
    """
    c_prev, f, g, i, o, tanh_c_next = cache
    H = f.shape[1]
    # ds = dL/dc_t = dc_next + dh_next ⊙ o ⊙ (1 - tanh²(c_t))
    ds = dc_next + (dh_next * o) * (1 - tanh_c_next ** 2)
    # dc_{t-1} = ds ⊙ f
    dc_prev = ds * f
    # Gate gradients through their activations: σ' = σ(1 - σ), tanh' = 1 - tanh²
    dA[:, :H] = (ds * c_prev) * f * (1 - f)               # df
    dA[:, H:2 * H] = (ds * i) * (1 - g ** 2)              # dg
    dA[:, 2 * H:3 * H] = (ds * g) * i * (1 - i)           # di
    dA[:, 3 * H:] = (dh_next * tanh_c_next) * o * (1 - o)  # do
    # dh_{t-1} = dA @ Wh.T                                  the only matmul of the step
    dh_prev = dA @ Wh.T
    return dh_prev, dc_prev


# ----------------------------------------------------------------------------------------------
# The sequence
# ----------------------------------------------------------------------------------------------

def lstm_forward(xs, Wx, Wh, b, h0=None, c0=None, *, lengths=None, time_major=False,
                 reverse=False, training=True):
    """LSTM over a batch of sequences.

    xs      (N, T, D), or (T, N, D) when time_major
    Wx      (D, 4H)    Wh (H, 4H)    b (4H,)         blocks [f, g, i, o]
    h0, c0  (N, H), or None for zeros
    lengths (N,) ints in 0..T, or None: step t >= lengths[n] keeps sequence n's state and
            outputs zero
    reverse run each sequence from its last valid position down to position 0; the output for
            input position t is still written at position t
    Returns hs (like xs with H features), (h_T, c_T) (N, H) each, and cache (None unless
    training).
    """
    xs, Wx, Wh, b = (np.asarray(a) for a in (xs, Wx, Wh, b))
    dtype = np.result_type(xs, Wx, Wh, b)
    xs, Wx, Wh, b = (np.asarray(a, dtype=dtype) for a in (xs, Wx, Wh, b))
    xs_tm = to_time_major(xs, time_major)                        # (T, N, D) view
    T, N, D = xs_tm.shape
    H = Wh.shape[0]
    order, active = schedule(lengths, N, T, reverse)

    # Step s of sequence n reads position order[s, n]: X is xs in step order.   (T*N, D)
    X = np.ascontiguousarray(gather(xs_tm, order)).reshape(T * N, D)
    # Input projection for all steps at once: AX = X @ Wx + b                   (T, N, 4H)
    AX = (X @ Wx + b).reshape(T, N, 4 * H)

    # State stacks in step order, hstate[0] = h0, hstate[s + 1] = state after step s.
    hstate = np.empty((T + 1, N, H), dtype=dtype)
    cstate = np.empty((T + 1, N, H), dtype=dtype)
    hstate[0] = 0 if h0 is None else np.asarray(h0, dtype=dtype)
    cstate[0] = 0 if c0 is None else np.asarray(c0, dtype=dtype)
    cell_caches = []
    for s in range(T):
        h, c, cell_cache = lstm_cell_forward(AX[s], hstate[s], cstate[s], Wh)
        if active is not None:
            # Padded steps keep the state: h_t = h_{t-1}, c_t = c_{t-1} where s >= lengths[n]
            m = active[s][:, None]
            h = np.where(m, h, hstate[s])
            c = np.where(m, c, cstate[s])
        hstate[s + 1] = h
        cstate[s + 1] = c
        if training:
            cell_caches.append(cell_cache)

    # Outputs: zero at padded steps, then back from step order to position order and layout.
    hs_steps = hstate[1:] if active is None else np.where(active[..., None], hstate[1:], 0)
    hs = from_time_major(gather(hs_steps, order), time_major).copy()
    # Padded steps kept the state, so the last row is each sequence's final state.
    h_T = hstate[T].copy()
    c_T = cstate[T].copy()
    if not training:
        return hs, (h_T, c_T), None
    # Forward cache, unpacked in this order by lstm_backward.
    cache = (X, Wx, Wh, hstate, cell_caches, order, active, time_major)
    return hs, (h_T, c_T), cache


def lstm_backward(cache, dhs, dh_T=None, dc_T=None):
    """Gradients of lstm_forward.

    cache   from lstm_forward(..., training=True)
    dhs     like hs, or None for no gradient at the outputs (ignored at padded positions)
    dh_T, dc_T  (N, H), or None for zeros
    Returns LSTMGrads(dxs, dWx, dWh, db, dh0, dc0), each shaped like its argument.
    """
    if cache is None:
        raise ValueError("lstm_backward: cache is None because the forward ran with "
                         "training=False; run lstm_forward with training=True to backpropagate")
    X, Wx, Wh, hstate, cell_caches, order, active, time_major = cache
    T = len(cell_caches)
    N, H = hstate.shape[1:]
    D = Wx.shape[0]
    dtype = hstate.dtype

    # dhs in step order (T, N, H), or None
    dhs_steps = None
    if dhs is not None:
        dhs_steps = gather(to_time_major(np.asarray(dhs, dtype=dtype), time_major), order)
    dh = np.zeros((N, H), dtype=dtype) if dh_T is None else np.array(dh_T, dtype=dtype)
    dc = np.zeros((N, H), dtype=dtype) if dc_T is None else np.array(dc_T, dtype=dtype)

    dA_all = np.empty((T, N, 4 * H), dtype=dtype)
    for s in reversed(range(T)):
        dh_step = dh if dhs_steps is None else dh + dhs_steps[s]
        dh_prev, dc_prev = lstm_cell_backward(dh_step, dc, cell_caches[s], Wh, dA_all[s])
        if active is not None:
            # Padded steps: no pre-activation gradient, the state gradient passes through
            # unchanged, and dhs there is ignored (dh, not dh_step).
            m = active[s][:, None]
            dA_all[s] *= m
            dh_prev = np.where(m, dh_prev, dh)
            dc_prev = np.where(m, dc_prev, dc)
        dh, dc = dh_prev, dc_prev

    dA = dA_all.reshape(T * N, 4 * H)
    # dWx = X.T @ dA,  dWh = Hprev.T @ dA,  db = Σ dA,  dxs = dA @ Wx.T (back to position order)
    dWx = X.T @ dA
    dWh = hstate[:-1].reshape(T * N, H).T @ dA
    db = dA.sum(axis=0)
    dxs = from_time_major(gather((dA @ Wx.T).reshape(T, N, D), order), time_major).copy()
    return LSTMGrads(dxs, dWx, dWh, db, dh, dc)


# ----------------------------------------------------------------------------------------------
# Helpers (repeated in gru.py and rnn.py)
# ----------------------------------------------------------------------------------------------
