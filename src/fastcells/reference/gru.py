"""NumPy reference twin of the fused GRU kernel: ``gru_forward`` / ``gru_backward``.

This is the ground truth the fast kernels are tested against, written in the style of *Deep
Learning from Scratch 2* (``common/time_layers.py``): a one-step cell whose ``forward`` returns a
cache that its ``backward`` unpacks in the same order, and a time loop over the steps. It is
pure NumPy, vectorized over the batch, and computes in the dtype of its inputs. It is not fast
and does no validation beyond what keeps it correct (see ``fastcells.gru_forward`` for that).

Layouts and formulas are those of CONVENTIONS.md. Blocks of the gate axis are **[z, r, h]**, and
the update is  h_t = z ⊙ h_{t-1} + (1 - z) ⊙ ĥ  (Keras, ONNX, PyTorch).

reset_after=True (b is (2, 3H): row 0 input bias, row 1 recurrent bias):

    a = x_t @ Wx + b[0]          u = h_{t-1} @ Wh + b[1]
    z = σ(a_z + u_z)    r = σ(a_r + u_r)    ĥ = tanh(a_h + r ⊙ u_h)

reset_after=False (b is (3H,)):

    a = x_t @ Wx + b
    z = σ(a_z + h_{t-1} @ Wh_z)    r = σ(a_r + h_{t-1} @ Wh_r)
    ĥ = tanh(a_h + (r ⊙ h_{t-1}) @ Wh_h)

Only the recurrence runs step by step: ``xs @ Wx`` for all steps is one matmul before the loop,
and ``dWx``, ``dWh``, ``db``, ``dxs`` are one matmul (or sum) each after the backward loop.
reset_after=False needs two matmuls per step (r must be known before ``(r ⊙ h) @ Wh_h``),
reset_after=True one.

Each twin module (lstm, gru, rnn) is self-contained on purpose, so that it reads top to bottom
on its own; the small sequence helpers at the end are repeated in each.
"""
import numpy as np

from ._common import from_time_major, gather, schedule, sigmoid, to_time_major
from .._types import GRUGrads

__all__ = ["gru_forward", "gru_backward"]


# ----------------------------------------------------------------------------------------------
# One step, reset_after=True
# ----------------------------------------------------------------------------------------------

def gru_cell_forward_reset_after(a, h_prev, Wh, b_h):
    """One reset-after GRU step for the whole batch.

    a       (N, 3H)  x_t @ Wx + b[0], precomputed for all steps before the loop
    h_prev  (N, H)   h_{t-1}
    Wh      (H, 3H)
    b_h     (3H,)    b[1], the recurrent bias
    Returns h_next (N, H) and the step's cache.
    """
    H = h_prev.shape[1]
    # u = h_{t-1} @ Wh + b[1]                                (N, 3H), the only matmul of the step
    u = h_prev @ Wh + b_h
    z = sigmoid(a[:, :H] + u[:, :H])
    r = sigmoid(a[:, H:2 * H] + u[:, H:2 * H])
    u_h = u[:, 2 * H:]
    h_hat = np.tanh(a[:, 2 * H:] + r * u_h)
    # h_t = z ⊙ h_{t-1} + (1 - z) ⊙ ĥ
    h_next = z * h_prev + (1 - z) * h_hat
    # Backward needs h_{t-1}, the gates z, r, ĥ and u_h (the recurrent part that r multiplies).
    cache = (h_prev, z, r, h_hat, u_h)
    return h_next, cache


def gru_cell_backward_reset_after(dh_next, cache, Wh, da, du):
    """Backward of one reset-after GRU step.

    dh_next (N, H)   dL/dh_t (from the output and from step t+1)
    cache            as returned by gru_cell_forward_reset_after
    Wh      (H, 3H)
    da      (N, 3H)  out: dL/da, a = x_t @ Wx + b[0] (overwritten)
    du      (N, 3H)  out: dL/du, u = h_{t-1} @ Wh + b[1] (overwritten)
    Returns dh_prev (N, H).
    """
    h_prev, z, r, h_hat, u_h = cache
    H = z.shape[1]
    # h_t = z ⊙ h_{t-1} + (1 - z) ⊙ ĥ:  dz = dh ⊙ (h_{t-1} - ĥ),  dĥ = dh ⊙ (1 - z)
    dz = dh_next * (h_prev - h_hat)
    dh_hat = dh_next * (1 - z)
    # ĥ = tanh(a_h + r ⊙ u_h):  d(a_h + r ⊙ u_h) = dĥ ⊙ (1 - ĥ²)
    dn = dh_hat * (1 - h_hat ** 2)
    dr = dn * u_h
    # Through the sigmoids: σ' = σ(1 - σ). z and r see a and u alike; the h block sees a_h
    # directly and u_h through r.
    da[:, :H] = dz * z * (1 - z)
    da[:, H:2 * H] = dr * r * (1 - r)
    da[:, 2 * H:] = dn
    du[:, :2 * H] = da[:, :2 * H]
    du[:, 2 * H:] = dn * r
    # dh_{t-1} = dh ⊙ z + du @ Wh.T                          the only matmul of the step
    dh_prev = dh_next * z + du @ Wh.T
    return dh_prev


