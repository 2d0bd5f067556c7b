"""Weights in and out of fastcells: PyTorch, Keras, ONNX and the book (CONVENTIONS.md,
"Other layouts").

Every converter returns or takes a ``Params(cell, Wx, Wh, b, options)`` in the native layout,
so that ``getattr(fastcells, p.cell + "_forward")(xs, p.Wx, p.Wh, p.b, **p.options)`` runs the
converted cell. The layouts, per cell (blocks of width H, listed in order along the gate axis)::

                native        PyTorch           Keras 3        ONNX             the book
    LSTM        [f, g, i, o]  [i, f, g, o]      [i, f, c, o]   [i, o, f, c]     [f, g, i, o]
    GRU         [z, r, h]     [r, z, n]         [z, r, h]      [z, r, h]        [z, r, h] (*)
    weights     (D, G*H)      (G*H, D)          (D, G*H)       [dirs, G*H, D]   (D, G*H)
    (*) the book's z is our 1 - z: its z blocks are negated, as σ(-a) = 1 - σ(a)

    biases      LSTM/RNN: b (G*H,) = PyTorch's bias_ih + bias_hh = ONNX's Wb + Rb
                GRU reset_after=True: b (2, 3H) = [input bias; recurrent bias]
                    = PyTorch's [bias_ih; bias_hh] = Keras' bias = ONNX's [Wb; Rb]
                    (ONNX linear_before_reset=1)
                GRU reset_after=False: b (3H,) = Keras' bias = ONNX's Wb + Rb
                    (ONNX linear_before_reset=0)

Conversions are exact: they only move, transpose, negate (the book's z) or add (two biases
into one) numbers, keep the dtype (float32 or float64) and return new arrays that share no
memory with their input. What the native cells cannot express (PyTorch ``proj_size``, ONNX
peepholes, ``clip``, ``input_forget``, activations other than the defaults, Keras activations
other than the defaults) raises ValueError; nothing is silently dropped.

``load_torch`` runs a whole ``torch.nn.RNN``/``LSTM``/``GRU`` (any ``num_layers``,
``bidirectional``, ``batch_first``) with fastcells alone; it accepts the module's
``state_dict`` too, so a trained model runs where PyTorch is not installed. Torch itself is
imported only when a torch module is passed; this module never imports Keras or ONNX.
"""
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from ._validate import check_flag, check_shape, float_array

__all__ = ["Params", "from_torch", "to_torch", "load_torch", "TorchRunner", "from_keras",
           "to_keras", "from_onnx", "to_onnx", "onnx_attributes", "from_book_gru"]

# G, the number of gate blocks of each cell
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
# Block orders: one letter per block. "g" is the LSTM's cell candidate (Keras' and ONNX's "c");
# "h" is the GRU's candidate (PyTorch's "n").
NATIVE_ORDER = {"rnn": "a", "lstm": "fgio", "gru": "zrh"}
TORCH_ORDER = {"rnn": "a", "lstm": "ifgo", "gru": "rzh"}
KERAS_ORDER = {"rnn": "a", "lstm": "ifgo", "gru": "zrh"}
ONNX_ORDER = {"rnn": "a", "lstm": "iofg", "gru": "zrh"}


class Params(NamedTuple):
    """One cell (one layer, one direction) in the native layout of CONVENTIONS.md.

    cell : "rnn", "lstm" or "gru".
    Wx : (D, G*H);  Wh : (H, G*H);  b : (G*H,), or (2, 3H) for a GRU with reset_after=True.
    options : the keyword arguments of ``fastcells.<cell>_forward`` that select the variant:
        {"nonlinearity": "tanh" | "relu"} for "rnn", {"reset_after": bool} for "gru",
        {} for "lstm".
    """

    cell: str
    Wx: np.ndarray
    Wh: np.ndarray
    b: np.ndarray
    options: dict

    @property
    def input_size(self):
        """D"""
        return self.Wx.shape[0]

    @property
    def hidden_size(self):
        """H"""
        return self.Wh.shape[0]


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------
def _reorder(a, src, dst, axis):
    """`a` with its len(src) equal blocks along `axis` permuted from order `src` to `dst`."""
    H = a.shape[axis] // len(src)
    blocks = {k: np.take(a, np.arange(j * H, (j + 1) * H), axis=axis) for j, k in enumerate(src)}
    return np.concatenate([blocks[k] for k in dst], axis=axis)


def _new(a):
    """A fresh C-contiguous copy (results never share memory with the arguments)."""
    return np.array(a, order="C", copy=True)


def _options(fn, cell, nonlinearity=None, reset_after=None):
    if cell == "rnn":
        nonlinearity = "tanh" if nonlinearity is None else nonlinearity
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"{fn}: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        return {"nonlinearity": nonlinearity}
    if cell == "gru":
        return {"reset_after": check_flag(fn, "reset_after", reset_after)}
    return {}


