"""NumPy reference twins of the fastcells kernels: the ground truth they are tested against.

Pure NumPy, readable, in the style of *Deep Learning from Scratch 2* (``common/time_layers.py``):
each module has a one-step cell (forward returning a cache, backward unpacking it) and a time
loop. Same signatures as the fast functional API (CONVENTIONS.md), plus ``reverse=True``, which
runs each sequence from its last valid step down to step 0 and writes the output for input
position t at position t (ONNX ``direction="reverse"``). Computations are in the inputs' dtype.
The twins are checked against finite differences in ``tests/test_reference.py``.
"""
from .gru import gru_backward, gru_forward
from .lstm import lstm_backward, lstm_forward
from .rnn import rnn_backward, rnn_forward

__all__ = [
    "lstm_forward", "lstm_backward",
    "gru_forward", "gru_backward",
    "rnn_forward", "rnn_backward",
]
