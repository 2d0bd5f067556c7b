"""Two forward passes in two Python threads at once, against one pass in one thread.

The kernels run without the GIL, so on a machine with two free cores the pair of independent
calls (separate problems, one thread each) takes about the time of one call, and clearly less
than twice it (the robustness issue's "Threads" property; tests/test_robustness.py checks the
GIL release itself without timing anything).

Cases ``test_threads[<cell>-<mode>-<NxTxDxH>-<1|2>thread(s)]``, for each cell and mode
(``infer``: forward with training=False; ``train``: forward + backward), share the group
``<cell> <mode> <shape> threads`` so that pytest-benchmark prints the two rows in one table. As
everywhere in bench/, the results are first checked against the NumPy twin (here: the two
results computed concurrently), then timed. The 2-thread case also times both itself,
alternating single and paired calls (the best of PAIRS samples each: what the machine does
when nothing else runs on it), records ``ratio`` = time(2 threads, 2 calls) / time(1 thread,
1 call) in its ``extra_info`` and fails when it is not below MAX_RATIO.

Run it with one BLAS thread (bench/conftest.py's default: OpenBLAS' own threads would compete
with ours) on an otherwise idle machine with at least 2 cores:

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=src \\
        python -m pytest bench/test_bench_threads.py --benchmark-only --benchmark-group-by=group
"""
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from fastcells import _bench

SHAPE = _bench.SHAPES["medium"]  # (32, 100, 128, 256): tens of ms per call
MAX_RATIO = 1.6
PAIRS = 9


@pytest.fixture(scope="module")
def pool():
    with ThreadPoolExecutor(max_workers=2) as ex:
        yield ex


def _concurrently(pool, calls):
    futures = [pool.submit(c) for c in calls]
    return [f.result() for f in futures]


def _best_times(fns, samples):
    """Least seconds of each fn, the fns called in turn `samples` times (the least: what the
    machine does when nothing else runs on it; the turns: a busy spell hits all fns)."""
    times = [[] for _ in fns]
    for _ in range(samples):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return [min(t) for t in times]


@pytest.mark.parametrize("threads", [1, 2], ids=["1thread", "2threads"])
@pytest.mark.parametrize("mode", _bench.MODES)
@pytest.mark.parametrize("cell", _bench.CELLS)
def test_threads(benchmark, pool, cell, mode, threads):
    if not _bench.available_cells([cell]):
        pytest.skip(f"fastcells.{cell}_forward is not in this build")
    if os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        pytest.skip("needs OPENBLAS_NUM_THREADS=1 (BLAS threads would compete with ours)")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 cores")
    problems = [_bench.make_problem(cell, SHAPE, seed=s) for s in (0, 1)]
    runners = [_bench.make_runner("fastcells", p) for p in problems]
    calls = [getattr(r, mode) for r in runners]

    # Verify, then benchmark: the two results computed at the same time, against the twin.
    outs = _concurrently(pool, calls)
    err = 0.0
    for p, r, out in zip(problems, runners, outs):
        train, infer = _bench.reference_results(p)
        err = max(err, _bench.verify(r.results(mode, out), train if mode == "train" else infer,
                                     f"fastcells {cell} {mode} {p.label} in a thread"))
    del outs

    one = calls[0]
    pair = lambda: _concurrently(pool, calls)  # noqa: E731
    benchmark.group = f"{cell} {mode} {problems[0].label} threads"
    benchmark.extra_info.update(cell=cell, mode=mode, shape=problems[0].label,
                                threads=threads, calls=threads, max_rel_err_vs_twin=err)
    benchmark(one if threads == 1 else pair)
    if threads == 2:
        t_one, t_pair = _best_times([one, pair], PAIRS)
        ratio = t_pair / t_one
        benchmark.extra_info.update(t_one_call=t_one, t_two_calls_two_threads=t_pair,
                                    ratio=ratio)
        print(f"\n{cell} {mode} {problems[0].label}: 1 call {t_one * 1e3:.1f} ms, 2 calls in 2 "
              f"threads {t_pair * 1e3:.1f} ms, ratio {ratio:.2f}")
        assert ratio < MAX_RATIO, (
            f"two concurrent calls take {ratio:.2f}x one call (expected < {MAX_RATIO}): the "
            f"kernels do not run in parallel (GIL held?) or the machine is busy")
