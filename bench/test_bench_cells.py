"""Training step and inference forward of every cell, fastcells vs the NumPy twin vs torch.

One case per cell, shape, mode and implementation; ``benchmark.group`` is "cell mode shape", so
the three implementations of one computation sit in one table of the report and
pytest-benchmark prints their ratios. Each case first runs once and checks its outputs, final
states and (train) gradients against the twin's, then times that same call:

- train: ``forward`` + ``backward`` with a fixed random ``dhs`` (torch: the module's forward and
  ``backward(dhs)`` on a fresh input tensor, so ``dxs`` is computed too);
- infer: ``forward(..., training=False)`` (torch: under ``torch.inference_mode()``).

The cases of the large shape (64x50x512x1024, seconds per call for the twin) run in pedantic
mode with PEDANTIC_ROUNDS rounds of one call, the checking call being their warm-up; the others
let pytest-benchmark calibrate (at least 5 rounds, about 1 s per case). Cells without a fast
kernel in this build, and torch when it is not installed, skip.
"""
import pytest

from fastcells import _bench

SHAPES = _bench.DEFAULT_SHAPES
PEDANTIC_SHAPES = {(64, 50, 512, 1024)}
PEDANTIC_ROUNDS = 3

CASES = [
    pytest.param(cell, shape, mode, impl,
                 id=f"{cell}-{_bench.shape_label(shape)}-{mode}-{impl}")
    for cell in _bench.CELLS
    for shape in SHAPES
    for mode in _bench.MODES
    for impl in _bench.IMPLS
]


@pytest.mark.parametrize("cell, shape, mode, impl", CASES)
def test_cell(benchmark, twin_results, cell, shape, mode, impl):
    if not _bench.available_cells([cell]):
        pytest.skip(f"fastcells.{cell}_forward is not in this build")
    if impl == "torch" and not _bench.have_torch():
        pytest.skip("PyTorch is not installed")
    p, expected = twin_results(cell, shape)
    runner = _bench.make_runner(impl, p)
    fn = getattr(runner, mode)

    # Verify, then benchmark: this call is also the warm-up.
    out = fn()
    err = _bench.verify(runner.results(mode, out), expected[mode],
                        f"{impl} {cell} {mode} {p.label}")
    del out

    benchmark.group = f"{cell} {mode} {p.label}"
    benchmark.extra_info.update(cell=cell, shape=p.label, mode=mode, impl=impl,
                                max_rel_err_vs_twin=err)
    if shape in PEDANTIC_SHAPES:
        benchmark.pedantic(fn, rounds=PEDANTIC_ROUNDS, iterations=1, warmup_rounds=0)
    else:
        benchmark(fn)
