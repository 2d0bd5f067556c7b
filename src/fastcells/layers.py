"""The layer interface of *Deep Learning from Scratch 2* (``common/time_layers.py``), on the
fused kernels: code written for the book runs unchanged but for the import.

Time layers ``TimeRNN``, ``TimeLSTM``, ``TimeGRU`` (and the bidirectional ``TimeBiRNN``,
``TimeBiLSTM``, ``TimeBiGRU``) run whole sequences; one-step cells ``RNN``, ``LSTM``, ``GRU``
run one time step, for generation loops.

Book semantics, kept exactly:
- ``params`` is the list of the very arrays passed in: an optimizer that updates them in place
  is seen by the next call (nothing is copied or cached from them between calls).
- ``grads`` is a list of arrays shaped like ``params`` that ``backward`` overwrites in place.
- ``forward(xs) -> hs``, ``backward(dhs) -> dxs``; after forward ``h`` (and ``c``) hold the
  final state, after backward ``dh`` holds the gradient of the initial ``h``.
- ``stateful=True`` carries the final state into the next forward (truncated BPTT: no
  gradient crosses the chunk boundary); ``set_state``/``reset_state`` set or clear it.
- The arrays' dtype is the model's: a float32 model computes and returns float32.
Extensions: ``forward(xs, lengths=None)`` takes variable lengths; ``reverse=True`` runs a
Time layer from the end of each sequence; ``from_params`` builds a layer from
``fastcells.convert.Params``.
"""
import numpy as np

from . import _gru, _lstm, _rnn
from .gru import gru_backward, gru_forward
from .lstm import lstm_backward, lstm_forward
from .rnn import _ACTIVATIONS, rnn_backward, rnn_forward
from ._validate import FLOAT_DTYPES, Sequence, check_flag, float_array

__all__ = ["TimeRNN", "TimeLSTM", "TimeGRU", "TimeBiRNN", "TimeBiLSTM", "TimeBiGRU",
           "RNN", "LSTM", "GRU"]


def _check_input(fn, name, a, params):
    """A float input of another dtype than the model's (its params') is an error that names
    the input: the model's dtype rules (a float32 model stays float32 end to end). Params that
    disagree among themselves are named first."""
    dtypes = [getattr(p, "dtype", None) for p in params]
    for k, d in enumerate(dtypes[1:], 1):
        if dtypes[0] in FLOAT_DTYPES and d in FLOAT_DTYPES and d != dtypes[0]:
            raise TypeError(f"{fn}: the params disagree: {('Wx', 'Wh', 'b')[k]} has dtype {d}, "
                            f"Wx has {dtypes[0]}")
    dtype = getattr(params[0], "dtype", None)
    got = getattr(a, "dtype", None)
    if (dtype in FLOAT_DTYPES and got is not None and got != dtype
            and np.issubdtype(got, np.floating)):
        raise TypeError(f"{fn}: {name} has dtype {got}, expected {dtype} (the dtype of the "
                        f"layer's params)")


def _zeros_like(fn, name, a):
    """grads' buffers: np.zeros_like, with a failure naming the parameter."""
    try:
        return np.zeros_like(a)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{fn}: {name} is not an array: {e}") from None


def _grads_for(owner, Wx, Wh, b):
    fn = type(owner).__name__
    return [_zeros_like(fn, n, a) for n, a in (("Wx", Wx), ("Wh", Wh), ("b", b))]


# ---- Time layers -----------------------------------------------------------------------------
class _TimeLayer:
    """Shared machinery of TimeRNN, TimeLSTM and TimeGRU (see the module docstring)."""

    _cell = None          # "rnn", "lstm" or "gru"
    _forward = None       # the functional API of the cell
    _backward = None
    _states = ("h",)      # the state attributes, in the functional API's order

    def __init__(self, Wx, Wh, b, stateful=False, *, reverse=False, **options):
        self.params = [Wx, Wh, b]
        self.grads = _grads_for(self, Wx, Wh, b)
        self.stateful = stateful
        self.reverse = reverse
        self.options = options
        self.dh = None
        self._cache = None
        self.reset_state()

    @classmethod
    def from_params(cls, p, stateful=False, **kwargs):
        """A layer with the weights of a ``fastcells.convert.Params`` (no copy)."""
        if p.cell != cls._cell:
            raise ValueError(f"{cls.__name__}.from_params: p.cell must be {cls._cell!r}, "
                             f"got {p.cell!r}")
        return cls(p.Wx, p.Wh, p.b, stateful, **p.options, **kwargs)

    def forward(self, xs, lengths=None):
        _check_input(f"{type(self).__name__}.forward", "xs", xs, self.params)
        Wx, Wh, b = self.params
        states = [getattr(self, s) if self.stateful else None for s in self._states]
        hs, final, self._cache = type(self)._forward(
            xs, Wx, Wh, b, *states, lengths=lengths, reverse=self.reverse, **self.options)
        for name, value in zip(self._states, final if len(self._states) > 1 else (final,)):
            setattr(self, name, value)
        return hs

    def backward(self, dhs):
        if self._cache is None:
            raise ValueError(f"{type(self).__name__}.backward: call forward first")
        _check_input(f"{type(self).__name__}.backward", "dhs", dhs, self.params)
        g = type(self)._backward(self._cache, dhs)
        self.grads[0][...] = g.dWx
        self.grads[1][...] = g.dWh
        self.grads[2][...] = g.db
        self.dh = g.dh0
        return g.dxs

    def set_state(self, h):
        self.h = h

    def reset_state(self):
        for name in self._states:
            setattr(self, name, None)


