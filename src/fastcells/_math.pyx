"""Hooks into the shared C helpers, for the tests (the kernels call them directly)."""
from cython cimport floating

from ._csrc cimport fc_activation_f32, fc_activation_f64

_ACTIVATIONS = {"exp": 0, "sigmoid": 1, "tanh": 2}


def _activation(str name, const floating[::1] x, floating[::1] y):
    """y[...] = name(x) with the vectorized activations of csrc/fc_math.h."""
    cdef int act = _ACTIVATIONS[name]
    cdef Py_ssize_t n = x.shape[0]
    if n == 0:
        return
    with nogil:
        if floating is float:
            fc_activation_f32(act, n, &x[0], &y[0])
        else:
            fc_activation_f64(act, n, &x[0], &y[0])
