"""Training helpers of the book's ``common/util.py``."""
import math

import numpy as np

__all__ = ["clip_grads"]


def clip_grads(grads, max_norm):
    """Scale all gradients in place by one factor so that their global L2 norm is at most
    `max_norm` (the book's ``clip_grads``: factor max_norm / (norm + 1e-6), applied only when
    below 1), the remedy for the exploding gradients of long BPTT.

    Returns the global norm before clipping. The norm is accumulated in float64, whatever the
    gradients' dtype; NaN or Inf gradients give a NaN/Inf norm and are left unchanged.
    """
    if not (isinstance(max_norm, (int, float, np.number)) and math.isfinite(max_norm)
            and max_norm >= 0):
        raise ValueError(f"clip_grads: max_norm must be a finite number >= 0, got {max_norm!r}")
    total = 0.0
    for g in grads:
        if not isinstance(g, np.ndarray):
            raise TypeError(f"clip_grads: grads must be NumPy arrays, got {type(g).__name__}")
        flat = g.reshape(-1)
        total += float(np.dot(flat, flat).astype(np.float64)) if flat.size else 0.0
    norm = math.sqrt(total)
    rate = max_norm / (norm + 1e-6)
    if rate < 1:
        for g in grads:
            g *= g.dtype.type(rate)
    return norm
