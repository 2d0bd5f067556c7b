"""``python -m fastcells bench``: the full benchmark (issue 6) with a report, JSON and a chart.

What it runs, per cell (lstm, gru with reset_after=True, rnn with tanh), float32 shape
(N, T, D, H) (``--shapes``: the names of ``_bench.SHAPES``, tiny (1, 100, 32, 64), small
(16, 50, 64, 128), medium (32, 100, 128, 256), large (64, 50, 512, 1024), or NxTxDxH), mode
(``train``: forward + backward with a random dhs; ``infer``: forward with training=False) and
thread count (``--threads``):

- fastcells, and its peers when installed (``--peers``): the NumPy twin, ``torch.nn.LSTM/GRU/
  RNN`` (train: forward + autograd backward; infer: under ``torch.inference_mode()``) and, for
  inference, onnxruntime on a one-node model built with ``onnx.helper`` (``_bench.onnx_model``).
  Every case is checked against the twin (max|a - b| / max|b| <= 1e-4) before anything is
  timed; a mismatch stops the run (exit status 1) with the arrays named.
- Timing, sample planning and verification are those of ``python -m fastcells`` (see
  ``fastcells._bench``): a sample is the mean of back-to-back calls lasting >= 5 ms, a case
  reports the median of its samples and their min-max spread; ``--budget`` seconds per thread
  count (verification included) are shared equally by the cases, at most ``--repeat`` samples
  each.
- GFLOP/s = ``_bench.step_flops`` / median time (GEMM work only, counted once there), and its
  fraction of the machine's single-thread SGEMM throughput (``scipy.linalg.blas.sgemm``,
  1024^3 float32), measured in the same run by the 1-thread process, before and after its
  timings (or by a short 1-thread process when 1 is not among ``--threads``).
- Peak memory (``_bench.peak_memory``) of the training step and of inference, fastcells, twin
  and torch, measured once per case in the first thread count's process, after its timings.

Thread counts. numpy's and scipy's OpenBLAS read their thread count when they are loaded, and
this process has loaded them already; so each thread count runs in its own child process
(``python -m fastcells bench --child-json PATH ...``) started with OPENBLAS_NUM_THREADS,
OMP_NUM_THREADS and MKL_NUM_THREADS set to it (torch: ``torch.set_num_threads``, onnxruntime:
``intra_op_num_threads``). The child writes its results as JSON; this parent process runs
nothing timed, it merges the children's results, prints the markdown report, writes the JSON
(``--json``), the markdown (``--markdown``), the report into the README between its marker
lines (``--readme``) and, when matplotlib is installed (``pip install "fastcells[bench]"``),
the PNG chart (``--png``).

The project README's Performance section is made with
``python -m fastcells bench --threads 1,2 --json docs/bench.json --png docs/bench.png
--readme README.md``.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from fastcells import _bench

PEER_NAMES = {"fastcells": "fastcells", "twin": "NumPy twin", "torch": "torch",
              "onnxruntime": "onnxruntime"}
SHORT = {"fastcells": "fc", "twin": "twin", "torch": "torch", "onnxruntime": "ort"}
DEFAULT_THREADS = (1, 2)
DEFAULT_SHAPES = ("tiny", "small", "medium", "large")
DEFAULT_BUDGET = 300.0  # seconds per thread count, verification included
DEFAULT_REPEAT = 15
DEFAULT_JSON = "fastcells-bench.json"
DEFAULT_PNG = "fastcells-bench.png"
SCHEMA = 1
BUSY = 0.5  # cores taken by other processes (and steal) from which a case counts as disturbed
DEFAULT_SETTLE = 3.0  # seconds a case waits at most for the machine to be quiet
SETTLE_WINDOW = 0.25  # seconds over which quiet is measured
README_BEGIN = "<!-- fastcells bench: begin -->"
README_END = "<!-- fastcells bench: end -->"


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def _int_list(text):
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or any(v < 1 for v in values):
        raise ValueError
    return tuple(dict.fromkeys(values))


def _names(text, allowed, what, parser):
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        parser.error(f"{what}: unknown {','.join(unknown) or '(none)'}; choose from "
                     + ",".join(allowed))
    return list(dict.fromkeys(names))


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m fastcells bench",
        description="The full benchmark: fastcells against its NumPy twins, PyTorch and "
                    "onnxruntime (float32, CPU), each case checked against the twin first; "
                    "one child process per thread count. Prints a markdown report, writes "
                    "JSON and a PNG chart.")
    parser.add_argument("--threads", default="1,2", metavar="N,...",
                        help="thread counts, one child process each (default 1,2)")
    parser.add_argument("--shapes", default=",".join(DEFAULT_SHAPES), metavar="NAME|NxTxDxH,...",
                        help="float32 shapes: " + ", ".join(
                            f"{k} {_bench.shape_label(v)}" for k, v in _bench.SHAPES.items())
                        + ", or NxTxDxH (default all four names)")
    parser.add_argument("--cells", default=",".join(_bench.CELLS),
                        help="among lstm,gru,rnn (default all; cells whose fast kernels are not "
                             "in this build are skipped)")
    parser.add_argument("--modes", default=",".join(_bench.MODES),
                        help="train (forward + backward) and/or infer (default both)")
    parser.add_argument("--peers", default="twin,torch,onnxruntime",
                        help="peers to time beside fastcells, among twin,torch,onnxruntime "
                             "(default all; those not installed are left out)")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, metavar="R",
                        help=f"most samples per case (default {DEFAULT_REPEAT})")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET, metavar="SECONDS",
                        help="target time of each thread count's run, verification included, "
                             f"memory not (default {DEFAULT_BUDGET:.0f})")
    parser.add_argument("--settle", type=float, default=DEFAULT_SETTLE, metavar="SECONDS",
                        help="before each case, wait up to this long for other processes to "
                             f"leave the machine quiet (< {BUSY} cores busy over "
                             f"{SETTLE_WINDOW} s; default {DEFAULT_SETTLE:g}, 0 for never); in "
                             "all at most a quarter of --budget")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the peak-memory measurements")
    parser.add_argument("--json", default=DEFAULT_JSON, metavar="PATH",
                        help=f"write every sample and result here (default {DEFAULT_JSON}; "
                             "'' for none)")
    parser.add_argument("--png", default=DEFAULT_PNG, metavar="PATH",
                        help=f"the chart, when matplotlib is installed (default {DEFAULT_PNG}; "
                             "'' for none)")
    parser.add_argument("--markdown", default="", metavar="PATH",
                        help="also write the markdown report to this file")
    parser.add_argument("--readme", default="", metavar="PATH",
                        help="replace the report between the lines '" + README_BEGIN + "' and '"
                             + README_END + "' of this markdown file (the project README's "
                             "Performance section)")
    # Internal: a child process (one thread count), or the SGEMM reference alone.
    parser.add_argument("--child-json", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sgemm-only", action="store_true", help=argparse.SUPPRESS)
    return parser


def parse_args(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.threads = _int_list(args.threads)
    except ValueError:
        parser.error(f"--threads: {args.threads!r} is not a list of positive integers")
    try:
        args.shapes = tuple(dict.fromkeys(_bench.parse_shapes(args.shapes)))
    except ValueError as e:
        parser.error(f"--shapes: {e}")
    args.cells = _names(args.cells, _bench.CELLS, "--cells", parser)
    args.modes = _names(args.modes, _bench.MODES, "--modes", parser)
    args.peers = _names(args.peers, _bench.PEERS[1:], "--peers", parser)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if not args.budget > 0:
        parser.error("--budget must be positive")
    if not args.settle >= 0:
        parser.error("--settle must be >= 0")
    if args.child_json is not None and len(args.threads) != 1:
        parser.error("a child runs one thread count")
    return args


def _child_argv(args, threads, path, memory, sgemm_only=False):
    argv = ["bench", "--child-json", path, "--threads", str(threads)]
    if sgemm_only:
        return argv + ["--sgemm-only"]
    argv += ["--shapes", ",".join(map(_bench.shape_label, args.shapes)),
             "--cells", ",".join(args.cells), "--modes", ",".join(args.modes),
             "--peers", ",".join(args.peers), "--repeat", str(args.repeat),
             "--budget", repr(args.budget), "--settle", repr(args.settle)]
    return argv + ([] if memory else ["--no-memory"])


# ----------------------------------------------------------------------------------------------
# Child: one thread count
# ----------------------------------------------------------------------------------------------
def _machine():
    model, simd = _bench._cpu_model()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    versions = _bench._versions()
    try:
        import onnxruntime
        versions.append(f"onnxruntime {onnxruntime.__version__}")
    except ImportError:
        versions.append("onnxruntime not installed")
    return {"cpu": model, "simd": simd, "logical_cores": os.cpu_count(), "usable_cores": usable,
            "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "versions": versions}


def _sgemm(threads, pacer):
    pacer.switch_to("scipy BLAS")
    samples = _bench.sgemm_gflops()
    _log(f"[{threads} thr] SGEMM {_bench.SGEMM_SIZE}^3 float32 through scipy's BLAS: "
         f"{_median(samples):.1f} GFLOP/s (median of {len(samples)})")
    return samples


def _median(values):
    v = sorted(values)
    n = len(v)
    return float(v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2]))


def _case_record(case, threads):
    p, flops = case.p, _bench.step_flops(case.p.cell, case.p.shape, case.mode)
    med = case.median
    return {"cell": p.cell, "shape": list(p.shape), "shape_name": _bench.shape_name(p.shape),
            "mode": case.mode, "impl": case.impl, "threads": threads,
            "median_s": med, "min_s": float(min(case.samples)),
            "max_s": float(max(case.samples)), "samples_s": [float(t) for t in case.samples],
            "calls_per_sample": case.k, "max_rel_err_vs_twin": case.err,
            "other_cores": (getattr(case, "load", None) or {}).get("other_cores"),
            "steal_cores": (getattr(case, "load", None) or {}).get("steal_cores"),
            "settle_s": getattr(case, "settle_s", 0.0),
            "flops": flops, "gflops": flops / med / 1e9}


def _memory_records(cases):
    out = []
    for case in cases:
        if case.impl not in ("fastcells", "twin", "torch"):
            continue
        peak, kept = _bench.peak_memory(case.runner, case.mode)
        out.append({"cell": case.p.cell, "shape": list(case.p.shape),
                    "shape_name": _bench.shape_name(case.p.shape), "mode": case.mode,
                    "impl": case.impl, "peak_bytes": int(peak), "kept_bytes": int(kept)})
    return out


class _Load:
    """How busy the machine was with other processes while this one ran: the CPU time of the
    whole machine (/proc/stat: user, nice, system, irq, softirq) minus this process's own
    (threads included), per second of wall time, in cores; and the hypervisor's steal time.
    None where /proc/stat is not readable (not Linux)."""

    FIELDS = (0, 1, 2, 5, 6)  # user nice system [idle iowait] irq softirq

    def __init__(self):
        self.start = self._read()

    @staticmethod
    def _read():
        try:
            with open("/proc/stat") as f:
                values = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        own = os.times()
        return (time.perf_counter(), sum(values[i] for i in _Load.FIELDS),
                values[7] if len(values) > 7 else 0, own.user + own.system)

    def result(self):
        end = self._read()
        if self.start is None or end is None:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        wall = end[0] - self.start[0]
        busy = (end[1] - self.start[1]) / hz
        steal = (end[2] - self.start[2]) / hz
        own = end[3] - self.start[3]
        return {"wall_s": wall, "other_cores": max(0.0, busy - own) / wall,
                "steal_cores": steal / wall, "own_cores": own / wall}


class _Settle:
    """Wait, before a case, until other processes leave the machine quiet: other processes'
    cores plus steal < BUSY over SETTLE_WINDOW seconds; at most ``per_case`` seconds per case
    and ``total`` in all (the time waited comes out of the sampling budget). After two cases
    in a row that waited in vain, the machine is taken as busy for a while: the next cases
    look once (one window) until one finds it quiet again."""

    def __init__(self, per_case, total):
        self.per_case, self.total, self.spent, self.in_vain = per_case, total, 0.0, 0

    def wait(self):
        t0 = time.perf_counter()
        limit = SETTLE_WINDOW if self.in_vain >= 2 else self.per_case
        quiet = False
        while (time.perf_counter() - t0 < limit
               and self.spent + time.perf_counter() - t0 < self.total):
            load = _Load()
            time.sleep(SETTLE_WINDOW)
            r = load.result()
            if r is None or r["other_cores"] + r["steal_cores"] < BUSY:
                quiet = True
                break
        self.in_vain = 0 if quiet else self.in_vain + 1
        waited = time.perf_counter() - t0
        self.spent += waited
        return waited


def child_main(args):
    """Run one thread count; write its results (or its verification failure) as JSON."""
    threads = args.threads[0]
    start = time.perf_counter()
    mismatched = [v for v in _bench.THREAD_VARS if os.environ.get(v) != str(threads)]
    if mismatched:
        _log(f"warning: {', '.join(mismatched)} not set to {threads}: numpy's and scipy's BLAS "
             "may use other thread counts; run through `python -m fastcells bench`")
    result = {"threads": threads, "machine": _machine(),
              "env": {v: os.environ.get(v) for v in _bench.THREAD_VARS}}
    pacer = _bench._Pacer(threads)
    load = _Load()

    def write(status):
        result["status"] = status
        result["load"] = load.result()
        result["wall_s"] = time.perf_counter() - start
        with open(args.child_json, "w") as f:
            json.dump(result, f)

    if args.sgemm_only:
        result["sgemm_gflops"] = {"before": _sgemm(threads, pacer), "after": []}
        write("ok")
        return 0

    impls = ["fastcells"] + [i for i in args.peers
                             if i == "twin" or (i == "torch" and _bench.have_torch())
                             or (i == "onnxruntime" and _bench.have_onnxruntime())]
    import fastcells
    fastcells.set_num_threads(threads)
    result["fastcells_threads"] = fastcells.get_num_threads()
    if "torch" in impls:
        import torch
        torch.set_num_threads(threads)
        result["torch_threads"] = torch.get_num_threads()
    cells = _bench.available_cells(args.cells)
    result.update(impls=impls, cells=cells, modes=args.modes,
                  shapes=[list(s) for s in args.shapes],
                  skipped_cells=[c for c in args.cells if c not in cells],
                  missing_peers=[i for i in args.peers if i not in impls],
                  budget_s=args.budget, repeat=args.repeat)
    result["sgemm_gflops"] = {"before": _sgemm(threads, pacer)}
    deadline = time.perf_counter() + args.budget
    cases = []
    try:
        for cell in cells:
            for shape in args.shapes:
                t0 = time.perf_counter()
                p = _bench.make_problem(cell, shape)
                more, errs = _bench.verify_problem(p, impls, pacer, args.modes, threads)
                cases += more
                _log(f"[{threads} thr] verified {cell} {p.label}: max rel err vs twin "
                     + ", ".join(f"{i} {e:.1e}" for i, e in errs.items())
                     + f" ({time.perf_counter() - t0:.1f} s)")
    except _bench.VerificationError as e:
        result["error"] = str(e)
        write("verification failed")
        return 1

    settle = _Settle(args.settle, args.budget / 4)

    def before(i, group):
        settle_s = settle.wait() if args.settle > 0 else 0.0
        load = _Load()  # over the group's samples, which alternate among its cases
        for case in group:
            case.settle_s, case.load = settle_s / len(group), load

    def done(i, group):
        load = group[0].load.result()
        for case in group:
            case.load = load
        end = i + len(group)
        if end == len(cases) or cases[end].p is not group[0].p:
            _log(f"[{threads} thr] timed {group[0].p.cell} {group[0].p.label} ({end}/"
                 f"{len(cases)} cases, {time.perf_counter() - start:.0f} s)")

    _bench.time_cases(cases, deadline, args.repeat, pacer, done, before)
    _log(f"[{threads} thr] timed {len(cases)} cases in "
         f"{time.perf_counter() - start:.1f} s ({settle.spent:.0f} s of it waiting for quiet)")
    result["settle_s"] = settle.spent
    result["sgemm_gflops"]["after"] = _sgemm(threads, pacer)
    result["cases"] = [_case_record(c, threads) for c in cases]
    if args.memory:
        t0 = time.perf_counter()
        result["memory"] = _memory_records(cases)
        _log(f"[{threads} thr] peak memory measured in {time.perf_counter() - t0:.1f} s")
    write("ok")
    return 0


# ----------------------------------------------------------------------------------------------
# Parent: one child per thread count, then the report
# ----------------------------------------------------------------------------------------------
def _spawn(args, threads, memory, sgemm_only=False):
    env = dict(os.environ)
    env.update({v: str(threads) for v in _bench.THREAD_VARS})
    fd, path = tempfile.mkstemp(prefix=f"fastcells-bench-{threads}thr-", suffix=".json")
    os.close(fd)
    try:
        cmd = [sys.executable, "-m", "fastcells",
               *_child_argv(args, threads, path, memory, sgemm_only)]
        sys.stdout.flush()
        proc = subprocess.run(cmd, env=env, stdout=sys.stderr.fileno())
        try:
            with open(path) as f:
                result = json.load(f)
        except (OSError, ValueError):
            result = {"threads": threads, "status": f"child exited with {proc.returncode}, "
                                                    "no results"}
    finally:
        os.unlink(path)
    return result


def _sgemm_reference(runs):
    """Single-thread SGEMM GFLOP/s (the median of the 1-thread run's samples, before and after
    its timings) and those samples; (None, None) when no 1-thread run succeeded."""
    for run in runs:
        if run and run["threads"] == 1 and run.get("status") == "ok":
            s = run["sgemm_gflops"]
            return _median(s["before"] + s.get("after", [])), s
    return None, None


def assemble(args, argv, runs, sgemm_run, wall):
    sgemm1, sgemm1_samples = _sgemm_reference(runs + [sgemm_run])
    for run in runs:
        s = run["sgemm_gflops"]
        run["sgemm_median_gflops"] = _median(s["before"] + s["after"])
        for c in run["cases"]:
            c["fraction_of_1thread_sgemm"] = c["gflops"] / sgemm1 if sgemm1 else None
    memory = next((r["memory"] for r in runs if r.get("memory")), [])
    memory_threads = next((r["threads"] for r in runs if r.get("memory")), None)
    return {
        "schema": SCHEMA,
        "command": "python -m fastcells bench" + "".join(f" {a}" for a in argv),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "wall_s": wall,
        "machine": runs[0]["machine"],
        "dtype": "float32",
        "layout": "batch-first",
        "flops": _bench.step_flops.__doc__.strip(),
        "sgemm": {"size": _bench.SGEMM_SIZE, "routine": "scipy.linalg.blas.sgemm",
                  "one_thread_gflops": sgemm1, "one_thread_samples": sgemm1_samples},
        "rtol_vs_twin": _bench.RTOL,
        "min_sample_s": _bench.MIN_SAMPLE_TIME,
        "runs": runs,
        "memory_threads": memory_threads,
        "memory": memory,
        "memory_method": _bench.peak_memory.__doc__.strip(),
    }


def _busy(c):
    return c is not None and (c.get("other_cores") or 0.0) + (c.get("steal_cores") or 0.0) >= BUSY


def _fmt_time(c):
    if c is None:
        return "–"
    mark = "\\*" if _busy(c) else ""
    if len(c["samples_s"]) < 2:
        return _bench._fmt_ms(c["median_s"]) + mark
    return (f"{_bench._fmt_ms(c['median_s'])}{mark} ({_bench._fmt_ms(c['min_s'])}–"
            f"{_bench._fmt_ms(c['max_s'])})")


def _fmt_mb(nbytes):
    if nbytes is None:
        return "–"
    mb = nbytes / 1e6
    return f"{mb:.0f}" if mb >= 100 else f"{mb:.1f}" if mb >= 1 else f"{mb:.2f}"


def _ratio(num, den):
    if not num or not den:
        return "–"
    return f"{num / den:.2g}×" if num / den < 10 else f"{num / den:.0f}×"


def _order(report):
    """cells, shapes (lists) and modes, in the order they were run."""
    cases = [c for r in report["runs"] for c in r["cases"]]
    cells = list(dict.fromkeys(c["cell"] for c in cases))
    shapes = list(dict.fromkeys(tuple(c["shape"]) for c in cases))
    modes = [m for m in _bench.MODES if any(c["mode"] == m for c in cases)]
    return cells, shapes, modes


def table(report):
    """The timing table: one row per cell, step, shape and thread count."""
    runs = report["runs"]
    impls = [i for i in _bench.PEERS if any(i in r["impls"] for r in runs)]
    peers = impls[1:]
    by_key = {(c["cell"], tuple(c["shape"]), c["mode"], c["impl"], c["threads"]): c
              for r in runs for c in r["cases"]}
    cells, shapes, modes = _order(report)
    head = (["cell", "step", "shape N×T×D×H", "thr"]
            + [f"{PEER_NAMES[i]} ms" for i in impls] + ["fc GFLOP/s", "fc / SGEMM₁"]
            + [f"{SHORT[i]}/fc" for i in peers]
            + ["n (" + "/".join(SHORT[i] for i in impls) + ")", "fc err"])
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
    for cell in cells:
        for mode in modes:
            for shape in shapes:
                for run in runs:
                    n = run["threads"]
                    got = {i: by_key.get((cell, shape, mode, i, n)) for i in impls}
                    fc = got["fastcells"]
                    if fc is None:
                        continue
                    frac = fc.get("fraction_of_1thread_sgemm")
                    row = [cell, mode, f"{_bench.shape_name(shape)} {'×'.join(map(str, shape))}",
                           str(n)]
                    row += [_fmt_time(got[i]) for i in impls]
                    row += [f"{fc['gflops']:.1f}", "–" if frac is None else f"{100 * frac:.0f}%"]
                    row += [_ratio(got[i] and got[i]["median_s"], fc["median_s"])
                            for i in peers]
                    row.append("/".join(str(len(got[i]["samples_s"])) if got[i] else "–"
                                        for i in impls))
                    row.append(f"{fc['max_rel_err_vs_twin']:.0e}")
                    lines.append("| " + " | ".join(row) + " |")
    return lines


def memory_tables(report):
    """(training lines, inference lines) of the peak-memory tables (empty when not measured)."""
    mem = report.get("memory") or []
    by_key = {(m["cell"], tuple(m["shape"]), m["mode"], m["impl"]): m for m in mem}
    cells, shapes, _ = _order(report)

    def rows(mode):
        for cell in cells:
            for shape in shapes:
                g = {i: by_key.get((cell, shape, mode, i)) for i in ("fastcells", "twin", "torch")}
                if g["fastcells"] is not None:
                    label = f"{_bench.shape_name(shape)} {'×'.join(map(str, shape))}"
                    yield cell, shape, label, g, {i: g[i] and g[i]["peak_bytes"] for i in g}

    train = []
    if any(m["mode"] == "train" for m in mem):
        train = ["| cell | shape N×T×D×H | fastcells MB | NumPy twin MB | torch MB | "
                 "torch/fc | fc kept MB |",
                 "|---|---|---:|---:|---:|---:|---:|"]
        for cell, shape, label, g, peak in rows("train"):
            train.append(
                f"| {cell} | {label} | {_fmt_mb(peak['fastcells'])} | {_fmt_mb(peak['twin'])} | "
                f"{_fmt_mb(peak['torch'])} | {_ratio(peak['torch'], peak['fastcells'])} | "
                f"{_fmt_mb(g['fastcells']['kept_bytes'])} |")
    infer = []
    if any(m["mode"] == "infer" for m in mem):
        infer = ["| cell | shape N×T×D×H | fastcells MB | outputs MB | excess MB | "
                 "excess / (N·H floats) | NumPy twin MB | torch MB |",
                 "|---|---|---:|---:|---:|---:|---:|---:|"]
        for cell, shape, label, g, peak in rows("infer"):
            N, T, D, H = shape
            fc = g["fastcells"]
            excess = fc["peak_bytes"] - fc["kept_bytes"]
            infer.append(
                f"| {cell} | {label} | {_fmt_mb(fc['peak_bytes'])} | "
                f"{_fmt_mb(fc['kept_bytes'])} | {_fmt_mb(excess)} | {excess / (4 * N * H):.0f} | "
                f"{_fmt_mb(peak['twin'])} | {_fmt_mb(peak['torch'])} |")
    return train, infer


def machine_lines(report):
    m = report["machine"]
    lines = [
        f"- CPU: {m['cpu']}" + (f" ({m['simd']})" if m["simd"] else "")
        + f"; {m['logical_cores']} logical cores, {m['usable_cores']} usable",
        f"- {m['system']}, Python {m['python']}; " + ", ".join(m["versions"]),
    ]
    s1 = report["sgemm"]["one_thread_gflops"]
    sg = ", ".join(f"{r['threads']} thread{'s' if r['threads'] > 1 else ''} "
                   f"{r['sgemm_median_gflops']:.1f}" for r in report["runs"])
    lines.append(f"- SGEMM {report['sgemm']['size']}³ float32 through scipy's BLAS (the "
                 f"OpenBLAS scipy bundles), GFLOP/s, median before and after the timings: "
                 + sg + ("" if any(r["threads"] == 1 for r in report["runs"])
                         else "; 1 thread " + ("unknown" if s1 is None else f"{s1:.1f}")
                         + " (a separate short run)"))
    for r in report["runs"]:
        env = " ".join(f"{k}={v}" for k, v in r["env"].items())
        extra = (f", fastcells.get_num_threads()={r['fastcells_threads']}"
                 if "fastcells_threads" in r else "")
        extra += f", torch.get_num_threads()={r['torch_threads']}" if "torch_threads" in r else ""
        busy = r.get("load")
        busy = ("" if not busy else f"; meanwhile other processes kept {busy['other_cores']:.2f} "
                f"cores busy on average (steal {busy['steal_cores']:.2f})")
        cases = r.get("cases") or []
        marked = sum(_busy(c) for c in cases)
        if cases:
            busy += (f"; {r.get('settle_s', 0):.0f} s spent waiting for quiet before cases, "
                     f"{marked} of {len(cases)} cases still disturbed (\\*)")
        lines.append(f"- {r['threads']} thread{'s' if r['threads'] > 1 else ''}: one process, "
                     f"{env}{extra}; {r['wall_s']:.0f} s{busy}")
        if r.get("skipped_cells"):
            lines.append(f"  - skipped (no fast kernel in this build): "
                         f"{', '.join(r['skipped_cells'])}")
        if r.get("missing_peers"):
            lines.append(f"  - not installed, left out: {', '.join(r['missing_peers'])}")
    return lines


def notes(report):
    runs = report["runs"]
    impls = [i for i in _bench.PEERS if any(i in r["impls"] for r in runs)]
    text = [
        "ms per call: median (min–max) of n samples, each the mean of back-to-back calls "
        f"lasting >= {report['min_sample_s'] * 1e3:.0f} ms. train = forward + backward with a "
        "random dhs (torch: autograd, dxs included); infer = forward with training=False"
        + (" (torch: inference_mode)" if "torch" in impls else "")
        + (" (onnxruntime: one LSTM/GRU/RNN node between two transposes, as batch-first)"
           if "onnxruntime" in impls else "") + ".",
        "GFLOP/s count the matrix products only (`fastcells._bench.step_flops`): forward "
        "2·N·T·G·H·(D + H), training 3× that (backward: dxs, dWx, dh, dWh); G = 4 (LSTM), "
        "3 (GRU), 1 (RNN). fc / SGEMM₁ = fastcells' GFLOP/s over the single-thread SGEMM "
        "above (so up to ~200% with 2 threads).",
        f"\\* = while this case was timed, other processes and the hypervisor's steal took "
        f">= {BUSY} of the machine's cores on average (/proc/stat): its time is likely "
        "inflated.",
        "x/fc = x's median time over fastcells': > 1 means fastcells is faster. fc err = "
        "max|fc − twin| / max|twin| over outputs, final states and gradients; every "
        f"implementation was checked (<= {report['rtol_vs_twin']:.0e}) before any timing.",
    ]
    if report.get("memory"):
        text.append(
            f"Peak memory ({report['memory_threads']}-thread process, one call each): bytes "
            "allocated by the call and alive at once at the worst moment, inputs not counted "
            "(outputs, cache, gradients, temporaries; the memory fastcells keeps between "
            "calls, its scratch buffers and pool of freed result arrays, released first "
            "(release_memory), so counted as on a first call); tracemalloc "
            "for fastcells and the twin, the CPU allocator's events in torch.profiler for "
            "torch; BLAS/OpenMP internal "
            "buffers are not counted, nor is onnxruntime measured (its arena is visible to "
            "neither tool). kept = what the call returns (train: outputs and "
            "gradients; infer: outputs and final states); excess = peak − kept.")
    return text


def markdown(report, title=True):
    lines = ["## fastcells benchmark: float32, batch-first", ""] if title else []
    lines += machine_lines(report)
    lines += [f"- command: `{report['command']}` ({report['date']}, "
              f"{report['wall_s']:.0f} s in all)", ""]
    lines += table(report)
    lines.append("")
    train, infer = memory_tables(report)
    if train:
        lines += ["Peak memory of a training step (MB):", ""] + train + [""]
    if infer:
        lines += ["Peak memory of inference (MB):", ""] + infer + [""]
    for paragraph in notes(report):
        lines += [paragraph, ""]
    return lines[:-1]


def update_readme(path, report):
    """Replace the lines strictly between README_BEGIN and README_END in ``path`` with the
    report (without its title); raise ValueError when the markers are missing."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        raise ValueError(f"{path}: no '{README_BEGIN}' ... '{README_END}' lines")
    begin += len(README_BEGIN)
    body = "\n".join(markdown(report, title=False))
    with open(path, "w", encoding="utf-8") as f:
        f.write(text[:begin] + "\n" + body + "\n" + text[end:])


