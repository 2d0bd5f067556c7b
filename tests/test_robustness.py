"""Robustness: no crash, no silent wrong answer, no leak, under any input, thread or size.

One section per property of the robustness issue, each with tests that fail when the property
is broken:

- numerical edge cases: saturated pre-activations (±1e4 and far beyond) give finite outputs and
  the correct (vanishing) gradients; NaN/Inf in any input or weight reach exactly the outputs
  that depend on it, as in the twin, without a crash or a hang; float32 over T = 10,000 steps
  stays within tolerance of the float64 twin on a well-conditioned problem;
- large sizes: products of dimensions beyond the 32-bit BLAS limit are a ValueError raised before
  anything is allocated; an impossible allocation is a MemoryError (and the process goes on);
  inference on T = 100,000 steps (reverse=True too) needs the outputs plus memory independent of T;
- threads: concurrent calls from many Python threads equal serial ones; the kernels release the
  GIL (another thread runs while they compute);
- leaks: 10,000 forward/backward calls leave RSS and tracemalloc flat;
- determinism: repeated calls, Python threads and BLAS thread counts give bitwise equal results.

The tests that need room (memory limits, RSS) run in subprocesses or skip where they cannot
work: under AddressSanitizer (tools/sanitize.sh), which reserves terabytes of address space and
holds freed memory in quarantine, and off Linux.
"""
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc

import numpy as np
import pytest

import fastcells
import fastcells.reference as ref

from conftest import CELLS, DTYPES, TOL, at_offset

LINUX = sys.platform.startswith("linux")


def _sanitized():
    """True when AddressSanitizer is loaded into this process (tools/sanitize.sh)."""
    try:
        with open("/proc/self/maps") as f:
            return "libasan" in f.read()
    except OSError:
        return False


SANITIZED = _sanitized()
needs_plain_process = pytest.mark.skipif(
    not LINUX or SANITIZED, reason="needs Linux /proc and a process without AddressSanitizer "
                                   "(address-space limits, RSS)")
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
BLAS_LIMIT = 2**31 - 1


def run_python(code, timeout=300, **env):
    """Run `code` in a fresh interpreter that imports this very fastcells; return its stdout
    (the test fails on a non-zero exit, a crash or a timeout)."""
    child_env = dict(os.environ, **env)
    roots = [os.path.dirname(os.path.dirname(os.path.abspath(fastcells.__file__))), TESTS_DIR]
    child_env["PYTHONPATH"] = os.pathsep.join(
        roots + [p for p in child_env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=child_env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (f"child exited with {proc.returncode}\n"
                                  f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc.stdout


def fwd(cell, mod, p, **kw):
    return cell.forward(mod, p["xs"], p["Wx"], p["Wh"], p["b"], p["states"], **kw)


def fwd_bwd(cell, mod, p, **kw):
    """hs, [final states], grads (or None with training=False) as one flat list + grads."""
    hs, fin, cache = fwd(cell, mod, p, **kw)
    grads = None if cache is None else cell.backward(mod, cache, p["dhs"], p["dfinal"])
    return [hs, *fin], grads


def all_arrays(out, grads):
    return list(out) + ([] if grads is None else list(grads))


# ============================================================================================
# Numerical edge cases
# ============================================================================================
def _twin64(cell, p, **kw):
    """The twin in float64 (overflow in its exp is the correct limit, hence silenced)."""
    p64 = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) else
               [s.astype(np.float64) for s in v]) for k, v in p.items()}
    with np.errstate(over="ignore", invalid="ignore"):
        return fwd_bwd(cell, ref, p64, **kw)


# The smallest derivative the activations produce: σ'(x) for x at the clamp of their exp
# (csrc/fc_math.h), about e^-87 (float32) and e^-708 (float64), where the twin's underflows to
# exactly 0. Multiplied by huge inputs (and an LSTM's huge cell state) it shows in dWx.
SIGMOID_FLOOR = {np.dtype(np.float32): 1e-37, np.dtype(np.float64): 1e-306}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1e4, 1e8, 1e30])
def test_saturated_preactivations(cell, dtype, scale, rng):
    """Inputs, biases and the LSTM's cell state scaled so that the pre-activations reach
    ±scale: outputs and gradients are finite and equal the float64 twin's, to the kernels'
    tolerance relative to max(|twin|, 1) plus, for dWx = xsᵀ dA, what the activations'
    smallest derivative (SIGMOID_FLOOR) times the huge inputs and cell state can add."""
    N, T = 3, 5
    p = cell.problem(rng, N, T, 4, 6, dtype)
    p["xs"] = p["xs"] * dtype(scale)
    p["b"] = p["b"] * dtype(min(scale, 1e4))
    if cell.n_states == 2:
        p["states"][1] = p["states"][1] * dtype(scale)  # c0: tanh(c) saturates too
    out, grads = fwd_bwd(cell, cell.fast(), p)
    out_r, grads_r = _twin64(cell, p)
    c_max = float(np.max(np.abs(p["states"][1]))) if cell.n_states == 2 else 1.0
    floor = SIGMOID_FLOOR[np.dtype(dtype)] * N * T * float(np.max(np.abs(p["xs"]))) * max(
        c_max, 1.0)
    for name, a, r in zip(["hs", "h_T", "c_T"][:len(out)] + list(grads._fields),
                          all_arrays(out, grads), all_arrays(out_r, grads_r)):
        assert a.dtype == dtype
        assert np.all(np.isfinite(a)), f"{name}: non-finite values at scale {scale:g}"
        err = float(np.max(np.abs(a.astype(np.float64) - r))) if r.size else 0.0
        allowed = TOL[np.dtype(dtype)] * max(float(np.max(np.abs(r))), 1.0) + (
            floor if name == "dWx" else 0.0)
        assert err <= allowed, f"{name}: differs from the twin by {err:.3g} > {allowed:.3g}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sign", [1, -1])
