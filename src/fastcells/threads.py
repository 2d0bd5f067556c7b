"""How many threads fastcells' recurrent loops use: ``set_num_threads`` / ``get_num_threads``.

The per-step work of a sequence (the recurrent product and the fused pointwise pass) is split
across threads: the product by column panels, the pointwise pass by sequences, with a barrier
after each. Every number is computed by one thread in the same order whatever their count, so
results are bitwise identical for any setting. The default is ``OMP_NUM_THREADS`` when set,
else the cores this process may run on.

The one-off products of training (input projection, weight gradients, dxs) run on the same
threads, through fastcells' own GEMM (split by column panels, or rows for narrow products), so
training calls no BLAS: OpenBLAS's thread pool, whose idle workers keep spinning for ~0.1 s
after each multi-threaded call, no longer contends with fastcells' threads. A loop stays on one
thread when its per-step work is too small to pay for the barriers (small N*H, or a single
step), and when another thread of the process is already running a threaded loop (the pool is
shared; results are the same either way). Inference of a batch of one, whose per-step product
is a single row, splits the hidden units instead (each thread keeps its units' columns of Wh
in its own core's cache), from MIN_UNITS_WORK per step on (LSTM: H >= 128), or a quarter of
that when Wh exceeds the L1 data cache (LSTM and GRU H = 64 in float32 on a 32 KiB L1), the
pool's workers are awake (after an idle spell such a short call runs alone rather than wake
them) and a round trip between two of the pool's threads, measured at most once a second, is
short.
"""
import operator
import os
import time

from . import _blas

__all__ = ["set_num_threads", "get_num_threads"]

# Below this many multiply-adds of the recurrent product per thread and step, another thread
# costs more in synchronization (two barriers per step, ~1 µs each) than it saves.
MIN_WORK_PER_THREAD = 1 << 17
# Inference of a batch of one splits its hidden units among threads (for_units) from this much
# work per step on: G*H*(H + 64), the multiply-adds of h @ Wh plus ~64 per gate and unit for the
# pointwise pass. Below it the barrier of every step (~0.25 µs measured between two cores here)
# eats what another thread saves. Measured, time on 2 threads over 1: LSTM H = 96 0.96x, 128
# 0.78x, 1024 0.62x; GRU H = 160 0.85x, 256 0.66x; RNN H = 256 1.00x, 362 0.57x.
MIN_UNITS_WORK = 3 << 15
# ... and from a quarter of that when Wh does not fit one core's L1 data cache (L1D_BYTES): one
# thread then streams all of Wh from L2 every step, while each of two holds its half in its own
# L1. Measured on a 32 KiB-L1 CPU (AMD EPYC, 2 threads over 1, 1x100x32xH inference): LSTM
# H = 64 (Wh 64 KiB) 0.72x, GRU H = 64 (48 KiB) 0.73x, RNN H = 128 (64 KiB) ~1.0x; below the
# threshold the barrier costs more: LSTM H = 48 (36 KiB) ~1.0x, RNN H = 96 (36 KiB) 2.7x, and
# whenever Wh fits L1 (GRU H = 48, 27 KiB: 1.2x).
MIN_UNITS_WORK_PAST_L1 = 3 << 13
# ... and, split for the cache alone (below MIN_UNITS_WORK: under a microsecond of work a step
# between two barriers, where the threads also read each other's units of h), while a round
# trip of a cache line between two of the pool's threads (round_trip_ns) takes at most
# MAX_SPLIT_ROUND_TRIP_NS. That depends on where the threads run: in a virtual machine the host
# moves the vCPUs, and here the round trip between the two went from 330-600 ns to 86-126 ns
# within a minute, GRU 1x100x32x64 inference on 2 threads taking 137-141 us, then 60 us (72 us
# on one thread, either way).
MAX_SPLIT_ROUND_TRIP_NS = 200
ROUND_TRIP_TTL = 1.0  # seconds a measured round trip is used for
ROUND_TRIP_TRIPS = 256  # at most (fc_round_trip_ns stops after 0.2 ms)
UNITS_MIN_STEPS = 8  # and over this many steps (the copy of Wh per call pays off)
UNIT_BLOCK = 16  # hidden units per block of the split (_seq.pxd)


