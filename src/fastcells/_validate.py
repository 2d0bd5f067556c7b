"""Argument checks shared by the public functions: Python validates, kernels trust.

Every check raises before any kernel runs, with a message that names the function and the
argument, what was expected and what was given. Accepted arrays come back C-contiguous and
aligned, copied only when they are not already (the caller's array is never written).
"""
import functools

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# SciPy's BLAS takes 32-bit integers: every matrix the kernels hand it must fit.
_BLAS_MAX = 2**31 - 1


def raw_array(fn, name, a, ndim, dtype=None, what="", ref="xs"):
    """`a` checked (float32/float64, of `dtype` if given, `ndim` dims) but not converted:
    np.asarray(a), so that sizes can be checked before anything is copied. `ref` names the
    argument whose dtype is the call's."""
    if a is None:
        raise TypeError(f"{fn}: {name} must be an array{what}, got None")
    arr = as_array(fn, name, a)
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{fn}: {name} must have dtype float32 or float64, got {arr.dtype}")
    if dtype is not None and arr.dtype != dtype:
        raise TypeError(
            f"{fn}: {name} has dtype {arr.dtype}, expected {dtype} (the dtype of {ref}: all "
            f"arrays of one call share one dtype)")
    if arr.ndim != ndim:
        raise ValueError(
            f"{fn}: {name} must be {ndim}-D{what}, got {arr.ndim}-D with shape {arr.shape}")
    return arr


def float_array(fn, name, a, ndim, dtype=None, what="", ref="xs"):
    """`a` as a C-contiguous, aligned float32/float64 array of `ndim` dims (and of `dtype` if
    given), copied only when it is not already."""
    return c_aligned(raw_array(fn, name, a, ndim, dtype, what, ref))


def c_aligned(arr):
    """arr itself when it is C-contiguous and aligned, else such a copy (np.require, whose
    own checks cost more than the small calls they serve)."""
    flags = arr.flags
    if flags.c_contiguous and flags.aligned:
        return arr
    return np.require(arr, requirements=("C", "A"))


def as_array(fn, name, a):
    """np.asarray(a), with NumPy's complaint about a ragged or odd object naming `name`."""
    try:
        return np.asarray(a)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{fn}: {name} must be an array of numbers, got {type(a).__name__} "
                         f"that NumPy cannot convert ({e})") from None


def check_shape(fn, name, arr, expected, letters):
    """Raise unless arr.shape == expected; `letters` spells the expected shape, e.g. '(D, 4H)'."""
    if arr.shape != tuple(expected):
        raise ValueError(
            f"{fn}: {name} must have shape {letters} = {tuple(expected)}, got {arr.shape}")


