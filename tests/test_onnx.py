"""fastcells against ONNX models built from ``convert.to_onnx`` weights.

Each case builds one ``RNN``, ``LSTM`` or ``GRU`` node with ``onnx.helper`` (W, R, B as
initializers from ``to_onnx``, the attributes from ``onnx_attributes``, random initial states,
optionally ``sequence_lens``) and compares its ``Y``, ``Y_h`` (and ``Y_c``) with fastcells run
on the same Params, direction by direction (the reverse direction with ``reverse=True``).

- onnxruntime (``.ci/run`` installs it): float32, its CPU kernels' only dtype for these ops,
  forward / reverse / bidirectional, with and without ``sequence_lens``.
- ONNX's reference evaluator (``onnx.reference``), float64 and float32, without
  ``sequence_lens`` (the evaluator ignores that input).
Everything skips when ``onnx`` is not installed; the onnxruntime cases when it is not.
"""
import numpy as np
import pytest

import fastcells
from fastcells import convert

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

try:
    import onnxruntime
except ImportError:
    onnxruntime = None

# max|a - b| / max|b|
TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
OPSET, IR_VERSION = 14, 8  # opset 14 has the `layout` attribute; IR 8 loads in onnxruntime
G = {"rnn": 1, "lstm": 4, "gru": 3}

VARIANTS = [
    pytest.param("lstm", {}, id="lstm"),
    pytest.param("gru", {"reset_after": True}, id="gru_linear_before_reset"),
    pytest.param("gru", {"reset_after": False}, id="gru"),
    pytest.param("rnn", {"nonlinearity": "tanh"}, id="rnn_tanh"),
    pytest.param("rnn", {"nonlinearity": "relu"}, id="rnn_relu"),
]
DIRECTIONS = ["forward", "reverse", "bidirectional"]


def assert_close(actual, expected, what):
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    tol = TOL[expected.dtype]
    err = float(np.max(np.abs(actual.astype(np.float64) - expected)))
    scale = float(np.max(np.abs(expected))) or 1.0
    assert err / scale <= tol, f"{what}: max|a-b|/max|b| = {err / scale:.3e} > {tol:.0e}"


def random_params(rng, cell, D, H, dtype, options):
    b_shape = (2, 3 * H) if cell == "gru" and options["reset_after"] else (G[cell] * H,)
    return convert.Params(cell, (rng.standard_normal((D, G[cell] * H)) / 2).astype(dtype),
                          (rng.standard_normal((H, G[cell] * H)) / 2).astype(dtype),
                          (rng.standard_normal(b_shape) / 2).astype(dtype), dict(options))