# ----------------------------------------------------------------------------------------------
# One step, reset_after=False
# ----------------------------------------------------------------------------------------------

def gru_cell_forward_reset_before(a, h_prev, Wh):
    """One reset-before GRU step for the whole batch.

    a       (N, 3H)  x_t @ Wx + b, precomputed for all steps before the loop
    h_prev  (N, H)   h_{t-1}
    Wh      (H, 3H)
    Returns h_next (N, H) and the step's cache.
    """
    H = h_prev.shape[1]
    # [u_z, u_r] = h_{t-1} @ Wh[:, :2H]                      (N, 2H)
    u_zr = h_prev @ Wh[:, :2 * H]
    z = sigmoid(a[:, :H] + u_zr[:, :H])
    r = sigmoid(a[:, H:2 * H] + u_zr[:, H:])
    # ĥ = tanh(a_h + (r ⊙ h_{t-1}) @ Wh[:, 2H:])             (N, H)
    rh = r * h_prev
    h_hat = np.tanh(a[:, 2 * H:] + rh @ Wh[:, 2 * H:])
    # h_t = z ⊙ h_{t-1} + (1 - z) ⊙ ĥ
    h_next = z * h_prev + (1 - z) * h_hat
    # Backward needs h_{t-1}, z, r, ĥ; r ⊙ h_{t-1} is kept for the time loop's dWh_h matmul.
    cache = (h_prev, z, r, h_hat, rh)
    return h_next, cache


def gru_cell_backward_reset_before(dh_next, cache, Wh, da):
    """Backward of one reset-before GRU step.

    dh_next (N, H)   dL/dh_t (from the output and from step t+1)
    cache            as returned by gru_cell_forward_reset_before
    Wh      (H, 3H)
    da      (N, 3H)  out: dL/d(pre-activations) [z, r, h], also dL/d(x_t @ Wx + b) (overwritten)
    Returns dh_prev (N, H).
    """
    h_prev, z, r, h_hat, _rh = cache
    H = z.shape[1]
    # h_t = z ⊙ h_{t-1} + (1 - z) ⊙ ĥ:  dz = dh ⊙ (h_{t-1} - ĥ),  dĥ = dh ⊙ (1 - z)
    dz = dh_next * (h_prev - h_hat)
    dh_hat = dh_next * (1 - z)
    # ĥ = tanh(pre_h), pre_h = a_h + (r ⊙ h_{t-1}) @ Wh_h:  dpre_h = dĥ ⊙ (1 - ĥ²)
    da[:, 2 * H:] = dh_hat * (1 - h_hat ** 2)
    # d(r ⊙ h_{t-1}) = dpre_h @ Wh_h.T
    drh = da[:, 2 * H:] @ Wh[:, 2 * H:].T
    dr = drh * h_prev
    da[:, :H] = dz * z * (1 - z)
    da[:, H:2 * H] = dr * r * (1 - r)
    # dh_{t-1} = dh ⊙ z + d(rh) ⊙ r + [dpre_z, dpre_r] @ Wh[:, :2H].T
    dh_prev = dh_next * z + drh * r + da[:, :2 * H] @ Wh[:, :2 * H].T
    return dh_prev


# ----------------------------------------------------------------------------------------------
# The sequence
# ----------------------------------------------------------------------------------------------

def gru_forward(xs, Wx, Wh, b, h0=None, *, reset_after=True, lengths=None, time_major=False,
                reverse=False, training=True):
    """GRU over a batch of sequences.

    xs      (N, T, D), or (T, N, D) when time_major
    Wx      (D, 3H)    Wh (H, 3H)    blocks [z, r, h]
    b       (2, 3H) when reset_after (input bias, recurrent bias), else (3H,)
    h0      (N, H), or None for zeros
    lengths (N,) ints in 0..T, or None: step t >= lengths[n] keeps sequence n's state and
            outputs zero
    reverse run each sequence from its last valid position down to position 0; the output for
            input position t is still written at position t
    Returns hs (like xs with H features), h_T (N, H), and cache (None unless training).
    """
    xs, Wx, Wh, b = (np.asarray(a) for a in (xs, Wx, Wh, b))
    dtype = np.result_type(xs, Wx, Wh, b)
    xs, Wx, Wh, b = (np.asarray(a, dtype=dtype) for a in (xs, Wx, Wh, b))
    xs_tm = to_time_major(xs, time_major)                        # (T, N, D) view
    T, N, D = xs_tm.shape
    H = Wh.shape[0]
    expected_b = (2, 3 * H) if reset_after else (3 * H,)
    if b.shape != expected_b:
        raise ValueError(f"b must have shape {expected_b} with reset_after={reset_after}, "
                         f"got {b.shape}")
    order, active = schedule(lengths, N, T, reverse)

    # Step s of sequence n reads position order[s, n]: X is xs in step order.   (T*N, D)
    X = np.ascontiguousarray(gather(xs_tm, order)).reshape(T * N, D)
    # Input projection for all steps at once: AX = X @ Wx + b_input             (T, N, 3H)
    b_x = b[0] if reset_after else b
    AX = (X @ Wx + b_x).reshape(T, N, 3 * H)

    # State stack in step order, hstate[0] = h0, hstate[s + 1] = state after step s.
    hstate = np.empty((T + 1, N, H), dtype=dtype)
    hstate[0] = 0 if h0 is None else np.asarray(h0, dtype=dtype)
    cell_caches = []
    for s in range(T):
        if reset_after:
            h, cell_cache = gru_cell_forward_reset_after(AX[s], hstate[s], Wh, b[1])
        else:
            h, cell_cache = gru_cell_forward_reset_before(AX[s], hstate[s], Wh)
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
    # Forward cache, unpacked in this order by gru_backward.
    cache = (X, Wx, Wh, hstate, cell_caches, order, active, time_major, reset_after)
    return hs, h_T, cache