def check_flag(fn, name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be True or False, got {value!r}")
    return bool(value)


# The expected shapes in Sequence's messages, by G (gate blocks) and layout.
_GATES = {1: "H", 3: "3H", 4: "4H"}
_XS_WHAT = {False: " of shape (N, T, D)", True: " of shape (T, N, D)"}
_WH_WHAT = {G: f" of shape (H, {g})" for G, g in _GATES.items()}
_WX_WHAT = {G: f" of shape (D, {g})" for G, g in _GATES.items()}


class _Of:
    """' of shape <letters>', formatted only when an error message uses it."""

    __slots__ = ("letters",)

    def __init__(self, letters):
        self.letters = letters

    def __str__(self):
        return f" of shape {self.letters}"


class Sequence:
    """The checked core arguments of a *_forward call: xs, Wx, Wh and lengths.

    Attributes: xs, Wx, Wh (checked arrays), N, T, D, H, G, dtype, time_major, reverse,
    lengths (None or a C-contiguous int64 copy); rows (xs as its (N*T, D) matrix, a view) and
    X (the matrix the training kernels take, see below).
    """

    def __init__(self, fn, G, xs, Wx, Wh, lengths, time_major, reverse=False, xs_name="xs"):
        self.fn, self.G = fn, G
        self.time_major = check_flag(fn, "time_major", time_major)
        self.reverse = check_flag(fn, "reverse", reverse)
        g = _GATES[G]
        # shapes and dtypes first, then the size limit, and only then any copy (the messages
        # are formatted only when a check fails: this runs on every call)
        xs = raw_array(fn, "xs", xs, 3, what=_XS_WHAT[self.time_major], ref=xs_name)
        self.dtype = xs.dtype
        if self.time_major:
            self.T, self.N, self.D = xs.shape
        else:
            self.N, self.T, self.D = xs.shape
        Wh = raw_array(fn, "Wh", Wh, 2, self.dtype, what=_WH_WHAT[G], ref=xs_name)
        self.H = Wh.shape[0]
        if Wh.shape != (self.H, G * self.H):
            check_shape(fn, "Wh", Wh, (self.H, G * self.H), f"(H, {g}) with H = {self.H}")
        Wx = raw_array(fn, "Wx", Wx, 2, self.dtype, what=_WX_WHAT[G], ref=xs_name)
        if Wx.shape != (self.D, G * self.H):
            check_shape(fn, "Wx", Wx, (self.D, G * self.H),
                        f"(D, {g}) with D = {self.D} (from {xs_name}), H = {self.H} (from Wh)")
        rows = self.N * self.T
        if max(rows, self.D, self.H, 1) * max(self.D, G * self.H, 1) > _BLAS_MAX:
            raise ValueError(
                f"{fn}: N*T = {rows} rows, D = {self.D}, H = {self.H} give a matrix of more "
                f"than the 32-bit BLAS limit of {_BLAS_MAX} elements")
        self.xs = c_aligned(xs)
        self.Wh = c_aligned(Wh)
        self.Wx = c_aligned(Wx)
        self.lengths = lengths_array(fn, lengths, self.N, self.T)

    @property
    def rows(self):
        """xs as the (N*T, D) matrix of layout rows (_seq.pxd): a view, never a copy. The
        inference kernels take it with reverse=True too: they walk reversed positions."""
        return self.xs.reshape(self.N * self.T, self.D)

    @functools.cached_property
    def X(self):
        """The (N*T, D) matrix the training kernels take: `rows`, or with reverse=True each
        sequence of xs reversed within its length (see `order`), copied on first use only."""
        return self.order(self.xs).reshape(self.N * self.T, self.D)

    def order(self, a):
        """With reverse=True, the sequence array `a` (in the layout of xs) with each sequence
        reversed within its own length, padding left in place: position t < lengths[n] takes
        position lengths[n]-1-t. The permutation is its own inverse, so the same call puts the
        outputs (and the gradients of xs) back. Without reverse, `a` itself."""
        return sequence_order(a, self.reverse, self.lengths, self.time_major)

    @property
    def seq_shape(self):
        """The shape of hs (and dhs): (N, T, H), or (T, N, H) when time_major."""
        return (self.T, self.N, self.H) if self.time_major else (self.N, self.T, self.H)

    @property
    def empty(self):
        """True when there is nothing to compute (no sequence, no step or no hidden unit)."""
        return self.N == 0 or self.T == 0 or self.H == 0

    def vector(self, name, a, shape, letters):
        arr = raw_array(self.fn, name, a, len(shape), self.dtype, what=_Of(letters))
        if arr.shape != shape:
            check_shape(self.fn, name, arr, shape, letters)
        return c_aligned(arr)

    def state(self, name, a):
        """An initial state: (N, H), zeros when None; always a fresh writable copy."""
        if a is None:
            return np.zeros((self.N, self.H), self.dtype)
        return np.array(self.vector(name, a, (self.N, self.H), "(N, H)"), order="C")


def sequence_order(a, reverse, lengths, time_major):
    """See Sequence.order: a new C-contiguous array, or `a` itself when not reverse."""
    if not reverse:
        return a
    taxis = 0 if time_major else 1
    if lengths is None:
        return np.ascontiguousarray(np.flip(a, axis=taxis))
    T = a.shape[taxis]
    t = np.arange(T)[None, :]
    L = lengths[:, None]
    idx = np.where(t < L, L - 1 - t, t)  # (N, T)
    if time_major:
        idx = idx.T
    return np.take_along_axis(a, idx[:, :, None], axis=taxis)


def lengths_array(fn, lengths, N, T):
    """None, or `lengths` as a C-contiguous int64 copy after checking shape (N,) and 0..T."""
    if lengths is None:
        return None
    arr = as_array(fn, "lengths", lengths)
    if arr.size == 0 and not isinstance(lengths, np.ndarray):
        arr = arr.astype(np.int64)  # an empty list for an empty batch: NumPy calls it float
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{fn}: lengths must be integers, got dtype {arr.dtype}")
    if arr.shape != (N,):
        raise ValueError(f"{fn}: lengths must have shape (N,) = ({N},), got {arr.shape}")
    bad = np.flatnonzero((arr < 0) | (arr > T))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{fn}: lengths must be in 0..T = 0..{T}, got lengths[{i}] = {arr[i]}")
    return np.array(arr, dtype=np.int64, order="C")


def check_cache(fn, cache, cls, forward):
    """The cache of a training forward, or a clear error (None means training=False)."""
    if cache is None:
        raise ValueError(
            f"{fn}: cache is None: {forward} was called with training=False, which keeps "
            f"nothing for backward; call it with training=True")
    if not isinstance(cache, cls):
        raise TypeError(f"{fn}: cache must be the cache returned by {forward}, "
                        f"got {type(cache).__name__}")
    return cache


def output_grad(fn, name, a, cache):
    """dL/dhs: None, or an array shaped like hs (the forward's layout) of the cache's dtype."""
    if a is None:
        return None
    letters = "(T, N, H)" if cache.time_major else "(N, T, H)"
    arr = float_array(fn, name, a, 3, cache.dtype, what=f" of shape {letters} like hs")
    check_shape(fn, name, arr, cache.seq_shape, letters)
    return arr


def state_grad(fn, name, a, cache):
    """dL/d(final state): (N, H) zeros when None; always a fresh writable copy."""
    if a is None:
        return np.zeros((cache.N, cache.H), cache.dtype)
    arr = float_array(fn, name, a, 2, cache.dtype, what=" of shape (N, H)")
    check_shape(fn, name, arr, (cache.N, cache.H), "(N, H)")
    return np.array(arr, order="C")
