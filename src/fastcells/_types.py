"""Result types shared by the fast kernels and their NumPy twins.

Each backward returns a NamedTuple whose fields are the gradients of the forward's arguments,
named ``d`` + the argument and shaped like it (CONVENTIONS.md, "Functional API").
"""
from typing import NamedTuple

import numpy as np


class LSTMGrads(NamedTuple):
    dxs: np.ndarray  # like xs: (N, T, D), or (T, N, D) when time_major
    dWx: np.ndarray  # (D, 4H)
    dWh: np.ndarray  # (H, 4H)
    db: np.ndarray   # (4H,)
    dh0: np.ndarray  # (N, H)
    dc0: np.ndarray  # (N, H)


class GRUGrads(NamedTuple):
    dxs: np.ndarray  # like xs
    dWx: np.ndarray  # (D, 3H)
    dWh: np.ndarray  # (H, 3H)
    db: np.ndarray   # (2, 3H) when reset_after, else (3H,)
    dh0: np.ndarray  # (N, H)


class RNNGrads(NamedTuple):
    dxs: np.ndarray  # like xs
    dWx: np.ndarray  # (D, H)
    dWh: np.ndarray  # (H, H)
    db: np.ndarray   # (H,)
    dh0: np.ndarray  # (N, H)
