/* fc_gemm.c: the packed recurrent GEMM, in float and double (see fastcells.h). */
#include "fastcells.h"

/* Rows of the register tile: 8 x two vectors fill the 32 registers of AVX-512; the 16
 * registers of AVX2 and SSE2 hold 2 (each 64-byte vector is two or four registers there). */
int fc_gemm_rows(void)
{
    static int rows = 0;
    if (rows == 0) {
#if defined(__GNUC__) && defined(__x86_64__) && !defined(FC_NO_CLONES)
        __builtin_cpu_init();
        rows = __builtin_cpu_supports("x86-64-v4") ? 8 : 2; /* as FC_CLONES picks */
#elif defined(__AVX512F__)
        rows = 8;
#else
        rows = 2;
#endif
    }
    return rows;
}

/* Vectors one fc_gemv block may hold when the edge vectors join it: 10 accumulators fit
 * AVX-512's 32 registers with room to spare; on AVX2 and SSE2 a 64-byte vector takes two or
 * four registers, and the full blocks of 8 already spill there, so the edges join only a block
 * of at most 4 (a pass of their own would spill less but wait on the FMA latency). */
int fc_gemv_max_vectors(void)
{
    return fc_gemm_rows() == 8 ? 10 : 6;
}

/* The packing buffers of fc_gemm_packed (A: FC_APACK_BYTES) and fc_gemm (A, and B: FC_BPACK_BYTES),
 * one pair per thread, shared by both precisions: thread-local storage that the C runtime
 * allocates for each thread on its first call (no allocation in the kernels themselves). */
#define FC_APACK_BYTES 65536
#define FC_BPACK_BYTES 2097152
static _Thread_local unsigned char fc_apack_buf[FC_APACK_BYTES] __attribute__((aligned(64)));
static _Thread_local unsigned char fc_bpack_buf[FC_BPACK_BYTES] __attribute__((aligned(64)));

#define FC_IMPL "fc_gemm_impl.h"
#include "fc_instantiate.h"
