"""What the three cells' public modules share: the cache base, the training buffers and the
preparation of a backward call. Checks are in _validate; the loops in the _<cell>.pyx kernels."""
import math
import os
import threading

import numpy as np

from . import _blas, threads
from ._validate import check_cache, output_grad, sequence_order, state_grad

# Inference keeps the gates of a chunk of steps (their input projection is one GEMM per chunk),
# so its memory is the outputs plus O(N*H), whatever T is: INFERENCE_CHUNK steps at most, and
# fewer (INFERENCE_CHUNK_MIN at least) where their gates would exceed half of the L2 cache, from
# which each step then reads its rows back instead of from L3. Measured on an AMD EPYC (1 MiB
# L2), float32 inference, time with chunks of 64 steps over this rule (8 to 21 steps here),
# medians interleaved in one process: 2 threads LSTM 16x50x64x128 1.07, GRU 1.07, GRU
# 32x100x128x256 1.06, RNN 1.03; 1 thread GRU 32x100x128x256 1.04, LSTM 1.02; the others (and
# 64x50x512x1024) 0.98-1.02. A batch of one, whose each chunk packs Wx again, keeps 64 steps
# up to H = 512 (LSTM, float32): chunks of 16 cost tiny LSTM inference (1x100x32x64) 6%.
INFERENCE_CHUNK = 64
INFERENCE_CHUNK_MIN = 8
INFERENCE_CHUNK_BYTES = threads.L2_BYTES // 2


class SequenceCache:
    """What a *_forward(training=True) keeps for its backward (treat it as opaque).

    The forward's input X ((N*T, D), layout rows), Wx, Wh, lengths and sizes; each cell's
    subclass adds its own (N*T, width) arrays, listed in its docstring.
    """

    __slots__ = ("X", "Wx", "Wh", "lengths", "N", "T", "D", "H", "time_major", "reverse",
                 "dtype", "xs_shape", "seq_shape")

    def __init__(self, seq):
        self.X, self.Wx, self.Wh, self.lengths = seq.X, seq.Wx, seq.Wh, seq.lengths
        self.N, self.T, self.D, self.H = seq.N, seq.T, seq.D, seq.H
        self.time_major, self.reverse, self.dtype = seq.time_major, seq.reverse, seq.dtype
        self.xs_shape, self.seq_shape = seq.xs.shape, seq.seq_shape

    @property
    def empty(self):
        return self.N == 0 or self.T == 0 or self.H == 0


def outputs(seq):
    """hs (in the layout of xs; every element is written by the kernel, zeros when there is
    nothing to compute) and its (N*T, H) matrix view for the kernels."""
    hs = np.zeros(seq.seq_shape, seq.dtype) if seq.empty else result_empty(seq.seq_shape,
                                                                            seq.dtype)
    return hs, hs.reshape(seq.N * seq.T, seq.H)


def states_by_step(seq, initial):
    """An (N*T, H) array of the state entering each step, with step 0 set to `initial`."""
    a = aligned_empty(seq.seq_shape, seq.dtype)
    if not seq.empty:
        a[(0, slice(None)) if seq.time_major else (slice(None), 0)] = initial
    return a.reshape(seq.N * seq.T, seq.H)


