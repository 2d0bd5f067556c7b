"""pytest-benchmark suite: fastcells against its NumPy twins and PyTorch (see README.md here).

Threads. numpy and scipy each bundle their own OpenBLAS (fastcells calls scipy's, the twins
numpy's) and torch has its own OpenMP pool; OpenBLAS reads its thread count when it is loaded.
Run the suite with OPENBLAS_NUM_THREADS, OMP_NUM_THREADS and MKL_NUM_THREADS set to the same N
on the command line. Where none is set and numpy is not loaded yet, this file sets all three to
1 before anything imports numpy (and to the one that is set, where only some are); torch gets
``torch.set_num_threads(N)``, fastcells ``fastcells.set_num_threads(N)``. The report header shows what was in force.

Shapes, weights, the torch mapping, the runners and the check against the twin all come from
``fastcells._bench``, which ``python -m fastcells`` uses too.
"""
import os
import sys

_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_BLAS_LOADED_EARLY = "numpy" in sys.modules or "scipy" in sys.modules
if not _BLAS_LOADED_EARLY:
    _n = next((os.environ[v] for v in _THREAD_VARS if os.environ.get(v)), "1")
    for _v in _THREAD_VARS:
        os.environ.setdefault(_v, _n)

import time  # noqa: E402

import pytest  # noqa: E402

from fastcells import _bench  # noqa: E402  (imports numpy and scipy)

THREADS = int(os.environ.get("OPENBLAS_NUM_THREADS") or 1)
import fastcells  # noqa: E402

fastcells.set_num_threads(THREADS)
HAVE_TORCH = _bench.have_torch()
if HAVE_TORCH:
    import torch

    torch.set_num_threads(THREADS)


def pytest_report_header(config):
    lines = ["fastcells bench: float32, batch-first; every case is checked against the NumPy "
             f"twin (max|a-b|/max|b| <= {_bench.RTOL:g}) before it is timed"]
    lines += [line[2:] for line in _bench.machine_info(THREADS)]
    values = {os.environ.get(v) for v in _THREAD_VARS}
    if len(values) > 1 or _BLAS_LOADED_EARLY and None in values:
        lines.append("WARNING: the thread variables disagree or were set after numpy was "
                     "loaded: BLAS thread counts may differ between libraries")
    cells = _bench.available_cells()
    missing = [c for c in _bench.CELLS if c not in cells]
    if missing:
        lines.append(f"not in this build (their cases skip): {', '.join(missing)}")
    if not _bench.have_onnxruntime():
        lines.append("onnx/onnxruntime not installed: the onnxruntime cases skip")
    return lines


@pytest.fixture(scope="session")
def twin_results():
    """``get(cell, shape) -> (problem, {"train": {...}, "infer": {...}})``, computed once."""
    cache = {}

    def get(cell, shape):
        key = (cell, shape)
        if key not in cache:
            p = _bench.make_problem(cell, shape)
            train, infer = _bench.reference_results(p)
            cache[key] = (p, {"train": train, "infer": infer})
        return cache[key]

    return get


@pytest.fixture(autouse=True)
def _settle_threads():
    """With several threads, let the previous case's BLAS/OpenMP pool stop spinning first
    (a spinning pool steals a core from the next library's call)."""
    if THREADS > 1:
        time.sleep(_bench.SWITCH_PAUSE)
    yield
