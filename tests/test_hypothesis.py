"""Property-based tests (hypothesis) over the whole public API: functional forward/backward,
Time layers (uni- and bidirectional), one-step cells, the converters and clip_grads.

Two properties, for every entry point:

- **valid arguments** (random shapes including N, T, D, H = 0; float32/float64; ragged
  `lengths` of any integer dtype; each array C-ordered, Fortran-ordered, strided, with negative
  strides, read-only, non-aligned or a zero-stride broadcast): the result equals the NumPy
  twin's (conftest.TOL), has the call's dtype and shares no memory with any argument;
- **one invalid argument** (None, an integer/float16/complex/object/bool/str/longdouble dtype,
  the other float dtype, a missing or extra axis, a wrong size, a ragged list, a scalar,
  `lengths` out of range or of the wrong length or dtype, a non-bool flag, ...): the call
  raises ValueError or TypeError whose message names that argument.

Either way the arguments are unchanged afterwards (values, dtype and layout). The bugs these
properties found are also pinned by plain tests at the end of the file.

Runs: by default (CI) each property has a bounded number of examples from a fixed seed
(``derandomize=True``), about 10 seconds in all. ``FASTCELLS_HYPOTHESIS_PROFILE=long`` runs 20x as
many examples (``FASTCELLS_HYPOTHESIS_SCALE`` overrides the factor) from a fresh random seed;
a failure prints the ``@reproduce_failure`` blob that replays it::

    FASTCELLS_HYPOTHESIS_PROFILE=long python -m pytest -q tests/test_hypothesis.py
"""
import os
import re

import numpy as np
import pytest

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fastcells  # noqa: E402
import fastcells.reference as ref  # noqa: E402

from conftest import CELLS, DTYPES, assert_close  # noqa: E402

# ---- run profiles ----------------------------------------------------------------------------
PROFILE = os.environ.get("FASTCELLS_HYPOTHESIS_PROFILE", "ci")
if PROFILE not in ("ci", "long"):
    raise ValueError(f"FASTCELLS_HYPOTHESIS_PROFILE must be 'ci' or 'long', got {PROFILE!r}")
SCALE = int(os.environ.get("FASTCELLS_HYPOTHESIS_SCALE", "20")) if PROFILE == "long" else 1