def _check_params(fn, name, p):
    """`p` as a Params after checking its cell, options, dtypes and shapes."""
    if not isinstance(p, tuple) or len(p) != 5:
        raise TypeError(f"{fn}: {name} must be a fastcells.convert.Params "
                        f"(cell, Wx, Wh, b, options), got {type(p).__name__}")
    cell, Wx, Wh, b, options = p
    if cell not in GATES:
        raise ValueError(f"{fn}: {name}.cell must be 'rnn', 'lstm' or 'gru', got {cell!r}")
    if not isinstance(options, Mapping):
        raise TypeError(f"{fn}: {name}.options must be a dict, got {type(options).__name__}")
    known = {"rnn": {"nonlinearity"}, "gru": {"reset_after"}, "lstm": set()}[cell]
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"{fn}: {name}.options of a {cell!r} cell takes only "
                         f"{sorted(known)}, got {unknown}")
    options = _options(fn, cell, options.get("nonlinearity"), options.get("reset_after", True))
    G = GATES[cell]
    g = f"{G}H" if G > 1 else "H"
    Wh = float_array(fn, f"{name}.Wh", Wh, 2, what=f" of shape (H, {g})")
    dtype, H = Wh.dtype, Wh.shape[0]
    check_shape(fn, f"{name}.Wh", Wh, (H, G * H), f"(H, {g}) with H = {H}")
    Wx = float_array(fn, f"{name}.Wx", Wx, 2, dtype, what=f" of shape (D, {g})", ref=f"{name}.Wh")
    check_shape(fn, f"{name}.Wx", Wx, (Wx.shape[0], G * H), f"(D, {g}) with H = {H}")
    if cell == "gru" and options["reset_after"]:
        shape, letters = (2, 3 * H), "(2, 3H)"
    else:
        shape, letters = (G * H,), f"({g},)"
    b = float_array(fn, f"{name}.b", b, len(shape), dtype, what=f" of shape {letters}",
                    ref=f"{name}.Wh")
    check_shape(fn, f"{name}.b", b, shape, letters)
    return Params(cell, Wx, Wh, b, options)


def _check_params_list(fn, name, ps, max_len=None):
    """A non-empty list of Params of one cell, one variant, one dtype and one (D, H)."""
    if isinstance(ps, Params):
        ps = [ps]
    if not isinstance(ps, (list, tuple)) or not ps:
        raise TypeError(f"{fn}: {name} must be a non-empty list of Params, got {ps!r:.80}")
    if max_len is not None and len(ps) > max_len:
        raise ValueError(f"{fn}: {name} must hold at most {max_len} Params (one per direction), "
                         f"got {len(ps)}")
    ps = [_check_params(fn, f"{name}[{k}]", p) for k, p in enumerate(ps)]
    p0 = ps[0]
    for k, p in enumerate(ps[1:], 1):
        what = (p.cell, p.Wx.shape, p.Wh.shape, p.b.dtype)
        if what != (p0.cell, p0.Wx.shape, p0.Wh.shape, p0.b.dtype):
            raise ValueError(f"{fn}: {name}[{k}] (cell, Wx shape, Wh shape, dtype) = {what} "
                             f"differs from {name}[0]'s "
                             f"{(p0.cell, p0.Wx.shape, p0.Wh.shape, p0.b.dtype)}")
        if p.cell == "gru" and p.options != p0.options:
            raise ValueError(f"{fn}: {name}[{k}].options {p.options} differs from "
                             f"{name}[0].options {p0.options}")
    return ps


def _numpy(fn, name, v, dtype=None):
    """A torch tensor (detached, on the CPU) or array-like as a float32/float64 NumPy array."""
    if hasattr(v, "detach"):
        v = v.detach().cpu()
        try:
            v = v.numpy()
        except TypeError as e:  # bfloat16 and other types NumPy lacks
            raise TypeError(f"{fn}: {name} must have dtype float32 or float64, "
                            f"got {v.dtype}") from e
    try:
        a = np.asarray(v)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{fn}: {name} is not an array: {e}") from None
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{fn}: {name} must have dtype float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{fn}: {name} has dtype {a.dtype}, expected {dtype} "
                        f"(all weights of one cell share one dtype)")
    return a


