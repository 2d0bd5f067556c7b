#!/usr/bin/env bash
# Run the test suite against a build of fastcells with AddressSanitizer, UndefinedBehaviorSanitizer
# and Cython's bounds/wraparound/initialized checks (setup.py: FASTCELLS_SANITIZE=1).
#
#   tools/sanitize.sh                      # the whole test suite (tests/)
#   tools/sanitize.sh tests/test_cells.py -k lstm     # any pytest arguments instead
#
# The build happens in a scratch copy of this checkout (the in-place modules stay as they are:
# a sanitized module loads only into a process with libasan preloaded). The interpreter is
# $PYTHON (default python3); when it lacks the build or test requirements, a scratch virtual
# environment gets them from pip. The tests then run with gcc's libasan in LD_PRELOAD,
# ASAN_OPTIONS=detect_leaks=0 (CPython itself leaks at exit) and
# UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1, and PYTHONMALLOC=malloc so that Python's
# own allocations are checked too. Any sanitizer report, and any exception swallowed by a
# noexcept Cython function (a failed bounds check there), fails the run. Tests that need an
# unsanitized process (address-space limits, RSS) skip themselves. FASTCELLS_SANITIZE_KEEP=1
# keeps the scratch directory for a look at the build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/fastcells-sanitize.XXXXXX")
if [ "${FASTCELLS_SANITIZE_KEEP:-0}" = 1 ]; then
    echo "sanitize: scratch directory $work (kept)"
else
    trap 'rm -rf "$work"' EXIT
fi
PY=${PYTHON:-python3}
CC=${CC:-gcc}
start=$(date +%s)

# 1. a scratch copy of the sources, without build products
mkdir -p "$work/tree/src"
cp -r "$root/setup.py" "$root/pyproject.toml" "$root/README.md" "$root/csrc" "$root/tests" \
    "$work/tree/"
cp -r "$root/src/fastcells" "$work/tree/src/"
rm -f "$work/tree/src/fastcells/"*.so "$work/tree/src/fastcells/"*.c
find "$work/tree" -name __pycache__ -prune -exec rm -rf {} +

# 2. an interpreter with the build and test requirements
if ! "$PY" -c "import Cython, setuptools, numpy, scipy, pytest, hypothesis" 2>/dev/null; then
    echo "sanitize: $PY lacks the build/test requirements: installing them in a scratch venv"
    "$PY" -m venv "$work/venv"
    "$work/venv/bin/pip" install -q --disable-pip-version-check "Cython>=3.0.8" \
        "setuptools>=64" wheel numpy scipy pytest hypothesis
    PY=$work/venv/bin/python
fi

# 3. the sanitized build
jobs=$(nproc 2>/dev/null || echo 2)
(cd "$work/tree" && CC=$CC FASTCELLS_SANITIZE=1 "$PY" setup.py -q build_ext --inplace -j "$jobs" \
    > "$work/build.log" 2>&1) || { cat "$work/build.log"; exit 1; }
libasan=$("$CC" -print-file-name=libasan.so)
if [ ! -e "$libasan" ]; then
    echo "sanitize: $CC has no libasan.so (got '$libasan')" >&2
    exit 1
fi
echo "sanitize: built in $(( $(date +%s) - start )) s; LD_PRELOAD=$libasan"

# 4. the tests, under the sanitizers. Reports go to files (pytest captures the output of a test
# that dies). libstdc++ is preloaded after libasan so that ASan's interceptor of C++ exceptions
# finds the real __cxa_throw (for torch, onnxruntime, matplotlib, loaded later by the tests).
mkdir -p "$work/reports"
libstdcxx=$("$CC" -print-file-name=libstdc++.so.6)
[ $# -gt 0 ] || set -- tests
status=0
(cd "$work/tree" &&
    LD_PRELOAD="$libasan $libstdcxx" \
    ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:log_path=$work/reports/asan \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_path=$work/reports/ubsan \
    PYTHONMALLOC=malloc \
    PYTHONPATH="$work/tree/src:$work/tree/tests" \
    "$PY" -m pytest -q -p no:cacheprovider \
        -W error::pytest.PytestUnraisableExceptionWarning "$@") 2>&1 \
    | tee "$work/tests.log" || status=${PIPESTATUS[0]}
if compgen -G "$work/reports/*" > /dev/null; then
    cat "$work"/reports/* >&2
    echo "sanitize: FAILED: the sanitizer reports above" >&2
    status=1
elif grep -q "Exception ignored in" "$work/tests.log"; then
    echo "sanitize: FAILED: an exception was swallowed (see 'Exception ignored in' above)" >&2
    status=1
fi
echo "sanitize: tests exited with $status after $(( $(date +%s) - start )) s in all"
exit "$status"