def aligned_empty(shape, dtype):
    """np.empty whose data starts on a 64-byte boundary (NumPy only promises 16): the kernels'
    64-byte vector loads then never straddle two cache lines. From POOL_MIN_BYTES on, the
    memory comes from the pool of freed result arrays (see _Pool); otherwise it is a view of a
    slightly larger array."""
    dtype = np.dtype(dtype)
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (int(shape),)
    n = math.prod(shape)
    if n * dtype.itemsize >= POOL_MIN_BYTES:
        return result_empty(shape, dtype)
    buf = np.empty(n + 64 // dtype.itemsize, dtype)
    start = (-_blas._misalignment(buf) % 64) // dtype.itemsize
    return buf[start:start + n].reshape(shape)


def result_empty(shape, dtype):
    """np.empty for an array the caller gets back: from the pool (64-byte aligned) from
    POOL_MIN_BYTES on, else NumPy's own."""
    dtype = np.dtype(dtype)
    n = math.prod(shape)
    if n * dtype.itemsize >= POOL_MIN_BYTES:
        return _POOL.array(tuple(shape), dtype, n * dtype.itemsize)
    return np.empty(shape, dtype)


# ---- the memory of result arrays ---------------------------------------------------------------
# A training step returns and caches arrays of N*T rows (the cache, hs, dxs) which the caller
# drops before the next step. Freed, their memory would go back to the system (glibc unmaps or
# trims it), and the next step's arrays would be page-faulted in and zeroed by the kernel page
# by page: measured here, 780 page faults and ~1.9 ms of system time per small LSTM training
# step (16x50x64x128, ~20% of it), 3800 and ~12 ms per medium one (~11%). So from
# POOL_MIN_BYTES on a result array's memory comes from, and goes back to, a pool that keeps up
# to POOL_MAX_BYTES of it for the next calls (release_memory empties it). A new buffer is the
# array's size plus POOL_SLACK bytes, so the pool adds O(1) to what a call holds.
POOL_MIN_BYTES = 1 << 16
POOL_MAX_BYTES = 1 << 28
POOL_SLACK = 4096 + 64  # a buffer's bytes beyond its size class: its stagger and alignment


def _size_class(nbytes):
    """nbytes rounded up to 2^k, 1.25, 1.5 or 1.75 * 2^k: the pool looks for a freed buffer
    among those of the request's class, so that near sizes share buffers (a buffer serves
    requests of at least four fifths of its size)."""
    k = max(0, nbytes.bit_length() - 3)
    step = 1 << k
    return -(-nbytes // step) * step


class _Lease:
    """The base of a pooled array: it exposes its block of the buffer (__array_interface__)
    and, when the array and every view of it are gone, hands the buffer back to the pool."""

    __slots__ = ("buf", "__array_interface__")

    def __init__(self, buf, start, shape, dtype):
        self.buf = buf
        self.__array_interface__ = {"data": (_blas._address(buf) + start, False),
                                    "shape": shape, "typestr": dtype.str, "version": 3}

    def __del__(self):
        pool = _POOL  # None at interpreter exit
        if pool is not None:
            pool.give(self.buf)


class _Pool:
    """Freed memory of result arrays, by size class, at most POOL_MAX_BYTES in all."""

    def __init__(self):
        self.lock = threading.RLock()  # re-entrant: a finalizer may run inside a locked block
        self.free = {}   # size class of their capacity -> [uint8 buffers]
        self.bytes = 0   # held in self.free
        self.count = 0   # arrays handed out (modulo): their stagger

    def array(self, shape, dtype, nbytes):
        """A 64-byte-aligned (uninitialized) array of `shape`, `dtype` (nbytes in all): in a
        freed buffer of the same size class that holds it, else in a new one of just its size
        (plus POOL_SLACK)."""
        size = _size_class(nbytes)
        buf = None
        with self.lock:
            buffers = self.free.get(size, ())
            for k in range(len(buffers) - 1, -1, -1):
                if buffers[k].nbytes - POOL_SLACK >= nbytes:
                    buf = buffers.pop(k)
                    self.bytes -= buf.nbytes
                    break
        if buf is None:
            buf = np.empty(nbytes + POOL_SLACK, np.uint8)
        # 64-byte aligned, and each array 7 cache lines further into a page than the one
        # before (modulo 64 lines): arrays of one call that all began at the same page offset
        # would have their rows of a step collide in the same L1 sets and alias in the store
        # buffer (4K aliasing)
        self.count = (self.count + 7) % 64
        start = -_blas._misalignment(buf) % 64 + 64 * self.count
        return np.asarray(_Lease(buf, start, shape, dtype))

    def give(self, buf):
        with self.lock:
            if self.bytes + buf.nbytes <= POOL_MAX_BYTES:
                self.free.setdefault(_size_class(buf.nbytes - POOL_SLACK), []).append(buf)
                self.bytes += buf.nbytes

    def clear(self):
        with self.lock:
            self.free, self.bytes = {}, 0


_POOL = _Pool()
if hasattr(os, "register_at_fork"):  # a fork's child starts with an empty pool, its lock free
    os.register_at_fork(after_in_child=_POOL.__init__)


# Work arrays of one kernel call, kept per thread between calls (see scratch).
_SCRATCH = threading.local()
SCRATCH_MAX_BYTES = 1 << 28  # larger ones are allocated per call and not kept
SCRATCH_MAX_VIEWS = 64  # views kept per thread (by slot, dtype and shape), then forgotten


def release_memory():
    """Give back the memory fastcells keeps between calls: the calling thread's work buffers
    (see scratch: backward's pre-activation gradients, inference's chunk of gates, the packed
    weights) and the freed memory of large result arrays (see _Pool). It goes back to the
    allocator; the next calls that need it allocate it again. Arrays you hold are not
    affected. (Another thread's work buffers are freed when that thread ends: into the pool,
    which this call then empties.)"""
    _SCRATCH.buffers, _SCRATCH.views = {}, {}
    _POOL.clear()


def scratch(shape, dtype, slot=0):
    """A 64-byte-aligned work array for the duration of one kernel call (uninitialized): a
    view of a buffer this thread keeps between calls, one per `slot` and dtype, grown to the
    largest size asked. Backward's big temporaries (dA: N*T*G*H) would otherwise be allocated,
    page-faulted in and handed back to the system on every call, which costs as much as a
    tenth of a training step. Nothing that outlives the call may be a scratch array.

    The view itself is kept too, by (slot, dtype, shape): a call that asks for what the
    previous one did gets it back without slicing and reshaping again (0.84 -> ~0.2 us a
    request measured here; an inference call makes three)."""
    views = getattr(_SCRATCH, "views", None)
    if views is None:
        views = _SCRATCH.views = {}
        _SCRATCH.buffers = {}
    key = (slot, dtype, shape)
    view = views.get(key)
    if view is not None:
        return view
    dtype = np.dtype(dtype)
    n = math.prod(shape)
    if n * dtype.itemsize > SCRATCH_MAX_BYTES:
        return aligned_empty(shape, dtype)
    buffers = _SCRATCH.buffers
    buf = buffers.get((slot, dtype))
    if buf is None or buf.size < n:
        buf = buffers[(slot, dtype)] = aligned_empty((max(n, 1),), dtype)
        views.clear()  # the views of the buffer it replaces
    if len(views) >= SCRATCH_MAX_VIEWS:
        views.clear()
    view = views[key] = buf[:n].reshape(shape)
    return view


# "No buffer" for the kernels' optional work arguments, one (0,) and one (0, 0) array per
# dtype: shared, since nothing can be written to an array without elements.
_NONE = {np.dtype(t): (np.empty(0, t), np.empty((0, 0), t)) for t in (np.float32, np.float64)}


def chunk_steps(seq):
    """The steps of an inference chunk: min(T, INFERENCE_CHUNK), or fewer when their gates
    (N*G*H a step) would exceed INFERENCE_CHUNK_BYTES, but INFERENCE_CHUNK_MIN at least."""
    fit = INFERENCE_CHUNK_BYTES // max(1, seq.N * seq.G * seq.H * seq.dtype.itemsize)
    return min(seq.T, INFERENCE_CHUNK, max(INFERENCE_CHUNK_MIN, fit))


def chunk_buffer(seq, width):
    """The inference work buffer: the gates of chunk_steps(seq) steps (scratch)."""
    return scratch((chunk_steps(seq) * seq.N, width), seq.dtype, slot="chunk")


def reverse_buffers(seq):
    """The inference work buffers of reverse=True (see _seq.project_reversed and
    scatter_reversed): Xr, one chunk's input rows gathered in processing order
    ((chunk_steps(seq)*N, D)), and Ys, one step's outputs before they go to their positions
    ((N, H)); scratch. Empty without reverse."""
    if not seq.reverse:
        return _NONE[seq.dtype][1], _NONE[seq.dtype][1]
    return (scratch((chunk_steps(seq) * seq.N, seq.D), seq.dtype, slot="Xr"),
            scratch((seq.N, seq.H), seq.dtype, slot="Ys"))


def packed_weights(dtype, N, T, *products, slot="Wp"):
    """The work buffer (scratch) for the recurrent weights, packed once per call for the
    per-step products (K, Nc) listed (see _blas.pack): empty, which makes the kernels use
    their one-row product (fc_gemv) per step, for a single sequence, or BLAS for a single step
    (packing would cost more than it saves)."""
    dtype = np.dtype(dtype)
    if N <= 1 or T <= 1:
        return _NONE[dtype][0]
    n = sum(_blas._packed_size(dtype, K, Nc) for K, Nc in products)
    return scratch((n,), dtype, slot=slot)


def units_split(seq, extra, supported=True):
    """Threads and work buffer for inference of a batch of one split by hidden units (see
    _seq.pxd and threads.for_units): (nth, scratch of H*G*H + extra*H elements), or (1, empty)
    when it does not pay, with more than one sequence, with reverse=True, and unless
    `supported` (the cell's variant has the split)."""
    nth = 1
    if supported and seq.N == 1 and not seq.reverse and not seq.empty:
        nth = threads.for_units(seq.H, seq.G, seq.T, seq.dtype.itemsize, seq.D)
    if nth == 1:
        return 1, _NONE[seq.dtype][0]
    return nth, scratch((seq.H * (seq.G * seq.H + extra),), seq.dtype, slot="units")


def row_product_weights(seq, nth=1):
    """Wh for inference's one-row product (a batch of one on one thread: fc_gemv every step):
    seq.Wh itself, or, when its rows do not start on 64-byte boundaries but could (G*H elements a
    multiple of 64 bytes), a copy in an aligned scratch buffer, over threads.UNITS_MIN_STEPS steps
    or more and for a Wh within the L2 cache (a larger one streams from memory each step whatever
    its alignment, and its copy would be kept). NumPy aligns arrays to 16 bytes only, and fc_gemv
    reads the columns of a misaligned row before and after its aligned body through two more
    unaligned vectors per row (measured, 1x100x32x64 inference on 1 thread, Wh 16 or 48 bytes past
    a boundary, interleaved in one process, the copy included: GRU 75.6 -> 72.8 us, LSTM 95.9 ->
    93.2, RNN 31.1-32.3 -> 26.7; with Wh aligned by the caller, GRU takes 70). Not in training,
    whose batch-of-one step gains 1-3% from it: its peak memory would grow by the copy (tiny LSTM,
    1x100x32x64: 0.44 -> 0.51 MB)."""
    Wh = seq.Wh
    if (seq.N != 1 or nth != 1 or seq.T < threads.UNITS_MIN_STEPS
            or Wh.shape[1] * seq.dtype.itemsize % 64 or Wh.nbytes > threads.L2_BYTES
            or _blas._misalignment(Wh) == 0):
        return Wh
    aligned = scratch(Wh.shape, seq.dtype, slot="Wh")
    np.copyto(aligned, Wh)
    return aligned


def packed_input_weights(seq):
    """The work buffer for Wx packed once per inference call: its chunked input projection
    runs as packed GEMMs (one per sequence for batch-first input, one per chunk for
    time-major, see _seq.project; each thread's own sequences on a team), which round every row
    alike whatever the number of threads. Empty with reverse=True (whose gathered rows make
    one BLAS GEMM per chunk, on one thread)."""
    if seq.reverse:
        return _NONE[seq.dtype][0]
    return packed_weights(seq.dtype, seq.N, seq.T, (seq.D, seq.G * seq.H), slot="Wxp")


class Backward:
    """The checked arguments and zeroed results of a *_backward call.

    Attributes: cache; dY ((N*T, H) or a (1, H) zero row) and has_dy; dh (and dc) — the
    final-state gradients, copied, which the kernel turns into dh0 (dc0) in place; dX, dWx, dWh
    and db shaped like their arguments, for the kernel to fill (zeros when there is nothing to
    compute); run (False in that case).
    """

    def __init__(self, fn, forward, cache, cache_cls, dhs, final_grads, G, b_shape):
        """final_grads: {name: array or None}; b_shape(H) -> the shape of b."""
        cache = check_cache(fn, cache, cache_cls, forward)
        self.cache = cache
        N, T, D, H, dtype = cache.N, cache.T, cache.D, cache.H, cache.dtype
        dY = output_grad(fn, "dhs", dhs, cache)
        self.has_dy = dY is not None
        if self.has_dy:  # into the order the kernel ran the steps in (reverse=True)
            dY = sequence_order(dY, cache.reverse, cache.lengths, cache.time_major)
        self.dY = dY.reshape(N * T, H) if self.has_dy else np.zeros((1, H), dtype)
        self.states = [state_grad(fn, name, a, cache) for name, a in final_grads.items()]
        self.run = not cache.empty
        new = result_empty if self.run else np.zeros  # the kernel writes every element
        self.dX = new((N * T, D), dtype)
        self.dWx = new((D, G * H), dtype)
        self.dWh = new((H, G * H), dtype)
        self.db = new(b_shape(H), dtype)

    @property
    def dxs(self):
        c = self.cache
        return sequence_order(self.dX.reshape(c.xs_shape), c.reverse, c.lengths, c.time_major)