class TimeRNN(_TimeLayer):
    """``TimeRNN(Wx (D, H), Wh (H, H), b (H,), stateful=False, nonlinearity="tanh")``."""

    _cell = "rnn"
    _forward = staticmethod(rnn_forward)
    _backward = staticmethod(rnn_backward)

    def __init__(self, Wx, Wh, b, stateful=False, *, nonlinearity="tanh", reverse=False):
        super().__init__(Wx, Wh, b, stateful, reverse=reverse, nonlinearity=nonlinearity)


class TimeLSTM(_TimeLayer):
    """``TimeLSTM(Wx (D, 4H), Wh (H, 4H), b (4H,), stateful=False)``, blocks [f, g, i, o]."""

    _cell = "lstm"
    _forward = staticmethod(lstm_forward)
    _backward = staticmethod(lstm_backward)
    _states = ("h", "c")

    def __init__(self, Wx, Wh, b, stateful=False, *, reverse=False):
        super().__init__(Wx, Wh, b, stateful, reverse=reverse)

    def set_state(self, h, c=None):
        self.h, self.c = h, c


class TimeGRU(_TimeLayer):
    """``TimeGRU(Wx (D, 3H), Wh (H, 3H), b, stateful=False, reset_after=True)``, blocks
    [z, r, h]; b is (2, 3H) when reset_after, else (3H,)."""

    _cell = "gru"
    _forward = staticmethod(gru_forward)
    _backward = staticmethod(gru_backward)

    def __init__(self, Wx, Wh, b, stateful=False, reset_after=True, *, reverse=False):
        super().__init__(Wx, Wh, b, stateful, reverse=reverse, reset_after=reset_after)


class _TimeBiLayer:
    """Two Time layers over the same input, the second from the end of each sequence; their
    outputs concatenated on the feature axis (forward direction first), as the book's
    TimeBiLSTM. ``params``/``grads``: the forward direction's, then the backward one's."""

    _layer = None

    def __init__(self, Wx1, Wh1, b1, Wx2, Wh2, b2, stateful=False, **options):
        self.forward_layer = self._layer(Wx1, Wh1, b1, stateful, **options)
        self.backward_layer = self._layer(Wx2, Wh2, b2, stateful, reverse=True, **options)
        self.params = self.forward_layer.params + self.backward_layer.params
        self.grads = self.forward_layer.grads + self.backward_layer.grads

    def forward(self, xs, lengths=None):
        o1 = self.forward_layer.forward(xs, lengths)
        o2 = self.backward_layer.forward(xs, lengths)
        return np.concatenate((o1, o2), axis=2)

    def backward(self, dhs):
        fn = f"{type(self).__name__}.backward"
        H = self.forward_layer.params[1].shape[0]
        dhs = float_array(fn, "dhs", dhs, 3, what=" of shape (N, T, 2H)")
        if dhs.shape[2] != 2 * H:
            raise ValueError(f"{fn}: dhs must have 2H = {2 * H} features (both directions), "
                             f"got shape {dhs.shape}")
        return self.forward_layer.backward(dhs[:, :, :H]) + \
            self.backward_layer.backward(dhs[:, :, H:])

    def reset_state(self):
        self.forward_layer.reset_state()
        self.backward_layer.reset_state()


class TimeBiRNN(_TimeBiLayer):
    """``TimeBiRNN(Wx1, Wh1, b1, Wx2, Wh2, b2, stateful=False, nonlinearity="tanh")``."""
    _layer = TimeRNN