def test_saturated_gradients_vanish(dtype, sign):
    """At pre-activations of ±1e4 every activation is saturated: the outputs are the limits
    (±1, 0 or 1) and the gradients that pass through an activation are (numerically) zero,
    never NaN; the LSTM's cell-state path still carries its gradient."""
    N, T, D, H = 2, 3, 1, 3
    xs = np.full((N, T, D), sign, dtype)
    tiny = np.finfo(dtype).tiny * 1e10  # σ(-1e4) is about e^-88 in float32, not exactly 0
    for cell in CELLS:
        Wx = np.full((D, cell.G * H), 1e4, dtype)
        Wh = np.zeros((H, cell.G * H), dtype)
        b = np.zeros(cell.bias_shape(H), dtype)
        states = [np.full((N, H), 0.5, dtype) for _ in range(cell.n_states)]
        hs, fin, cache = cell.forward(fastcells, xs, Wx, Wh, b, states)
        dfinal = [np.ones((N, H), dtype) for _ in range(cell.n_states)]
        g = cell.backward(fastcells, cache, np.ones_like(hs), dfinal)
        for name, a in zip(("hs", *g._fields), (hs, *g)):
            assert np.all(np.isfinite(a)), f"{cell}: {name} not finite"
        if cell.kwargs.get("nonlinearity") != "relu" or sign < 0:  # relu(1e4) has slope 1
            assert np.all(np.abs(g.dWx) <= tiny) and np.all(np.abs(g.db) <= tiny), cell
            assert np.all(np.abs(g.dxs) <= tiny), cell
        if cell.name == "rnn":
            expected = sign if cell.kwargs["nonlinearity"] == "tanh" else max(sign, 0) * 1e4
            np.testing.assert_array_equal(hs, np.full_like(hs, expected))
        if cell.name == "lstm":  # f = i = o = σ(±1e4), g = ±1, Wh = 0
            f = 1.0 if sign > 0 else 0.0
            cs = [0.5]
            for _ in range(T):  # c_t = f c_{t-1} + g i
                cs.append(f * cs[-1] + sign * f)
            dc, dh = 1.0, 1.0  # dc_T, dh_T; dhs = 1 at every step
            for t in reversed(range(T)):
                dc = (dc + (dh + 1.0) * f * (1 - np.tanh(cs[t + 1]) ** 2)) * f
                dh = 0.0  # dA @ Whᵀ with Wh = 0
            np.testing.assert_allclose(fin[1], np.full((N, H), cs[-1]), rtol=1e-6, atol=tiny)
            np.testing.assert_allclose(g.dc0, np.full((N, H), dc), rtol=1e-5, atol=tiny)


def _same_non_finite(a, r, what):
    """`a` is non-finite exactly where the twin's `r` is (NaN or ±Inf alike: which of the two
    an Inf*0 gives depends on the BLAS), and close to it elsewhere."""
    a, r = np.asarray(a), np.asarray(r)
    assert a.shape == r.shape, what
    bad = np.isfinite(a) != np.isfinite(r)
    assert not bad.any(), (f"{what}: finite where the twin is not (or the reverse) at "
                           f"{np.argwhere(bad)[:4].tolist()}: {a[bad][:4]} vs twin {r[bad][:4]}")
    ok = np.isfinite(r)
    if ok.any():
        scale = max(float(np.max(np.abs(r[ok]))), 1.0)
        err = float(np.max(np.abs(a[ok].astype(np.float64) - r[ok])))
        assert err / scale <= 1e-4, f"{what}: finite values differ by {err / scale:.3g}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_in_an_input_reaches_exactly_its_dependents(cell, dtype, rng):
    """A NaN in xs[n0, t0] makes hs[n0, t0:] and sequence n0's final state NaN (all units:
    the input feeds every gate), leaves every other sequence bitwise unchanged, and makes the
    weight gradients NaN; the gradients follow the twin's NaN pattern."""
    N, T, D, H = 4, 6, 3, 5
    n0, t0 = 1, 2
    p = cell.problem(rng, N, T, D, H, dtype)
    clean, clean_g = fwd_bwd(cell, cell.fast(), p)
    p["xs"] = p["xs"].copy()
    p["xs"][n0, t0, :] = np.nan
    out, grads = fwd_bwd(cell, cell.fast(), p)
    hs = out[0]
    assert np.all(np.isnan(hs[n0, t0:])), "NaN must reach every later output of its sequence"
    assert not np.isnan(hs[n0, :t0]).any(), "outputs before the NaN must not depend on it"
    others = [n for n in range(N) if n != n0]
    for a, c in zip(out, clean):
        np.testing.assert_array_equal(a[others], c[others])
    for s in out[1:]:
        assert np.all(np.isnan(s[n0]))
    np.testing.assert_array_equal(grads.dxs[others], clean_g.dxs[others])
    out_r, grads_r = _twin64(cell, p)
    for name, a, r in zip(grads._fields, grads, grads_r):
        _same_non_finite(a, r, name)