def gru_backward(cache, dhs, dh_T=None):
    """Gradients of gru_forward.

    cache   from gru_forward(..., training=True)
    dhs     like hs, or None for no gradient at the outputs (ignored at padded positions)
    dh_T    (N, H), or None for zeros
    Returns GRUGrads(dxs, dWx, dWh, db, dh0), each shaped like its argument.
    """
    if cache is None:
        raise ValueError("gru_backward: cache is None because the forward ran with "
                         "training=False; run gru_forward with training=True to backpropagate")
    X, Wx, Wh, hstate, cell_caches, order, active, time_major, reset_after = cache
    T = len(cell_caches)
    N, H = hstate.shape[1:]
    D = Wx.shape[0]
    dtype = hstate.dtype

    # dhs in step order (T, N, H), or None
    dhs_steps = None
    if dhs is not None:
        dhs_steps = gather(to_time_major(np.asarray(dhs, dtype=dtype), time_major), order)
    dh = np.zeros((N, H), dtype=dtype) if dh_T is None else np.array(dh_T, dtype=dtype)

    # dA: gradient of a = x_t @ Wx + b_input; dU (reset_after only): of u = h_{t-1} @ Wh + b[1]
    dA_all = np.empty((T, N, 3 * H), dtype=dtype)
    dU_all = np.empty((T, N, 3 * H), dtype=dtype) if reset_after else None
    for s in reversed(range(T)):
        dh_step = dh if dhs_steps is None else dh + dhs_steps[s]
        if reset_after:
            dh_prev = gru_cell_backward_reset_after(dh_step, cell_caches[s], Wh,
                                                    dA_all[s], dU_all[s])
        else:
            dh_prev = gru_cell_backward_reset_before(dh_step, cell_caches[s], Wh, dA_all[s])
        if active is not None:
            # Padded steps: no pre-activation gradient, the state gradient passes through
            # unchanged, and dhs there is ignored (dh, not dh_step).
            m = active[s][:, None]
            dA_all[s] *= m
            if reset_after:
                dU_all[s] *= m
            dh_prev = np.where(m, dh_prev, dh)
        dh = dh_prev

    dA = dA_all.reshape(T * N, 3 * H)
    Hprev = hstate[:-1].reshape(T * N, H)
    # dWx = X.T @ dA,  dxs = dA @ Wx.T (back to position order)
    dWx = X.T @ dA
    dxs = from_time_major(gather((dA @ Wx.T).reshape(T, N, D), order), time_major).copy()
    if reset_after:
        # dWh = Hprev.T @ dU,  db = [Σ dA, Σ dU]
        dU = dU_all.reshape(T * N, 3 * H)
        dWh = Hprev.T @ dU
        db = np.stack([dA.sum(axis=0), dU.sum(axis=0)])
    else:
        # dWh[:, :2H] = Hprev.T @ dA[:, :2H],  dWh[:, 2H:] = (r ⊙ Hprev).T @ dA[:, 2H:]
        # db = Σ dA
        RH = np.array([cell_cache[4] for cell_cache in cell_caches],
                      dtype=dtype).reshape(T * N, H)  # np.array: T may be 0
        dWh = np.empty_like(Wh)
        dWh[:, :2 * H] = Hprev.T @ dA[:, :2 * H]
        dWh[:, 2 * H:] = RH.T @ dA[:, 2 * H:]
        db = dA.sum(axis=0)
    return GRUGrads(dxs, dWx, dWh, db, dh)


# ----------------------------------------------------------------------------------------------
# Helpers (repeated in lstm.py and rnn.py)
# ----------------------------------------------------------------------------------------------