class TimeBiLSTM(_TimeBiLayer):
    """``TimeBiLSTM(Wx1, Wh1, b1, Wx2, Wh2, b2, stateful=False)``, the book's signature."""
    _layer = TimeLSTM

    # the book's attribute names
    forward_lstm = property(lambda self: self.forward_layer)
    backward_lstm = property(lambda self: self.backward_layer)


class TimeBiGRU(_TimeBiLayer):
    """``TimeBiGRU(Wx1, Wh1, b1, Wx2, Wh2, b2, stateful=False, reset_after=True)``."""
    _layer = TimeGRU


# ---- one-step cells --------------------------------------------------------------------------
def _ready(a, dtype, shape):
    """True when `a` can go to a kernel as it is (the cheap check of the cells' hot path)."""
    return (type(a) is np.ndarray and a.dtype == dtype and a.shape == shape
            and a.flags.c_contiguous and a.flags.aligned)


class _Cell:
    """Shared machinery of the one-step cells. A call runs the fused sequence kernel at T=1.

    The hot path is one call into the cell's kernel module, which checks the arguments and
    allocates the outputs in C (_fastpath.pxd); anything unusual (wrong dtype or shape,
    non-contiguous, not an ndarray) makes it return None, and the call then goes through the
    full validation of the functional API, which converts what it can and otherwise raises a
    clear error.
    """

    _G = 1
    _b_rows = False  # b is (2, G*H): a reset-after GRU

    def __init__(self, Wx, Wh, b):
        self.params = [Wx, Wh, b]
        self.grads = _grads_for(self, Wx, Wh, b)
        self.cache = None

    def _checked(self, fn, x, states):
        """(x, states, Wx, Wh, b) checked and converted, or a clear error: the slow path, for
        calls whose arguments the kernel's own check (_fastpath.cell_typenum) turned down."""
        Wx, Wh, b = self.params
        _check_input(fn, "x", x, self.params)
        x = float_array(fn, "x", x, 2, what=" of shape (N, D)")
        seq = Sequence(fn, self._G, x[:, None], Wx, Wh, None, False, xs_name="x")
        b = seq.vector("b", b, self._b_shape(seq.H), "the bias shape")
        names = ("h_prev", "c_prev")[:len(states)]
        states = [seq.vector(n, s, (seq.N, seq.H), "(N, H)") for n, s in zip(names, states)]
        return seq.X, states, seq.Wx, seq.Wh, b

    def _b_shape(self, H):
        return (self._G * H,)

    def _cache(self, fn):
        if self.cache is None:
            raise ValueError(f"{fn}: call forward first (there is no step to differentiate)")
        return self.cache

    def _grads_out(self, fn, grads_in, N, H, dtype):
        """The upstream gradients, checked like the states (None is zeros)."""
        out = []
        for name, g in grads_in:
            if g is None:
                g = np.zeros((N, H), dtype)
            elif not _ready(g, dtype, (N, H)):
                g = np.array(Sequence(fn, 1, np.zeros((N, 1, 0), dtype),
                                      np.zeros((0, H), dtype), np.zeros((H, H), dtype),
                                      None, False).vector(name, g, (N, H), "(N, H)"))
            out.append(g)
        return out

    def _grad_buffers(self, dtype):
        """Where backward writes dWx, dWh, db: the arrays of `grads` themselves when the
        kernel can (then _write_grads has nothing to copy), else new ones."""
        shapes = [np.shape(p) for p in self.params]
        return [g if _ready(g, dtype, shape) else np.empty(shape, dtype)
                for g, shape in zip(self.grads, shapes)]

    def _write_grads(self, dWx, dWh, db):
        for g, new in zip(self.grads, (dWx, dWh, db)):
            if g is not new:
                g[...] = new


