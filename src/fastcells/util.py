"""Training helpers of the book's ``common/util.py``."""
import math

import numpy as np

__all__ = ["clip_grads"]


def clip_grads(grads, max_norm):
    """Scale all gradients in place by one factor so that their global L2 norm is at most
    `max_norm` (the book's ``clip_grads``: factor max_norm / (norm + 1e-6), applied only when
    below 1), the remedy for the exploding gradients of long BPTT.

    Returns the global norm before clipping. The norm is accumulated in float64, whatever the
    gradients' dtype; NaN or Inf gradients give a NaN/Inf norm and are left unchanged (a finite
    factor cannot fix them, and 0 * inf would turn them into NaN).
    """
    if (isinstance(max_norm, (bool, np.bool_))
            or not isinstance(max_norm, (int, float, np.integer, np.floating))
            or not math.isfinite(max_norm) or max_norm < 0):
        raise ValueError(f"clip_grads: max_norm must be a finite number >= 0, got {max_norm!r}")
    if not isinstance(grads, (list, tuple)):
        raise TypeError(f"clip_grads: grads must be a list of arrays, got {type(grads).__name__}")
    for k, g in enumerate(grads):  # every check before any gradient is scaled
        if not isinstance(g, np.ndarray) or g.dtype.kind != "f":
            raise TypeError(f"clip_grads: grads[{k}] must be a float NumPy array, got "
                            f"{type(g).__name__}" + (f" of dtype {g.dtype}"
                                                     if isinstance(g, np.ndarray) else ""))
        if not g.flags.writeable:
            raise ValueError(f"clip_grads: grads[{k}] must be writeable (grads are scaled in "
                             f"place)")
    total = 0.0
    for g in grads:
        total += float(np.square(g, dtype=np.float64).sum())
    norm = math.sqrt(total)
    rate = max_norm / (norm + 1e-6)
    if rate < 1 and math.isfinite(norm):
        for g in grads:
            g *= g.dtype.type(rate)
    return norm