def examples(n):
    """Settings of a property with n examples in CI (SCALE * n in the long run). CI does not
    shrink a failing example (it prints it as drawn, with its @reproduce_failure blob); the
    long run does."""
    phases = [p for p in Phase if PROFILE == "long" or p is not Phase.shrink]
    return settings(max_examples=n * SCALE, derandomize=PROFILE == "ci", database=None,
                    deadline=None, print_blob=True, phases=phases,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# ---- drawing arguments -----------------------------------------------------------------------
LAYOUTS = ["c", "fortran", "strided", "negative", "readonly", "unaligned", "broadcast"]
SMALL = st.integers(0, 4)
# hidden/input sizes: mostly tiny, sometimes around the SIMD widths (remainder loops)
WIDTH = st.one_of(st.integers(0, 5), st.sampled_from([7, 8, 9, 15, 16, 17, 33]))
INT_DTYPES = [np.int64, np.int32, np.int16, np.uint8, np.uint16, np.uint64, np.intp]


def with_layout(a, kind):
    """An array with the values of `a` (for "broadcast": of its first row, repeated) in the
    memory layout `kind`."""
    a = np.asarray(a)
    if kind == "c":
        return np.array(a, order="C")
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "strided":  # every other element of a larger array, on every axis
        big = np.zeros(tuple(2 * s + 1 for s in a.shape), a.dtype)
        view = big[tuple(slice(1, None, 2) for _ in a.shape)]
        view[...] = a
        return view
    if kind == "negative":
        return np.flip(np.flip(a).copy())
    if kind == "readonly":
        out = np.array(a)
        out.flags.writeable = False
        return out
    if kind == "unaligned":
        buf = np.zeros(a.nbytes + 1, np.uint8)
        out = buf[1:].view(a.dtype).reshape(a.shape)
        out[...] = a
        return out
    if kind == "broadcast":  # a zero-stride, read-only view
        if a.ndim == 0 or a.shape[0] == 0:
            return a
        return np.broadcast_to(a[:1], a.shape)
    raise AssertionError(kind)


def layout(data, a, label):
    return with_layout(a, data.draw(st.sampled_from(LAYOUTS), label=f"layout of {label}"))


def canonical(a):
    """What the twin gets: a C-contiguous copy (None stays None)."""
    return None if a is None else np.array(a, order="C")


class Watch:
    """Remembers the arguments of a call and checks afterwards that none changed and that no
    result shares memory with one."""

    def __init__(self):
        self.args = []

    def __call__(self, a):
        if isinstance(a, np.ndarray):
            self.args.append((a, a.copy(), a.strides, a.flags.writeable))
        elif isinstance(a, (list, tuple)):
            for x in a:
                self(x)
        return a

    def check(self, *results):
        for a, copy, strides, writeable in self.args:
            assert a.dtype == copy.dtype and a.strides == strides, "argument layout changed"
            assert a.flags.writeable == writeable, "argument writeability changed"
            if a.dtype.kind in "fc":
                assert np.array_equal(a, copy, equal_nan=True), "an argument was modified"
            else:
                assert np.array_equal(a, copy), "an argument was modified"
        for r in results:
            if isinstance(r, np.ndarray):
                for a, *_ in self.args:
                    assert not np.shares_memory(r, a), "a result shares memory with an argument"


def draw_lengths(data, N, T):
    """None, or valid lengths as an array of some integer dtype and layout, or a list."""
    kind = data.draw(st.sampled_from(["none", "array", "array", "list"]), label="lengths kind")
    if kind == "none":
        return None
    values = data.draw(st.lists(st.integers(0, T), min_size=N, max_size=N), label="lengths")
    if kind == "list":
        return values
    arr = np.array(values, dtype=data.draw(st.sampled_from(INT_DTYPES), label="lengths dtype"))
    return layout(data, arr, "lengths")


def draw_problem(data, cells=CELLS, zero=True):
    """(cell, dtype, sizes, problem dict) with random sizes (zero allowed when `zero`)."""
    cell = data.draw(st.sampled_from(cells), label="cell")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    lo = 0 if zero else 1
    N = data.draw(st.integers(lo, 4), label="N")
    T = data.draw(st.integers(lo, 5), label="T")
    D = data.draw(WIDTH if zero else st.integers(1, 6), label="D")
    H = data.draw(WIDTH.filter(lambda h: h >= lo), label="H")
    time_major = data.draw(st.booleans(), label="time_major")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    p = cell.problem(np.random.default_rng(seed), N, T, D, H, dtype, time_major=time_major)
    return cell, dtype, (N, T, D, H), time_major, p


def fn(cell, kind):
    return getattr(fastcells, f"{cell.name}_{kind}")


def ref_fn(cell, kind):
    return getattr(ref, f"{cell.name}_{kind}")


def finals(cell, out):
    return list(out) if cell.n_states == 2 else [out]


# ---- functional API: valid arguments -------------------------------------------------------
@examples(150)
@given(st.data())
def test_functional_matches_twin(data):
    cell, dtype, (N, T, D, H), time_major, p = draw_problem(data)
    watch = Watch()
    xs, Wx, Wh, b = (watch(layout(data, p[k], k)) for k in ("xs", "Wx", "Wh", "b"))
    states = [watch(layout(data, s, "state")) if data.draw(st.booleans(), label="state given")
              else None for s in p["states"]]
    lengths = watch(draw_lengths(data, N, T))
    reverse = data.draw(st.booleans(), label="reverse")
    training = data.draw(st.booleans(), label="training")
    kw = dict(cell.kwargs, lengths=lengths, time_major=time_major, reverse=reverse)

    hs, fin, cache = fn(cell, "forward")(xs, Wx, Wh, b, *states, training=training, **kw)
    fin = finals(cell, fin)
    kw_ref = dict(kw, lengths=None if lengths is None else np.asarray(lengths, np.int64))
    hs_r, fin_r, cache_r = ref_fn(cell, "forward")(
        canonical(xs), canonical(Wx), canonical(Wh), canonical(b),
        *[canonical(s) for s in states], **kw_ref)
    assert_close(hs, hs_r, "hs", dtype)
    for k, (s, s_r) in enumerate(zip(fin, finals(cell, fin_r))):
        assert_close(s, s_r, f"final state {k}", dtype)
    results = [hs, *fin]
    if not training:
        assert cache is None
    else:
        dhs = watch(layout(data, p["dhs"], "dhs")) if data.draw(st.booleans(), label="dhs") \
            else None
        dfinal = [watch(layout(data, g, "dfinal")) if data.draw(st.booleans(), label="dfinal")
                  else None for g in p["dfinal"]]
        grads = fn(cell, "backward")(cache, dhs, *dfinal)
        grads_r = ref_fn(cell, "backward")(cache_r, canonical(dhs),
                                           *[canonical(g) for g in dfinal])
        assert type(grads) is type(grads_r)
        for name, g, g_r in zip(grads._fields, grads, grads_r):
            assert_close(g, g_r, name, dtype)
        results += list(grads)
    watch.check(*results)


# ---- invalid arguments -----------------------------------------------------------------------
BAD_DTYPES = [np.int8, np.int32, np.int64, np.uint16, np.float16, np.complex64, np.complex128,
              object, np.bool_, "U8", np.longdouble]
BAD_FLAGS = ["yes", 1, 0, None, 1.0, [True], np.array([True, False])]


def mentions(message, name):
    """True when `name` appears in `message` as a whole word (``x`` is not in ``xs``)."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", message) is not None


def expect_error(call, name):
    """The call must raise ValueError or TypeError whose message names `name`."""
    try:
        out = call()
    except (ValueError, TypeError) as e:
        assert mentions(str(e), name), f"the error does not name {name!r}: {e!r}"
        return
    raise AssertionError(f"invalid {name} was accepted; the call returned {type(out).__name__}")


def ragged(ndim):
    """A nested list that NumPy cannot turn into an array of `ndim` dims."""
    inner = [[0.5], [0.5, 0.25]]
    for _ in range(max(ndim - 2, 0)):
        inner = [inner]
    return inner if ndim >= 2 else [[0.5], 0.5]


def corrupt_array(data, a, label, optional, other_float, shape_axes):
    """An invalid replacement for the array `a` (which is valid where it stands).

    optional: None would be valid here (then None is not drawn); other_float: the float dtype
    that would mismatch; shape_axes: the axes whose size is checked against the others."""
    kinds = ["dtype", "other_float", "ndim_up", "ndim_down", "shape", "ragged", "scalar", "str"]
    if not optional:
        kinds.append("none")
    kind = data.draw(st.sampled_from(kinds), label=f"corruption of {label}")
    a = np.asarray(a)
    if kind == "none":
        return None
    if kind == "dtype":
        return a.astype(data.draw(st.sampled_from(BAD_DTYPES), label="bad dtype"))
    if kind == "other_float":
        return a.astype(other_float)
    if kind == "ndim_up":
        return a[..., None]
    if kind == "ndim_down":
        return a[..., 0] if a.shape[-1] > 0 else a.sum(axis=-1)
    if kind == "shape":
        axis = data.draw(st.sampled_from(shape_axes), label="axis")
        grow = a.shape[axis] == 0 or data.draw(st.booleans(), label="grow")
        if grow:
            pad = [(0, 0)] * a.ndim
            pad[axis] = (0, 1)
            return np.pad(a, pad)
        return np.take(a, np.arange(a.shape[axis] - 1), axis=axis)
    if kind == "ragged":
        return ragged(a.ndim)
    if kind == "scalar":
        return 1.5
    if kind == "str":
        return "not an array"
    raise AssertionError(kind)


def corrupt_lengths(data, N, T):
    kind = data.draw(st.sampled_from(["high", "negative", "short", "long", "float", "bool",
                                      "2d", "object", "str"]), label="lengths corruption")
    values = np.array(data.draw(st.lists(st.integers(0, T), min_size=N, max_size=N)),
                      dtype=np.int64)
    if kind in ("high", "negative"):
        if N == 0:
            return np.zeros(1, np.int64)
        i = data.draw(st.integers(0, N - 1), label="index")
        values[i] = T + data.draw(st.sampled_from([1, 2, 1000, 2**40]), label="excess") \
            if kind == "high" else -data.draw(st.sampled_from([1, 2**40]), label="deficit")
        return values
    if kind == "short":
        return values[:-1] if N else np.zeros(1, np.int64)
    if kind == "long":
        return np.append(values, 0)
    if kind == "float":
        return values.astype(np.float64)
    if kind == "bool":
        return values.astype(bool)
    if kind == "2d":
        return values[:, None]
    if kind == "object":
        return values.astype(object)
    return "ab"


def forward_kwargs(cell, p, time_major):
    """The keyword arguments of a valid *_forward call for problem p."""
    kw = {"xs": p["xs"], "Wx": p["Wx"], "Wh": p["Wh"], "b": p["b"],
          "h0": p["states"][0], "lengths": None, "time_major": time_major, "reverse": False,
          "training": True, **cell.kwargs}
    if cell.n_states == 2:
        kw["c0"] = p["states"][1]
    return kw


@examples(200)
@given(st.data())
def test_functional_forward_rejects_invalid_argument(data):
    cell, dtype, (N, T, D, H), time_major, p = draw_problem(data, zero=False)
    kw = forward_kwargs(cell, p, time_major)
    other = np.float32 if dtype == np.float64 else np.float64
    names = ["xs", "Wx", "Wh", "b", "h0", "lengths", "time_major", "reverse", "training"]
    names += [k for k in ("c0", "nonlinearity", "reset_after") if k in kw]
    name = data.draw(st.sampled_from(names), label="invalid argument")
    shape_axes = {"xs": [2], "Wx": [0, 1], "Wh": [0, 1], "b": list(range(p["b"].ndim)),
                  "h0": [0, 1], "c0": [0, 1]}
    if name in shape_axes:
        kw[name] = corrupt_array(data, kw[name], name, name in ("h0", "c0"), other,
                                 shape_axes[name])
    elif name == "lengths":
        kw[name] = corrupt_lengths(data, N, T)
    elif name == "nonlinearity":
        kw[name] = data.draw(st.sampled_from(["sigmoid", "TANH", "", None, 1, ["tanh"],
                                              b"tanh"]), label="nonlinearity")
    else:
        kw[name] = data.draw(st.sampled_from(BAD_FLAGS), label=name)
    watch = Watch()
    watch(list(kw.values()))
    expect_error(lambda: fn(cell, "forward")(**kw), name)
    watch.check()


@examples(60)
@given(st.data())
def test_functional_rejects_invalid_lengths(data):
    """lengths alone (the most consequential argument: a length above T or below 0 would send
    the kernels outside the sequences): every kind of invalid lengths is rejected."""
    cell, dtype, (N, T, D, H), time_major, p = draw_problem(data, zero=False)
    kw = forward_kwargs(cell, p, time_major)
    kw["lengths"] = corrupt_lengths(data, N, T)
    kw["reverse"] = data.draw(st.booleans(), label="reverse")
    kw["training"] = data.draw(st.booleans(), label="training")
    watch = Watch()
    watch(list(kw.values()))
    expect_error(lambda: fn(cell, "forward")(**kw), "lengths")
    watch.check()


@examples(100)
@given(st.data())
def test_functional_backward_rejects_invalid_argument(data):
    cell, dtype, (N, T, D, H), time_major, p = draw_problem(data, zero=False)
    _, _, cache = fn(cell, "forward")(**forward_kwargs(cell, p, time_major))
    other = np.float32 if dtype == np.float64 else np.float64
    grads = {"dhs": p["dhs"], "dh_T": p["dfinal"][0]}
    if cell.n_states == 2:
        grads["dc_T"] = p["dfinal"][1]
    name = data.draw(st.sampled_from(["cache", *grads]), label="invalid argument")
    if name == "cache":
        other_cell = CELLS[(CELLS.index(cell) + 3) % len(CELLS)]  # another cell family
        foreign = other_cell.forward(fastcells, *[other_cell.problem(
            np.random.default_rng(0), 1, 1, 1, 1, dtype)[k] for k in ("xs", "Wx", "Wh", "b")],
            [None] * other_cell.n_states)[2]
        cache = data.draw(st.sampled_from([None, {}, "cache", foreign]), label="cache")
    else:
        axes = [0, 1, 2] if name == "dhs" else [0, 1]
        grads[name] = corrupt_array(data, grads[name], name, True, other, axes)
    watch = Watch()
    watch(list(grads.values()))
    expect_error(lambda: fn(cell, "backward")(cache, **grads), name)
    watch.check()


# ---- Time layers -----------------------------------------------------------------------------
TIME = {"lstm": fastcells.TimeLSTM, "gru": fastcells.TimeGRU, "rnn": fastcells.TimeRNN}
BI = {"lstm": fastcells.TimeBiLSTM, "gru": fastcells.TimeBiGRU, "rnn": fastcells.TimeBiRNN}


def layer_weights(cell, rng, D, H, dtype):
    p = cell.problem(rng, 1, 1, D, H, dtype)
    return [p["Wx"], p["Wh"], p["b"]]


def twin_chunk(cell, xs, weights, states, dhs, lengths, reverse):
    """The twin of one Time-layer chunk: hs, final states, grads (dhs None: no output grad)."""
    hs, fin, cache = ref_fn(cell, "forward")(xs, *weights, *states, lengths=lengths,
                                             reverse=reverse, **cell.kwargs)
    grads = ref_fn(cell, "backward")(cache, dhs)
    return hs, finals(cell, fin), grads


@examples(60)
@given(st.data())
def test_time_layers_match_twin(data):
    """Uni- and bidirectional Time layers over 1-3 chunks (stateful or not, with in-place
    parameter updates between chunks) equal the twin run chunk by chunk."""
    cell = data.draw(st.sampled_from(CELLS), label="cell")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    N, T = data.draw(SMALL, label="N"), data.draw(st.integers(0, 5), label="T")
    D, H = data.draw(WIDTH, label="D"), data.draw(WIDTH, label="H")
    bi = data.draw(st.booleans(), label="bidirectional")
    stateful = data.draw(st.booleans(), label="stateful")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    dirs = 2 if bi else 1
    weights = [layer_weights(cell, rng, D, H, dtype) for _ in range(dirs)]
    params = [layout(data, w, "param") if data.draw(st.booleans(), label="odd param")
              else w for ws in weights for w in ws]
    params = [np.array(w) if not w.flags.writeable else w for w in params]  # SGD writes them
    opts = dict(cell.kwargs)
    layer = (BI if bi else TIME)[cell.name](*params, stateful, **opts)
    assert all(a is b for a, b in zip(layer.params, params))
    grads_ids = [id(g) for g in layer.grads]
    states = [[None] * cell.n_states for _ in range(dirs)]
    for chunk in range(data.draw(st.integers(1, 3), label="chunks")):
        xs = rng.standard_normal((N, T, D)).astype(dtype)
        dhs = rng.standard_normal((N, T, dirs * H)).astype(dtype)
        lengths = draw_lengths(data, N, T)
        xs_arg, dhs_arg = layout(data, xs, "xs"), layout(data, dhs, "dhs")
        watch = Watch()
        watch([xs_arg, dhs_arg, lengths])
        hs = layer.forward(xs_arg, lengths)
        dxs = layer.backward(dhs_arg)
        watch.check(hs, dxs)
        L = None if lengths is None else np.asarray(lengths, np.int64)
        ws = [params[3 * d:3 * d + 3] for d in range(dirs)]
        xs, dhs = canonical(xs_arg), canonical(dhs_arg)  # the values of the arguments
        outs = [twin_chunk(cell, xs, [canonical(w) for w in ws[d]],
                           states[d] if stateful else [None] * cell.n_states,
                           dhs[:, :, d * H:(d + 1) * H], L, d == 1) for d in range(dirs)]
        assert_close(hs, np.concatenate([o[0] for o in outs], axis=2), "hs", dtype)
        assert_close(dxs, sum(o[2].dxs for o in outs), "dxs", dtype)
        for d, (_, fin, g) in enumerate(outs):
            lay = layer if not bi else (layer.forward_layer, layer.backward_layer)[d]
            for name, s in zip(("h", "c"), fin):
                assert_close(getattr(lay, name), s, f"direction {d} state {name}", dtype)
            assert_close(lay.dh, g.dh0, "dh", dtype)
            for k, gname in enumerate(("dWx", "dWh", "db")):
                assert_close(layer.grads[3 * d + k], getattr(g, gname), gname, dtype)
            states[d] = fin
        assert [id(g) for g in layer.grads] == grads_ids, "grads must be overwritten in place"
        for w, g in zip(params, layer.grads):  # the book's SGD, in place
            w -= dtype(0.1) * g


@examples(100)
@given(st.data())
def test_time_layers_reject_invalid_argument(data):
    cell = data.draw(st.sampled_from(CELLS), label="cell")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    bi = data.draw(st.booleans(), label="bidirectional")
    N, T, D, H = 2, 3, 4, 5
    rng = np.random.default_rng(0)
    dirs = 2 if bi else 1
    params = [w for _ in range(dirs) for w in layer_weights(cell, rng, D, H, dtype)]
    layer = (BI if bi else TIME)[cell.name](*params, **cell.kwargs)
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    dhs = rng.standard_normal((N, T, dirs * H)).astype(dtype)
    other = np.float32 if dtype == np.float64 else np.float64
    name = data.draw(st.sampled_from(["xs", "dhs", "lengths"]), label="invalid argument")
    watch = Watch()
    watch([xs, dhs])
    if name == "xs":
        bad = corrupt_array(data, xs, "xs", False, other, [2])
        expect_error(lambda: layer.forward(bad), "xs")
    elif name == "lengths":
        bad = corrupt_lengths(data, N, T)
        expect_error(lambda: layer.forward(xs, bad), "lengths")
    else:
        layer.forward(xs)
        # None means "no output gradient" to a one-direction layer; a bidirectional one needs
        # an array to split between its directions
        bad = corrupt_array(data, dhs, "dhs", not bi, other, [0, 1, 2])
        expect_error(lambda: layer.backward(bad), "dhs")
    watch.check()


def test_time_layer_backward_before_forward():
    for cls in (*TIME.values(), *BI.values()):
        cell = next(c for c in CELLS if TIME[c.name] is cls or BI[c.name] is cls)
        ws = layer_weights(cell, np.random.default_rng(0), 2, 3, np.float64)
        layer = cls(*ws, *ws) if cls in BI.values() else cls(*ws)
        with pytest.raises(ValueError, match="forward"):
            layer.backward(np.zeros((1, 1, 3 * (2 if cls in BI.values() else 1))))


# ---- one-step cells --------------------------------------------------------------------------
ONE = {"lstm": fastcells.LSTM, "gru": fastcells.GRU, "rnn": fastcells.RNN}


@examples(100)
@given(st.data())
def test_one_step_cells_match_twin(data):
    cell = data.draw(st.sampled_from(CELLS), label="cell")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    N, D, H = data.draw(SMALL, label="N"), data.draw(WIDTH, label="D"), data.draw(WIDTH, label="H")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    p = cell.problem(rng, N, 1, D, H, dtype)
    params = [layout(data, p[k], k) for k in ("Wx", "Wh", "b")]
    one = ONE[cell.name](*params, **cell.kwargs)
    watch = Watch()
    x = watch(layout(data, p["xs"][:, 0], "x"))
    states = [watch(layout(data, s, "state")) for s in p["states"]]
    douts = [watch(layout(data, g, "dout")) if data.draw(st.booleans(), label="dout given")
             else None for g in p["dfinal"]]
    watch(params)
    out = one.forward(x, *states)
    out = list(out) if cell.n_states == 2 else [out]
    back = one.backward(*douts)
    watch.check(*out, *back)
    ws = [canonical(w) for w in params]
    hs_r, fin_r, cache = ref_fn(cell, "forward")(canonical(x)[:, None], *ws,
                                                 *[canonical(s) for s in states], **cell.kwargs)
    g = ref_fn(cell, "backward")(cache, None, *[canonical(d) for d in douts])
    for a, r in zip(out, finals(cell, fin_r)):
        assert_close(a, r, "next state", dtype)
    assert_close(back[0], g.dxs[:, 0], "dx", dtype)
    assert_close(back[1], g.dh0, "dh_prev", dtype)
    if cell.n_states == 2:
        assert_close(back[2], g.dc0, "dc_prev", dtype)
    for mine, name in zip(one.grads, ("dWx", "dWh", "db")):
        assert_close(mine, getattr(g, name), name, dtype)


@examples(100)
@given(st.data())
def test_one_step_cells_reject_invalid_argument(data):
    cell = data.draw(st.sampled_from(CELLS), label="cell")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    N, D, H = 2, 3, 4
    p = cell.problem(np.random.default_rng(0), N, 1, D, H, dtype)
    other = np.float32 if dtype == np.float64 else np.float64
    params = [p["Wx"], p["Wh"], p["b"]]
    x, states = p["xs"][:, 0], list(p["states"])
    state_names = ["h_prev", "c_prev"][:cell.n_states]
    grad_names = ["dh_next", "dc_next"][:cell.n_states]
    name = data.draw(st.sampled_from(["x", *state_names, *grad_names, "Wx", "Wh", "b"]),
                     label="invalid argument")
    watch = Watch()
    watch([x, states, params, p["dfinal"]])
    if name in ("Wx", "Wh", "b"):  # rejected by the constructor or by forward
        k = ("Wx", "Wh", "b").index(name)
        axes = list(range(params[k].ndim))
        params[k] = corrupt_array(data, params[k], name, False, other, axes)
        expect_error(lambda: ONE[cell.name](*params, **cell.kwargs).forward(x, *states), name)
    elif name == "x":
        bad = corrupt_array(data, x, "x", False, other, [1])
        one = ONE[cell.name](*params, **cell.kwargs)
        expect_error(lambda: one.forward(bad, *states), "x")
    elif name in state_names:
        k = state_names.index(name)
        states[k] = corrupt_array(data, states[k], name, False, other, [0, 1])
        one = ONE[cell.name](*params, **cell.kwargs)
        expect_error(lambda: one.forward(x, *states), name)
    else:
        one = ONE[cell.name](*params, **cell.kwargs)
        one.forward(x, *states)
        douts = list(p["dfinal"])
        k = grad_names.index(name)
        douts[k] = corrupt_array(data, douts[k], name, True, other, [0, 1])
        expect_error(lambda: one.backward(*douts), name)
    watch.check()


def test_one_step_cell_backward_before_forward():
    for cell in CELLS:
        p = cell.problem(np.random.default_rng(0), 2, 1, 3, 4, np.float64)
        one = ONE[cell.name](p["Wx"], p["Wh"], p["b"], **cell.kwargs)
        with pytest.raises((ValueError, TypeError), match="forward"):
            one.backward(*p["dfinal"])


# ---- converters ------------------------------------------------------------------------------
try:
    from fastcells import convert
except ImportError:  # the converters have not landed in this build
    convert = None
KERAS_KIND = {"lstm": "LSTM", "gru": "GRU", "rnn": "SimpleRNN"}


def draw_params(data, zero=True):
    """(dtype, rng, Params in some memory layout, the same Params C-contiguous)."""
    if convert is None:
        pytest.skip("fastcells.convert is not in this build")
    cell = data.draw(st.sampled_from(CELLS), label="cell")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    D = data.draw(WIDTH if zero else st.integers(1, 6), label="D")
    H = data.draw(WIDTH.filter(lambda h: h >= (0 if zero else 1)), label="H")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    p = cell.problem(rng, 1, 1, D, H, dtype)
    odd = convert.Params(cell.name, *[layout(data, p[k], k) for k in ("Wx", "Wh", "b")],
                         dict(cell.kwargs))
    plain = odd._replace(**{k: canonical(getattr(odd, k)) for k in ("Wx", "Wh", "b")})
    return dtype, rng, odd, plain


def assert_params_equal(a, b):
    assert a.cell == b.cell and a.options == b.options, (a.cell, a.options, b.cell, b.options)
    for name in ("Wx", "Wh", "b"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name


@examples(100)
@given(st.data())
def test_converters_round_trip(data):
    """PyTorch (its state_dict), Keras, ONNX and the book's GRU: from_X(to_X(p)) == p
    exactly, for weights in any layout; the arguments are unchanged and the results share no
    memory with them."""
    dtype, rng, odd, p = draw_params(data)
    watch = Watch()
    watch([odd.Wx, odd.Wh, odd.b])
    target = data.draw(st.sampled_from(["torch", "keras", "onnx", "book"]), label="format")
    if target == "torch":
        if p.cell == "gru" and not p.options["reset_after"]:
            expect_error(lambda: convert.to_torch(odd), "reset_after")
            return
        sd = {f"{k}_l0": v for k, v in convert.to_torch(odd).items()}
        watch.check(*sd.values())
        if p.hidden_size == 0:  # a state_dict does not tell G from a (0, 0) weight_hh
            expect_error(lambda: convert.from_torch(sd), "weight_hh_l0")
            return
        kw = {"nonlinearity": p.options["nonlinearity"]} if p.cell == "rnn" else {}
        back = convert.from_torch(sd, **kw)  # LSTM/RNN: b = bias_ih + bias_hh = b + 0
        assert_params_equal(back, p)
        watch(list(sd.values()))
    elif target == "keras":
        w = convert.to_keras(odd)
        watch.check(*w)
        kw = {"reset_after": p.options["reset_after"]} if p.cell == "gru" else {}
        if p.cell == "rnn":
            kw["activation"] = p.options["nonlinearity"]
        back = convert.from_keras(KERAS_KIND[p.cell], w, **kw)
        assert_params_equal(back, p)
        watch(w)
    elif target == "onnx":
        W, R, B = convert.to_onnx([odd])
        watch.check(W, R, B)
        (back,) = convert.from_onnx(p.cell.upper(), W, R, B, **convert.onnx_attributes([odd]))
        assert_params_equal(back, p)
        watch([W, R, B])
    else:  # the book's GRU has z negated: converting twice gives the weights back
        D, H = p.input_size, p.hidden_size
        Wx, Wh, b = (layout(data, rng.standard_normal(s).astype(dtype), k) for s, k in
                     (((D, 3 * H), "Wx"), ((H, 3 * H), "Wh"), ((3 * H,), "b")))
        b = b if data.draw(st.booleans(), label="book bias") else None
        watch([Wx, Wh, b])
        once = convert.from_book_gru(Wx, Wh, b)
        back = convert.from_book_gru(once.Wx, once.Wh, once.b)
        expected = convert.Params("gru", canonical(Wx), canonical(Wh),
                                  np.zeros(3 * H, dtype) if b is None else canonical(b),
                                  {"reset_after": False})
        assert_params_equal(back, expected)
        watch.check(*once[1:4])
    watch.check(*back[1:4])


@examples(100)
@given(st.data())
def test_converters_reject_invalid_argument(data):
    dtype, rng, _, p = draw_params(data, zero=False)
    other = np.float32 if dtype == np.float64 else np.float64
    target = data.draw(st.sampled_from(["from_keras", "from_onnx", "from_book_gru", "to_keras",
                                        "to_onnx"]), label="converter")
    watch = Watch()
    if target == "from_keras":
        w = convert.to_keras(p)
        k = data.draw(st.integers(0, 2), label="which weight")
        w[k] = corrupt_array(data, w[k], f"weights[{k}]", False, other,
                             [1] if k == 0 else list(range(np.ndim(w[k]))))  # D is free
        watch(w)
        kw = {"reset_after": p.options["reset_after"]} if p.cell == "gru" else {}
        expect_error(lambda: convert.from_keras(KERAS_KIND[p.cell], w, **kw), f"weights[{k}]")
    elif target == "from_onnx":
        args = dict(zip("WRB", convert.to_onnx([p])))
        attrs = convert.onnx_attributes([p])
        name = data.draw(st.sampled_from("WRB"), label="which initializer")
        axes = {"W": [0, 1], "R": [1, 2], "B": [0, 1]}[name]  # R sets num_directions and H
        args[name] = corrupt_array(data, args[name], name, name == "B", other, axes)
        watch(list(args.values()))
        expect_error(lambda: convert.from_onnx(p.cell.upper(), **args, **attrs), name)
    elif target == "from_book_gru":
        H, D = p.hidden_size, p.input_size
        args = {"Wx": np.zeros((D, 3 * H), dtype), "Wh": np.zeros((H, 3 * H), dtype),
                "b": np.zeros(3 * H, dtype)}
        name = data.draw(st.sampled_from(["Wx", "Wh", "b"]), label="which weight")
        axes = {"Wx": [1], "Wh": [0, 1], "b": [0]}[name]  # D is free
        args[name] = corrupt_array(data, args[name], name, name == "b", other, axes)
        watch(list(args.values()))
        expect_error(lambda: convert.from_book_gru(**args), name)
    else:
        name = data.draw(st.sampled_from(["Wx", "Wh", "b"]), label="which weight")
        a = getattr(p, name)
        axes = [1] if name == "Wx" else list(range(a.ndim))  # D is free
        q = p._replace(**{name: corrupt_array(data, a, name, False, other, axes)})
        watch([q.Wx, q.Wh, q.b])
        if target == "to_keras":
            expect_error(lambda: convert.to_keras(q), f"p.{name}")
        else:
            expect_error(lambda: convert.to_onnx([q]), f"params_per_direction[0].{name}")
    watch.check()


# ---- clip_grads ------------------------------------------------------------------------------
WRITABLE_LAYOUTS = ["c", "fortran", "strided", "negative", "unaligned"]


def clip_twin(values, max_norm):
    """The book's clip_grads in float64: (norm, the clipped values)."""
    norm = float(np.sqrt(sum(np.sum(np.square(v.astype(np.float64))) for v in values)))
    rate = max_norm / (norm + 1e-6)
    return norm, [v.astype(np.float64) * rate if rate < 1 else v.astype(np.float64)
                  for v in values]


@examples(100)
@given(st.data())
def test_clip_grads_matches_twin(data):
    """Gradients of either dtype, any writable layout and any finite magnitude (float32 up to
    1e30, whose squares overflow float32): the norm is the float64 one and every gradient is
    scaled by max_norm / (norm + 1e-6) when that is below 1, in place."""
    n = data.draw(st.integers(0, 4), label="number of gradients")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    grads, values = [], []
    for k in range(n):
        dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
        shape = tuple(data.draw(st.lists(st.integers(0, 4), min_size=1, max_size=3)))
        mag = data.draw(st.sampled_from([1e-3, 1.0, 1e3, 1e20, 1e30]), label="magnitude")
        v = (rng.standard_normal(shape) * mag).astype(dtype)
        grads.append(with_layout(v, data.draw(st.sampled_from(WRITABLE_LAYOUTS))))
        values.append(v.copy())  # (with_layout may return v itself)
    max_norm = data.draw(st.sampled_from([0.0, 1e-3, 1.0, 5.0, 1e40]), label="max_norm")
    norm = fastcells.clip_grads(grads, max_norm)
    norm_r, clipped = clip_twin(values, max_norm)
    assert norm == pytest.approx(norm_r, rel=1e-12), (norm, norm_r)
    for g, c, v in zip(grads, clipped, values):
        assert g.dtype == v.dtype
        tol = 1e-6 if g.dtype == np.float32 else 1e-14
        np.testing.assert_allclose(g, c, rtol=tol, atol=0)


@examples(60)
@given(st.data())
def test_clip_grads_rejects_invalid_argument(data):
    """Non-float gradients (ints would be scaled by int(rate) = 0), read-only ones, a
    non-list, or an invalid max_norm: TypeError/ValueError naming the argument, and no
    gradient modified (the check comes before any scaling)."""
    good = [np.full(3, 10.0), np.full((2, 2), 10.0, np.float32)]
    kind = data.draw(st.sampled_from(["dtype", "readonly", "container", "max_norm"]),
                     label="what is invalid")
    max_norm = 1.0
    if kind == "dtype":
        bad = np.full(3, 10).astype(data.draw(st.sampled_from(
            [np.int32, np.int64, np.bool_, np.complex128, object]), label="dtype"))
        grads, name = good + [bad], "grads"
    elif kind == "readonly":
        bad = np.full(3, 10.0)
        bad.flags.writeable = False
        grads, name = good + [bad], "grads"
    elif kind == "container":
        grads, name = data.draw(st.sampled_from([None, 3.0, [None], ["abc"]]),
                                label="grads"), "grads"
    else:
        grads, name = good, "max_norm"
        max_norm = data.draw(st.sampled_from([None, "1", float("nan"), -1.0, float("inf"),
                                              [1.0]]), label="max_norm")
    watch = Watch()
    watch(grads if isinstance(grads, list) else [])
    expect_error(lambda: fastcells.clip_grads(grads, max_norm), name)
    watch.check()


# ---- findings of this suite, as plain tests (each fails until its bug is fixed) -------------
def _lstm_problem(dtype=np.float64, N=2, T=3, D=4, H=5):
    p = CELLS[0].problem(np.random.default_rng(0), N, T, D, H, dtype)
    return p["xs"], p["Wx"], p["Wh"], p["b"]


def test_ragged_list_is_named():
    """np.asarray's own error for a ragged list does not say which argument it was."""
    xs, Wx, Wh, b = _lstm_problem()
    expect_error(lambda: fastcells.lstm_forward([[[0.5]], [[0.5, 0.25]]], Wx, Wh, b), "xs")
    _, _, cache = fastcells.lstm_forward(xs, Wx, Wh, b)
    expect_error(lambda: fastcells.lstm_backward(cache, [[[0.5]], [[0.5, 0.25]]]), "dhs")


def test_training_flag_is_checked():
    """training is used as a truth value: "no" trains, an array raises NumPy's error."""
    xs, Wx, Wh, b = _lstm_problem()
    for value in ("no", np.array([True, False]), None):
        expect_error(lambda: fastcells.lstm_forward(xs, Wx, Wh, b, training=value), "training")


def test_unhashable_nonlinearity_is_named():
    xs, Wx, Wh, b = _lstm_problem()
    Wx, Wh, b = Wx[:, :5], Wh[:, :5], b[:5]
    expect_error(lambda: fastcells.rnn_forward(xs, Wx, Wh, b, nonlinearity=["tanh"]),
                 "nonlinearity")
    expect_error(lambda: fastcells.RNN(Wx, Wh, b, nonlinearity=["tanh"]), "nonlinearity")


def test_gru_cell_reset_after_is_checked():
    """GRU(reset_after="no") silently builds a reset-after cell (bool("no") is True)."""
    p = CELLS[2].problem(np.random.default_rng(0), 2, 1, 3, 4, np.float64)
    expect_error(lambda: fastcells.GRU(p["Wx"], p["Wh"], p["b"], reset_after="no"),
                 "reset_after")


def test_empty_lengths_list_for_an_empty_batch():
    """lengths=[] for N = 0 is a valid list of N integers (NumPy makes it float64)."""
    xs, Wx, Wh, b = _lstm_problem(N=0)
    hs, _, _ = fastcells.lstm_forward(xs, Wx, Wh, b, lengths=[])
    assert hs.shape == (0, 3, 5)


def test_twin_gru_reset_before_with_no_step():
    """reference.gru_backward(reset_after=False) with T = 0: np.stack of no arrays."""
    cell = CELLS[2]
    p = cell.problem(np.random.default_rng(0), 2, 0, 3, 4, np.float64)
    _, _, cache = cell.forward(ref, p["xs"], p["Wx"], p["Wh"], p["b"], p["states"])
    g = cell.backward(ref, cache, p["dhs"], p["dfinal"])
    np.testing.assert_array_equal(g.dh0, p["dfinal"][0])


def test_bidirectional_backward_checks_dhs():
    """TimeBi*.backward reads dhs.shape[2] before any check: None, lists and 2-D arrays give
    AttributeError/IndexError."""
    for cls in BI.values():
        cell = next(c for c in CELLS if BI[c.name] is cls)
        ws = layer_weights(cell, np.random.default_rng(0), 3, 4, np.float64)
        layer = cls(*ws, *ws, **cell.kwargs)
        layer.forward(np.zeros((2, 3, 3)))
        for bad in (None, np.zeros((2, 3)), np.zeros((2, 3, 8)).tolist(), 1.5):
            try:
                layer.backward(bad)
            except (ValueError, TypeError) as e:
                assert mentions(str(e), "dhs"), e
            else:
                assert bad is None or isinstance(bad, list), f"{cls.__name__}: {bad!r} accepted"


def test_one_step_cells_check_x_and_params():
    """The cells' full-path checks call x "xs" (shape "(N, T, D)", 4-D for a 3-D x) and turn
    a 0-d x into an IndexError; invalid params are named."""
    p = CELLS[0].problem(np.random.default_rng(0), 2, 1, 3, 4, np.float64)
    h, c = p["states"]
    one = fastcells.LSTM(p["Wx"], p["Wh"], p["b"])
    for bad in (1.5, np.zeros((2, 3), np.int64), np.zeros((2, 3, 1)), None):
        expect_error(lambda: one.forward(bad, h, c), "x")
    for bad in (None, [[0.5]], 1.5):
        expect_error(lambda: fastcells.LSTM(bad, p["Wh"], p["b"]).forward(p["xs"][:, 0], h, c),
                     "Wx")


def test_mixed_dtype_params_are_named():
    """Params of two dtypes: the error blames the input (xs/x) with 'expected <the dtype of
    params[0]>', never naming the params that disagree."""
    xs, Wx, Wh, b = _lstm_problem()
    Wx32 = Wx.astype(np.float32)
    for call in (lambda: fastcells.TimeLSTM(Wx32, Wh, b).forward(xs),
                 lambda: fastcells.LSTM(Wx32, Wh, b).forward(xs[:, 0], np.zeros((2, 5)),
                                                             np.zeros((2, 5)))):
        with pytest.raises(TypeError) as info:
            call()
        assert mentions(str(info.value), "Wx") or mentions(str(info.value), "Wh"), info.value


def test_converter_dtype_errors_name_the_reference():
    """float_array's mixed-dtype message says '(the dtype of xs: ...)' in the converters too,
    which have no xs; it should name the argument that set the dtype."""
    if convert is None:
        pytest.skip("fastcells.convert is not in this build")
    w = convert.to_keras(convert.Params("lstm", *_lstm_problem()[1:], {}))
    w[0] = w[0].astype(np.float32)
    with pytest.raises(TypeError) as info:
        convert.from_keras("LSTM", w)
    assert "xs" not in str(info.value) and mentions(str(info.value), "weights[0]"), info.value


def test_clip_grads_keeps_float64_norm_of_float32_gradients():
    """The norm is documented as accumulated in float64, but np.dot runs in the gradients'
    dtype: float32 gradients of 1e20 overflow to an infinite norm and are zeroed."""
    g = np.full(4, 1e20, np.float32)
    norm = fastcells.clip_grads([g], 1.0)
    assert norm == pytest.approx(2e20)
    np.testing.assert_allclose(g, np.full(4, 0.5, np.float32), rtol=1e-6)


def test_clip_grads_leaves_inf_gradients_unchanged():
    """Documented: NaN/Inf gradients are left unchanged. An Inf norm gives rate 0, and the
    gradients are multiplied by it (Inf * 0 = NaN, the finite ones become 0)."""
    g = np.array([np.inf, 1.0])
    fastcells.clip_grads([g], 1.0)
    np.testing.assert_array_equal(g, [np.inf, 1.0])
