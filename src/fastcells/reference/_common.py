"""Helpers shared by the NumPy twins: the sigmoid, the batch-first/time-major swap, and the
step schedule of variable lengths and reversed sequences."""
import numpy as np

def sigmoid(x):
    # σ(x) = 1 / (1 + e^-x); for very negative x, e^-x overflows to inf and σ -> 0, the limit.
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def to_time_major(a, time_major):
    """(N, T, ...) -> (T, N, ...) as a view, unless already time-major."""
    return a if time_major else a.swapaxes(0, 1)


from_time_major = to_time_major  # the swap is its own inverse


def schedule(lengths, N, T, reverse):
    """Which position each sequence reads at each step, and which steps are real.

    Returns order (T, N) or None, active (T, N) bool or None.
    Step s of sequence n reads position order[s, n]: s forward, lengths[n] - 1 - s in reverse
    (the valid prefix read backwards). Padded steps s >= lengths[n] keep position s, so each
    column of order is a permutation of 0..T-1 that is its own inverse: one gather takes inputs
    to step order and the same gather takes outputs back. active[s, n] = s < lengths[n]; in step
    order the padding is always at the end. None means the identity / all steps active.
    """
    if lengths is None:
        L = np.full(N, T, dtype=np.intp)
        active = None
    else:
        L = np.asarray(lengths).astype(np.intp, casting="same_kind")
        if L.shape != (N,) or np.any(L < 0) or np.any(L > T):
            raise ValueError(f"lengths must have shape ({N},) with values in 0..{T}")
        active = np.arange(T)[:, None] < L
    order = None
    if reverse:
        steps = np.arange(T)[:, None]
        order = np.where(steps < L, L - 1 - steps, steps)
    return order, active


def gather(a, order):
    """a (T, N, ...) in one order -> the other order: out[s, n] = a[order[s, n], n]."""
    if order is None:
        return a
    return a[order, np.arange(a.shape[1])]