def build_model(ps, direction, dtype, T, N, D, with_lengths):
    """A one-node ONNX model: inputs X [T, N, D], initial_h (, initial_c) [dirs, N, H] and
    optionally sequence_lens [N]; outputs Y [T, dirs, N, H], Y_h (, Y_c) [dirs, N, H]."""
    cell, H, dirs = ps[0].cell, ps[0].hidden_size, len(ps)
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    W, R, B = convert.to_onnx(ps)
    attrs = convert.onnx_attributes(ps, reverse=direction == "reverse")
    assert attrs["direction"] == direction
    if cell == "gru":
        assert attrs["linear_before_reset"] == int(ps[0].options["reset_after"])
    inits = [numpy_helper.from_array(a, n) for a, n in ((W, "W"), (R, "R"), (B, "B"))]
    info = lambda name, et, shape: helper.make_tensor_value_info(name, et, shape)
    graph_inputs = [info("X", elem, [T, N, D]), info("initial_h", elem, [dirs, N, H])]
    node_inputs = ["X", "W", "R", "B", "sequence_lens" if with_lengths else "", "initial_h"]
    if with_lengths:
        graph_inputs.append(info("sequence_lens", TensorProto.INT32, [N]))
    outputs = ["Y", "Y_h"]
    if cell == "lstm":
        graph_inputs.append(info("initial_c", elem, [dirs, N, H]))
        node_inputs.append("initial_c")
        outputs.append("Y_c")
    node = helper.make_node(cell.upper(), node_inputs, outputs, **attrs)
    graph_outputs = [info("Y", elem, [T, dirs, N, H])] + \
        [info(o, elem, [dirs, N, H]) for o in outputs[1:]]
    graph = helper.make_graph([node], "rnn", graph_inputs, graph_outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def run_fastcells(ps, direction, x, states, lengths):
    """Y [T, dirs, N, H] and the final states [dirs, N, H] of the node, with fastcells."""
    Y, finals = [], [[] for _ in states]
    for d, p in enumerate(ps):
        reverse = direction == "reverse" or d == 1
        hs, final, _ = getattr(fastcells, f"{p.cell}_forward")(
            x, p.Wx, p.Wh, p.b, *[s[d] for s in states], **p.options, lengths=lengths,
            time_major=True, reverse=reverse, training=False)
        Y.append(hs)
        for acc, f in zip(finals, final if p.cell == "lstm" else (final,)):
            acc.append(f)
    return np.stack(Y, axis=1), [np.stack(f) for f in finals]


def check_case(run, cell, options, direction, dtype, with_lengths, seed):
    T, N, D, H = 6, 4, 3, 5
    rng = np.random.default_rng(seed)
    dirs = 2 if direction == "bidirectional" else 1
    ps = [random_params(rng, cell, D, H, dtype, options) for _ in range(dirs)]
    x = rng.standard_normal((T, N, D)).astype(dtype)
    states = [rng.standard_normal((dirs, N, H)).astype(dtype)
              for _ in range(2 if cell == "lstm" else 1)]
    # Lengths >= 1: for a sequence of length 0, onnxruntime sets Y_h (and Y_c) to zeros where
    # fastcells (CONVENTIONS.md) keeps the initial state; ONNX leaves that case unspecified.
    lengths = np.array([6, 2, 1, 5], np.int32) if with_lengths else None
    model = build_model(ps, direction, dtype, T, N, D, with_lengths)
    feeds = {"X": x, "initial_h": states[0]}
    if cell == "lstm":
        feeds["initial_c"] = states[1]
    if with_lengths:
        feeds["sequence_lens"] = lengths
    got = run(model, feeds)
    Y, finals = run_fastcells(ps, direction, x, states, lengths)
    assert_close(Y, got[0], "Y")
    for name, a, b in zip(("Y_h", "Y_c"), finals, got[1:]):
        assert_close(a, b, name)
    # and the node's weights come back as the same Params
    back = convert.from_onnx(cell.upper(), *convert.to_onnx(ps),
                             **convert.onnx_attributes(ps, reverse=direction == "reverse"))
    for a, b in zip(back, ps):
        assert a.cell == b.cell and a.options == b.options
        for name in ("Wx", "Wh", "b"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def run_onnxruntime(model, feeds):
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def run_reference(model, feeds):
    from onnx.reference import ReferenceEvaluator
    return ReferenceEvaluator(model).run(None, feeds)


@pytest.mark.skipif(onnxruntime is None, reason="onnxruntime is not installed")
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "sequence_lens"])
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("cell, options", VARIANTS)
def test_onnxruntime(cell, options, direction, with_lengths):
    seed = 10 * DIRECTIONS.index(direction) + with_lengths + len(cell)
    check_case(run_onnxruntime, cell, options, direction, np.float32, with_lengths, seed)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("cell, options", VARIANTS)
def test_onnx_reference_evaluator(cell, options, direction, dtype):
    if options.get("nonlinearity") == "relu":
        pytest.skip("onnx.reference's RNN knows only the Tanh activation")
    seed = 10 * DIRECTIONS.index(direction) + len(cell) + 5
    check_case(run_reference, cell, options, direction, dtype, False, seed)


def test_from_onnx_reads_a_model():
    """The README-style import of a node: initializers by name, attributes as a dict."""
    rng = np.random.default_rng(0)
    ps = [random_params(rng, "gru", 3, 4, np.float32, {"reset_after": True}) for _ in range(2)]
    model = build_model(ps, "bidirectional", np.float32, 5, 2, 3, False)
    (node,) = model.graph.node
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    back = convert.from_onnx(node.op_type, inits["W"], inits["R"], inits["B"], **attrs)
    assert len(back) == 2
    for a, b in zip(back, ps):
        assert a.options == {"reset_after": True}
        np.testing.assert_array_equal(a.b, b.b)
