"""The fast kernels against their NumPy twins: outputs, final states and every gradient.

float64 to 1e-10 and float32 to 1e-4 relative (conftest.TOL), over shapes with N=1 (H = 40: the
one-row product's vector blocks, mirrored every other step), T=1, D != H and H >= 512, non-zero
initial states, both layouts, ragged lengths with 0 and T, dhs=None; plus layouts of the inputs,
immutability, zero sizes and step-by-step consistency.
"""
import numpy as np
import pytest

from conftest import DTYPES, assert_close, at_offset, random_lengths

SHAPES = [(1, 1, 3, 4), (1, 6, 5, 3), (1, 9, 5, 40), (3, 1, 4, 6), (4, 7, 5, 8), (2, 3, 6, 512)]


def compare(cell, p, rng=None, **kw):
    """Run fast and twin forward+backward on problem p; assert everything matches."""
    fast, ref = cell.fast(), cell.ref()
    args = (p["xs"], p["Wx"], p["Wh"], p["b"], p["states"])
    hs, fin, cache = cell.forward(fast, *args, **kw)
    hs_r, fin_r, cache_r = cell.forward(ref, *args, **kw)
    dtype = p["xs"].dtype
    assert_close(hs, hs_r, "hs", dtype)
    for k, (s, s_r) in enumerate(zip(fin, fin_r)):
        assert_close(s, s_r, f"final state {k}", dtype)
    dhs = p.get("dhs_used", p["dhs"])
    grads = cell.backward(fast, cache, dhs, p["dfinal"])
    grads_r = cell.backward(ref, cache_r, dhs, p["dfinal"])
    assert type(grads) is type(grads_r)
    for name, g, g_r in zip(grads._fields, grads, grads_r):
        assert g.shape == g_r.shape, name
        assert_close(g, g_r, name, dtype)
    return hs, fin, grads


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("time_major", [False, True])
def test_matches_twin(cell, dtype, shape, time_major, rng):
    p = cell.problem(rng, *shape, dtype, time_major=time_major)
    compare(cell, p, time_major=time_major)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("time_major", [False, True])
