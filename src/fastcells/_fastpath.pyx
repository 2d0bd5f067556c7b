"""The one-step cells' argument check, in C: generation loops call a cell once per token, and
the same checks written in Python cost more than the step's arithmetic (~7 µs at N=1, H=128).

`cell_ready` only says yes or no; a "no" sends the call through the full validation of the
functional API (fastcells._validate), which converts what it can and explains what it cannot.
"""
cimport numpy as cnp

cnp.import_array()


cdef inline bint ready(object a, int typenum, int ndim, Py_ssize_t d0, Py_ssize_t d1):
    """An exact ndarray of dtype `typenum` in native byte order, C-contiguous and aligned,
    of shape (d0,) or (d0, d1)."""
    if type(a) is not cnp.ndarray:
        return False
    cdef cnp.ndarray arr = <cnp.ndarray> a
    if (cnp.PyArray_TYPE(arr) != typenum or cnp.PyArray_NDIM(arr) != ndim
            or not cnp.PyArray_ISCARRAY_RO(arr) or not cnp.PyArray_ISNOTSWAPPED(arr)):
        return False
    cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(arr)
    return dims[0] == d0 and (ndim == 1 or dims[1] == d1)


def cell_ready(int G, x, states, Wx, Wh, b, bint b_rows):
    """(N, H) when x is (N, D), every state (N, H), Wx (D, G*H), Wh (H, G*H) and b (G*H,)
    (or (2, G*H) with b_rows), all float32 or float64 like Wh and ready for the kernels;
    None otherwise."""
    if type(Wh) is not cnp.ndarray:
        return None
    cdef cnp.ndarray wh = <cnp.ndarray> Wh
    cdef int typenum = cnp.PyArray_TYPE(wh)
    if (typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64) or cnp.PyArray_NDIM(wh) != 2:
        return None
    cdef Py_ssize_t H = cnp.PyArray_DIMS(wh)[0]
    if not ready(Wh, typenum, 2, H, G * H) or type(x) is not cnp.ndarray:
        return None
    cdef cnp.ndarray xa = <cnp.ndarray> x
    if cnp.PyArray_NDIM(xa) != 2:
        return None
    cdef Py_ssize_t N = cnp.PyArray_DIMS(xa)[0], D = cnp.PyArray_DIMS(xa)[1]
    if not (ready(x, typenum, 2, N, D) and ready(Wx, typenum, 2, D, G * H)
            and (ready(b, typenum, 2, 2, G * H) if b_rows else ready(b, typenum, 1, G * H, 0))):
        return None
    for s in states:
        if not ready(s, typenum, 2, N, H):
            return None
    return N, H