def _cache_bytes(level, fallback):
    """This CPU's data (or unified) cache of a level per core, from Linux sysfs, or fallback
    when it cannot be read."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in sorted(os.listdir(base)):
            if not entry.startswith("index"):
                continue
            with open(os.path.join(base, entry, "level")) as f:
                found = f.read().strip()
            with open(os.path.join(base, entry, "type")) as f:
                kind = f.read().strip()
            if found == str(level) and kind in ("Data", "Unified"):
                with open(os.path.join(base, entry, "size")) as f:
                    size = f.read().strip().upper()
                scale = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
                return int(size.rstrip("KM")) * scale
    except (OSError, ValueError):
        pass
    return fallback


L1D_BYTES = _cache_bytes(1, 32 << 10)
L2_BYTES = _cache_bytes(2, 1 << 20)
# Inference of a batch on a team split by sequences (rows_split): each thread a register tile
# of rows (8) at least.
ROWS_PER_THREAD = 8


def _default_threads():
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if first.isdigit() and int(first) >= 1:
        return int(first)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


_num_threads = _default_threads()


def set_num_threads(n):
    """Use up to ``n`` threads (an integer >= 1) in the recurrent loops from now on."""
    global _num_threads
    if isinstance(n, bool):
        raise TypeError(f"set_num_threads: n must be an integer >= 1, got {n!r}")
    try:
        value = operator.index(n)
    except TypeError:
        raise TypeError(f"set_num_threads: n must be an integer >= 1, got {n!r}") from None
    if value < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {value}")
    _num_threads = value


def get_num_threads():
    """The most threads the recurrent loops use (see ``set_num_threads``)."""
    return _num_threads


def for_loop(N, H, GH, packed):
    """Threads for a loop whose per-step product is (N x H) @ (H x GH) (backward: its
    transpose), training or inference: 1 without a packed product (a batch of one or a single
    step), else as many as the setting allows while each keeps a row of the batch, a panel (16
    columns) of the narrower side of the product and MIN_WORK_PER_THREAD multiply-adds."""
    if packed.size == 0:
        return 1
    work = N * H * GH
    nth = min(_num_threads, N, max(1, min(H, GH) // 16), max(1, work // MIN_WORK_PER_THREAD))
    return max(1, nth)


def for_batch(N, H, G, packed, itemsize=4):
    """(threads, split by sequences) for a loop over a batch whose per-step product is
    (N x H) @ (H x G*H): for_loop's count, and rows_split's choice for it."""
    nth = for_loop(N, H, G * H, packed)
    return nth, rows_split(N, H, G, nth, itemsize)


def rows_split(N, H, G, nth, itemsize=4):
    """Whether inference of a batch on nth threads splits it by sequences, each thread running
    all the steps of its rows alone with no barrier (the sequences do not meet), rather than
    each step's product by column panels with barriers every step: when each thread keeps
    ROWS_PER_THREAD rows (a register tile) and either Wh (G*H*H elements of `itemsize` bytes)
    fits one core's L2 (L2_BYTES) or each thread keeps 4 tiles of rows: every thread then
    reads all of Wh each step, where a panel split reads its share, and with few rows per
    byte of Wh it would wait on memory. Measured on an AMD EPYC (1 MiB L2), 2 threads,
    interleaved in one process, time by panels over time by sequences: LSTM 16x50x64x128
    1.04-1.07, 24x50x64x128 1.10, 32x100x128x256 (Wh 1 MiB) 1.02-1.05, 64x50x512x1024 (16 MiB,
    32 rows a thread) 0.97-1.00; GRU 1.04, 1.07, 1.05 at the same shapes; RNN 1.30, 1.04,
    1.08; LSTM 4x50x64x128 (2 rows a thread) 0.87."""
    rows = N // max(1, nth)
    fits = G * H * H * itemsize <= L2_BYTES
    return nth > 1 and rows >= ROWS_PER_THREAD and (fits or rows >= 4 * ROWS_PER_THREAD)


_round_trip = [None, -float("inf")]  # ns (None: not measurable), time.monotonic() taken


def round_trip_ns():
    """The round trip of a cache line between the calling thread and a worker of the pool,
    in ns (the median of bursts over ROUND_TRIP_TRIPS trips at most, once both run: a sleeping
    worker's wake-up is not counted), measured again when the last measure is older than
    ROUND_TRIP_TTL seconds; None when no worker can run (another thread holds the pool) or
    none comes within 0.2 ms and then 1 ms more on a second try (asleep and slow to wake)."""
    now = time.monotonic()
    if now - _round_trip[1] > ROUND_TRIP_TTL:
        ns = _blas._round_trip_ns(ROUND_TRIP_TRIPS)
        _round_trip[:] = [ns if ns >= 0 else None, now]
    return _round_trip[0]


def for_units(H, G, T, itemsize=4, D=0):
    """Threads for inference of a batch of one split by hidden units (per step: (1 x H) @
    (H x G*H), then the pointwise pass): 1 below MIN_UNITS_WORK (MIN_UNITS_WORK_PAST_L1 when
    Wh, G*H*H elements of `itemsize` bytes, exceeds L1D_BYTES) or UNITS_MIN_STEPS steps (each
    call copies Wh into the threads' slices first: worth it over enough steps only), else as
    many as the setting allows while each keeps a block of UNIT_BLOCK units (and, split for the
    cache alone, MIN_UNITS_WORK_PAST_L1 of the work, but 2 at least, and only while the pool's
    workers are there for a run of its size, T*G*H*(D + H) multiply-adds (_blas._pool_ready:
    after an idle spell they sleep, and such a run would not wait for them), and round_trip_ns()
    is at most MAX_SPLIT_ROUND_TRIP_NS)."""
    work = G * H * (H + 64)
    past_l1 = G * H * H * itemsize > L1D_BYTES
    if work < (MIN_UNITS_WORK_PAST_L1 if past_l1 else MIN_UNITS_WORK) or T < UNITS_MIN_STEPS:
        return 1
    nth = min(_num_threads, -(-H // UNIT_BLOCK))
    if work < MIN_UNITS_WORK and nth > 1:  # split for the cache only: 2 threads, more with
        nth = min(nth, max(2, work // MIN_UNITS_WORK_PAST_L1))  # the work, near cores only
        if not _blas._pool_ready(T * G * H * (D + H) * (2 if itemsize == 8 else 1)):
            return 1
        trip = round_trip_ns()
        if trip is None or trip > MAX_SPLIT_ROUND_TRIP_NS:
            return 1
    return max(1, nth)