class LSTM(_Cell):
    """One LSTM step: ``forward(x, h_prev, c_prev) -> (h_next, c_next)``,
    ``backward(dh_next, dc_next) -> (dx, dh_prev, dc_prev)``; blocks [f, g, i, o]."""

    _G = 4

    def forward(self, x, h_prev, c_prev):
        Wx, Wh, b = self.params
        out = _lstm.cell_forward(x, h_prev, c_prev, Wx, Wh, b)  # the hot path
        if out is None:  # not ready for the kernel as given: check, convert (or raise), run
            x, (h_prev, c_prev), Wx, Wh, b = self._checked("LSTM.forward", x, [h_prev, c_prev])
            out = _lstm.cell_forward(x, h_prev, c_prev, Wx, Wh, b)
        h_next, c_next, gates, tanh_c = out
        self.cache = (x, h_prev, c_prev, gates, tanh_c, Wx, Wh)
        return h_next, c_next

    def backward(self, dh_next, dc_next):
        x, h_prev, c_prev, gates, tanh_c, Wx, Wh = self._cache("LSTM.backward")
        N, H = h_prev.shape
        dtype = Wx.dtype
        dh_next, dc = self._grads_out("LSTM.backward", [("dh_next", dh_next),
                                                         ("dc_next", dc_next)], N, H, dtype)
        dc = dc.copy()  # becomes dc_prev in place
        dh = np.zeros((N, H), dtype)
        dx = np.empty_like(x)
        dWx, dWh, db = self._grad_buffers(dtype)
        _lstm.cell_backward(x, h_prev, c_prev, Wx, Wh, gates, tanh_c, dh_next, dh, dc,
                            np.empty((N, 4 * H), dtype), dx, dWx, dWh, db)
        self._write_grads(dWx, dWh, db)
        return dx, dh, dc


class RNN(_Cell):
    """One RNN step: ``forward(x, h_prev) -> h_next``, ``backward(dh_next) -> (dx, dh_prev)``."""

    def __init__(self, Wx, Wh, b, nonlinearity="tanh"):
        super().__init__(Wx, Wh, b)
        if not isinstance(nonlinearity, str) or nonlinearity not in _ACTIVATIONS:
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity

    def forward(self, x, h_prev):
        Wx, Wh, b = self.params
        act = _ACTIVATIONS[self.nonlinearity]
        out = _rnn.cell_forward(x, h_prev, Wx, Wh, b, act)  # the hot path
        if out is None:  # not ready for the kernel as given: check, convert (or raise), run
            x, (h_prev,), Wx, Wh, b = self._checked("RNN.forward", x, [h_prev])
            out = _rnn.cell_forward(x, h_prev, Wx, Wh, b, act)
        h_next, A = out
        self.cache = (x, h_prev, A, Wx, Wh, act)
        return h_next

    def backward(self, dh_next):
        x, h_prev, A, Wx, Wh, act = self._cache("RNN.backward")
        N, H = h_prev.shape
        (dh_next,) = self._grads_out("RNN.backward", [("dh_next", dh_next)], N, H, Wx.dtype)
        dh = np.zeros((N, H), Wx.dtype)
        dx = np.empty_like(x)
        dWx, dWh, db = self._grad_buffers(Wx.dtype)
        _rnn.cell_backward(x, h_prev, Wx, Wh, A, act, dh_next, dh, np.empty((N, H), Wx.dtype),
                           dx, dWx, dWh, db)
        self._write_grads(dWx, dWh, db)
        return dx, dh


class GRU(_Cell):
    """One GRU step: ``forward(x, h_prev) -> h_next``, ``backward(dh_next) -> (dx, dh_prev)``;
    blocks [z, r, h]; b is (2, 3H) when reset_after (default), else (3H,)."""

    _G = 3

    def __init__(self, Wx, Wh, b, reset_after=True):
        super().__init__(Wx, Wh, b)
        self.reset_after = self._b_rows = check_flag("GRU", "reset_after", reset_after)

    def _b_shape(self, H):
        return (2, 3 * H) if self.reset_after else (3 * H,)

    def forward(self, x, h_prev):
        Wx, Wh, b = self.params
        out = _gru.cell_forward(x, h_prev, Wx, Wh, b, self.reset_after)  # the hot path
        if out is None:  # not ready for the kernel as given: check, convert (or raise), run
            x, (h_prev,), Wx, Wh, b = self._checked("GRU.forward", x, [h_prev])
            out = _gru.cell_forward(x, h_prev, Wx, Wh, b, self.reset_after)
        h_next, G, S = out
        self.cache = (x, h_prev, G, S, Wx, Wh)
        return h_next

    def backward(self, dh_next):
        x, h_prev, G, S, Wx, Wh = self._cache("GRU.backward")
        N, H = h_prev.shape
        dtype = Wx.dtype
        (dh_next,) = self._grads_out("GRU.backward", [("dh_next", dh_next)], N, H, dtype)
        dh = np.zeros((N, H), dtype)
        W2 = np.empty((N, 3 * H) if self.reset_after else (N, H), dtype)
        dx = np.empty_like(x)
        dWx, dWh, db = self._grad_buffers(dtype)
        _gru.cell_backward(x, h_prev, Wx, Wh, G, S, self.reset_after, dh_next, dh,
                           np.empty((N, 3 * H), dtype), W2, dx, dWx, dWh, db.reshape(-1))
        self._write_grads(dWx, dWh, db)
        return dx, dh
