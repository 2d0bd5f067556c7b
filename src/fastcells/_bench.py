"""Benchmark of the fast kernels against their NumPy twins and PyTorch (``python -m fastcells``).

What it measures, per cell (lstm, gru, rnn: every cell whose ``fastcells.<cell>_forward`` exists)
and float32 shape (N, T, D, H), batch-first, zero initial states:

- ``train``: one training step, ``forward`` then ``backward`` with a fixed random ``dhs``;
- ``infer``: ``forward(..., training=False)``;

for three implementations of the same computation on the same weights:

- ``fastcells``: ``fastcells.<cell>_forward`` / ``_backward`` (SciPy's BLAS + fused C loops);
- ``twin``: ``fastcells.reference.<cell>_forward`` / ``_backward``, the NumPy twin;
- ``torch``: ``torch.nn.LSTM/GRU/RNN(batch_first=True)`` carrying the same weights (mapped by
  ``native_to_torch``); training is forward + ``backward(dhs)`` through autograd on a fresh
  input tensor each call (so ``dxs`` is computed too), inference runs under
  ``torch.inference_mode()``. Optional: without torch its columns are left out.

Verify, then benchmark (STYLE practice 10): before anything of a cell and shape is timed,
fastcells' outputs, final states and gradients, and torch's, are compared with the twin's
(max|a - b| / max|b| <= 1e-4); a mismatch aborts the run with the offending arrays named.

Timing: each sample is the mean of k back-to-back calls (k makes a sample last >= 5 ms); a case
reports the median of its samples, their min-max spread and their count. The number of samples
is planned against a time budget (``--budget``): every case gets the same share of time, capped
at ``--repeat`` samples, so the cheap shapes get many samples and the large ones few (at least
one). The plan is redone before each case from the time actually left.

This module does not pin thread counts: numpy's and scipy's OpenBLAS read theirs when they are
loaded. ``python -m fastcells`` (``__main__.py``) sets the environment and re-executes the
interpreter before either is imported; the pytest-benchmark suite in ``bench/`` reuses the
problem, runner and verification helpers below.

The full benchmark, ``python -m fastcells bench`` (``_bench_suite.py``), and ``bench/`` share
the rest of what is here too: the named shapes (``SHAPES``), the onnxruntime peer
(``onnx_model``, ``OnnxRunner``; inference only), the FLOP count of a call (``step_flops``,
the one place it is counted), peak memory (``peak_memory``), the SGEMM yardstick
(``sgemm_gflops``), and the two phases of a run (``verify_problem``, ``time_cases``).
"""
import argparse
import gc
import math
import os
import platform
import sys
import time

import numpy as np

import fastcells
from fastcells import reference

__all__ = [
    "CELLS", "MODES", "IMPLS", "PEERS", "SHAPES", "DEFAULT_SHAPES", "QUICK_SHAPES", "RTOL",
    "THREAD_VARS", "VerificationError", "Problem", "make_problem", "available_cells",
    "have_torch", "have_onnxruntime", "impls_for", "make_runner", "native_to_torch",
    "onnx_model", "reference_results", "verify", "rel_err", "step_flops", "peak_memory",
    "sgemm_gflops", "parse_shapes", "shape_label", "shape_name", "env_threads",
    "machine_info", "verify_problem", "time_cases", "build_parser", "main",
]

DTYPE = np.float32
RTOL = 1e-4  # max|a - b| / max|b| for float32, as in the unit tests
CELLS = ("lstm", "gru", "rnn")
MODES = ("train", "infer")
IMPLS = ("fastcells", "twin", "torch")  # what ``python -m fastcells`` (the quick job) runs
# Every implementation, in table order: onnxruntime is inference only (``impls_for``).
PEERS = ("fastcells", "twin", "torch", "onnxruntime")
# The named shapes (N, T, D, H) of the full benchmark (issue 6); any NxTxDxH works too.
SHAPES = {
    "tiny": (1, 100, 32, 64),
    "small": (16, 50, 64, 128),
    "medium": (32, 100, 128, 256),
    "large": (64, 50, 512, 1024),
}
DEFAULT_SHAPES = (SHAPES["tiny"], SHAPES["medium"], SHAPES["large"])  # the quick job's
QUICK_SHAPES = DEFAULT_SHAPES[:2]
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
# Torch's gate block k is our block TORCH_BLOCKS[cell][k]: torch LSTM [i, f, g, o] vs our
# [f, g, i, o]; torch GRU [r, z, n] vs our [z, r, h].
TORCH_BLOCKS = {"lstm": (2, 0, 1, 3), "gru": (1, 0, 2), "rnn": (0,)}
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

MIN_SAMPLE_TIME = 0.005  # seconds: a sample is the mean of k calls lasting at least this long
SWITCH_PAUSE = 0.2       # seconds of rest between two libraries when threads > 1 (see below)
THREADED_ROUNDS = 3      # turns of the implementations per group when threads > 1 (time_cases)


class VerificationError(AssertionError):
    """An implementation's results differ from the NumPy twin's: nothing of it may be timed."""


