"""The benchmark tooling (``fastcells._bench``, ``python -m fastcells bench``): the FLOP count,
the shape names, the onnxruntime peer against the twin, the peak-memory measurement, and one
end-to-end run of the ``bench`` subcommand at a toy shape (JSON, markdown, chart).

Nothing here times anything seriously: the run uses a toy shape and a one-second budget.
"""
import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest

from fastcells import _bench


def test_step_flops_counts_the_gemms_once():
    N, T, D, H = 2, 3, 5, 7
    for cell, G in (("lstm", 4), ("gru", 3), ("rnn", 1)):
        forward = 2 * N * T * D * G * H + 2 * N * T * H * G * H
        assert _bench.step_flops(cell, (N, T, D, H), "infer") == forward
        assert _bench.step_flops(cell, (N, T, D, H), "train") == 3 * forward


def test_shape_names():
    assert _bench.parse_shapes("tiny,2x3x4x5, Large") == (
        (1, 100, 32, 64), (2, 3, 4, 5), (64, 50, 512, 1024))
    assert _bench.shape_name((32, 100, 128, 256)) == "medium"
    assert _bench.shape_name((2, 3, 4, 5)) == "2x3x4x5"
    with pytest.raises(ValueError, match="neither"):
        _bench.parse_shapes("huge")


@pytest.mark.parametrize("cell", _bench.CELLS)
def test_onnxruntime_peer_matches_the_twin(cell):
    if not _bench.have_onnxruntime():
        pytest.skip("onnx and onnxruntime are not both installed")
    p = _bench.make_problem(cell, (3, 4, 5, 6))
    _, expected = _bench.reference_results(p)
    runner = _bench.make_runner("onnxruntime", p, threads=1)
    assert _bench.verify(runner.results("infer", runner.infer()), expected, "onnxruntime") < 1e-5


@pytest.mark.parametrize("impl", ["fastcells", "twin", "torch"])
def test_peak_memory_counts_the_outputs(impl):
    if impl == "torch" and not _bench.have_torch():
        pytest.skip("PyTorch is not installed")
    if impl == "torch":
        import torch
        torch.set_num_threads(1)
    N, T, D, H = 4, 30, 8, 16
    p = _bench.make_problem("lstm", (N, T, D, H))
    runner = _bench.make_runner(impl, p)
    runner.train()  # warm-up
    outputs = 4 * (N * T * H + 2 * N * H)  # hs, h_T, c_T in float32
    peak, kept = _bench.peak_memory(runner, "infer")
    assert outputs <= kept <= peak
    if impl == "fastcells":  # its scratch buffers count although the warm-up made them
        assert peak - kept >= 4 * T * N * 4 * H, "the chunk of gates was not counted"
    grads = 4 * (N * T * D + D * 4 * H + H * 4 * H + 4 * H)  # dxs, dWx, dWh, db
    cache = 4 * N * T * 4 * H  # at least the gates of every step
    peak, kept = _bench.peak_memory(runner, "train")
    assert outputs + grads <= kept
    assert kept + cache <= peak


def test_bench_subcommand_end_to_end(tmp_path):
    out = {"json": tmp_path / "b.json", "md": tmp_path / "b.md", "png": tmp_path / "b.png"}
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(_bench.__file__))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "fastcells", "bench", "--threads", "1", "--shapes", "2x5x3x4",
         "--cells", "lstm,rnn", "--budget", "1", "--repeat", "2", "--json", str(out["json"]),
         "--markdown", str(out["md"]), "--png", str(out["png"])],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out["json"].read_text())
    (run,) = report["runs"]
    assert run["threads"] == 1 and run["env"]["OPENBLAS_NUM_THREADS"] == "1"
    assert report["sgemm"]["one_thread_gflops"] > 0
    cases = run["cases"]
    assert {(c["cell"], c["mode"]) for c in cases} == {
        (c, m) for c in ("lstm", "rnn") for m in ("train", "infer")}
    for c in cases:
        assert c["max_rel_err_vs_twin"] <= _bench.RTOL
        assert c["gflops"] == pytest.approx(c["flops"] / c["median_s"] / 1e9)
        assert c["min_s"] <= c["median_s"] <= c["max_s"]
    impls = {c["impl"] for c in cases if c["mode"] == "infer"}
    assert {"fastcells", "twin"} <= impls
    assert "onnxruntime" not in {c["impl"] for c in cases if c["mode"] == "train"}
    assert {(m["impl"], m["mode"]) for m in report["memory"]} >= {
        ("fastcells", "train"), ("fastcells", "infer")}
    md = out["md"].read_text()
    assert md == proc.stdout
    rows = [line for line in md.splitlines() if line.startswith("| lstm") or
            line.startswith("| rnn")]
    assert len(rows) == 4 + 2 * 2  # timing rows + the two memory tables
    if importlib.util.find_spec("matplotlib") is None:
        assert not out["png"].exists()
    else:
        assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _FakeRunner:
    """A runner whose calls only log which implementation ran (for time_cases' order)."""

    def __init__(self, impl, log):
        self.impl, self.library, self.log = impl, impl, log

    def infer(self):
        self.log.append(self.impl)


@pytest.mark.parametrize("threads", [1, 2])
def test_time_cases_interleaves_the_implementations(threads, monkeypatch):
    # Two problems; each case takes its samples in turns with its group's other cases (one
    # sample per turn on one thread, THREADED_ROUNDS blocks with more), never across groups.
    monkeypatch.setattr(_bench, "SWITCH_PAUSE", 0.0)
    monkeypatch.setattr(_bench, "MIN_SAMPLE_TIME", 0.0)
    log, cases = [], []
    for p in (object(), object()):
        for impl in ("fastcells", "twin", "torch"):
            case = _bench.Case(p, "infer", _FakeRunner(impl, log))
            case.est = 1e-3
            cases.append(case)
    log_at = []
    _bench.time_cases(cases, time.perf_counter() + 60, 6, _bench._Pacer(threads),
                      done=lambda i, group: log_at.append((i, len(group), len(log))))
    assert [(i, n) for i, n, _ in log_at] == [(0, 3), (3, 3)]
    assert all(len(c.samples) == 6 and c.k == 1 for c in cases)
    first = log[:log_at[0][2]]
    assert sorted(set(first)) == ["fastcells", "torch", "twin"]  # the first group only
    turns = [impl for k, impl in enumerate(first) if k == 0 or first[k - 1] != impl]
    expected = 6 if threads == 1 else _bench.THREADED_ROUNDS
    assert turns == ["fastcells", "twin", "torch"] * expected