def _check_index(fn, name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be an integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{fn}: {name} must be >= 0, got {value}")
    return int(value)


def _activation_name(a):
    """'tanh' from 'tanh', 'Tanh', b'Tanh' or a function named tanh; None stays None."""
    if a is None:
        return None
    if isinstance(a, bytes):
        a = a.decode()
    if not isinstance(a, str):
        a = getattr(a, "__name__", repr(a))
    return a.lower()


# --------------------------------------------------------------------------------------------
# PyTorch: nn.RNN / nn.LSTM / nn.GRU, or their state_dict
# --------------------------------------------------------------------------------------------
_TORCH_MODES = {"LSTM": ("lstm", None), "GRU": ("gru", None), "RNN_TANH": ("rnn", "tanh"),
                "RNN_RELU": ("rnn", "relu")}


def _torch_module(fn, obj):
    """Whether `obj` is a torch RNN module (importing torch only for a non-mapping)."""
    try:
        import torch
    except ImportError:
        raise TypeError(f"{fn}: expected a torch.nn.RNN/LSTM/GRU module or its state_dict "
                        f"(a mapping), got {type(obj).__name__}") from None
    if not isinstance(obj, torch.nn.RNNBase):
        raise TypeError(f"{fn}: expected a torch.nn.RNN, LSTM or GRU module or its state_dict, "
                        f"got {type(obj).__name__}")
    if obj.mode not in _TORCH_MODES:
        raise ValueError(f"{fn}: unsupported torch RNN mode {obj.mode!r}")
    if getattr(obj, "proj_size", 0):
        raise ValueError(f"{fn}: LSTM with proj_size={obj.proj_size} is not supported "
                         f"(fastcells' LSTM has no projection of h)")
    return obj


def _torch_config(fn, obj, nonlinearity):
    """(cell, nonlinearity, get(name) -> array or None, num_layers, bidirectional,
    batch_first or None) of a module or a state_dict."""
    if isinstance(obj, Mapping):
        return _state_dict_config(fn, obj, nonlinearity)
    m = _torch_module(fn, obj)
    cell, nl = _TORCH_MODES[m.mode]
    if nonlinearity is not None:
        raise ValueError(f"{fn}: nonlinearity is read from the module; pass it only with the "
                         f"state_dict of an RNN")

    def get(name):
        v = getattr(m, name, None)
        return None if v is None else _numpy(fn, name, v)

    return cell, nl, get, m.num_layers, m.bidirectional, m.batch_first


def _state_dict_config(fn, sd, nonlinearity):
    # Keys may carry the prefix of an enclosing module ("encoder.lstm.weight_ih_l0"); it must
    # be the same for all and unique.
    prefixes = {k[: -len("weight_ih_l0")] for k in sd if isinstance(k, str)
                and k.endswith("weight_ih_l0") and (len(k) == 12 or k[-13] == ".")}
    if len(prefixes) != 1:
        raise ValueError(
            f"{fn}: the state_dict must hold exactly one torch RNN/LSTM/GRU (keys "
            f"'weight_ih_l0', 'weight_hh_l0', ...), found "
            f"{'none' if not prefixes else sorted(p + 'weight_ih_l0' for p in prefixes)}")
    (prefix,) = prefixes
    keys = {k[len(prefix):]: k for k in sd if isinstance(k, str) and k.startswith(prefix)}
    if any(k.startswith("weight_hr_l") for k in keys):
        raise ValueError(f"{fn}: the state_dict has 'weight_hr_l*' keys: an LSTM with proj_size "
                         f"> 0 is not supported (fastcells' LSTM has no projection of h)")

    def get(name):
        return _numpy(fn, prefix + name, sd[keys[name]]) if name in keys else None

    w_hh = get("weight_hh_l0")
    if w_hh is None or w_hh.ndim != 2 or w_hh.shape[1] == 0 \
            or w_hh.shape[0] % w_hh.shape[1] or w_hh.shape[0] // w_hh.shape[1] not in (1, 3, 4):
        shape = None if w_hh is None else w_hh.shape
        raise ValueError(f"{fn}: {prefix}weight_hh_l0 must have shape (G*H, H) with G = 1 (RNN), "
                         f"3 (GRU) or 4 (LSTM), got {shape}")
    cell = {1: "rnn", 3: "gru", 4: "lstm"}[w_hh.shape[0] // w_hh.shape[1]]
    if cell != "rnn" and nonlinearity is not None:
        raise ValueError(f"{fn}: nonlinearity applies to an RNN only, this state_dict holds "
                         f"a {cell.upper()}")
    num_layers = 0
    while f"weight_ih_l{num_layers}" in keys:
        num_layers += 1
    bidirectional = "weight_ih_l0_reverse" in keys
    return cell, nonlinearity or "tanh", get, num_layers, bidirectional, None


def from_torch(obj, layer=0, reverse=False, *, nonlinearity=None):
    """Params of one layer and direction of a ``torch.nn.RNN``, ``LSTM`` or ``GRU``.

    Parameters
    ----------
    obj : the module, or its ``state_dict()`` (a mapping of torch tensors or NumPy arrays;
        keys may carry an enclosing module's prefix, e.g. ``"encoder.weight_ih_l0"``). Torch is
        imported only when a module is passed.
    layer : which layer ``k`` (the ``_l{k}`` keys).
    reverse : the reverse direction of a bidirectional module (the ``_reverse`` keys); run it
        with ``reverse=True``.
    nonlinearity : for an RNN's state_dict, which does not record it: "tanh" (default) or
        "relu". Taken from the module when a module is passed.

    Returns
    -------
    Params. LSTM and RNN: b = bias_ih + bias_hh. GRU: reset_after=True, b = [bias_ih; bias_hh]
    reordered. A module built with ``bias=False`` gives zero biases. The dtype of the weights
    (float32 or float64) is kept.
    """
    fn = "from_torch"
    layer = _check_index(fn, "layer", layer)
    reverse = check_flag(fn, "reverse", reverse)
    cell, nl, get, num_layers, bidirectional, _ = _torch_config(fn, obj, nonlinearity)
    if layer >= num_layers:
        raise ValueError(f"{fn}: layer={layer} is out of range: the {cell.upper()} has "
                         f"{num_layers} layer(s)")
    if reverse and not bidirectional:
        raise ValueError(f"{fn}: reverse=True needs a bidirectional {cell.upper()} "
                         f"(no '_reverse' weights)")
    return _from_torch_layer(fn, cell, nl, get, layer, reverse)


def _from_torch_layer(fn, cell, nonlinearity, get, layer, reverse):
    sfx = f"_l{layer}" + ("_reverse" if reverse else "")
    names = [f"weight_ih{sfx}", f"weight_hh{sfx}", f"bias_ih{sfx}", f"bias_hh{sfx}"]
    w_ih, w_hh, b_ih, b_hh = (get(n) for n in names)
    G = GATES[cell]
    if w_ih is None or w_hh is None:
        raise ValueError(f"{fn}: missing {names[0] if w_ih is None else names[1]}")
    dtype = w_hh.dtype
    g = f"{G}*H" if G > 1 else "H"
    w_hh = float_array(fn, names[1], w_hh, 2, what=f" of shape ({g}, H)")
    H = w_hh.shape[1]
    check_shape(fn, names[1], w_hh, (G * H, H), f"({g}, H) with H = {H}")
    w_ih = float_array(fn, names[0], w_ih, 2, dtype, what=f" of shape ({g}, D)")
    check_shape(fn, names[0], w_ih, (G * H, w_ih.shape[1]), f"({g}, D) with H = {H}")
    if (b_ih is None) != (b_hh is None):
        raise ValueError(f"{fn}: {names[2] if b_ih is None else names[3]} is missing while "
                         f"{names[3] if b_ih is None else names[2]} is present")
    if b_ih is None:  # bias=False
        b_ih = b_hh = np.zeros(G * H, dtype)
    for n, v in ((names[2], b_ih), (names[3], b_hh)):
        v = float_array(fn, n, v, 1, dtype, what=f" of shape ({g},)")
        check_shape(fn, n, v, (G * H,), f"({g},)")
    src, dst = TORCH_ORDER[cell], NATIVE_ORDER[cell]
    Wx = _new(_reorder(w_ih, src, dst, 0).T)  # (D, G*H)
    Wh = _new(_reorder(w_hh, src, dst, 0).T)  # (H, G*H)
    if cell == "gru":  # reset-after: the two biases stay apart, rows 0 and 1
        b = _new(np.stack([_reorder(b_ih, src, dst, 0), _reorder(b_hh, src, dst, 0)]))
    else:  # both biases add into one
        b = _new(_reorder(b_ih + b_hh, src, dst, 0))
    return Params(cell, Wx, Wh, b, _options(fn, cell, nonlinearity, True))


def to_torch(p):
    """PyTorch's weights of one layer and direction, from Params.

    Returns ``{"weight_ih": (G*H, D), "weight_hh": (G*H, H), "bias_ih": (G*H,),
    "bias_hh": (G*H,)}`` as NumPy arrays of p's dtype; load them as ``weight_ih_l{k}`` etc.
    (with ``_reverse`` for the reverse direction). An LSTM's or RNN's single bias comes back as
    ``bias_ih``, with ``bias_hh`` zeros: the outputs are identical. An RNN must be built with
    ``nonlinearity=p.options["nonlinearity"]``. A GRU must have reset_after=True (PyTorch's
    only GRU).
    """
    fn = "to_torch"
    p = _check_params(fn, "p", p)
    cell = p.cell
    if cell == "gru" and not p.options["reset_after"]:
        raise ValueError(f"{fn}: PyTorch's GRU is reset-after; a GRU with reset_after=False has "
                         f"no PyTorch equivalent")
    src, dst = NATIVE_ORDER[cell], TORCH_ORDER[cell]
    out = {"weight_ih": _new(_reorder(p.Wx, src, dst, 1).T),
           "weight_hh": _new(_reorder(p.Wh, src, dst, 1).T)}
    if cell == "gru":
        out["bias_ih"] = _new(_reorder(p.b[0], src, dst, 0))
        out["bias_hh"] = _new(_reorder(p.b[1], src, dst, 0))
    else:
        out["bias_ih"] = _new(_reorder(p.b, src, dst, 0))
        out["bias_hh"] = np.zeros_like(out["bias_ih"])
    return out


class TorchRunner:
    """A whole torch RNN/LSTM/GRU, run with fastcells (inference). Made by ``load_torch``.

    Attributes: cell ("rnn", "lstm", "gru"), num_layers, bidirectional, num_directions,
    batch_first, input_size, hidden_size, dtype, and params: ``params[k][d]`` is the Params of
    layer k, direction d (0 forward, 1 reverse).
    """

    def __init__(self, params, batch_first):
        self.params = params
        p = params[0][0]
        self.cell, self.dtype = p.cell, p.Wx.dtype
        self.num_layers, self.num_directions = len(params), len(params[0])
        self.bidirectional = self.num_directions == 2
        self.batch_first = batch_first
        self.input_size, self.hidden_size = p.input_size, p.hidden_size

    def __repr__(self):
        return (f"TorchRunner({self.cell.upper()}, input_size={self.input_size}, "
                f"hidden_size={self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}, batch_first={self.batch_first}, "
                f"dtype={self.dtype})")

    def __call__(self, x, state=None, *, lengths=None):
        return self.forward(x, state, lengths=lengths)

    def forward(self, x, state=None, *, lengths=None):
        """Run the module on `x`, as ``module(x, state)`` would (in inference).

        Parameters
        ----------
        x : (N, T, D) when batch_first, else (T, N, D); or unbatched (T, D). A NumPy array (a
            torch tensor is converted) of the weights' dtype.
        state : None (zeros), or h_0 (LSTM: a tuple (h_0, c_0)), each
            (num_layers * num_directions, N, H), or (num_layers * num_directions, H) unbatched.
        lengths : optional (N,) valid lengths, the equivalent of running the module on
            ``pack_padded_sequence(x, lengths, enforce_sorted=False)`` and padding the output
            back with ``pad_packed_sequence(..., total_length=T)``: outputs past a sequence's
            length are zero and its final state is the one after its last valid step.

        Returns
        -------
        output : (N, T, num_directions * H) (or (T, N, ...), or (T, ...) unbatched), the
            directions concatenated on the last axis; state : h_n, or (h_n, c_n) for an
            LSTM, shaped like the state argument.
        """
        fn = "TorchRunner.forward"
        x = _numpy(fn, "x", x)
        if x.dtype != self.dtype:
            raise TypeError(f"{fn}: x has dtype {x.dtype}, the weights {self.dtype}: convert x "
                            f"with x.astype(np.{self.dtype}) or load with dtype=np.{x.dtype}")
        layout = "(N, T, D)" if self.batch_first else "(T, N, D)"
        if x.ndim not in (2, 3):
            raise ValueError(f"{fn}: x must be 3-D {layout} or unbatched 2-D (T, D), got shape "
                             f"{x.shape}")
        unbatched = x.ndim == 2
        time_major = not self.batch_first and not unbatched
        if unbatched:
            x = x[None]
        if x.shape[2] != self.input_size:
            raise ValueError(f"{fn}: x has {x.shape[2]} features, the module's input_size is "
                             f"{self.input_size}")
        N = x.shape[1] if time_major else x.shape[0]
        n_states = 2 if self.cell == "lstm" else 1
        states = self._states(fn, state, n_states, unbatched, N)
        finals = [[] for _ in range(n_states)]
        out = x
        for k, layer in enumerate(self.params):
            hs = []
            for d, p in enumerate(layer):
                j = k * self.num_directions + d
                init = [s[j] if s is not None else None for s in states]
                f = {"lstm": _lstm_forward, "gru": _gru_forward, "rnn": _rnn_forward}[p.cell]
                h, final = f(out, p, init, lengths, time_major, d == 1)
                hs.append(h)
                for s, v in zip(finals, final):
                    s.append(v)
            # torch concatenates the directions on the feature axis; dropout between layers
            # is training-only and so absent here
            out = hs[0] if len(hs) == 1 else np.concatenate(hs, axis=2)
        finals = [np.stack(s) for s in finals]  # (L, N, H), torch's order: layer-major
        if unbatched:
            out, finals = out[0], [s[:, 0] for s in finals]
        return out, (tuple(finals) if n_states == 2 else finals[0])

    def _states(self, fn, state, n_states, unbatched, N):
        L, H = self.num_layers * self.num_directions, self.hidden_size
        if state is None:
            return [None] * n_states
        if n_states == 2:
            if not isinstance(state, (tuple, list)) or len(state) != 2:
                raise TypeError(f"{fn}: the state of an LSTM must be a tuple (h_0, c_0), got "
                                f"{type(state).__name__}")
            names = ["state[0] (h_0)", "state[1] (c_0)"]
        else:
            state, names = [state], ["state (h_0)"]
        out = []
        for name, s in zip(names, state):
            s = _numpy(fn, name, s, self.dtype)
            shape = (L, H) if unbatched else (L, N, H)
            if s.shape != shape:
                letters = "(num_layers * num_directions, " + ("H)" if unbatched else "N, H)")
                raise ValueError(f"{fn}: {name} must have shape {letters} = {shape}, got "
                                 f"{s.shape}")
            out.append(s[:, None] if unbatched else s)
        return out


def _lstm_forward(xs, p, init, lengths, time_major, reverse):
    from .lstm import lstm_forward
    hs, (h, c), _ = lstm_forward(xs, p.Wx, p.Wh, p.b, init[0], init[1], lengths=lengths,
                                 time_major=time_major, reverse=reverse, training=False)
    return hs, (h, c)


def _gru_forward(xs, p, init, lengths, time_major, reverse):
    from .gru import gru_forward
    hs, h, _ = gru_forward(xs, p.Wx, p.Wh, p.b, init[0], **p.options, lengths=lengths,
                           time_major=time_major, reverse=reverse, training=False)
    return hs, (h,)


def _rnn_forward(xs, p, init, lengths, time_major, reverse):
    from .rnn import rnn_forward
    hs, h, _ = rnn_forward(xs, p.Wx, p.Wh, p.b, init[0], **p.options, lengths=lengths,
                           time_major=time_major, reverse=reverse, training=False)
    return hs, (h,)


def _cast_getter(get, dtype):
    def cast(name):
        a = get(name)
        return None if a is None else a.astype(dtype)
    return cast


def load_torch(module, *, batch_first=None, nonlinearity=None, dtype=None):
    """A runner that computes a whole ``torch.nn.RNN``/``LSTM``/``GRU`` with fastcells only.

    ``runner = load_torch(module)``; ``output, state = runner(x, state=None)`` returns what
    ``module(x, state)`` returns in eval mode, as NumPy arrays (``state`` is h_n, or
    (h_n, c_n) for an LSTM, shaped (num_layers * num_directions, N, H)). Any num_layers,
    bidirectional and batch_first. Inference only: torch's ``dropout`` between layers acts in
    training mode alone and is not applied.

    Parameters
    ----------
    module : the torch module, or its ``state_dict()`` (torch tensors or NumPy arrays, e.g.
        loaded from an ``.npz``): then torch is not needed at all, and num_layers and
        bidirectional are read from the keys.
    batch_first : for a state_dict, the layout of x (default False, torch's default); for a
        module it is the module's own, and must not contradict it.
    nonlinearity : for an RNN's state_dict, "tanh" (default) or "relu".
    dtype : np.float32 or np.float64 to convert the weights to; default: the module's.
    """
    fn = "load_torch"
    cell, nl, get, num_layers, bidirectional, bf = _torch_config(fn, module, nonlinearity)
    if bf is None:  # a state_dict
        bf = False if batch_first is None else check_flag(fn, "batch_first", batch_first)
    elif batch_first is not None and check_flag(fn, "batch_first", batch_first) != bf:
        raise ValueError(f"{fn}: batch_first={batch_first} contradicts the module's "
                         f"batch_first={bf}")
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"{fn}: dtype must be float32 or float64, got {dtype}")
        get = _cast_getter(get, dtype)
    dirs = (False, True) if bidirectional else (False,)
    params = [[_from_torch_layer(fn, cell, nl, get, k, r) for r in dirs]
              for k in range(num_layers)]
    H = params[0][0].hidden_size
    for k in range(1, num_layers):
        D = params[k][0].input_size
        if D != len(dirs) * H:
            raise ValueError(f"{fn}: layer {k} takes {D} inputs, expected num_directions * H "
                             f"= {len(dirs) * H}")
    return TorchRunner(params, bf)


# --------------------------------------------------------------------------------------------
# Keras 3: SimpleRNN, LSTM, GRU weight lists [kernel, recurrent_kernel(, bias)]
# --------------------------------------------------------------------------------------------
_KERAS_KINDS = {"SimpleRNN": "rnn", "LSTM": "lstm", "GRU": "gru"}


def from_keras(kind, weights, reset_after=True, *, activation="tanh",
               recurrent_activation="sigmoid"):
    """Params from the weights of a Keras ``SimpleRNN``, ``LSTM`` or ``GRU`` layer.

    Parameters
    ----------
    kind : the layer's class name, "SimpleRNN", "LSTM" or "GRU".
    weights : ``layer.get_weights()``: [kernel (D, G*H), recurrent_kernel (H, G*H), bias], or
        without the bias for ``use_bias=False`` (zeros). LSTM bias (4H,); GRU bias (2, 3H)
        with reset_after=True, (3H,) with reset_after=False; SimpleRNN bias (H,).
    reset_after : the GRU layer's ``reset_after`` (Keras' default True); ignored otherwise.
    activation, recurrent_activation : the layer's (names or functions). Only the defaults
        ("tanh", "sigmoid") are supported, and "relu" for a SimpleRNN.
    """
    fn = "from_keras"
    if kind not in _KERAS_KINDS:
        raise ValueError(f"{fn}: kind must be 'SimpleRNN', 'LSTM' or 'GRU', got {kind!r}")
    cell = _KERAS_KINDS[kind]
    act, rec = _activation_name(activation), _activation_name(recurrent_activation)
    allowed = ("tanh", "relu") if cell == "rnn" else ("tanh",)
    if act not in allowed:
        raise ValueError(f"{fn}: Keras {kind} with activation={activation!r} is not supported "
                         f"(only {' or '.join(map(repr, allowed))})")
    if cell != "rnn" and rec != "sigmoid":
        raise ValueError(f"{fn}: Keras {kind} with recurrent_activation={recurrent_activation!r} "
                         f"is not supported (only 'sigmoid')")
    reset_after = check_flag(fn, "reset_after", reset_after)
    if not isinstance(weights, (list, tuple)) or len(weights) not in (2, 3):
        raise TypeError(f"{fn}: weights must be the list [kernel, recurrent_kernel, bias] (or "
                        f"without bias) of layer.get_weights(), got {weights!r:.80}")
    G = GATES[cell]
    g = f"{G}H" if G > 1 else "H"
    K = float_array(fn, "weights[0] (kernel)", weights[0], 2, what=f" of shape (D, {g})")
    dtype = K.dtype
    R = float_array(fn, "weights[1] (recurrent_kernel)", weights[1], 2, dtype,
                    what=f" of shape (H, {g})", ref="weights[0] (kernel)")
    H = R.shape[0]
    check_shape(fn, "weights[1] (recurrent_kernel)", R, (H, G * H), f"(H, {g}) with H = {H}")
    check_shape(fn, "weights[0] (kernel)", K, (K.shape[0], G * H), f"(D, {g}) with H = {H}")
    gru_after = cell == "gru" and reset_after
    shape, letters = ((2, 3 * H), "(2, 3H)") if gru_after else ((G * H,), f"({g},)")
    if len(weights) == 2:
        b = np.zeros(shape, dtype)
    else:
        b = _numpy(fn, "weights[2] (bias)", weights[2], dtype)
        if b.shape != shape:
            hint = ""
            if cell == "gru":
                hint = (f" (a GRU's bias is (2, 3H) with reset_after=True, (3H,) with "
                        f"reset_after=False; reset_after={reset_after} was given)")
            raise ValueError(f"{fn}: weights[2] (bias) must have shape {letters} = {shape}, "
                             f"got {b.shape}{hint}")
    src, dst = KERAS_ORDER[cell], NATIVE_ORDER[cell]
    return Params(cell, _new(_reorder(K, src, dst, 1)), _new(_reorder(R, src, dst, 1)),
                  _new(_reorder(b, src, dst, -1)),
                  _options(fn, cell, act if cell == "rnn" else None, reset_after))


def to_keras(p):
    """The Keras weight list [kernel, recurrent_kernel, bias] (for ``layer.set_weights``).

    The layer must be built to match p: a SimpleRNN with ``activation=
    p.options["nonlinearity"]``, a GRU with ``reset_after=p.options["reset_after"]`` (bias
    (2, 3H) or (3H,)), use_bias=True, the default activations otherwise.
    """
    p = _check_params("to_keras", "p", p)
    src, dst = NATIVE_ORDER[p.cell], KERAS_ORDER[p.cell]
    return [_new(_reorder(a, src, dst, -1)) for a in (p.Wx, p.Wh, p.b)]


# --------------------------------------------------------------------------------------------
# ONNX: the W, R, B initializers of an RNN, LSTM or GRU node
# --------------------------------------------------------------------------------------------
_ONNX_OPS = {"RNN": "rnn", "LSTM": "lstm", "GRU": "gru"}
# the default activations of one direction
_ONNX_ACTIVATIONS = {"rnn": ["tanh"], "lstm": ["sigmoid", "tanh", "tanh"],
                     "gru": ["sigmoid", "tanh"]}


def from_onnx(op_type, W, R, B=None, linear_before_reset=0, *, P=None, clip=None,
              input_forget=0, activations=None, activation_alpha=None, activation_beta=None,
              hidden_size=None, direction=None, layout=0):
    """Params per direction from the initializers of an ONNX ``RNN``, ``LSTM`` or ``GRU`` node.

    Parameters
    ----------
    op_type : "RNN", "LSTM" or "GRU".
    W : [num_directions, G*H, D];  R : [num_directions, G*H, H];
    B : [num_directions, 2*G*H] = [Wb, Rb], or None (zeros).
    linear_before_reset : the GRU attribute: 0 (default) gives reset_after=False with
        b = Wb + Rb; 1 gives reset_after=True with b = [Wb; Rb].
    P, clip, input_forget, activations, activation_alpha, activation_beta, hidden_size,
    direction, layout : the node's other inputs and attributes, so that
        ``from_onnx(node.op_type, W, R, B, **attrs)`` checks them all. Peepholes (a non-zero
        P), clip, input_forget=1 and activations other than the defaults (except "Relu" for an
        RNN) are not supported and raise ValueError.

    Returns
    -------
    [Params] with one entry per direction: for "bidirectional", [forward, reverse]; a single
    "reverse" direction runs with ``reverse=True``.
    """
    fn = "from_onnx"
    if op_type not in _ONNX_OPS:
        raise ValueError(f"{fn}: op_type must be 'RNN', 'LSTM' or 'GRU', got {op_type!r}")
    cell = _ONNX_OPS[op_type]
    G = GATES[cell]
    g = f"{G}*H" if G > 1 else "H"
    R = float_array(fn, "R", R, 3, what=f" of shape [num_directions, {g}, H]")
    dirs, H, dtype = R.shape[0], R.shape[2], R.dtype
    if dirs not in (1, 2):
        raise ValueError(f"{fn}: R must have num_directions = 1 or 2 on its first axis, got "
                         f"shape {R.shape}")
    check_shape(fn, "R", R, (dirs, G * H, H), f"[num_directions, {g}, H] with H = {H}")
    W = float_array(fn, "W", W, 3, dtype, what=f" of shape [num_directions, {g}, D]", ref="R")
    check_shape(fn, "W", W, (dirs, G * H, W.shape[2]), f"[num_directions, {g}, D] with H = {H}")
    if B is None:
        B = np.zeros((dirs, 2 * G * H), dtype)
    B = float_array(fn, "B", B, 2, dtype, what=f" of shape [num_directions, 2*{g}]", ref="R")
    check_shape(fn, "B", B, (dirs, 2 * G * H), f"[num_directions, 2*{g}]")
    _check_onnx_attributes(fn, op_type, cell, dirs, H, dtype, P, clip, input_forget,
                           activation_alpha, activation_beta, hidden_size, direction, layout)
    acts = _onnx_activations(fn, op_type, cell, dirs, activations)
    if cell == "gru":
        if linear_before_reset not in (0, 1) or isinstance(linear_before_reset, float):
            raise ValueError(f"{fn}: linear_before_reset must be 0 or 1, got "
                             f"{linear_before_reset!r}")
        reset_after = bool(linear_before_reset)
    elif linear_before_reset not in (0, None):
        raise ValueError(f"{fn}: linear_before_reset applies to a GRU only, got "
                         f"linear_before_reset={linear_before_reset!r} for {op_type}")
    src, dst = ONNX_ORDER[cell], NATIVE_ORDER[cell]
    out = []
    for d in range(dirs):
        Wb, Rb = B[d, :G * H], B[d, G * H:]
        if cell == "gru" and reset_after:
            b = np.stack([_reorder(Wb, src, dst, 0), _reorder(Rb, src, dst, 0)])
        else:  # Wb and Rb add into one (a reset-before GRU adds Rb_h outside r ⊙ ...)
            b = _reorder(Wb + Rb, src, dst, 0)
        opts = _options(fn, cell, acts[d] if cell == "rnn" else None,
                        reset_after if cell == "gru" else None)
        out.append(Params(cell, _new(_reorder(W[d], src, dst, 0).T),
                          _new(_reorder(R[d], src, dst, 0).T), _new(b), opts))
    return out


def _check_onnx_attributes(fn, op_type, cell, dirs, H, dtype, P, clip, input_forget,
                           activation_alpha, activation_beta, hidden_size, direction, layout):
    if P is not None:
        if cell != "lstm":
            raise ValueError(f"{fn}: P (peepholes) belongs to an LSTM, got it for {op_type}")
        P = float_array(fn, "P", P, 2, dtype, what=" of shape [num_directions, 3*H]")
        check_shape(fn, "P", P, (dirs, 3 * H), "[num_directions, 3*H]")
        if np.any(P != 0):
            raise ValueError(f"{fn}: LSTM peepholes (a non-zero P) are not supported")
    if clip is not None:
        raise ValueError(f"{fn}: clip={clip!r} is not supported (fastcells does not clip "
                         f"the gate pre-activations)")
    if input_forget not in (0, None):
        if cell != "lstm":
            raise ValueError(f"{fn}: input_forget belongs to an LSTM, got it for {op_type}")
        raise ValueError(f"{fn}: input_forget={input_forget!r} (coupled input and forget "
                         f"gates) is not supported")
    if hidden_size is not None and hidden_size != H:
        raise ValueError(f"{fn}: hidden_size={hidden_size} contradicts R's H = {H}")
    if direction is not None:
        if isinstance(direction, bytes):
            direction = direction.decode()
        expected = {"forward": 1, "reverse": 1, "bidirectional": 2}.get(direction)
        if expected is None:
            raise ValueError(f"{fn}: direction must be 'forward', 'reverse' or 'bidirectional', "
                             f"got {direction!r}")
        if expected != dirs:
            raise ValueError(f"{fn}: direction={direction!r} needs num_directions = {expected}, "
                             f"W and R have {dirs}")
    if layout not in (0, 1, None):
        raise ValueError(f"{fn}: layout must be 0 or 1, got {layout!r}")
    # activation_alpha/beta parametrize only activations we reject (LeakyRelu, Affine, ...);
    # with the supported ones they have no effect.
    del activation_alpha, activation_beta


def _onnx_activations(fn, op_type, cell, dirs, activations):
    """The activation names of each direction, checked: [["tanh"], ...] per direction."""
    default = _ONNX_ACTIVATIONS[cell]
    k = len(default)
    if activations is None:
        return ["tanh"] * dirs if cell == "rnn" else [None] * dirs
    acts = [_activation_name(a) for a in activations]
    if len(acts) == k and dirs == 2:  # a list for one direction: the same for both
        acts = acts * 2
    if len(acts) != k * dirs:
        raise ValueError(f"{fn}: activations must list {k} function(s) per direction "
                         f"({k * dirs} in all), got {list(activations)}")
    out = []
    for d in range(dirs):
        mine = acts[d * k:(d + 1) * k]
        if cell == "rnn" and mine[0] in ("tanh", "relu"):
            out.append(mine[0])
        elif mine == default:
            out.append(None)
        else:
            supported = "Tanh or Relu" if cell == "rnn" else str([a.title() for a in default])
            raise ValueError(f"{fn}: {op_type} activations {list(activations)} are not "
                             f"supported (per direction: {supported})")
    return out


def to_onnx(params_per_direction):
    """The (W, R, B) initializers of an ONNX node from Params, one per direction.

    ``params_per_direction``: [p] for direction "forward" or "reverse", [forward, reverse] for
    "bidirectional" (one Params alone is taken as [p]). Returns W [dirs, G*H, D],
    R [dirs, G*H, H], B [dirs, 2*G*H] of the Params' dtype; the bias goes into Wb and Rb is
    zero, except for a GRU with reset_after=True (Wb = b[0], Rb = b[1]).

    The node must be built with the matching attributes, which ``onnx_attributes`` returns:
    hidden_size, direction, and for a GRU ``linear_before_reset = int(reset_after)`` (1 for
    reset_after=True), for an RNN with nonlinearity "relu" its ``activations``.
    """
    fn = "to_onnx"
    ps = _check_params_list(fn, "params_per_direction", params_per_direction, 2)
    cell = ps[0].cell
    src, dst = NATIVE_ORDER[cell], ONNX_ORDER[cell]
    W = np.stack([_reorder(p.Wx, src, dst, 1).T for p in ps])
    R = np.stack([_reorder(p.Wh, src, dst, 1).T for p in ps])
    Bs = []
    for p in ps:
        if cell == "gru" and p.options["reset_after"]:
            Wb, Rb = p.b[0], p.b[1]
        else:
            Wb, Rb = p.b, np.zeros_like(p.b)
        Bs.append(np.concatenate([_reorder(Wb, src, dst, 0), _reorder(Rb, src, dst, 0)]))
    return _new(W), _new(R), _new(np.stack(Bs))


def onnx_attributes(params_per_direction, reverse=False):
    """The attributes of the ONNX node that ``to_onnx(params_per_direction)`` feeds, as a dict
    for ``onnx.helper.make_node(op_type, inputs, outputs, **attrs)``: hidden_size, direction
    ("bidirectional" for two Params, else "reverse" when ``reverse`` or "forward"), for a GRU
    linear_before_reset, for an RNN activations (when not all "Tanh"). The op_type is
    ``p.cell.upper()``."""
    fn = "onnx_attributes"
    ps = _check_params_list(fn, "params_per_direction", params_per_direction, 2)
    reverse = check_flag(fn, "reverse", reverse)
    if len(ps) == 2 and reverse:
        raise ValueError(f"{fn}: reverse=True applies to a single direction, got two Params "
                         f"(bidirectional)")
    p = ps[0]
    attrs = {"hidden_size": p.hidden_size,
             "direction": "bidirectional" if len(ps) == 2 else
             ("reverse" if reverse else "forward")}
    if p.cell == "gru":
        attrs["linear_before_reset"] = int(p.options["reset_after"])
    if p.cell == "rnn":
        acts = [q.options["nonlinearity"].title() for q in ps]
        if acts != ["Tanh"] * len(ps):
            attrs["activations"] = acts
    return attrs


# --------------------------------------------------------------------------------------------
# Deep Learning from Scratch 2: the bias-less GRU of chapter 6
# --------------------------------------------------------------------------------------------
def from_book_gru(Wx, Wh, b=None):
    """Params of the book's GRU (``GRU(Wx, Wh)``: blocks [z, r, h], no bias, reset before)::

        z = σ(x @ Wxz + h @ Whz)    r = σ(x @ Wxr + h @ Whr)
        ĥ = tanh(x @ Wxh + (r ⊙ h) @ Whh)        h_next = (1 - z) ⊙ h + z ⊙ ĥ

    The book's z is our 1 - z, and 1 - σ(a) = σ(-a): the z blocks of Wx and Wh (and of b, when
    a (3H,) bias is given for the variant with one) are negated. The result is a GRU with
    reset_after=False and b = 0 (or the converted b).
    """
    fn = "from_book_gru"
    Wh = float_array(fn, "Wh", Wh, 2, what=" of shape (H, 3H)")
    H, dtype = Wh.shape[0], Wh.dtype
    check_shape(fn, "Wh", Wh, (H, 3 * H), f"(H, 3H) with H = {H}")
    Wx = float_array(fn, "Wx", Wx, 2, dtype, what=" of shape (D, 3H)", ref="Wh")
    check_shape(fn, "Wx", Wx, (Wx.shape[0], 3 * H), f"(D, 3H) with H = {H}")
    if b is None:
        b = np.zeros(3 * H, dtype)
    b = float_array(fn, "b", b, 1, dtype, what=" of shape (3H,)", ref="Wh")
    check_shape(fn, "b", b, (3 * H,), "(3H,)")
    Wx, Wh, b = _new(Wx), _new(Wh), _new(b)
    for a in (Wx, Wh, b):
        a[..., :H] *= -1  # z -> 1 - z
    return Params("gru", Wx, Wh, b, {"reset_after": False})
