# The one-step cells' hot path (_lstm, _gru, _rnn: cell_forward): the argument check and the
# output allocation, in C. Generation loops call a cell once per token, and the same checks
# written in Python cost more than the step's arithmetic (~7 µs at N=1, H=128).
#
# `cell_typenum` only says yes (the call's NumPy type number) or no (-1); a "no" sends the call
# through the full validation of the functional API (fastcells._validate, via
# fastcells.layers), which converts what it can and explains what it cannot.
cimport numpy as cnp
from libc.stdint cimport int64_t


cdef inline bint ready(object a, int typenum, int ndim, Py_ssize_t d0,
                       Py_ssize_t d1) noexcept:
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


cdef inline int cell_typenum(int G, object x, object h, object c, object Wx, object Wh,
                             object b, bint b_rows) noexcept:
    """NPY_FLOAT32 or NPY_FLOAT64 when x is (N, D), h (and c, unless None) (N, H), Wx (D, G*H),
    Wh (H, G*H) and b (G*H,) (or (2, G*H) with b_rows), all of Wh's dtype (float32 or float64)
    and ready for the kernels; -1 otherwise."""
    if type(Wh) is not cnp.ndarray or type(x) is not cnp.ndarray:
        return -1
    cdef cnp.ndarray wh = <cnp.ndarray> Wh, xa = <cnp.ndarray> x
    cdef int typenum = cnp.PyArray_TYPE(wh)
    if ((typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64)
            or cnp.PyArray_NDIM(wh) != 2 or cnp.PyArray_NDIM(xa) != 2):
        return -1
    cdef Py_ssize_t H = cnp.PyArray_DIMS(wh)[0]
    cdef Py_ssize_t N = cnp.PyArray_DIMS(xa)[0], D = cnp.PyArray_DIMS(xa)[1]
    if not (ready(Wh, typenum, 2, H, G * H) and ready(x, typenum, 2, N, D)
            and ready(Wx, typenum, 2, D, G * H) and ready(h, typenum, 2, N, H)
            and (c is None or ready(c, typenum, 2, N, H))
            and (ready(b, typenum, 2, 2, G * H) if b_rows else ready(b, typenum, 1, G * H, 0))):
        return -1
    return typenum


cdef inline cnp.ndarray empty(Py_ssize_t d0, Py_ssize_t d1, int typenum):
    """A new C-contiguous (d0, d1) array of type `typenum`, uninitialized."""
    cdef cnp.npy_intp dims[2]
    dims[0] = d0
    dims[1] = d1
    return cnp.PyArray_EMPTY(2, dims, typenum, 0)


cdef inline void *array_ptr(cnp.ndarray a, int typenum) except? NULL:
    """The data of `a` for a kernel, NULL when it has no element: a sequence kernel's `def`
    takes ndarrays rather than typed memoryviews, whose acquisition costs ~0.4 µs per argument
    (a dozen per call). Its caller (fastcells.<cell>) made every array C-contiguous, aligned
    and of the call's dtype; this checks that again, cheaply, so that a mistake there raises
    instead of handing the kernel the wrong memory."""
    if cnp.PyArray_TYPE(a) != typenum or not cnp.PyArray_ISCARRAY_RO(a):
        raise TypeError(
            f"kernel argument: expected a C-contiguous aligned "
            f"{'float32' if typenum == cnp.NPY_FLOAT32 else 'float64'} array, got {a.dtype} "
            f"(C-contiguous {a.flags.c_contiguous}, aligned {a.flags.aligned})")
    return NULL if cnp.PyArray_SIZE(a) == 0 else cnp.PyArray_DATA(a)


cdef inline int array_ptrs(tuple arrays, int typenum, void **out) except -1:
    """out[k] = array_ptr(arrays[k], typenum) for every k."""
    cdef Py_ssize_t k
    for k in range(len(arrays)):
        out[k] = array_ptr(<cnp.ndarray?> arrays[k], typenum)
    return 0


cdef inline const int64_t *lengths_ptr(object lengths) except? NULL:
    """The (N,) int64 lengths for a kernel (NULL for None), checked as array_ptr does."""
    if lengths is None:
        return NULL
    if (type(lengths) is not cnp.ndarray
            or cnp.PyArray_TYPE(<cnp.ndarray> lengths) != cnp.NPY_INT64
            or not cnp.PyArray_ISCARRAY_RO(<cnp.ndarray> lengths)):
        raise TypeError("kernel argument: lengths must be None or a C-contiguous int64 array")
    return <const int64_t *> cnp.PyArray_DATA(<cnp.ndarray> lengths)