# ----------------------------------------------------------------------------------------------
# Chart
# ----------------------------------------------------------------------------------------------
COLORS = {"twin": "#4c72b0", "torch": "#dd8452", "onnxruntime": "#55a868"}


def plot(report, path):
    """One panel per thread count and mode: grouped bars per cell and shape, the speedup of
    fastcells over each peer (peer time / fastcells time, log scale; > 1: fastcells faster).
    Returns False when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import FixedLocator, FuncFormatter

    runs = report["runs"]
    cells, shapes, modes = _order(report)
    peers = [i for i in _bench.PEERS[1:] if any(i in r["impls"] for r in runs)]
    by_key = {(c["cell"], tuple(c["shape"]), c["mode"], c["impl"], c["threads"]): c
              for r in runs for c in r["cases"]}
    groups = [(cell, shape) for cell in cells for shape in shapes]
    nrow, ncol = len(runs), len(modes)
    fig, axes = plt.subplots(nrow, ncol, figsize=(max(7.0, 0.62 * len(groups) * ncol), 3.6 * nrow),
                             squeeze=False, sharey=True)
    ratios, handles, disturbed = [], {}, False
    for r, run in enumerate(runs):
        for m, mode in enumerate(modes):
            ax = axes[r][m]
            mode_peers = _bench.impls_for(mode, peers)
            width = 0.8 / max(1, len(mode_peers))
            for j, peer in enumerate(mode_peers):
                xs, ys, hatches = [], [], []
                for g, (cell, shape) in enumerate(groups):
                    fc = by_key.get((cell, shape, mode, "fastcells", run["threads"]))
                    other = by_key.get((cell, shape, mode, peer, run["threads"]))
                    if fc and other:
                        xs.append(g - 0.4 + width * (j + 0.5))
                        ys.append(other["median_s"] / fc["median_s"])
                        hatches.append("////" if _busy(fc) or _busy(other) else None)
                ratios += ys
                bars = ax.bar(xs, ys, width, bottom=0, color=COLORS[peer])
                for bar, hatch in zip(bars, hatches):
                    if hatch:
                        bar.set_hatch(hatch)
                        bar.set_edgecolor("white")
                        disturbed = True
                handles[peer] = bars
            ax.axhline(1.0, color="black", lw=0.8)
            ax.set_yscale("log")
            ax.set_xticks(range(len(groups)))
            ax.set_xticklabels([f"{c}\n{_bench.shape_name(s)}" for c, s in groups], fontsize=8)
            for g in range(1, len(cells)):
                ax.axvline(g * len(shapes) - 0.5, color="grey", lw=0.5, ls=":")
            ax.set_title(f"{'training step' if mode == 'train' else 'inference'}, "
                         f"{run['threads']} thread{'s' if run['threads'] > 1 else ''}",
                         fontsize=10)
            ax.grid(axis="y", which="both", lw=0.3, alpha=0.5)
            if m == 0:
                ax.set_ylabel("peer time / fastcells time")
    if ratios:
        lo, hi = min(ratios + [1.0]), max(ratios + [1.0])
        axes[0][0].set_ylim(lo / 1.5, hi * 1.5)
    ticks = [m * 10.0 ** e for e in range(-3, 5) for m in (1, 2, 5)]
    for ax in axes.flat:
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}×"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda y, _: ""))
    # Lay the panels out first, below a band of 0.8 inch for the title and the legend.
    band = 0.8 / fig.get_figheight()
    fig.tight_layout(rect=(0, 0, 1, 1 - band))
    m = report["machine"]
    fig.suptitle("fastcells' speedup over each peer: peer time / fastcells time (> 1: fastcells "
                 f"faster), median times, float32\n{m['cpu']}, {m['usable_cores']} cores; "
                 f"{report['date'][:10]}", fontsize=10, y=1 - 0.05 * band, va="top")
    shown = [p for p in peers if p in handles]
    items = [Patch(facecolor=COLORS[p]) for p in shown]
    labels = [PEER_NAMES[p] for p in shown]
    if disturbed:
        items.append(Patch(facecolor="grey", edgecolor="white", hatch="////"))
        labels.append(f"hatched: disturbed (other processes + steal >= {BUSY} cores)")
    fig.legend(items, labels, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.55 * band),
               ncol=len(items), fontsize=9, frameon=False)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------
def main(argv):
    args = parse_args(argv)
    if args.child_json is not None:
        return child_main(args)
    start = time.perf_counter()
    runs = []
    for i, threads in enumerate(args.threads):
        _log(f"== {threads} thread{'s' if threads > 1 else ''}: a child process")
        run = _spawn(args, threads, memory=args.memory and i == 0)
        if run.get("status") != "ok":
            _log("\n" + "!" * 78 + f"\n{threads}-thread run: {run.get('status')}\n"
                 + run.get("error", "") + "\nNothing is reported: every implementation must "
                 "match the NumPy twin before it is benchmarked.\n" + "!" * 78)
            return 1
        runs.append(run)
    sgemm_run = None
    if 1 not in args.threads:
        _log("== the single-thread SGEMM reference: a short child process")
        sgemm_run = _spawn(args, 1, memory=False, sgemm_only=True)
    report = assemble(args, argv, runs, sgemm_run, time.perf_counter() - start)
    if not any(r["cases"] for r in runs):
        print("Nothing to time (no cell of --cells has a fast kernel in this build).")
        return 0
    lines = markdown(report)
    print("\n".join(lines))
    status = 0
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(lines) + "\n")
        _log(f"wrote {args.markdown}")
    if args.readme:
        try:
            update_readme(args.readme, report)
            _log(f"updated the report in {args.readme}")
        except (OSError, ValueError) as e:
            _log(f"error: {e}")
            status = 1
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        _log(f"wrote {args.json}")
    if args.png:
        if plot(report, args.png):
            _log(f"wrote {args.png}")
        else:
            _log("matplotlib is not installed: no chart (pip install \"fastcells[bench]\")")
    return status
