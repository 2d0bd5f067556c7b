"""Build of the fastcells extension modules.

Environment variables (all optional):
  FASTCELLS_NATIVE=1   compile for this machine's CPU (-march=native). The default build runs on
                       any x86-64 CPU; its pointwise C kernels carry AVX-512 and AVX2 clones that
                       are chosen at run time.
  FASTCELLS_DEBUG=1    -O0 -g, Cython bounds/wraparound checks on (for debugging the kernels).
  FASTCELLS_SANITIZE=1 AddressSanitizer and UndefinedBehaviorSanitizer (-fsanitize=address,
                       undefined -fno-omit-frame-pointer -g -O1, compile and link) and Cython's
                       bounds/wraparound/initialized checks. The modules then load only into a
                       process that has libasan preloaded: tools/sanitize.sh builds them in a
                       scratch copy and runs the tests that way.
"""
import glob
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

NATIVE = os.environ.get("FASTCELLS_NATIVE", "") not in ("", "0")
DEBUG = os.environ.get("FASTCELLS_DEBUG", "") not in ("", "0")
SANITIZE = os.environ.get("FASTCELLS_SANITIZE", "") not in ("", "0")
CHECKS = DEBUG or SANITIZE  # Cython's bounds, wraparound and initialization checks

compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]
link_args = []
if SANITIZE:
    sanitizers = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    compile_args = ["-O1", "-g", *sanitizers]
    link_args = sanitizers
# -fno-trapping-math lets GCC turn the activations' clamps into vector selects (it only allows
# spurious FP exception flags; NaN and Inf results are unchanged). No -ffast-math.
compile_args += ["-fno-trapping-math", "-Wno-unused-function"]
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
if NATIVE:
    compile_args.append("-march=native")
    macros.append(("FC_NO_CLONES", "1"))  # one native build needs no run-time dispatch

# Compiler directives, set in this one place for every module.
directives = {
    "language_level": 3,
    "boundscheck": CHECKS,
    "wraparound": CHECKS,
    "initializedcheck": CHECKS,
    "cdivision": True,
    "embedsignature": True,
}

# Each extension lists the C sources it is built from (numpy.random style).
MODULES = {
    "_blas": ["csrc/fc_gemm.c", "csrc/fc_pool.c"],
    "_math": ["csrc/fc_common.c"],
    "_rnn": ["csrc/fc_rnn.c", "csrc/fc_common.c"],
    "_gru": ["csrc/fc_gru.c", "csrc/fc_common.c"],
    "_lstm": ["csrc/fc_lstm.c", "csrc/fc_common.c"],
}

extensions = [
    Extension(
        f"fastcells.{name}",
        [f"src/fastcells/{name}.pyx", *sources],
        include_dirs=["csrc", numpy.get_include()],  # NumPy's C API: the cells' hot path
        depends=sorted(glob.glob("csrc/*.h")),  # rebuild when a C header changes
        define_macros=macros,
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    for name, sources in MODULES.items()
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
