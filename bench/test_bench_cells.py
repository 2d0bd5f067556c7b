"""Training step and inference forward of every cell, fastcells vs its peers, per shape and
thread count.

One case per cell, shape (``_bench.SHAPES``: tiny, small, medium, large), mode and
implementation: fastcells, the NumPy twin, torch, and for inference onnxruntime (a one-node
model built with ``onnx.helper``, ``_bench.onnx_model``). ``benchmark.group`` is
"<cell> <mode> <shape name> <NxTxDxH> <threads>thr", so the implementations of one computation
at one thread count sit in one table of the report and pytest-benchmark prints their ratios.
Each case first runs once and checks its outputs, final states and (train) gradients against
the twin's, then times that same call:

- train: ``forward`` + ``backward`` with a fixed random ``dhs`` (torch: the module's forward and
  ``backward(dhs)`` on a fresh input tensor, so ``dxs`` is computed too);
- infer: ``forward(..., training=False)`` (torch: under ``torch.inference_mode()``;
  onnxruntime: ``session.run``).

Threads are fixed per pytest process (see conftest.py: OPENBLAS_NUM_THREADS, OMP_NUM_THREADS
and MKL_NUM_THREADS on the command line); the count is the ``threads`` parameter of every case
(its id ends in ``-<N>thr``) and part of its group, so the saved runs of 1 and 2 threads can be
compared side by side.

The cases of the large shape (64x50x512x1024, seconds per call) run in pedantic mode with
PEDANTIC_ROUNDS rounds of one call, the checking call being their warm-up; the others let
pytest-benchmark calibrate. ``extra_info`` holds the thread count, the FLOPs of a call
(``_bench.step_flops``), the GFLOP/s of the median and the error against the twin. Cells
without a fast kernel in this build, and peers that are not installed, skip.
"""
import pytest

from fastcells import _bench

THREADS = _bench.env_threads()  # conftest.py has set the variables before this import
SHAPES = tuple(_bench.SHAPES.items())
PEDANTIC_SHAPES = {_bench.SHAPES["large"]}
PEDANTIC_ROUNDS = 3

CASES = [
    pytest.param(cell, shape, mode, impl, THREADS,
                 id=f"{cell}-{name}-{mode}-{impl}-{THREADS}thr")
    for cell in _bench.CELLS
    for name, shape in SHAPES
    for mode in _bench.MODES
    for impl in _bench.impls_for(mode)
]


@pytest.mark.parametrize("cell, shape, mode, impl, threads", CASES)
def test_cell(benchmark, twin_results, cell, shape, mode, impl, threads):
    if not _bench.available_cells([cell]):
        pytest.skip(f"fastcells.{cell}_forward is not in this build")
    if impl == "torch" and not _bench.have_torch():
        pytest.skip("PyTorch is not installed")
    if impl == "onnxruntime" and not _bench.have_onnxruntime():
        pytest.skip("onnx and onnxruntime are not both installed")
    p, expected = twin_results(cell, shape)
    runner = _bench.make_runner(impl, p, threads)
    fn = getattr(runner, mode)

    # Verify, then benchmark: this call is also the warm-up.
    out = fn()
    err = _bench.verify(runner.results(mode, out), expected[mode],
                        f"{impl} {cell} {mode} {p.label}")
    del out

    flops = _bench.step_flops(cell, shape, mode)
    benchmark.group = f"{cell} {mode} {_bench.shape_name(shape)} {p.label} {threads}thr"
    benchmark.extra_info.update(cell=cell, shape=p.label, mode=mode, impl=impl,
                                threads=threads, flops=flops, max_rel_err_vs_twin=err)
    if shape in PEDANTIC_SHAPES:
        benchmark.pedantic(fn, rounds=PEDANTIC_ROUNDS, iterations=1, warmup_rounds=0)
    else:
        benchmark(fn)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["gflops_median"] = flops / stats.stats.median / 1e9
