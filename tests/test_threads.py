"""Threads of the recurrent loops (fastcells.set_num_threads): results bitwise independent of
the thread count, in every layout and with ragged lengths; the setting's checks and default;
a busy pool (many Python threads) and fork() after threaded calls."""
import multiprocessing
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fastcells
from fastcells import threads

from conftest import CELLS, random_lengths


@pytest.fixture
def restore_threads():
    before = fastcells.get_num_threads()
    yield
    fastcells.set_num_threads(before)


def _run(cell, p, nth, training, **kw):
    """Everything a call returns (outputs, final states and, training, every gradient)."""
    fastcells.set_num_threads(nth)
    mod = cell.fast()
    hs, final, cache = cell.forward(mod, p["xs"], p["Wx"], p["Wh"], p["b"], p["states"],
                                    training=training, **kw)
    out = [hs, *final]
    if training:
        out += list(cell.backward(mod, cache, p["dhs"], p["dfinal"]))
    return out


# N, H large enough that the loops do take several threads (checked below for the LSTM)
@pytest.mark.parametrize("kw", [{}, {"time_major": True}, {"lengths": True}],
                         ids=["batch_first", "time_major", "lengths"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "infer"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_do_not_depend_on_threads(cell, kw, training, dtype, restore_threads):
    rng = np.random.default_rng(7)
    N, T, D, H = 19, 70, 24, 128
    p = cell.problem(rng, N, T, D, H, dtype, time_major=kw.get("time_major", False))
    if kw.get("lengths"):
        kw = {"lengths": random_lengths(rng, N, T)}
    one = _run(cell, p, 1, training, **kw)
    for nth in (2, 3):
        many = _run(cell, p, nth, training, **kw)
        for k, (a, b) in enumerate(zip(one, many)):
            np.testing.assert_array_equal(a, b, err_msg=f"result {k} with {nth} threads")
    fastcells.set_num_threads(3)  # the shape does run threaded, every cell
    assert threads.for_loop(N, H, cell.G * H, np.empty(1)) >= 2


# A batch of one in inference splits its hidden units among the threads (_seq.pxd): H = 33
# and 17 leave a last thread a block of one unit, D = 0 a projection of zeros, T = 70 two
# chunks (the last shorter than fc_gemm's rows: projected by thread 0 alone). The split is
# forced below its threshold (MIN_UNITS_WORK) to reach these shapes quickly.
@pytest.mark.parametrize("T,D,H", [(70, 6, 33), (20, 0, 17), (130, 8, 100)])
@pytest.mark.parametrize("kw", [{}, {"time_major": True}, {"lengths": True}],
                         ids=["batch_first", "time_major", "lengths"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_of_one_splits_units_alike(cell, T, D, H, kw, dtype, restore_threads,
                                         monkeypatch):
    monkeypatch.setattr(threads, "MIN_UNITS_WORK", 1)
    monkeypatch.setattr(threads, "MIN_UNITS_WORK_PAST_L1", 1)
    rng = np.random.default_rng(11)
    fastcells.set_num_threads(2)
    assert threads.for_units(H, cell.G, T, np.dtype(dtype).itemsize) == 2  # the split runs
    p = cell.problem(rng, 1, T, D, H, dtype, time_major=kw.get("time_major", False))
    if kw.get("lengths"):
        kw = {"lengths": np.array([T - 3])}
    one = _run(cell, p, 1, False, **kw)
    twin = cell.forward(cell.ref(), p["xs"], p["Wx"], p["Wh"], p["b"], p["states"], **kw)
    for k, (a, b) in enumerate(zip(one, [twin[0], *twin[1]])):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5 if dtype == np.float32 else 1e-12,
                                   err_msg=f"result {k} against the twin")
    for nth in (2, 3):
        many = _run(cell, p, nth, False, **kw)
        for k, (a, b) in enumerate(zip(one, many)):
            np.testing.assert_array_equal(a, b, err_msg=f"result {k} with {nth} threads")


def test_thread_count_follows_the_work(restore_threads, monkeypatch):
    monkeypatch.setattr(threads, "L1D_BYTES", 64 << 10)  # as on a CPU with a 64 KiB L1
    trip = [100]  # ns: as between two cores that share a cache
    monkeypatch.setattr(threads, "round_trip_ns", lambda: trip[0])
    monkeypatch.setattr(threads._blas, "_pool_ready", lambda macs: True)  # workers awake
    fastcells.set_num_threads(8)
    packed, none = np.empty(1), np.empty(0)
    assert threads.for_loop(32, 256, 1024, none) == 1          # no packed product
    assert threads.for_loop(1, 512, 2048, packed) == 1         # one sequence
    assert threads.for_loop(16, 16, 64, packed) == 1           # too little work per step
    assert threads.for_loop(32, 256, 1024, packed) == 8
    assert threads.for_loop(4, 1024, 4096, packed) == 4        # at most one row each
    assert threads.for_loop(64, 1024, 4096, packed) == 8
    assert threads.for_units(64, 4, 100) == 1                  # tiny: the barriers cost more
    assert threads.for_units(128, 4, 100) == 8                 # LSTM H = 128: 8 blocks of 16
    assert threads.for_units(128, 4, 1) == 1                   # one step: not worth the copy
    assert threads.for_units(40, 4, 100) == 1
    assert threads.for_units(128, 1, 100) == 1 and threads.for_units(512, 1, 100) == 8
    fastcells.set_num_threads(3)
    assert threads.for_units(1024, 3, 50) == 3
    fastcells.set_num_threads(1)
    assert threads.for_loop(32, 256, 1024, packed) == 1
    assert threads.for_units(1024, 4, 50) == 1
    # Wh past the L1 data cache: from a quarter of the work (Wh streams from L2 on one core)
    fastcells.set_num_threads(2)
    monkeypatch.setattr(threads, "L1D_BYTES", 32 << 10)
    assert threads.for_units(64, 4, 100) == 2                  # LSTM H = 64: Wh 64 KiB
    assert threads.for_units(64, 3, 100) == 2                  # GRU: 48 KiB
    assert threads.for_units(48, 3, 100) == 1                  # 27 KiB: fits
    assert threads.for_units(48, 4, 100) == 1                  # 36 KiB, too little work
    assert threads.for_units(96, 1, 100) == 1 and threads.for_units(128, 1, 100) == 2
    assert threads.for_units(32, 4, 100, itemsize=8) == 1      # 32 KiB: fits
    assert threads.for_units(64, 3, 100, itemsize=8) == 2
    assert threads.for_units(64, 4, 4) == 1                    # too few steps
    fastcells.set_num_threads(8)  # split for the cache alone: 2 threads, more with the work
    assert threads.for_units(64, 4, 100) == 2 and threads.for_units(64, 3, 100) == 2
    assert threads.for_units(96, 4, 100) == 2                  # 61440 multiply-adds a step
    assert threads.for_units(128, 4, 100) == 8                 # past MIN_UNITS_WORK: as before
    # the split for the cache alone needs near cores (a short round trip between threads)
    for slow in (threads.MAX_SPLIT_ROUND_TRIP_NS + 1, None):  # far apart; not measurable
        trip[0] = slow
        assert threads.for_units(64, 4, 100) == 1 and threads.for_units(96, 4, 100) == 1
        assert threads.for_units(128, 4, 100) == 8             # enough work: split all the same
    trip[0] = threads.MAX_SPLIT_ROUND_TRIP_NS
    assert threads.for_units(64, 4, 100) == 2
    # ... and the pool's workers there for a run of its size (awake, or it would wake them)
    runs = []
    ready = [False]
    monkeypatch.setattr(threads._blas, "_pool_ready", lambda macs: runs.append(macs) or ready[0])
    assert threads.for_units(64, 4, 100, D=32) == 1 and runs == [100 * 4 * 64 * (32 + 64)]
    assert threads.for_units(64, 3, 100, itemsize=8) == 1 and runs[-1] == 2 * 100 * 3 * 64 * 64
    assert threads.for_units(128, 4, 100) == 8 and len(runs) == 2  # not asked: enough work
    ready[0] = True
    assert threads.for_units(64, 4, 100) == 2


def test_round_trip_is_measured_and_kept(restore_threads, monkeypatch):
    """round_trip_ns measures the pool's round trip (a positive time, or None when no worker
    can run) and keeps it for ROUND_TRIP_TTL seconds."""
    calls = []
    real = threads._blas._round_trip_ns
    monkeypatch.setattr(threads._blas, "_round_trip_ns",
                        lambda trips: calls.append(trips) or real(trips))
    monkeypatch.setattr(threads, "_round_trip", [None, -float("inf")])
    first = threads.round_trip_ns()
    assert first is None or 0 < first < 10**7, first
    assert threads.round_trip_ns() == first and calls == [threads.ROUND_TRIP_TRIPS]
    monkeypatch.setattr(threads, "ROUND_TRIP_TTL", 0.0)
    time.sleep(0.001)
    threads.round_trip_ns()
    assert len(calls) == 2


def test_l1_data_cache_size_is_read():
    """L1D_BYTES: this CPU's L1 data cache, a plausible size (or the 32 KiB fallback)."""
    assert 8 << 10 <= threads.L1D_BYTES <= 4 << 20
    assert threads.L1D_BYTES < threads.L2_BYTES <= 1 << 30


def test_rows_split_threshold(monkeypatch):
    """A batch in inference splits by sequences when each thread keeps a register tile of rows
    (ROWS_PER_THREAD) and Wh fits L2 or it keeps 4 tiles, else by column panels; never on one
    thread."""
    monkeypatch.setattr(threads, "L2_BYTES", 1 << 20)
    assert threads.rows_split(16, 128, 4, 2)
    assert threads.rows_split(32, 256, 4, 2)           # Wh 1 MiB: fits
    assert not threads.rows_split(32, 256, 4, 2, 8)    # in float64 it does not ...
    assert threads.rows_split(64, 256, 4, 2, 8)        # ... but 32 rows a thread read it well
    assert not threads.rows_split(62, 1024, 4, 2)      # Wh 16 MiB, 31 rows a thread
    assert threads.rows_split(64, 1024, 4, 2)
    assert not threads.rows_split(15, 128, 4, 2)       # 7 rows for a thread
    assert threads.rows_split(24, 128, 4, 3) and not threads.rows_split(23, 128, 4, 3)
    assert not threads.rows_split(64, 128, 4, 1)


def _split_by_rows_alike(cell, N, kw, dtype, training, monkeypatch):
    monkeypatch.setattr(threads, "L2_BYTES", 1 << 20)  # Wh fits, whatever this CPU's L2
    rng = np.random.default_rng(13)
    T, D, H = 70, 9, 128
    p = cell.problem(rng, N, T, D, H, dtype, time_major=kw.get("time_major", False))
    if kw.get("lengths"):
        kw = {"lengths": random_lengths(rng, N, T)}
    one = _run(cell, p, 1, training, **kw)
    for nth in (2, 3):
        many = _run(cell, p, nth, training, **kw)
        assert threads.for_loop(N, H, cell.G * H, np.empty(1)) == nth   # the split runs
        assert threads.rows_split(N, H, cell.G, nth, np.dtype(dtype).itemsize)
        for k, (a, b) in enumerate(zip(one, many)):
            np.testing.assert_array_equal(a, b, err_msg=f"result {k} with {nth} threads")


# The split by sequences (rows_split): N = 50 in blocks of 8 or 9 rows (6 blocks on 2 or 3
# threads, claimed in turn), 41 in 4 and 3; ragged lengths; both layouts. Inference of every
# cell, and LSTM training (its forward and backward steps).
SPLIT_KW = pytest.mark.parametrize("kw", [{}, {"time_major": True}, {"lengths": True}],
                                   ids=["batch_first", "time_major", "lengths"])


@pytest.mark.parametrize("N", [50, 41])
@SPLIT_KW
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inference_split_by_rows_alike(cell, N, kw, dtype, restore_threads, monkeypatch):
    _split_by_rows_alike(cell, N, kw, dtype, False, monkeypatch)


@pytest.mark.parametrize("N", [50, 41])
@SPLIT_KW
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lstm_training_split_by_rows_alike(N, kw, dtype, restore_threads, monkeypatch):
    lstm = next(c for c in CELLS if c.name == "lstm")
    _split_by_rows_alike(lstm, N, kw, dtype, True, monkeypatch)


@pytest.mark.parametrize("bad,error", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                       ("2", TypeError), (True, TypeError), (None, TypeError)])
def test_set_num_threads_checks(bad, error, restore_threads):
    with pytest.raises(error, match="set_num_threads: n must be"):
        fastcells.set_num_threads(bad)
    fastcells.set_num_threads(np.int64(3))
    assert fastcells.get_num_threads() == 3


@pytest.mark.parametrize("env,expected", [("3", 3), ("1", 1), ("2,1", 2), ("", None),
                                          ("nonsense", None)])
def test_default_follows_omp_num_threads(env, expected):
    code = "import os, fastcells; print(fastcells.get_num_threads(), len(os.sched_getaffinity(0)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": env}, check=True).stdout.split()
    got, cores = int(out[0]), int(out[1])
    assert got == (expected if expected is not None else cores)


