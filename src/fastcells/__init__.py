"""fastcells: fused CPU kernels for RNN, LSTM and GRU training and inference.

Functional API (CONVENTIONS.md): ``lstm_forward`` / ``lstm_backward``, ``gru_forward`` /
``gru_backward``, ``rnn_forward`` / ``rnn_backward``. The layer interface of *Deep Learning
from Scratch 2*: ``TimeLSTM`` (and ``TimeGRU``, ``TimeRNN``, the bidirectional ``TimeBi*``),
one-step cells ``LSTM``, ``GRU``, ``RNN``, and ``clip_grads``. ``set_num_threads`` sets the
threads of the recurrent loops; ``release_memory`` gives back the memory fastcells keeps between
calls. The NumPy twins of every kernel, the
ground truth of the tests, are in ``fastcells.reference``.
"""
from ._common import release_memory
from ._types import GRUGrads, LSTMGrads, RNNGrads
from .gru import gru_backward, gru_forward
from .layers import (GRU, LSTM, RNN, TimeBiGRU, TimeBiLSTM, TimeBiRNN, TimeGRU, TimeLSTM,
                     TimeRNN)
from .lstm import lstm_backward, lstm_forward
from .rnn import rnn_backward, rnn_forward
from .threads import get_num_threads, set_num_threads
from .util import clip_grads

__version__ = "0.1.0"

__all__ = ["lstm_forward", "lstm_backward", "gru_forward", "gru_backward", "rnn_forward",
           "rnn_backward", "LSTMGrads", "GRUGrads", "RNNGrads",
           "TimeRNN", "TimeLSTM", "TimeGRU", "TimeBiRNN", "TimeBiLSTM", "TimeBiGRU",
           "RNN", "LSTM", "GRU", "clip_grads", "set_num_threads", "get_num_threads",
           "release_memory"]