@pytest.mark.parametrize("where", ["Wx", "Wh", "b", "h0", "c0", "dhs", "dh_T"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_inf_anywhere_follow_the_twin(cell, where, value, rng):
    """NaN or ±Inf in one element of any weight, state or upstream gradient: no crash, and the
    outputs and gradients that become non-finite are exactly the twin's (float64): the IEEE
    arithmetic of the formulas, where a 0 * Inf or 0 * NaN is NaN."""
    if where == "c0" and cell.n_states < 2:
        pytest.skip("no c0")
    dtype = np.float64
    p = cell.problem(rng, 3, 4, 3, 5, dtype)
    if where in ("h0", "c0"):
        k = 0 if where == "h0" else 1
        p["states"][k] = p["states"][k].copy()
        p["states"][k][1, 2] = value
    elif where == "dh_T":
        p["dfinal"][0] = p["dfinal"][0].copy()
        p["dfinal"][0][1, 2] = value
    else:
        p[where] = p[where].copy()
        p[where].reshape(-1)[min(7, p[where].size - 1)] = value
    out, grads = fwd_bwd(cell, cell.fast(), p)
    with np.errstate(all="ignore"):
        out_r, grads_r = fwd_bwd(cell, ref, p)
    names = ["hs", "h_T", "c_T"][:len(out)] + list(grads._fields)
    for name, a, r in zip(names, all_arrays(out, grads), all_arrays(out_r, grads_r)):
        _same_non_finite(a, r, f"{where}={value}: {name}")


def test_nan_inf_everywhere_never_crash_or_hang():
    """Every argument of every entry point filled with NaN, ±Inf, float max or a mix of them,
    in both dtypes, training and inference, time-major, reversed and ragged: each call returns
    (in a subprocess, so that a crash or a hang is a clean failure, not a dead test run)."""
    out = run_python("""
        import numpy as np, fastcells
        from conftest import CELLS
        rng = np.random.default_rng(0)
        fills = [np.nan, np.inf, -np.inf, "max", "mix"]
        calls = 0
        def fill(a, how):
            a = np.array(a)
            if how == "mix":
                flat = a.reshape(-1)
                flat[0::4] = np.nan; flat[1::4] = np.inf; flat[2::4] = -np.inf
                flat[3::4] = np.finfo(a.dtype).max
            else:
                a[...] = np.finfo(a.dtype).max if how == "max" else how
            return a
        for cell in CELLS:
            for dtype in (np.float32, np.float64):
                for how in fills:
                    for target in ("xs", "Wx", "Wh", "b", "states", "dhs", "all"):
                        for kw in ({}, {"time_major": True}, {"reverse": True},
                                   {"lengths": np.array([5, 0, 3])}, {"training": False}):
                            p = cell.problem(rng, 3, 5, 4, 17, dtype,
                                             time_major=kw.get("time_major", False))
                            for k in ("xs", "Wx", "Wh", "b", "dhs"):
                                if target in (k, "all"):
                                    p[k] = fill(p[k], how)
                            if target in ("states", "all"):
                                p["states"] = [fill(s, how) for s in p["states"]]
                                p["dfinal"] = [fill(s, how) for s in p["dfinal"]]
                            hs, fin, cache = cell.forward(fastcells, p["xs"], p["Wx"], p["Wh"],
                                                          p["b"], p["states"], **kw)
                            if cache is not None:
                                cell.backward(fastcells, cache, p["dhs"], p["dfinal"])
                            calls += 1
        print(calls)
    """, timeout=600)
    assert int(out.split()[-1]) == 5 * 2 * 5 * 7 * 5


def test_float32_long_sequence_tracks_float64_twin(cell, rng):
    """T = 10,000 steps in float32: outputs, final states and every gradient within 3e-5
    (relative to the largest magnitude) of the float64 twin, on a problem whose float64 result
    is well conditioned (a 1e-7 relative perturbation of xs moves it by less than 1e-5)."""
    N, T, D, H = 2, 10_000, 4, 8
    p = cell.problem(rng, N, T, D, H, np.float64)
    p["Wh"] = p["Wh"] * 0.5  # a contracting recurrence: errors do not grow with t
    out, grads = fwd_bwd(cell, ref, p)
    expected = all_arrays(out, grads)
    # conditioning of the float64 problem, with the (twin-checked) float64 kernel
    q = dict(p, xs=p["xs"] * (1 + 1e-7 * rng.standard_normal(p["xs"].shape)))
    moved = all_arrays(*fwd_bwd(cell, cell.fast(), q))
    names = ["hs"] + [f"state {k}" for k in range(cell.n_states)] + list(grads._fields)
    for name, a, r in zip(names, moved, expected):
        cond = np.max(np.abs(a - r)) / max(np.max(np.abs(r)), 1e-300)
        assert cond <= 1e-5, f"{name}: the float64 problem is ill-conditioned ({cond:.2g})"
    p32 = {k: (v.astype(np.float32) if isinstance(v, np.ndarray) else
               [s.astype(np.float32) for s in v]) for k, v in p.items()}
    got = all_arrays(*fwd_bwd(cell, cell.fast(), p32))
    for name, a, r in zip(names, got, expected):
        assert a.dtype == np.float32
        err = np.max(np.abs(a.astype(np.float64) - r)) / np.max(np.abs(r))
        assert err <= 3e-5, f"{name}: float32 drifts {err:.3g} from the float64 twin over T={T}"


# ============================================================================================
# Large sizes
# ============================================================================================
# The child lowers its address-space limit to what it maps + 1 GiB, so that a size check that
# is missing or comes too late ends in a MemoryError, never in the machine running out of
# memory. Each case prints its outcome: the exception type and whether the message names the
# BLAS limit, and the peak of traced allocations during the call.
_LIMITED_CHILD = """
    import json, math, resource, tracemalloc
    import numpy as np
    import fastcells

    def vm_size():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize"))

    def limit(extra):
        lim = vm_size() + extra
        resource.setrlimit(resource.RLIMIT_AS, (lim, resource.RLIM_INFINITY))

    def outcome(f, *args, **kwargs):  # the arguments are made before tracing starts
        tracemalloc.start()
        try:
            f(*args, **kwargs)
            kind, msg = "ok", ""
        except Exception as e:  # noqa: BLE001
            kind, msg = type(e).__name__, str(e)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return {"kind": kind, "blas": "BLAS" in msg or "2147483647" in msg, "peak": peak,
                "msg": msg[:200]}

    def big(shape, dtype=np.float32):  # a zero-stride array: no memory behind it
        return np.broadcast_to(np.zeros((), dtype), shape)

    f32, f64 = np.float32, np.float64
    z = lambda *s, dtype=f32: np.zeros(s, dtype)
    limit(2**30)
    results = {}
"""


def _limited(cases_code):
    # a fixed mmap threshold: freed large blocks go back to the system, so that the address
    # space (what the limit counts) follows the live allocations
    out = run_python(textwrap.dedent(_LIMITED_CHILD) + textwrap.dedent(cases_code) +
                     "\nprint(json.dumps(results))\n", timeout=600,
                     MALLOC_MMAP_THRESHOLD_="131072")
    return json.loads(out.strip().splitlines()[-1])


@needs_plain_process
def test_blas_limit_is_a_value_error_before_allocating():
    """Sizes whose matrices exceed 2**31 - 1 elements (the 32-bit BLAS limit): a ValueError
    that says so, with (nearly) nothing allocated first, whichever argument is too large:
    the outputs (N*T*G*H, from tiny inputs), xs itself, Wx (D*G*H), Wh (H*G*H), lengths (N),
    and for the Time layers and one-step cells too. Arguments are zero-stride arrays, so only
    a conversion or an output allocation would cost memory."""
    results = _limited("""
        H = 16
        for name, G in (("lstm", 4), ("gru", 3), ("rnn", 1)):
            f = getattr(fastcells, name + "_forward")
            b = z(2, 3 * H) if name == "gru" else z(G * H)
            for training in (True, False):
                for tm in (False, True):
                    results[f"{name} outputs training={training} time_major={tm}"] = outcome(
                        f, z(2**14, 2**14, 0), z(0, G * H), z(H, G * H), b,
                        training=training, time_major=tm)
            results[f"{name} xs"] = outcome(
                f, big((1, 2**16, 2**16)), big((2**16, G * H)), z(H, G * H), b)
            D = 2**31 // (G * H) + 1  # D*G*H > 2**31 - 1
            results[f"{name} Wx"] = outcome(f, big((1, 1, D)), big((D, G * H)), z(H, G * H), b)
            Hb = math.isqrt(2**31 // G) + 1  # H*G*H > 2**31 - 1
            bb = big((2, 3 * Hb)) if name == "gru" else big((G * Hb,))
            results[f"{name} Wh"] = outcome(f, z(1, 1, 0), z(0, G * Hb), big((Hb, G * Hb)), bb)
            results[f"{name} lengths"] = outcome(
                f, z(2**28, 1, 0), z(0, G * H), z(H, G * H), b,
                lengths=np.broadcast_to(np.int64(1), (2**28,)))
        layer = fastcells.TimeLSTM(z(0, 64), z(16, 64), z(64))
        results["TimeLSTM outputs"] = outcome(layer.forward, z(2**14, 2**14, 0))
        cell = fastcells.LSTM(z(0, 64), z(16, 64), z(64))
        results["LSTM cell outputs"] = outcome(
            cell.forward, z(2**25, 0), big((2**25, 16)), big((2**25, 16)))
    """)
    bad = {case: r for case, r in results.items()
           if not (r["kind"] == "ValueError" and r["blas"] and r["peak"] < 16 * 2**20)}
    assert not bad, ("not a ValueError naming the BLAS limit before allocating:\n" +
                     "\n".join(f"  {case}: {r}" for case, r in bad.items()))


@needs_plain_process
def test_impossible_allocation_is_a_memory_error():
    """Within the BLAS limit but beyond the memory available (the child's address space is
    limited): MemoryError from every entry point, and the process keeps working afterwards."""
    results = _limited("""
        H = 256
        for name, G in (("lstm", 4), ("gru", 3), ("rnn", 1)):
            f = getattr(fastcells, name + "_forward")
            b = z(2, 3 * H, dtype=f64) if name == "gru" else z(G * H, dtype=f64)
            Wx, Wh = z(0, G * H, dtype=f64), z(H, G * H, dtype=f64)
            xs = z(1, 2**20, 0, dtype=f64)  # N*T*G*H <= 2**30: 2 GiB of outputs at least
            for training in (True, False):
                results[f"{name} forward training={training}"] = outcome(
                    f, xs, Wx, Wh, b, training=training)
            # a forward that fits, then a backward that does not (its 128+ MiB cannot come
            # from memory freed earlier)
            out = f(z(1, 2**16 // G, 0, dtype=f64), Wx, Wh, b)
            limit(2**20)
            results[f"{name} backward"] = outcome(getattr(fastcells, name + "_backward"),
                                                  out[2], None)
            limit(2**30)
            del out
        layer = fastcells.TimeGRU(z(0, 3 * H, dtype=f64), z(H, 3 * H, dtype=f64),
                                  z(2, 3 * H, dtype=f64))
        results["TimeGRU forward"] = outcome(layer.forward, xs)
        cell = fastcells.LSTM(z(0, 4 * H, dtype=f64), z(H, 4 * H, dtype=f64),
                              z(4 * H, dtype=f64))
        results["LSTM cell forward"] = outcome(
            cell.forward, z(2**19, 0, dtype=f64), big((2**19, H), f64), big((2**19, H), f64))
        # still working, and right
        import numpy.testing as npt
        from fastcells import reference
        rng = np.random.default_rng(0)
        a = [rng.standard_normal(s) for s in ((2, 3, 4), (4, 20), (5, 20), (20,))]
        npt.assert_allclose(fastcells.lstm_forward(*a)[0], reference.lstm_forward(*a)[0],
                            rtol=1e-10, atol=1e-12)
        results["after"] = {"kind": "MemoryError", "blas": False, "peak": 0}
    """)
    bad = {case: r for case, r in results.items() if r["kind"] != "MemoryError"}
    assert not bad, "expected MemoryError:\n" + "\n".join(f"  {c}: {r}" for c, r in bad.items())


def _inference_extra_bytes(cell, T, dtype=np.float32, **kw):
    """Peak traced memory of one training=False call minus its outputs' size."""
    N, D, H = 2, 8, 16
    p = cell.problem(np.random.default_rng(0), N, T, D, H, dtype,
                     time_major=kw.get("time_major", False))
    from fastcells import _common
    _common._POOL.clear()  # hs from freed memory would not be counted (the scratch stays)
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    hs, fin, cache = fwd(cell, cell.fast(), p, training=False, **kw)
    peak = tracemalloc.get_traced_memory()[1] - base
    if not was_tracing:
        tracemalloc.stop()
    assert cache is None
    return peak - hs.nbytes - sum(s.nbytes for s in fin), (N, H)


@pytest.mark.parametrize("kw", [{}, {"reverse": True}], ids=["forward", "reverse"])
def test_inference_reuses_its_work_buffers(cell, kw):
    """A repeated training=False call allocates little beyond its outputs and states: its
    work buffers (the chunk of gates, Wx and Wh packed, the reverse buffers) are kept per
    thread between calls (_common.scratch), not allocated, page-faulted in and freed again on
    every call. The bound is below the chunk of gates alone (chunk_steps*N*G*H elements, 8 KB
    or more here)."""
    _inference_extra_bytes(cell, 300, **kw)  # the buffers, if this thread has none yet
    again, (N, H) = _inference_extra_bytes(cell, 300, **kw)
    assert again <= 4 * N * H * 4 + 2**11, (
        f"a repeated inference call allocated {again} bytes beyond its outputs")


@pytest.mark.parametrize("kw", [{}, {"time_major": True}, {"lengths": np.array([100_000, 7])}],
                         ids=["batch_first", "time_major", "lengths"])
def test_inference_memory_is_outputs_plus_state(cell, kw):
    """training=False on T = 100,000: the peak of allocations beyond the outputs (hs and the
    final states) does not grow with T (compared with T = 1,000) and stays within the chunk
    of gates (at most INFERENCE_CHUNK steps of N*G*H), a few (N, H) states and the packed
    recurrent weights (H*G*H): O(N*H), not O(T)."""
    from fastcells._common import INFERENCE_CHUNK
    if "lengths" in kw:
        kw = dict(kw)
        extra_short, _ = _inference_extra_bytes(cell, 1_000, lengths=np.array([1_000, 7]))
    else:
        extra_short, _ = _inference_extra_bytes(cell, 1_000, **kw)
    extra, (N, H) = _inference_extra_bytes(cell, 100_000, **kw)
    G, item = cell.G, 4
    bound = item * (INFERENCE_CHUNK * N * G * H + 8 * N * H + 2 * H * G * H + 8 * G * H) + 2**16
    assert extra <= bound, f"inference holds {extra} bytes beyond its outputs (bound {bound})"
    assert extra <= extra_short + 2**12, (
        f"inference memory grows with T: {extra_short} bytes beyond the outputs at T=1,000, "
        f"{extra} at T=100,000")


@pytest.mark.parametrize("kw", [{}, {"time_major": True}, {"lengths": np.array([100_000, 7])}],
                         ids=["batch_first", "time_major", "lengths"])
def test_inference_memory_reverse(cell, kw):
    """The same bound with reverse=True: running the sequences backwards copies neither xs
    nor the outputs (O(N*T*(D+H)) bytes); the kernels walk the reversed positions, with one
    chunk of gathered input rows (at most INFERENCE_CHUNK*N*D) and one step's outputs (N*H)
    more."""
    from fastcells._common import INFERENCE_CHUNK
    short_kw = dict(kw, lengths=np.array([1_000, 7])) if "lengths" in kw else kw
    extra_short, _ = _inference_extra_bytes(cell, 1_000, reverse=True, **short_kw)
    extra, (N, H) = _inference_extra_bytes(cell, 100_000, reverse=True, **kw)
    G, D, item = cell.G, 8, 4
    bound = item * (INFERENCE_CHUNK * N * (G * H + D) + 9 * N * H + 2 * H * G * H
                    + 8 * G * H) + 2**16
    assert extra <= bound, (
        f"reverse=True inference holds {extra} bytes beyond its outputs (bound {bound})")
    assert extra <= extra_short + 2**12, (
        f"reverse=True inference memory grows with T: {extra_short} bytes beyond the outputs "
        f"at T=1,000, {extra} at T=100,000")


# ============================================================================================
# Threads
# ============================================================================================
def _read_only(p):
    out = {}
    for k, v in p.items():
        if isinstance(v, np.ndarray):
            v = v.copy()
            v.flags.writeable = False
        elif isinstance(v, list):
            v = [_read_only({"s": s})["s"] for s in v]
        out[k] = v
    return out


def _workload(seed, shared):
    """Functional calls with the shared read-only weights, plus this worker's own Time layer
    and one-step cell: everything they return, as bytes."""
    rng = np.random.default_rng(seed)
    chunks = []
    for cell, p in shared:
        xs = rng.standard_normal(p["xs"].shape).astype(p["xs"].dtype)
        q = dict(p, xs=xs)
        for kw in ({}, {"training": False}, {"lengths": np.array([6, 0, 3])},
                   {"reverse": True}):
            out, grads = fwd_bwd(cell, fastcells, q, **kw)
            chunks += all_arrays(out, grads)
        layer = {"lstm": fastcells.TimeLSTM, "gru": fastcells.TimeGRU,
                 "rnn": fastcells.TimeRNN}[cell.name](p["Wx"].copy(), p["Wh"].copy(),
                                                      p["b"].copy(), True, **cell.kwargs)
        for _ in range(2):
            chunks.append(layer.forward(xs))
            chunks.append(layer.backward(p["dhs"]))
            chunks += list(layer.grads)
        one = {"lstm": fastcells.LSTM, "gru": fastcells.GRU, "rnn": fastcells.RNN}[cell.name](
            p["Wx"], p["Wh"], p["b"], **cell.kwargs)
        out = one.forward(xs[:, 0], *p["states"])
        chunks += list(out) if cell.n_states == 2 else [out]
        chunks += list(one.backward(*p["dfinal"]))
    return [np.ascontiguousarray(c).tobytes() for c in chunks]


def test_threads_give_serial_results():
    """8 Python threads at once (shared read-only weights, each its own layers): every result
    bitwise equal to the same work done serially."""
    rng = np.random.default_rng(3)
    shared = [(cell, _read_only(cell.problem(rng, 3, 6, 5, 17, dtype)))
              for cell in CELLS for dtype in DTYPES]
    expected = [_workload(seed, shared) for seed in range(8)]
    got = [None] * 8
    barrier = threading.Barrier(8)
    errors = []

    def worker(k):
        try:
            barrier.wait()
            for _ in range(2):
                got[k] = _workload(k, shared)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for k in range(8):
        assert got[k] == expected[k], f"thread {k}: results differ from the serial run"


def _longest_stall(call):
    """Run call() in a thread while this thread spins; return the call's duration and the
    longest time this thread could not run."""
    done = threading.Event()
    box = {}

    def work():
        t0 = time.perf_counter()
        call()
        box["dt"] = time.perf_counter() - t0
        done.set()

    th = threading.Thread(target=work)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.001)  # hand the GIL back quickly when the worker wants it
    try:
        last = time.perf_counter()
        stall = 0.0
        th.start()
        while not done.is_set():
            now = time.perf_counter()
            stall = max(stall, now - last)
            last = now
        th.join()
    finally:
        sys.setswitchinterval(interval)
    return box["dt"], stall


@pytest.mark.parametrize("kernel", ["forward_train", "forward_infer", "backward"])
@pytest.mark.parametrize("cell", [c for c in CELLS if c.id in ("lstm", "gru", "rnn_tanh")],
                         ids=repr)  # one per kernel module (the variants share its functions)
def test_kernels_release_the_gil(cell, kernel, rng):
    """While a kernel runs in one thread, another Python thread keeps running: the longest it
    is held up is a small part of the kernel's time (with the GIL held throughout, it would be
    all of it). The sequence is made long enough for the call to take 30 ms; best of 3
    tries, for a loaded machine."""
    T = 256
    while True:
        p = cell.problem(rng, 8, T, 32, 64, np.float64)
        if kernel == "backward":
            _, _, cache = fwd(cell, fastcells, p)
            call = lambda: cell.backward(fastcells, cache, p["dhs"], p["dfinal"])  # noqa
        else:
            call = lambda: fwd(cell, fastcells, p, training=kernel == "forward_train")  # noqa
        took = []
        for _ in range(2):
            t0 = time.perf_counter()
            call()
            took.append(time.perf_counter() - t0)
        if min(took) > 0.03 or T >= 2**15:
            break
        T *= 2
    for _ in range(3):
        duration, stall = _longest_stall(call)
        if duration > 0.01 and stall < 0.5 * duration:
            break
    assert duration > 0.01, f"the call is too short to judge ({duration:.3f} s)"
    assert stall < 0.5 * duration, (f"another thread was held up {stall * 1e3:.1f} ms of the "
                                    f"{duration * 1e3:.1f} ms call: the GIL is not released")


# ============================================================================================
# Leaks
# ============================================================================================
def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@needs_plain_process
def test_no_leak_over_10000_calls():
    """10,000 forward+backward calls (rotating over the cells, with inference calls, Time
    layers, one-step cells and rejected calls mixed in) leave RSS and the traced allocations
    flat: growth under 8 MB and 200 KB (20 bytes per call; a leaked object or buffer per call
    would be at least 28 bytes, and every call allocates several KB)."""
    rng = np.random.default_rng(0)
    problems = [(cell, cell.problem(rng, 4, 8, 8, 16, np.float32)) for cell in CELLS]
    layer = fastcells.TimeLSTM(*(problems[0][1][k] for k in ("Wx", "Wh", "b")), True)
    one = fastcells.GRU(*(problems[1][1][k] for k in ("Wx", "Wh", "b")))

    def step(i):
        cell, p = problems[i % len(problems)]
        fwd_bwd(cell, fastcells, p, lengths=np.array([8, 3, 0, 8]) if i % 3 == 0 else None,
                reverse=i % 4 == 0)
        if i % 10 == 0:
            fwd(cell, fastcells, p, training=False)
            layer.forward(problems[0][1]["xs"])
            layer.backward(problems[0][1]["dhs"])
            one.forward(problems[1][1]["xs"][:, 0], problems[1][1]["states"][0])
            one.backward(problems[1][1]["dfinal"][0])
            try:
                fwd(cell, fastcells, dict(p, xs=p["xs"][0]))
            except ValueError:
                pass

    tracemalloc.start()  # before the warm-up: what is alive at the start is traced too
    try:
        for i in range(500):  # warm up: caches, pools, arenas
            step(i)
        traced0, rss0 = tracemalloc.get_traced_memory()[0], _rss()
        for i in range(10_000):
            step(i)
        traced1, rss1 = tracemalloc.get_traced_memory()[0], _rss()
    finally:
        tracemalloc.stop()
    print(f"leak check: traced {traced1 - traced0:+d} bytes, RSS {rss1 - rss0:+d} bytes "
          f"over 10,000 calls")
    assert traced1 - traced0 < 200_000, f"traced memory grew by {traced1 - traced0} bytes"
    assert rss1 - rss0 < 8 * 2**20, f"RSS grew by {rss1 - rss0} bytes"


# ============================================================================================
# Determinism
# ============================================================================================
def test_repeated_calls_are_bitwise_identical(rng):
    for cell in CELLS:
        for dtype in DTYPES:
            p = cell.problem(rng, 5, 7, 9, 33, dtype)
            for kw in ({}, {"training": False}, {"lengths": np.array([7, 0, 3, 7, 1])},
                       {"time_major": False, "reverse": True}):
                first = [a.tobytes() for a in all_arrays(*fwd_bwd(cell, fastcells, p, **kw))]
                for _ in range(3):
                    again = [a.tobytes() for a in all_arrays(*fwd_bwd(cell, fastcells, p,
                                                                      **kw))]
                    assert again == first, f"{cell} {dtype.__name__} {kw}: results changed"


_DIGEST_CHILD = """
    import hashlib, threading, numpy as np, fastcells
    from conftest import CELLS
    def digest():
        rng = np.random.default_rng(11)
        h = hashlib.sha256()
        for cell in CELLS:
            for dtype in (np.float32, np.float64):
                for kw in ({}, {"time_major": True}, {"lengths": np.arange(32) % 17},
                           {"training": False}):
                    p = cell.problem(rng, 32, 16, 96, 128, dtype,
                                     time_major=kw.get("time_major", False))
                    hs, fin, cache = cell.forward(fastcells, p["xs"], p["Wx"], p["Wh"], p["b"],
                                                  p["states"], **kw)
                    out = [hs, *fin]
                    if cache is not None:
                        out += list(cell.backward(fastcells, cache, p["dhs"], p["dfinal"]))
                    for a in out:
                        h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()
    serial = digest()
    box = []
    threads = [threading.Thread(target=lambda: box.append(digest())) for _ in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    print(serial, *box)
"""


def test_blas_and_python_thread_counts_do_not_change_results():
    """The same problems (large enough for OpenBLAS to split its GEMMs over threads) in
    subprocesses with 1 and 2 BLAS threads, and in 3 Python threads at once: all bitwise
    equal."""
    digests = []
    for n in ("1", "2"):
        out = run_python(_DIGEST_CHILD, OPENBLAS_NUM_THREADS=n, OMP_NUM_THREADS=n,
                         MKL_NUM_THREADS=n)
        digests.append(out.split())
    flat = [d for ds in digests for d in ds]
    assert len(flat) == 8 and len(set(flat)) == 1, (
        f"digests differ: BLAS threads 1 -> {digests[0]}, 2 -> {digests[1]} (serial first, "
        f"then 3 Python threads)")


# ---- the memory of result arrays (_common._Pool) ----------------------------------------------
def _problem(rng, N=8, T=40, D=64, H=64):
    """An LSTM training problem whose large results (hs, the cache, dxs: >= 64 KB) come from
    the pool."""
    return dict(xs=rng.standard_normal((N, T, D)).astype(np.float32),
                Wx=(0.3 * rng.standard_normal((D, 4 * H))).astype(np.float32),
                Wh=(0.3 * rng.standard_normal((H, 4 * H))).astype(np.float32),
                b=rng.standard_normal(4 * H).astype(np.float32),
                dhs=rng.standard_normal((N, T, H)).astype(np.float32))


def _train_step(a):
    hs, _, cache = fastcells.lstm_forward(a["xs"], a["Wx"], a["Wh"], a["b"])
    return hs, cache, fastcells.lstm_backward(cache, a["dhs"])


def test_training_reuses_the_memory_of_dropped_results():
    """A training step allocates (nearly) nothing once the previous step's results are gone:
    their memory went back to the pool, not to the system (where the next step would page
    fault it in again), and the arrays it hands out are correct, aligned and distinct."""
    from fastcells import _common
    fastcells.release_memory()
    first = _train_step(_problem(np.random.default_rng(5)))
    del first
    assert _common._POOL.bytes > 0
    a = _problem(np.random.default_rng(6))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        hs, cache, grads = _train_step(a)
        new = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    pooled = [hs, cache.gates, cache.h_prev, cache.c_prev, cache.tanh_c, grads.dxs]
    assert all(x.nbytes >= _common.POOL_MIN_BYTES for x in pooled)
    held = sum(x.nbytes for x in pooled)
    assert new < held / 8, f"the step allocated {new} bytes for {held} bytes of results"
    for k, x in enumerate(pooled):
        assert x.__array_interface__["data"][0] % 64 == 0
        for y in pooled[k + 1:]:
            assert not np.shares_memory(x, y)
    twin_hs, _, twin_cache = ref.lstm_forward(a["xs"], a["Wx"], a["Wh"], a["b"])
    twin = ref.lstm_backward(twin_cache, a["dhs"])
    np.testing.assert_allclose(hs, twin_hs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads.dxs, twin.dxs, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grads.dWh, twin.dWh, rtol=1e-4, atol=1e-3)


def test_pool_keeps_at_most_its_limit_and_release_memory_empties_it(monkeypatch):
    from fastcells import _common
    fastcells.release_memory()
    monkeypatch.setattr(_common, "POOL_MAX_BYTES", 300_000)
    results = [_train_step(_problem(np.random.default_rng(k))) for k in range(3)]
    held = sum(r[0].nbytes + r[1].gates.nbytes for r in results)
    del results
    assert 0 < _common._POOL.bytes <= 300_000 < held
    fastcells.release_memory()
    assert _common._POOL.bytes == 0 and not _common._POOL.free


def test_inference_chunk_fits_half_the_l2(monkeypatch):
    """Inference chunks: INFERENCE_CHUNK steps while their gates fit INFERENCE_CHUNK_BYTES
    (half the L2), fewer beyond, INFERENCE_CHUNK_MIN at least, T at most."""
    from types import SimpleNamespace

    from fastcells import _common
    monkeypatch.setattr(_common, "INFERENCE_CHUNK_BYTES", 1 << 19)

    def steps(N, T, G, H, dtype=np.float32):
        return _common.chunk_steps(SimpleNamespace(N=N, T=T, G=G, H=H, dtype=np.dtype(dtype)))

    assert steps(1, 100, 4, 64) == 64        # 1 KiB a step
    assert steps(16, 50, 4, 128) == 16       # 32 KiB a step
    assert steps(16, 50, 3, 128) == 21
    assert steps(16, 50, 4, 128, np.float64) == 8
    assert steps(32, 100, 4, 256) == 8       # 128 KiB a step: the floor (64 KiB would do 4)
    assert steps(64, 50, 4, 1024) == 8
    assert steps(16, 5, 4, 128) == 5         # T
    assert steps(0, 7, 4, 0) == 7 and steps(3, 0, 4, 8) == 0


def test_row_product_weights_align_a_batch_of_ones_wh(monkeypatch):
    """Wh for the one-row product: an aligned copy for a batch of one on one thread over
    UNITS_MIN_STEPS steps when Wh's rows can all be aligned but are not and Wh fits the L2;
    Wh itself otherwise."""
    from fastcells import _common, _validate, threads
    from fastcells.threads import UNITS_MIN_STEPS

    def weights(N, T, H, offset, G=4, nth=1, dtype=np.float32):
        Wh = at_offset(np.arange(H * G * H, dtype=dtype).reshape(H, G * H), offset)
        seq = _validate.Sequence("f", G, np.zeros((N, T, 3), dtype),
                                 np.zeros((3, G * H), dtype), Wh, None, False)
        return Wh, _common.row_product_weights(seq, nth)

    Wh, w = weights(1, UNITS_MIN_STEPS, 16, 4)  # copied: aligned, equal, a new array
    assert w is not Wh and w.ctypes.data % 64 == 0 and np.array_equal(w, Wh)
    Wh, w = weights(1, 100, 8, 2, G=3, dtype=np.float64)  # 24 doubles: 192 bytes a row
    assert w is not Wh and w.ctypes.data % 64 == 0 and np.array_equal(w, Wh)
    monkeypatch.setattr(threads, "L2_BYTES", 16 * 64 * 4)  # as if Wh at H = 16 filled the L2
    assert weights(1, 100, 16, 4)[1].ctypes.data % 64 == 0
    for kw in ({"offset": 0}, {"N": 2}, {"T": UNITS_MIN_STEPS - 1}, {"nth": 2},
               {"H": 5}, {"H": 32}):  # aligned; a batch; few steps; split by units; 20-float
        args = dict(N=1, T=100, H=16, offset=4)  # rows; beyond the L2
        args.update(kw)
        Wh, w = weights(**args)
        assert w is Wh, kw


def test_scratch_keeps_its_views_and_release_memory_drops_them():
    """scratch hands the same view back for the same (slot, dtype, shape); growing a slot's
    buffer replaces its views (none may point into the buffer it drops), another shape gets
    its own view of the same buffer, and release_memory forgets them all."""
    from fastcells import _common
    fastcells.release_memory()
    a = _common.scratch((4, 8), np.float32, slot="t")
    assert _common.scratch((4, 8), np.float32, slot="t") is a
    assert a.shape == (4, 8) and a.dtype == np.float32 and a.ctypes.data % 64 == 0
    b = _common.scratch((2, 8), np.float32, slot="t")  # the same buffer, another view
    assert b.shape == (2, 8) and np.shares_memory(a, b)
    assert not np.shares_memory(a, _common.scratch((4, 8), np.float64, slot="t"))
    big = _common.scratch((64, 8), np.float32, slot="t")  # grows the buffer
    again = _common.scratch((4, 8), np.float32, slot="t")
    assert again is not a and np.shares_memory(again, big) and not np.shares_memory(again, a)
    fastcells.release_memory()
    fresh = _common.scratch((4, 8), np.float32, slot="t")
    assert fresh is not again and not np.shares_memory(fresh, again)  # the buffer was dropped


def test_size_classes():
    from fastcells._common import _size_class
    for n in (1, 7, 8, 9, 100, 65536, 65537, 81920, 81921, 10**6, 3 * 2**20 + 1):
        c = _size_class(n)
        assert n <= c <= 1.25 * n or c - n < 8, (n, c)
    assert _size_class(65537) == _size_class(80000) == 81920  # near sizes share a class