def test_many_python_threads_share_the_pool(restore_threads):
    """Python threads calling threaded loops at once: one gets the pool, the others run alone;
    every result equals the serial one."""
    fastcells.set_num_threads(2)
    rng = np.random.default_rng(3)
    N, T, D, H = 16, 40, 16, 64
    xs = rng.standard_normal((8, N, T, D)).astype(np.float32)
    Wx = (rng.standard_normal((D, 4 * H)) / 4).astype(np.float32)
    Wh = (rng.standard_normal((H, 4 * H)) / 8).astype(np.float32)
    b = np.zeros(4 * H, np.float32)
    serial = [fastcells.lstm_forward(x, Wx, Wh, b, training=False)[0] for x in xs]
    results = [None] * len(xs)

    def work(i):
        for _ in range(5):
            results[i] = fastcells.lstm_forward(xs[i], Wx, Wh, b, training=False)[0]

    pool = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    for i, (a, b_) in enumerate(zip(serial, results)):
        np.testing.assert_array_equal(a, b_, err_msg=f"thread {i}")


def _child_forward(queue):
    rng = np.random.default_rng(5)
    N, T, D, H = 16, 30, 8, 64
    out = fastcells.lstm_forward(rng.standard_normal((N, T, D)).astype(np.float32),
                                 rng.standard_normal((D, 4 * H)).astype(np.float32) / 3,
                                 rng.standard_normal((H, 4 * H)).astype(np.float32) / 8,
                                 np.zeros(4 * H, np.float32), training=False)[0]
    queue.put(float(np.abs(out).sum()))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_threaded_calls_work_after_fork(restore_threads):
    """A forked child (multiprocessing's default on Linux) starts with an empty pool and runs
    threaded loops without hanging, with the parent's result."""
    fastcells.set_num_threads(2)
    q = multiprocessing.get_context("fork").Queue()
    _child_forward(q)  # the parent's pool is running when the child forks
    expected = q.get(timeout=10)
    child = multiprocessing.get_context("fork").Process(target=_child_forward, args=(q,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0, "the forked child hung or failed"
    assert q.get(timeout=10) == expected


def test_idle_workers_sleep(restore_threads):
    """After a threaded call the pool's workers spin only briefly (up to 1 ms, for a next call
    back to back) and then sleep: over 0.2 s of an idle process they take (almost) no CPU."""
    fastcells.set_num_threads(2)
    rng = np.random.default_rng(0)
    N, T, D, H = 32, 20, 16, 128
    assert threads.for_loop(N, H, 4 * H, np.empty(1)) == 2
    fastcells.lstm_forward(rng.standard_normal((N, T, D)).astype(np.float32),
                           rng.standard_normal((D, 4 * H)).astype(np.float32),
                           rng.standard_normal((H, 4 * H)).astype(np.float32) / 16,
                           np.zeros(4 * H, np.float32), training=False)
    time.sleep(0.05)  # well past the spin
    cpu0, wall0 = time.process_time(), time.perf_counter()
    time.sleep(0.2)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    assert cpu < 0.25 * wall, f"the idle pool took {cpu:.3f} s of CPU in {wall:.3f} s"


def _check_team(probe, nth):
    """A probe run (_blas._team_probe) whose team is the caller and team - 1 workers: ids
    0..team-1 each ran once, were told the team and met all of it at the barrier; the other
    ids did not run."""
    team, runs, told, met = probe
    assert 1 <= team <= nth, probe
    assert runs == [1] * team + [0] * (nth - team), probe
    assert told == [team] * team + [0] * (nth - team), probe
    assert met == [team] * team + [0] * (nth - team), probe
    return team


@pytest.mark.parametrize("nth", [1, 2, 3, 4])
def test_pool_runs_the_whole_team(nth):
    """With patience to spare, a run gets the threads it asks for (workers are started as
    needed, even beyond the cores), each id once."""
    short = threads._blas._pool_stats()[3]
    assert _check_team(threads._blas._team_probe(nth, 10**10), nth) == nth
    assert threads._blas._pool_stats()[3] == short


def _asleep_after_idle():
    """Sleep past the workers' 1 ms spin until every one of them sleeps (at most 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        time.sleep(0.02)
        workers, sleeping = threads._blas._pool_stats()[:2]
        if sleeping == workers or time.monotonic() > deadline:
            assert workers >= 1 and sleeping == workers, (workers, sleeping)
            return


def _burst_wakes(call, tries=5):
    """After an idle spell, call() twice back to back: the first must not wake the sleeping
    workers, the second (within 1 ms of it: a burst) must. The host may pause this thread
    between the two for over 1 ms; so up to `tries` idle spells, each a fresh try."""
    for _ in range(tries):
        _asleep_after_idle()
        wakes = threads._blas._pool_stats()[2]
        call()
        t0 = time.perf_counter()  # the first call has ended
        assert threads._blas._pool_stats()[2] == wakes  # not woken
        call()
        if time.perf_counter() - t0 < 0.001:  # the second began < 1 ms after: a burst
            assert threads._blas._pool_stats()[2] == wakes + 1
            return
    pytest.skip("this thread never made two calls within 1 ms")


def test_sleeping_workers_sit_out_short_runs():
    """After an idle spell every worker sleeps; a run that could not wait for a wake-up
    (patience below 50 us) goes on alone without waking them; a second one right after it (a
    burst) wakes them, still without waiting; a run with patience wakes and waits for them."""
    _check_team(threads._blas._team_probe(2, 10**10), 2)
    _asleep_after_idle()
    short = threads._blas._pool_stats()[3]
    assert _check_team(threads._blas._team_probe(2, 0), 2) == 1
    assert threads._blas._pool_stats()[3] == short + 1  # a short run
    _burst_wakes(lambda: _check_team(threads._blas._team_probe(2, 0), 2))
    _asleep_after_idle()
    wakes = threads._blas._pool_stats()[2]
    assert _check_team(threads._blas._team_probe(2, 2**63 - 1), 2) == 2  # (no overflow)
    assert threads._blas._pool_stats()[2] == wakes + 1
    for _ in range(20):  # whoever comes (a loaded machine can put them back to sleep)
        _check_team(threads._blas._team_probe(2, 0), 2)


def test_pool_survives_late_and_sleeping_workers():
    """Runs of every patience and team size, with idle spells between bursts so that workers
    fall asleep, wake, and check in late (after the caller closed the roster, or during the
    next run): every run's team is consistent."""
    rng = np.random.default_rng(11)
    for burst in range(12):
        if burst % 3 == 2:
            time.sleep(0.0015)  # past the spin: the workers go to sleep
        for _ in range(150):
            nth = int(rng.integers(2, 5))
            patience = int(rng.choice([0, 500, 3000, 100000]))
            _check_team(threads._blas._team_probe(nth, patience), nth)


@pytest.fixture
def team_limit():
    yield threads._blas._pool_limit
    threads._blas._pool_limit(-1)


# every split, on 4 threads asked for: a batch by sequences (N = 32: 8 rows a thread), by
# panels (N = 20), and a batch of one by hidden units (forced below its threshold)
@pytest.mark.parametrize("N,training", [(32, True), (32, False), (20, False), (1, False)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_smaller_teams_than_asked_give_the_same_bits(cell, N, training, dtype, team_limit,
                                                     restore_threads, monkeypatch):
    """A run whose workers come late goes on with a smaller team than its loop asked for
    (split, scratch and blocks planned for 4 threads): every team gives the bits of one
    thread."""
    monkeypatch.setattr(threads, "MIN_UNITS_WORK", 1)
    monkeypatch.setattr(threads, "round_trip_ns", lambda: 50)
    rng = np.random.default_rng(2)
    T, D, H = 9, 8, 128
    p = cell.problem(rng, N, T, D, H, dtype)
    one = _run(cell, p, 1, training)
    fastcells.set_num_threads(4)
    if N > 1:  # (RNN at N = 20: 2 threads, for the work)
        assert threads.for_loop(N, H, cell.G * H, np.empty(1)) >= (4 if N == 32 else 2)
    else:
        assert threads.for_units(H, cell.G, T, np.dtype(dtype).itemsize) == 4
    for limit in (0, 1, 2, -1):
        team_limit(limit)
        many = _run(cell, p, 4, training)
        for k, (a, b) in enumerate(zip(one, many)):
            np.testing.assert_array_equal(a, b, err_msg=f"result {k}, {limit} workers at most")


def test_cold_pool_is_ready_only_for_long_runs_or_bursts():
    """_pool_ready: with every worker asleep, a short run would find nobody (and is not
    woken for); a long one would wake them; the second of two cold calls within 1 ms wakes
    them for the calls after it, which then find them awake."""
    _check_team(threads._blas._team_probe(2, 10**10), 2)  # the pool has a worker
    _asleep_after_idle()
    short, long_ = 1e5, 1e8  # multiply-adds: patience 1.25 us and 1.25 ms
    wakes = threads._blas._pool_stats()[2]
    assert threads._blas._pool_ready(long_)  # (the run would wake them, not this call)
    assert threads._blas._pool_stats()[2] == wakes

    def cold():
        assert not threads._blas._pool_ready(short)
    _burst_wakes(cold)
    deadline = time.monotonic() + 5
    while not threads._blas._pool_ready(short):  # once the worker is up
        assert time.monotonic() < deadline, "the woken worker never came"
    # the wake-up's run (its roster closed from the start) left the pool as it was
    assert _check_team(threads._blas._team_probe(2, 10**10), 2) == 2


def test_short_splits_stay_alone_after_idle(restore_threads, monkeypatch):
    """A batch of one split for the cache alone (GRU, H = 64) does not measure the round
    trip, nor wake the pool, when its workers sleep: it runs alone at once; back to back,
    the next calls wake them and split again (same bits throughout)."""
    monkeypatch.setattr(threads, "L1D_BYTES", 32 << 10)
    monkeypatch.setattr(threads, "_round_trip", [None, -float("inf")])
    measured = []
    real = threads._blas._round_trip_ns
    monkeypatch.setattr(threads._blas, "_round_trip_ns",
                        lambda trips: measured.append(trips) or real(trips))
    fastcells.set_num_threads(2)
    rng = np.random.default_rng(4)
    xs = rng.standard_normal((1, 100, 32)).astype(np.float32)
    Wx = rng.standard_normal((32, 192)).astype(np.float32) / 6
    Wh = rng.standard_normal((64, 192)).astype(np.float32) / 8
    b = np.zeros((2, 192), np.float32)
    expected = fastcells.gru_forward(xs, Wx, Wh, b, training=False)[0]
    _asleep_after_idle()
    measured.clear()
    threads._round_trip[:] = [None, -float("inf")]  # due for a measure
    wakes = threads._blas._pool_stats()[2]
    assert threads.for_units(64, 3, 100, 4, 32) == 1 and measured == []
    # back to back, a call finds them cold within 1 ms of another (and wakes them), and a
    # later one awake: it measures the round trip to decide on the split
    deadline, calls = time.monotonic() + 5, 0
    while calls < 50 or not measured:
        np.testing.assert_array_equal(fastcells.gru_forward(xs, Wx, Wh, b, training=False)[0],
                                      expected)
        calls += 1
        assert time.monotonic() < deadline, "the pool was never found awake"
    assert threads._blas._pool_stats()[2] > wakes