# ----------------------------------------------------------------------------------------------
# Problems and shapes
# ----------------------------------------------------------------------------------------------
def shape_label(shape):
    return "x".join(str(s) for s in shape)


def shape_name(shape):
    """"medium" for a named shape of SHAPES, else its NxTxDxH label."""
    for name, s in SHAPES.items():
        if s == tuple(shape):
            return name
    return shape_label(shape)


def parse_shapes(text):
    """"tiny,32x100x128x256" -> ((1, 100, 32, 64), (32, 100, 128, 256)): names of SHAPES or
    NxTxDxH."""
    shapes = []
    for item in text.split(","):
        if item.strip().lower() in SHAPES:
            shapes.append(SHAPES[item.strip().lower()])
            continue
        parts = item.strip().lower().split("x")
        if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"shape {item!r} is neither one of {', '.join(SHAPES)} nor "
                             "NxTxDxH with positive integers")
        shapes.append(tuple(int(p) for p in parts))
    return tuple(shapes)


def available_cells(cells=CELLS):
    """The cells of ``cells`` whose fast functions exist in this build of fastcells."""
    return [c for c in cells if getattr(fastcells, f"{c}_forward", None) is not None
            and getattr(fastcells, f"{c}_backward", None) is not None]


def have_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def have_onnxruntime():
    """onnxruntime and onnx (to build the model with ``onnx.helper``) are both importable."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def impls_for(mode, impls=PEERS):
    """The implementations of ``impls`` that can run ``mode``: onnxruntime is inference only."""
    return [i for i in impls if mode == "infer" or i != "onnxruntime"]


def env_threads():
    """The thread count in force for BLAS, from OPENBLAS_NUM_THREADS (1 when unset)."""
    try:
        return max(1, int(os.environ.get("OPENBLAS_NUM_THREADS") or 1))
    except ValueError:
        return 1


def step_flops(cell, shape, mode):
    """Floating-point operations of one call: the one place they are counted.

    Only the matrix products, 2 FLOPs per multiply-add; the pointwise work (activations, gate
    arithmetic, bias, the column sums of db) is ignored. With G gate blocks:

    - forward (``infer``): the input projection ``X @ Wx``, 2*N*T*D*G*H, and the recurrence
      ``h_{t-1} @ Wh`` over T steps, 2*N*T*H*G*H;
    - ``train`` adds the backward, twice each forward product: ``dxs = dA @ Wx.T`` and
      ``dWx = X.T @ dA`` (2 x 2*N*T*D*G*H), ``dh = dA @ Wh.T`` and ``dWh = H.T @ dA``
      (2 x 2*N*T*H*G*H); so a training step is 3x the forward.

    The same count applies to every implementation (the GRU's reset-after split of its
    recurrent product, or a skipped first product with h0 = 0, do not change it), so GFLOP/s
    and time ratios tell the same story.
    """
    N, T, D, H = shape
    G = GATES[cell]
    forward = 2 * N * T * D * G * H + 2 * N * T * H * G * H
    return 3 * forward if mode == "train" else forward


class Problem:
    """Float32 inputs of one cell and shape: xs (N, T, D), Wx (D, GH), Wh (H, GH), b, dhs."""

    def __init__(self, cell, shape, xs, Wx, Wh, b, dhs):
        self.cell, self.shape = cell, tuple(shape)
        self.xs, self.Wx, self.Wh, self.b, self.dhs = xs, Wx, Wh, b, dhs

    @property
    def label(self):
        return shape_label(self.shape)


def make_problem(cell, shape, seed=0):
    """Random problem; weights and biases ~ U(-1/sqrt(H), 1/sqrt(H)) like torch's default init.

    b is (G*H,) for lstm and rnn, (2, 3H) for gru (reset_after=True: input and recurrent rows).
    """
    N, T, D, H = shape
    G = GATES[cell]
    rng = np.random.default_rng([seed, CELLS.index(cell), *shape])
    k = 1.0 / math.sqrt(H)
    xs = rng.standard_normal((N, T, D), dtype=DTYPE)
    Wx = rng.uniform(-k, k, (D, G * H)).astype(DTYPE)
    Wh = rng.uniform(-k, k, (H, G * H)).astype(DTYPE)
    b = rng.uniform(-k, k, (2, 3 * H) if cell == "gru" else (G * H,)).astype(DTYPE)
    dhs = rng.standard_normal((N, T, H), dtype=DTYPE)
    return Problem(cell, shape, xs, Wx, Wh, b, dhs)


# ----------------------------------------------------------------------------------------------
# Our layout <-> torch's
# ----------------------------------------------------------------------------------------------
def _take_blocks(a, order):
    """Concatenate the H-row blocks of a (G*H, ...) in ``order`` along axis 0."""
    H = a.shape[0] // len(order)
    return np.concatenate([a[k * H:(k + 1) * H] for k in order], axis=0)


def native_to_torch(cell, Wx, Wh, b):
    """Torch's weight_ih_l0 (G*H, D), weight_hh_l0 (G*H, H), bias_ih_l0, bias_hh_l0 (G*H,).

    Weights are transposed (torch is out-by-in) and their gate blocks reordered. LSTM and RNN
    have one bias: it goes to bias_ih and bias_hh is zero (torch adds the two). GRU's b rows 0
    and 1 are torch's bias_ih and bias_hh.
    """
    order = TORCH_BLOCKS[cell]
    w_ih = _take_blocks(np.asarray(Wx).T, order)
    w_hh = _take_blocks(np.asarray(Wh).T, order)
    if cell == "gru":
        b_ih, b_hh = _take_blocks(b[0], order), _take_blocks(b[1], order)
    else:
        b_ih, b_hh = _take_blocks(b, order), np.zeros_like(b)
    return {name: np.ascontiguousarray(a) for name, a in
            (("weight_ih_l0", w_ih), ("weight_hh_l0", w_hh), ("bias_ih_l0", b_ih),
             ("bias_hh_l0", b_hh))}


def torch_grads_to_native(cell, module):
    """dWx (D, G*H), dWh (H, G*H), db from the .grad of torch's parameters (our layout)."""
    back = tuple(int(j) for j in np.argsort(TORCH_BLOCKS[cell]))  # our block j = torch's back[j]
    g = {name: getattr(module, name).grad.numpy() for name in
         ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")}
    dWx = _take_blocks(g["weight_ih_l0"], back).T
    dWh = _take_blocks(g["weight_hh_l0"], back).T
    if cell == "gru":
        db = np.stack([_take_blocks(g["bias_ih_l0"], back), _take_blocks(g["bias_hh_l0"], back)])
    else:  # both torch biases receive the gradient of their sum
        db = _take_blocks(g["bias_ih_l0"], back)
    return dWx, dWh, db


# ----------------------------------------------------------------------------------------------
# Runners: one implementation of one cell on one problem
# ----------------------------------------------------------------------------------------------
def _final_states(cell, final):
    if cell == "lstm":
        return {"h_T": final[0], "c_T": final[1]}
    return {"h_T": final}


class ArrayRunner:
    """fastcells or the twin: ``train()`` and ``infer()`` are the timed calls; ``results``
    names their arrays for ``verify``."""

    library = None

    def __init__(self, impl, p):
        mod = fastcells if impl == "fastcells" else reference
        self.impl, self.p = impl, p
        self.library = "scipy BLAS" if impl == "fastcells" else "numpy BLAS"
        self.forward = getattr(mod, f"{p.cell}_forward")
        self.backward = getattr(mod, f"{p.cell}_backward")

    def train(self):
        p = self.p
        hs, final, cache = self.forward(p.xs, p.Wx, p.Wh, p.b)
        return hs, final, self.backward(cache, p.dhs)

    def infer(self):
        p = self.p
        return self.forward(p.xs, p.Wx, p.Wh, p.b, training=False)

    def results(self, mode, out):
        hs, final = out[0], out[1]
        res = {"hs": hs, **_final_states(self.p.cell, final)}
        if mode == "train":
            res.update(out[2]._asdict())  # dxs, dWx, dWh, db, dh0 [, dc0]
        return res


class TorchRunner:
    """torch.nn.LSTM/GRU/RNN(batch_first=True) with the problem's weights."""

    library = "torch"

    def __init__(self, impl, p):
        import torch
        self.torch, self.impl, self.p = torch, impl, p
        N, T, D, H = p.shape
        cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[p.cell]
        self.module = cls(D, H, batch_first=True)
        with torch.no_grad():
            for name, a in native_to_torch(p.cell, p.Wx, p.Wh, p.b).items():
                getattr(self.module, name).copy_(torch.from_numpy(a))
        self.dy = torch.from_numpy(p.dhs)

    def train(self):
        x = self.torch.from_numpy(self.p.xs).requires_grad_()  # a fresh leaf each call
        for param in self.module.parameters():  # optimizer.zero_grad(set_to_none=True)
            param.grad = None
        out, state = self.module(x)
        out.backward(self.dy)
        return out, state, x

    def infer(self):
        with self.torch.inference_mode():
            return self.module(self.torch.from_numpy(self.p.xs))

    def results(self, mode, out):
        hs, state = out[0], out[1]  # state: (h_n, c_n) for lstm, else h_n; each (1, N, H)
        if self.p.cell == "lstm":
            final = (state[0][0].detach().numpy(), state[1][0].detach().numpy())
        else:
            final = state[0].detach().numpy()
        res = {"hs": hs.detach().numpy(), **_final_states(self.p.cell, final)}
        if mode == "train":
            dWx, dWh, db = torch_grads_to_native(self.p.cell, self.module)
            res.update(dxs=out[2].grad.numpy(), dWx=dWx, dWh=dWh, db=db)
        return res


ONNX_OPSET, ONNX_IR_VERSION = 14, 8  # as in tests/test_onnx.py: IR 8 loads in onnxruntime


def onnx_model(p):
    """A one-node ONNX model of p's cell with p's weights, batch-first like the others.

    Graph: X [N, T, D] -> Transpose -> ``LSTM``/``GRU``/``RNN`` (W, R, B initializers from
    ``convert.to_onnx``, attributes from ``convert.onnx_attributes``; GRU
    ``linear_before_reset=1``) -> Y [T, 1, N, H] -> Squeeze -> Transpose -> hs [N, T, H], and
    Y_h (Y_c) [1, N, H] -> Squeeze -> h_T (c_T) [N, H]. The transposes are in the graph because
    onnxruntime's CPU kernels refuse ``layout=1`` (batch-first): they are part of the timed
    work, as fastcells' own batch-first handling is. No initial states: zeros, as for the others.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from fastcells import convert

    N, T, D, H = p.shape
    options = {"lstm": {}, "gru": {"reset_after": True}, "rnn": {"nonlinearity": "tanh"}}
    params = [convert.Params(p.cell, p.Wx, p.Wh, p.b, options[p.cell])]
    W, R, B = convert.to_onnx(params)
    inits = [numpy_helper.from_array(a, n) for a, n in ((W, "W"), (R, "R"), (B, "B"))]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "axis0"))
    states = ["Y_h", "Y_c"] if p.cell == "lstm" else ["Y_h"]
    finals = ["h_T", "c_T"] if p.cell == "lstm" else ["h_T"]
    nodes = [
        helper.make_node("Transpose", ["xs"], ["X"], perm=[1, 0, 2]),
        helper.make_node(p.cell.upper(), ["X", "W", "R", "B"], ["Y", *states],
                         **convert.onnx_attributes(params)),
        helper.make_node("Squeeze", ["Y", "axis1"], ["Y_tnh"]),
        helper.make_node("Transpose", ["Y_tnh"], ["hs"], perm=[1, 0, 2]),
    ]
    nodes += [helper.make_node("Squeeze", [s, "axis0"], [f]) for s, f in zip(states, finals)]
    info = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes, f"fastcells_bench_{p.cell}", [info("xs", TensorProto.FLOAT, [N, T, D])],
        [info("hs", TensorProto.FLOAT, [N, T, H])]
        + [info(f, TensorProto.FLOAT, [N, H]) for f in finals], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    model.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(model)
    return model


class OnnxRunner:
    """onnxruntime's CPUExecutionProvider on ``onnx_model(p)``: inference only.

    The session runs ``threads`` intra-op threads and one inter-op thread (sequential
    execution), with onnxruntime's default graph optimizations and thread spinning.
    """

    library = "onnxruntime"

    def __init__(self, impl, p, threads=1):
        import onnxruntime
        self.impl, self.p = impl, p
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        self.session = onnxruntime.InferenceSession(
            onnx_model(p).SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.session.get_outputs()]
        self.feeds = {"xs": p.xs}

    def train(self):
        raise NotImplementedError("onnxruntime runs inference only")

    def infer(self):
        return self.session.run(None, self.feeds)

    def results(self, mode, out):
        return dict(zip(self.names, out))


def make_runner(impl, p, threads=None):
    """The runner of ``impl`` (one of PEERS) on problem p; ``threads`` is onnxruntime's
    intra-op thread count (default: ``env_threads()``); torch's is set globally by the caller
    (``torch.set_num_threads``), the BLAS libraries' by the environment."""
    if impl == "torch":
        return TorchRunner(impl, p)
    if impl == "onnxruntime":
        return OnnxRunner(impl, p, env_threads() if threads is None else threads)
    return ArrayRunner(impl, p)


# ----------------------------------------------------------------------------------------------
# Peak memory of one call
# ----------------------------------------------------------------------------------------------
_PROFILER_NOISE = ("profiler_start", "profiler_stop", "Memory block of unknown size")


class _FilteredStderr:
    """Capture file descriptor 2 (where torch's profiler prints a line at every start and stop)
    and pass on, afterwards, the lines that are not that noise."""

    def __enter__(self):
        import tempfile
        sys.stderr.flush()
        self.tmp = tempfile.TemporaryFile(mode="w+b")
        self.saved = os.dup(2)
        os.dup2(self.tmp.fileno(), 2)
        return self

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.tmp.seek(0)
        for line in self.tmp.read().decode(errors="replace").splitlines():
            if not any(noise in line for noise in _PROFILER_NOISE):
                print(line, file=sys.stderr)
        self.tmp.close()
        return False


def peak_memory(runner, mode):
    """(peak, kept): bytes allocated by one call of ``runner.<mode>()`` and alive at the same
    time at the worst moment, and bytes still held by what the call returned.

    Both count the call's own allocations only, never its inputs (xs, weights, dhs): outputs,
    final states, the forward's cache, gradients and temporaries. They are the sizes asked
    of the allocator, not pages touched:

    - fastcells and the twin: ``tracemalloc`` (numpy reports its array buffers to it; fastcells
      allocates every buffer through numpy, its C code allocates nothing). The memory
      fastcells keeps between calls (its per-thread scratch buffers, the pool of freed result
      arrays) is released first (``release_memory``), so that the call's arrays are counted
      as they are on a first call. BLAS's internal buffers, allocated
      once per process by OpenBLAS, are not counted.
    - torch: the CPU allocator's events in ``torch.profiler`` (``profile_memory=True``): the
      running sum of the sizes allocated and freed during the call, sorted by time; the peak of
      that sum is the peak, its end value what was kept. oneDNN/OpenMP internals are not
      counted, like BLAS's.

    The training step kept value is its outputs and gradients (the cache is freed with it);
    inference keeps its outputs and final states.
    """
    fn = getattr(runner, mode)
    gc.collect()
    if runner.impl == "torch":
        from torch.profiler import ProfilerActivity, profile
        with _FilteredStderr():
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                out = fn()
        events = sorted((e for e in prof.profiler.kineto_results.events()
                         if e.name() == "[memory]"), key=lambda e: e.start_ns())
        total = peak = 0
        for e in events:
            total += e.nbytes()
            peak = max(peak, total)
        del out
        return peak, total
    import tracemalloc
    from fastcells._common import release_memory
    ours = runner.impl == "fastcells"
    if ours:
        release_memory()
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        if ours:  # what the call keeps is what it returns, not the buffers it caches
            release_memory()
        kept, peak = tracemalloc.get_traced_memory()
        del out
    finally:
        if started:
            tracemalloc.stop()
    return peak - base, kept - base


# ----------------------------------------------------------------------------------------------
# The machine's single-thread SGEMM throughput, the yardstick of GFLOP/s
# ----------------------------------------------------------------------------------------------
SGEMM_SIZE = 1024


def sgemm_gflops(n=SGEMM_SIZE, samples=7, min_time=0.05):
    """GFLOP/s of C = A @ B, float32 n x n x n, through SciPy's BLAS (``scipy.linalg.blas.sgemm``,
    the OpenBLAS scipy bundles), at the thread count in force; one sample per entry of the
    returned list (each the mean of back-to-back calls lasting >= ``min_time``), after a warm-up.
    Fortran-ordered operands and a preallocated C, so nothing is copied."""
    from scipy.linalg.blas import sgemm
    rng = np.random.default_rng(0)
    a = np.asfortranarray(rng.standard_normal((n, n), dtype=np.float32))
    b = np.asfortranarray(rng.standard_normal((n, n), dtype=np.float32))
    c = np.zeros((n, n), np.float32, order="F")

    def call():
        return sgemm(1.0, a, b, 0.0, c, overwrite_c=True)

    (_, first) = _timed(call)
    (_, second) = _timed(call)
    k = max(1, math.ceil(min_time / second))
    out = []
    for _ in range(samples):
        t0 = time.perf_counter()
        for _ in range(k):
            call()
        out.append(2.0 * n ** 3 / ((time.perf_counter() - t0) / k) / 1e9)
    return out


# ----------------------------------------------------------------------------------------------
# Verification
# ----------------------------------------------------------------------------------------------
def rel_err(actual, expected):
    """max|actual - expected| / max|expected| (nan if a shape differs or a value is not finite)."""
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if a.shape != e.shape:
        return math.nan
    if e.size == 0:
        return 0.0
    scale = float(np.max(np.abs(e)))
    err = float(np.max(np.abs(a - e)))
    return err / scale if scale > 0 else err


def reference_results(p):
    """The twin's results for p: ({name: array} of the training step, that of inference).

    The twin's inference outputs are those of its training forward (hs and final states).
    """
    twin = ArrayRunner("twin", p)
    train = twin.results("train", twin.train())
    infer = {k: train[k] for k in ("hs", "h_T", "c_T") if k in train}
    return train, infer


def verify(actual, expected, what, tol=RTOL):
    """Compare every array of ``actual`` with ``expected``; return the largest relative error.

    Raises VerificationError naming each array off by more than ``tol`` (or of another shape or
    dtype, or not finite, or missing from ``actual`` when the twin has it, torch excepted for
    dh0/dc0, which it does not compute here).
    """
    problems, worst = [], 0.0
    for name, e in expected.items():
        if name not in actual:
            if name not in ("dh0", "dc0"):
                problems.append(f"{name}: missing")
            continue
        a = np.asarray(actual[name])
        if a.dtype != np.asarray(e).dtype:
            problems.append(f"{name}: dtype {a.dtype} != {np.asarray(e).dtype}")
        err = rel_err(a, e)
        if not err <= tol:  # catches nan
            shapes = "" if a.shape == np.shape(e) else f" (shape {a.shape} != {np.shape(e)})"
            problems.append(f"{name}: max|a-b|/max|b| = {err:.3e} > {tol:.0e}{shapes}")
        else:
            worst = max(worst, err)
    if problems:
        raise VerificationError(
            f"{what} does not match the NumPy twin:\n    " + "\n    ".join(problems))
    return worst


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------
class Case:
    """One timed thing: cell, shape, mode, impl, its callable and, once measured, its samples."""

    def __init__(self, p, mode, runner):
        self.p, self.mode, self.impl, self.runner = p, mode, runner.impl, runner
        self.fn = getattr(runner, mode)
        self.est = None      # seconds per call: from the verification run, then measured
        self.err = None      # max relative error against the twin
        self.samples = []    # seconds per call, one per sample
        self.k = None        # calls per sample, fixed when the first sample is taken

    @property
    def sample_cost(self):
        return (self.k or max(1, math.ceil(MIN_SAMPLE_TIME / self.est))) * self.est

    def sample(self):
        """Take one sample: the mean time of k back-to-back calls (gc off)."""
        if self.k is None:
            self.k = max(1, math.ceil(MIN_SAMPLE_TIME / self.est))
        fn, k, clock = self.fn, self.k, time.perf_counter
        enabled = gc.isenabled()
        gc.disable()
        try:
            t0 = clock()
            for _ in range(k):
                fn()
            t = (clock() - t0) / k
        finally:
            if enabled:
                gc.enable()
        self.samples.append(t)
        return t

    @property
    def median(self):
        return float(np.median(self.samples))


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _refine(fn, first):
    """Seconds per call: the first call's time, or for a cheap call the second's.

    (Phase 2 corrects the estimate again with its first sample.)
    """
    if first > 0.1:
        return first
    return _timed(fn)[1]


def plan_samples(costs, budget, nmax, nmin=2, min_time=0.1):
    """Samples per case so that sum(n_i * cost_i) <= budget where possible.

    Floors first: a case gets at least nmin samples, and a cheap one at least ``min_time``
    seconds of them (at most nmax); when the floors alone do not fit the budget, the most
    expensive cases drop to 1 sample first (cheap ones keep their floor: it costs little and
    one sample of a short call says little). The time left is then shared equally: every case
    gets the same share x, n_i = clamp(x // cost_i, floor_i, nmax), so the cheap cases stop at
    nmax and leave their time to the expensive ones.
    """
    floors = [max(1, min(nmax, max(nmin, math.ceil(min_time / c)))) for c in costs]
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        if sum(f * c for f, c in zip(floors, costs)) <= budget or costs[i] * nmin < min_time:
            break
        floors[i] = 1

    def counts(x):
        return [max(f, min(nmax, int(x // c))) for f, c in zip(floors, costs)]

    def total(x):
        return sum(n * c for n, c in zip(counts(x), costs))

    lo, hi = 0.0, max(costs) * nmax
    if total(hi) <= budget:
        return counts(hi)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if total(mid) <= budget else (lo, mid)
    return counts(lo)


class _Pacer:
    """Rest between two libraries when threads > 1.

    After a multi-threaded call an OpenBLAS or OpenMP pool keeps spinning for ~0.1 s and steals a
    core from whatever runs next (2-3x slower GEMMs, sometimes 10x); numpy, scipy and torch each
    have their own pool, so switching libraries waits for the previous pool to go to sleep.
    """

    def __init__(self, threads):
        self.threads, self.last = threads, None

    def switch_to(self, library):
        if self.threads > 1 and self.last is not None and library != self.last:
            time.sleep(SWITCH_PAUSE)
        self.last = library


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor() or platform.machine(), ""
    model, flags = None, ""
    for line in info.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "Processor") and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = value
    simd = [s for s in ("avx512f", "avx2", "fma", "asimd") if s in flags.split()]
    return model or platform.machine(), ", ".join(simd)


def _versions():
    import scipy
    out = [f"fastcells {fastcells.__version__}", f"numpy {np.__version__}",
           f"scipy {scipy.__version__}"]
    try:
        import torch
        out.append(f"torch {torch.__version__}")
    except ImportError:
        out.append("torch not installed")
    return out


def machine_info(threads):
    """Markdown lines describing the machine, the libraries and the thread settings."""
    model, simd = _cpu_model()
    cores = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    env = " ".join(f"{v}={os.environ.get(v, 'unset')}" for v in THREAD_VARS)
    lines = [
        f"- CPU: {model}" + (f" ({simd})" if simd else "")
        + f"; {cores} logical cores, {usable} usable",
        f"- {platform.system()} {platform.release()}, Python {platform.python_version()}; "
        + ", ".join(_versions()),
        f"- threads: {threads} ({env}, fastcells.get_num_threads()={_fastcells_threads()}"
        + (f", torch.get_num_threads()={_torch_threads()}" if have_torch() else "") + ")",
    ]
    return lines


def _fastcells_threads():
    import fastcells
    return fastcells.get_num_threads()


def _torch_threads():
    import torch
    return torch.get_num_threads()


def _fmt_ms(seconds):
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def _fmt_time(case):
    if case is None:
        return "–"
    if len(case.samples) < 2:
        return _fmt_ms(case.median)
    return (f"{_fmt_ms(case.median)} ({_fmt_ms(min(case.samples))}–"
            f"{_fmt_ms(max(case.samples))})")


def _fmt_ratio(num, den):
    if num is None or den is None:
        return "–"
    return f"{num.median / den.median:.3g}×"


def table(cases, impls):
    """Markdown table: one row per cell, mode and shape; one time column per implementation."""
    by_key = {(c.p.cell, c.p.shape, c.mode, c.impl): c for c in cases}
    rows = []
    for cell in dict.fromkeys(c.p.cell for c in cases):
        for mode in MODES:
            for shape in dict.fromkeys(c.p.shape for c in cases if c.p.cell == cell):
                got = {impl: by_key.get((cell, shape, mode, impl)) for impl in impls}
                if got["fastcells"] is None:
                    continue
                fc = got["fastcells"]
                row = [cell, mode, "×".join(map(str, shape))]
                row += [_fmt_time(got[impl]) for impl in impls]
                row += [_fmt_ratio(got[impl], fc) for impl in impls if impl != "fastcells"]
                row.append("/".join(str(len(got[i].samples)) if got[i] else "–" for i in impls))
                row.append(f"{fc.err:.1e}")
                rows.append(row)
    names = {"fastcells": "fastcells ms", "twin": "NumPy twin ms", "torch": "torch ms"}
    head = ["cell", "step", "N×T×D×H"] + [names[i] for i in impls]
    head += [f"{i}/fc" for i in impls if i != "fastcells"]
    head += ["n (" + "/".join("fc" if i == "fastcells" else i for i in impls) + ")", "max err"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m fastcells",
        description="Time fastcells against its NumPy twins and PyTorch (float32, CPU), after "
                    "checking that their results agree.")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="threads for every library (default 1)")
    parser.add_argument("--cells", default=",".join(CELLS),
                        help="comma-separated cells among lstm,gru,rnn (default all; cells "
                             "whose fast kernels are not in this build are skipped)")
    parser.add_argument("--shapes", default=None, metavar="NxTxDxH,...",
                        help="float32 shapes, NxTxDxH or tiny/small/medium/large (default "
                             + ",".join(map(shape_label, DEFAULT_SHAPES)) + ")")
    parser.add_argument("--repeat", type=int, default=None, metavar="R",
                        help="most samples per case (default 15, 5 with --quick); slow cases "
                             "get fewer to stay within the budget")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="target run time, verification included (default 45, 10 with "
                             "--quick)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: the two small default shapes, fewer samples")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    return parser


def parse_args(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    cells = [c.strip().lower() for c in args.cells.split(",") if c.strip()]
    unknown = [c for c in cells if c not in CELLS]
    if unknown or not cells:
        parser.error(f"--cells: unknown {','.join(unknown) or '(none)'}; choose from "
                     + ",".join(CELLS))
    args.cells = cells
    try:
        args.shapes = (parse_shapes(args.shapes) if args.shapes
                       else QUICK_SHAPES if args.quick else DEFAULT_SHAPES)
    except ValueError as e:
        parser.error(f"--shapes: {e}")
    if args.repeat is None:
        args.repeat = 5 if args.quick else 15
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.budget is None:
        args.budget = 10.0 if args.quick else 45.0
    return args


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def _twin_reference(p):
    """The twin's results (training step, inference) and the times of its forward and backward
    (its cache is freed on return)."""
    twin = ArrayRunner("twin", p)
    out, t_fwd = _timed(lambda: twin.forward(p.xs, p.Wx, p.Wh, p.b))
    cache = out[2]
    grads, t_bwd = _timed(lambda: twin.backward(cache, p.dhs))
    ref_train = twin.results("train", (out[0], out[1], grads))
    ref_infer = {k: ref_train[k] for k in ("hs", "h_T", "c_T") if k in ref_train}
    return ref_train, ref_infer, t_fwd, t_bwd


def verify_problem(p, impls, pacer, modes=MODES, threads=1):
    """Phase 1 for one problem: run the twin once (its results are the reference), then run
    every other implementation of ``impls`` in every mode of ``modes`` once and check it
    (``verify``; a mismatch raises VerificationError before anything is timed).

    These calls also warm up and give the cost estimates. Returns the Cases, in the order
    mode, impl (onnxruntime only for ``infer``), and {impl: largest error against the twin}.
    """
    pacer.switch_to("numpy BLAS")
    ref_train, ref_infer, t_fwd, t_bwd = _twin_reference(p)
    cases, errs = [], {}
    for mode in modes:
        for impl in impls_for(mode, impls):
            runner = make_runner(impl, p, threads)
            case = Case(p, mode, runner)
            pacer.switch_to(runner.library)
            if impl == "twin" and mode == "train":
                case.est, case.err = t_fwd + t_bwd, 0.0
            elif impl == "twin":  # the twin's forward is its inference
                case.est, case.err = _refine(case.fn, t_fwd), 0.0
            else:
                res, t_first = _timed(case.fn)
                what = f"{impl} {p.cell} {mode} {p.label}"
                case.err = verify(runner.results(mode, res),
                                  ref_train if mode == "train" else ref_infer, what)
                del res
                errs[impl] = max(errs.get(impl, 0.0), case.err)
                case.est = _refine(case.fn, t_first)
            cases.append(case)
    return cases, errs


def case_groups(cases):
    """The runs of consecutive cases of one problem and mode (one case per implementation), as
    (index of the first, list of cases)."""
    i = 0
    while i < len(cases):
        j = i + 1
        while j < len(cases) and cases[j].p is cases[i].p and cases[j].mode == cases[i].mode:
            j += 1
        yield i, cases[i:j]
        i = j


def time_cases(cases, deadline, repeat, pacer, done=None, before=None):
    """Phase 2: time every case, group by group (``case_groups``: fastcells and its peers on
    one problem and mode), replanning the sample counts before each group so that all of them
    fit before ``deadline`` (``plan_samples``, at most ``repeat`` samples per case).

    Within a group the implementations take their samples in turns, so that the machine's
    drift in speed (±30% within minutes on a shared host) falls on all of them alike and
    their ratios compare like with like. On one thread the turns are single samples; with
    more, each change of library costs a pause (``_Pacer``), so the turns are
    THREADED_ROUNDS blocks of samples. The first turn is one sample, which corrects the
    case's estimate downwards (a first call can be much slower than the rest); when the calls
    per sample it implies differ from those it was taken with, it was a warm-up and is dropped.
    ``before(i, group)`` and ``done(i, group)``, if given, are called just before and after
    each group's samples (i: the index of its first case).
    """
    threaded = pacer.threads > 1
    pause = SWITCH_PAUSE * THREADED_ROUNDS if threaded else 0.0  # per case, all its turns

    for i, group in case_groups(cases):
        if before is not None:
            before(i, group)
        for case in group:
            pacer.switch_to(case.runner.library)
            # Noise only ever adds time: the smaller of the two estimates is the better one (a
            # first sample stalled by another process would otherwise leave the case 1 sample).
            case.est = min(case.sample(), case.est)
            k = max(1, math.ceil(MIN_SAMPLE_TIME / case.est))
            if k != case.k:  # the estimate was off: that sample was a warm-up
                case.samples.clear()
                case.k = k
        left = deadline - time.perf_counter() - pause * (len(cases) - i)
        spent = sum(c.sample_cost * len(c.samples) for c in group)  # already, in this group
        counts = plan_samples([c.sample_cost for c in cases[i:]], left + spent, repeat)
        # the samples still wanted, in `rounds` more turns (the estimate's was the first)
        more = [max(0, n - len(c.samples)) for c, n in zip(group, counts)]
        rounds = min(THREADED_ROUNDS - 1, max(more)) if threaded else max(more)
        for r in range(1, rounds + 1):
            for case, n, m in zip(group, counts, more):
                target = n - m + math.ceil(m * r / rounds)
                if len(case.samples) < target:
                    pacer.switch_to(case.runner.library)
                    while len(case.samples) < target:
                        case.sample()
        if done is not None:
            done(i, group)


def run(args):
    """Verify every cell and shape, then time them; return the Cases and the impls used."""
    start = time.perf_counter()
    deadline = start + args.budget
    impls = [i for i in IMPLS if i != "torch" or (not args.no_torch and have_torch())]
    import fastcells
    fastcells.set_num_threads(args.threads)
    if "torch" in impls:
        import torch
        torch.set_num_threads(args.threads)
    cells = available_cells(args.cells)
    pacer = _Pacer(args.threads)

    # Phase 1: verify everything (these calls also warm up and give the cost estimates).
    cases = []
    for cell in cells:
        for shape in args.shapes:
            t0 = time.perf_counter()
            p = make_problem(cell, shape)
            more, errs = verify_problem(p, impls, pacer, threads=args.threads)
            cases += more
            _log(f"verified {cell} {p.label}: max rel err vs twin "
                 + ", ".join(f"{i} {e:.1e}" for i, e in errs.items())
                 + f" ({time.perf_counter() - t0:.1f} s)")

    # Phase 2: time everything.
    time_cases(cases, deadline, args.repeat, pacer)
    _log(f"done in {time.perf_counter() - start:.1f} s")
    return cases, impls, cells


def main(args):
    """Run the benchmark for parsed ``args`` and print the report; return the exit status."""
    mismatched = [v for v in THREAD_VARS if os.environ.get(v) != str(args.threads)]
    if mismatched:
        _log(f"warning: {', '.join(mismatched)} not set to {args.threads}: numpy's and scipy's "
             "BLAS may use other thread counts; run through `python -m fastcells`")
    try:
        cases, impls, cells = run(args)
    except VerificationError as e:
        _log("\n" + "!" * 78 + f"\nVERIFICATION FAILED: {e}\n"
             "Nothing was timed: fastcells must match its NumPy twin before it is benchmarked.\n"
             + "!" * 78)
        return 1
    skipped = [c for c in args.cells if c not in cells]
    print(f"## fastcells benchmark: float32, batch-first, {args.threads} thread"
          + ("s" if args.threads > 1 else ""))
    print()
    for line in machine_info(args.threads):
        print(line)
    if skipped:
        print(f"- skipped (no fast kernel in this build yet): {', '.join(skipped)}")
    if "torch" not in impls:
        print("- torch: " + ("left out (--no-torch)" if args.no_torch else "not installed"))
    print()
    if not cases:
        print("Nothing to time.")
        return 0
    for line in table(cases, impls):
        print(line)
    print()
    print("ms per call: median (min–max) of n samples, each the mean of back-to-back calls "
          f"lasting >= {MIN_SAMPLE_TIME * 1e3:.0f} ms. train = forward + backward with a random "
          "dhs; infer = forward with training=False"
          + (" (torch: inference_mode)" if "torch" in impls else "")
          + ". x/fc = median ratio, > 1 means fastcells is faster. max err = max|fc - twin| / "
          f"max|twin| over outputs, final states and gradients, checked (<= {RTOL:.0e}"
          + (", torch too" if "torch" in impls else "") + ") before any timing.")
    return 0