def test_reverse_full_length(cell, dtype, time_major, rng):
    p = cell.problem(rng, 3, 5, 4, 6, dtype, time_major=time_major)
    compare(cell, p, time_major=time_major, reverse=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reverse_equals_flipped_forward(cell, dtype, rng):
    """reverse=True on full-length sequences is the forward run on the time-flipped input."""
    fast = cell.fast()
    p = cell.problem(rng, 3, 5, 4, 6, dtype)
    args = (p["Wx"], p["Wh"], p["b"], p["states"])
    hs, fin, _ = cell.forward(fast, p["xs"], *args, reverse=True)
    hs_f, fin_f, _ = cell.forward(fast, p["xs"][:, ::-1], *args)
    np.testing.assert_array_equal(hs, hs_f[:, ::-1])
    for a, b in zip(fin, fin_f):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_initial_state(cell, dtype, rng):
    p = cell.problem(rng, 3, 4, 5, 6, dtype, init_states=False)
    compare(cell, p)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_ragged_lengths(cell, dtype, time_major, reverse, rng):
    N, T = 5, 6
    p = cell.problem(rng, N, T, 4, 7, dtype, time_major=time_major)
    lengths = random_lengths(rng, N, T)
    hs, fin, grads = compare(cell, p, lengths=lengths, time_major=time_major, reverse=reverse)
    hs_nt = hs.transpose(1, 0, 2) if time_major else hs
    dxs_nt = grads.dxs.transpose(1, 0, 2) if time_major else grads.dxs
    for n, L in enumerate(lengths):
        assert not hs_nt[n, L:].any(), "outputs past the length must be exactly zero"
        assert not dxs_nt[n, L:].any(), "inputs past the length get no gradient"
    # a length-0 sequence keeps its initial state, and its state gradient passes straight through
    for s, s0 in zip(fin, p["states"]):
        np.testing.assert_array_equal(s[1], s0[1])
    np.testing.assert_array_equal(grads.dh0[1], p["dfinal"][0][1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_dhs_none_only_final_gradient(cell, dtype, rng):
    p = cell.problem(rng, 3, 5, 4, 6, dtype)
    p["dhs_used"] = None
    compare(cell, p, lengths=np.array([5, 2, 0]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_inference_matches_training(cell, dtype, rng):
    fast = cell.fast()
    # T larger than the inference chunk, so the chunked input projection is exercised
    p = cell.problem(rng, 3, 150, 4, 5, dtype)
    args = (p["xs"], p["Wx"], p["Wh"], p["b"], p["states"])
    lengths = np.array([150, 70, 0])
    for time_major in (False, True):
        xs = p["xs"].transpose(1, 0, 2).copy() if time_major else p["xs"]
        args = (xs,) + args[1:]
        hs, fin, cache = cell.forward(fast, *args, lengths=lengths, time_major=time_major)
        hs_i, fin_i, cache_i = cell.forward(fast, *args, lengths=lengths,
                                            time_major=time_major, training=False)
        assert cache_i is None
        assert_close(hs_i, hs, "hs")
        for s, s_i in zip(fin, fin_i):
            assert_close(s_i, s, "final state")


@pytest.mark.parametrize("time_major", [False, True])
def test_reverse_inference_matches_training(cell, time_major, rng):
    """reverse=True: inference (whose kernels walk the reversed positions themselves) gives
    the outputs and final states of training (which reverses xs in Python) to 1e-12, float64,
    over ragged lengths with 0, 1, T-1 and T, without lengths, and over more than one
    inference chunk."""
    fast = cell.fast()
    N, T = 6, 150
    p = cell.problem(rng, N, T, 5, 7, np.float64, time_major=time_major)
    args = (p["xs"], p["Wx"], p["Wh"], p["b"], p["states"])
    for lengths in (np.array([T, 0, 70, 1, T - 1, 64]), None):
        kw = dict(lengths=lengths, time_major=time_major, reverse=True)
        hs, fin, _ = cell.forward(fast, *args, **kw)
        hs_i, fin_i, cache_i = cell.forward(fast, *args, training=False, **kw)
        assert cache_i is None
        np.testing.assert_allclose(hs_i, hs, rtol=0, atol=1e-12, err_msg="hs")
        for k, (s, s_i) in enumerate(zip(fin, fin_i)):
            np.testing.assert_allclose(s_i, s, rtol=0, atol=1e-12, err_msg=f"final state {k}")
        if lengths is not None:
            hs_nt = hs_i.transpose(1, 0, 2) if time_major else hs_i
            for n, L in enumerate(lengths):
                assert not hs_nt[n, L:].any(), "outputs past the length must be exactly zero"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [False, True])
def test_batch_of_one_any_alignment_of_wh(cell, dtype, training, rng, monkeypatch):
    """A batch of one reads Wh through the one-row product, in inference from an aligned copy
    when its rows are not aligned (_common.row_product_weights, whose result the kernel gets):
    the same bits at every offset of Wh in its cache line, for the outputs, final states and
    every gradient; Wh itself unchanged."""
    import importlib

    from fastcells import _common
    module = importlib.import_module(f"fastcells.{cell.name}")
    given = []  # the address of the Wh each inference kernel got, modulo 64

    def spy(seq, nth=1):
        wh = _common.row_product_weights(seq, nth)
        given.append(_common._blas._misalignment(wh))
        return wh

    monkeypatch.setattr(module, "row_product_weights", spy)
    fast = cell.fast()
    p = cell.problem(rng, 1, 20, 5, 32, dtype)
    first = None
    for offset in range(0, 64 // np.dtype(dtype).itemsize, 3):
        Wh = at_offset(p["Wh"], offset)
        hs, fin, cache = cell.forward(fast, p["xs"], p["Wx"], Wh, p["b"], p["states"],
                                      training=training)
        if not training:
            assert given.pop() == 0, f"the kernel got Wh misaligned (offset {offset})"
        out = [hs, *fin]
        if training:
            out += list(cell.backward(fast, cache, p["dhs"], p["dfinal"]))
        if first is None:
            first = out
            assert_close(hs, cell.forward(cell.ref(), p["xs"], p["Wx"], p["Wh"], p["b"],
                                          p["states"])[0], "hs")
        for k, (a, b) in enumerate(zip(out, first)):
            np.testing.assert_array_equal(a, b, err_msg=f"result {k}, Wh at offset {offset}")
        np.testing.assert_array_equal(Wh, p["Wh"])


@pytest.mark.parametrize("dtype", DTYPES)
def test_sequence_equals_steps(cell, dtype, rng):
    """The fused sequence kernel equals stepping it one time step at a time."""
    fast = cell.fast()
    p = cell.problem(rng, 2, 5, 3, 4, dtype)
    hs, fin, _ = cell.forward(fast, p["xs"], p["Wx"], p["Wh"], p["b"], p["states"])
    states = p["states"]
    for t in range(5):
        hs_t, states, _ = cell.forward(fast, p["xs"][:, t:t + 1], p["Wx"], p["Wh"], p["b"],
                                       states)
        assert_close(hs_t[:, 0], hs[:, t], f"h at step {t}")
    for s, s_steps in zip(fin, states):
        assert_close(s_steps, s, "final state")


def _odd_layouts(a):
    """The same values as a, as non-contiguous, Fortran-ordered, read-only, reversed views."""
    strided = np.repeat(a, 2, axis=-1)[..., ::2]
    fortran = np.asfortranarray(a)
    readonly = a.copy()
    readonly.flags.writeable = False
    reversed_ = np.flip(np.flip(a, axis=0).copy(), axis=0)  # negative strides, same values
    return {"strided": strided, "fortran": fortran, "readonly": readonly,
            "reversed": reversed_}


@pytest.mark.parametrize("layout", ["strided", "fortran", "readonly", "reversed"])
def test_any_input_layout(cell, layout, rng):
    fast = cell.fast()
    p = cell.problem(rng, 3, 4, 5, 6, np.float64)
    hs, fin, cache = cell.forward(fast, p["xs"], p["Wx"], p["Wh"], p["b"], p["states"])
    grads = cell.backward(fast, cache, p["dhs"], p["dfinal"])
    odd = {k: _odd_layouts(p[k])[layout] for k in ("xs", "Wx", "Wh", "b", "dhs")}
    states = [_odd_layouts(s)[layout] for s in p["states"]]
    dfinal = [_odd_layouts(s)[layout] for s in p["dfinal"]]
    hs2, fin2, cache2 = cell.forward(fast, odd["xs"], odd["Wx"], odd["Wh"], odd["b"], states)
    grads2 = cell.backward(fast, cache2, odd["dhs"], dfinal)
    np.testing.assert_array_equal(hs2, hs)
    for a, b in zip(fin2, fin):
        np.testing.assert_array_equal(a, b)
    for name, a, b in zip(grads._fields, grads2, grads):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_inputs_unchanged_and_results_new(cell, rng):
    fast = cell.fast()
    p = cell.problem(rng, 3, 4, 5, 6, np.float32)
    lengths = np.array([4, 1, 0])
    inputs = [p["xs"], p["Wx"], p["Wh"], p["b"], *p["states"], p["dhs"], *p["dfinal"], lengths]
    copies = [a.copy() for a in inputs]
    hs, fin, cache = cell.forward(fast, p["xs"], p["Wx"], p["Wh"], p["b"], p["states"],
                                  lengths=lengths)
    g1 = cell.backward(fast, cache, p["dhs"], p["dfinal"])
    for a, c in zip(inputs, copies):
        np.testing.assert_array_equal(a, c)
    results = [hs, *fin, *g1]
    for r in results:
        for a in inputs:
            assert not np.shares_memory(r, a)
    # backward may be called again on the same cache, and is unaffected by edits to results
    for r in results:
        r[...] = 7
    g2 = cell.backward(fast, cache, p["dhs"], p["dfinal"])
    g1_again = cell.backward(fast, cache, p["dhs"], p["dfinal"])
    for name, a, b in zip(g2._fields, g2, g1_again):
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("N,T,D", [(0, 3, 2), (2, 0, 2), (2, 3, 0), (2, 1, 0), (1, 9, 0)])
def test_zero_sizes(cell, N, T, D, rng):
    """Empty batches, sequences or inputs give empty or trivial results, never a crash. With
    D = 0 the input projections are empty sums (one-row ones too: N = 1, or one step), in
    training and in inference."""
    p = cell.problem(rng, N, T, D, 4, np.float64)
    if D == 0:
        compare(cell, p)  # no input: the recurrence still runs on h0 and the biases
        args = (p["xs"], p["Wx"], p["Wh"], p["b"], p["states"])
        hs, fin, _ = cell.forward(cell.ref(), *args)
        hs_i, fin_i, _ = cell.forward(cell.fast(), *args, training=False)
        assert_close(hs_i, hs, "hs (inference)")
        for s_i, s in zip(fin_i, fin):
            assert_close(s_i, s, "final state (inference)")
        return
    fast = cell.fast()
    hs, fin, cache = cell.forward(fast, p["xs"], p["Wx"], p["Wh"], p["b"], p["states"])
    assert hs.shape == p["dhs"].shape
    for s, s0 in zip(fin, p["states"]):
        np.testing.assert_array_equal(s, s0)  # nothing ran: the final state is the initial one
    grads = cell.backward(fast, cache, p["dhs"], p["dfinal"])
    assert grads.dxs.shape == p["xs"].shape
    assert not grads.dWx.any() and not grads.dWh.any() and not grads.db.any()
    np.testing.assert_array_equal(grads.dh0, p["dfinal"][0])
