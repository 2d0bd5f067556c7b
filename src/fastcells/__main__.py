"""``python -m fastcells``: benchmark fastcells against its NumPy twins and PyTorch.

Prints the machine and a markdown table of training-step and inference times (see
``fastcells._bench`` for what is measured and how; ``python -m fastcells --help`` for options).

``python -m fastcells bench [options]`` is the full benchmark instead (4 shapes, 1 and 2
threads, onnxruntime too, GFLOP/s against SGEMM, peak memory, JSON and a PNG chart): see
``fastcells._bench_suite`` and ``python -m fastcells bench --help``. It starts one child
process per thread count with the variables below set, so it never re-executes itself.

Thread counts are fixed before any BLAS is loaded. numpy and scipy each bundle their own
OpenBLAS (fastcells calls scipy's through ``scipy.linalg.cython_blas``, the NumPy twins call
numpy's), and torch has its own OpenMP pool. OpenBLAS reads its thread count once, when it is
loaded, and ``python -m fastcells`` has already imported numpy (``fastcells/__init__.py`` runs
first), so this module sets ``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS`` and
``MKL_NUM_THREADS`` to ``--threads`` (default 1) and re-executes the interpreter
(``os.execv(sys.executable, [sys.executable, "-m", "fastcells", *args])``) whenever they are not
already set to that number; the variable ``FASTCELLS_BENCH_THREADS`` marks the re-executed
process, so a second mismatch warns instead of looping. torch gets ``torch.set_num_threads``.
Pinning matters beyond fairness: after a multi-threaded call a pool keeps spinning for ~0.1 s
and steals a core from the next library's call (measured 2-3x slower GEMMs, sometimes 10x).
With ``--threads`` > 1 the benchmark also rests between calls of different libraries.
"""
import os
import sys

from fastcells import _bench

MARKER = "FASTCELLS_BENCH_THREADS"


def _main(argv):
    if argv[:1] == ["bench"]:
        from fastcells import _bench_suite
        return _bench_suite.main(argv[1:])
    args = _bench.parse_args(argv)
    n = str(args.threads)
    if any(os.environ.get(var) != n for var in _bench.THREAD_VARS):
        if os.environ.get(MARKER) != n:
            os.environ.update({var: n for var in _bench.THREAD_VARS})
            os.environ[MARKER] = n
            sys.stdout.flush()
            sys.stderr.flush()
            os.execv(sys.executable, [sys.executable, "-m", "fastcells", *argv])
        # Re-executed, yet still mismatched: _bench.main warns about it.
    return _bench.main(args)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
