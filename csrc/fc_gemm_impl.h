/* Packed GEMM for the recurrent products (see fastcells.h): C (M x Nc) = A (M x K) @ B + beta C
 * with B packed once per call into column panels, so that no per-step call re-packs it (BLAS
 * does, on every call).
 *
 * Packed layout: panel p (columns p*NR .. p*NR+NR-1, zero-padded past Nc) is a K x NR block,
 * row-major, at packed + p*K*NR. The micro-kernel keeps an MR x NR tile of C in registers: per
 * k it loads one NR-wide row of the panel and broadcasts MR elements of A (MR*NR/VL FMAs). It
 * is written with GCC vector extensions, so the same source becomes AVX-512, AVX2+FMA or SSE2
 * code in the FC_CLONES variants; MR is chosen at run time to fit each ISA's registers.
 * K is blocked by KC so that a panel slice stays in L1 across the row blocks.
 */
#define FC_VL (64 / (fc_int)sizeof(FC_REAL)) /* elements of one 64-byte vector */
#define FC_NR (2 * FC_VL)                    /* panel width: two vectors */
#define FC_KC 256

typedef FC_REAL FC_FN(fc_vec) __attribute__((vector_size(64), aligned(sizeof(FC_REAL))));

fc_int FC_FN(fc_packed_size)(fc_int K, fc_int Nc)
{
    return ((Nc + FC_NR - 1) / FC_NR) * FC_NR * K;
}

void FC_FN(fc_pack)(fc_int K, fc_int Nc, const FC_REAL *B, fc_int ldb, int trans,
                    FC_REAL *packed)
{
    for (fc_int p = 0; p * FC_NR < Nc; p++) {
        FC_REAL *panel = packed + p * K * FC_NR;
        fc_int j0 = p * FC_NR, nc = Nc - j0 < FC_NR ? Nc - j0 : FC_NR;
        if (nc < FC_NR) /* zero padding of the last panel */
            for (fc_int k = 0; k < K; k++)
                for (fc_int jj = nc; jj < FC_NR; jj++)
                    panel[k * FC_NR + jj] = 0;
        if (trans) /* B given as Bᵀ (Nc x K): read its rows contiguously */
            for (fc_int jj = 0; jj < nc; jj++)
                for (fc_int k = 0; k < K; k++)
                    panel[k * FC_NR + jj] = B[(j0 + jj) * ldb + k];
        else
            for (fc_int k = 0; k < K; k++)
                for (fc_int jj = 0; jj < nc; jj++)
                    panel[k * FC_NR + jj] = B[k * ldb + j0 + jj];
    }
}

/* One MR x NR tile: C[0:mr, 0:nc] = A[0:mr, 0:kc] @ panel[0:kc] + beta C (beta 0 or 1). */
static inline __attribute__((always_inline)) void
FC_FN(fc_tile)(const int mr, fc_int kc, const FC_REAL *A, fc_int lda, const FC_REAL *panel,
               int beta, FC_REAL *C, fc_int ldc, fc_int nc)
{
    typedef FC_FN(fc_vec) vec;
    vec acc[8][2];
    FC_REAL edge[8][FC_NR];
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++) {
        acc[i][0] = (vec){0};
        acc[i][1] = (vec){0};
    }
    for (fc_int k = 0; k < kc; k++) {
        vec b0 = *(const vec *)(panel + k * FC_NR);
        vec b1 = *(const vec *)(panel + k * FC_NR + FC_VL);
#pragma GCC unroll 8
        for (int i = 0; i < mr; i++) {
            FC_REAL a = A[i * lda + k];
            acc[i][0] += a * b0;
            acc[i][1] += a * b1;
        }
    }
    if (nc == FC_NR) {
#pragma GCC unroll 8
        for (int i = 0; i < mr; i++) {
            vec *c0 = (vec *)(C + i * ldc), *c1 = (vec *)(C + i * ldc + FC_VL);
            if (beta) {
                acc[i][0] += *c0;
                acc[i][1] += *c1;
            }
            *c0 = acc[i][0];
            *c1 = acc[i][1];
        }
        return;
    }
    for (int i = 0; i < mr; i++) { /* last panel: only nc columns exist */
        *(vec *)edge[i] = acc[i][0];
        *(vec *)(edge[i] + FC_VL) = acc[i][1];
        for (fc_int j = 0; j < nc; j++)
            C[i * ldc + j] = beta ? C[i * ldc + j] + edge[i][j] : edge[i][j];
    }
}

static inline __attribute__((always_inline)) void FC_FN(fc_tile_any)(int mr, fc_int kc, const FC_REAL *A, fc_int lda,
                               const FC_REAL *panel, int beta, FC_REAL *C, fc_int ldc,
                               fc_int nc)
{
    switch (mr) { /* a constant mr lets the compiler unroll the tile fully */
    case 8: FC_FN(fc_tile)(8, kc, A, lda, panel, beta, C, ldc, nc); break;
    case 7: FC_FN(fc_tile)(7, kc, A, lda, panel, beta, C, ldc, nc); break;
    case 6: FC_FN(fc_tile)(6, kc, A, lda, panel, beta, C, ldc, nc); break;
    case 5: FC_FN(fc_tile)(5, kc, A, lda, panel, beta, C, ldc, nc); break;
    case 4: FC_FN(fc_tile)(4, kc, A, lda, panel, beta, C, ldc, nc); break;
    case 3: FC_FN(fc_tile)(3, kc, A, lda, panel, beta, C, ldc, nc); break;
    case 2: FC_FN(fc_tile)(2, kc, A, lda, panel, beta, C, ldc, nc); break;
    default: FC_FN(fc_tile)(1, kc, A, lda, panel, beta, C, ldc, nc); break;
    }
}

FC_CLONES
void FC_FN(fc_gemm_packed)(fc_int M, fc_int Nc, fc_int K, const FC_REAL *A, fc_int lda,
                           const FC_REAL *packed, int beta, FC_REAL *C, fc_int ldc)
{
    const int MR = fc_gemm_rows();
    if (K == 0) {
        for (fc_int i = 0; i < M; i++)
            for (fc_int j = 0; j < Nc; j++)
                C[i * ldc + j] = beta ? C[i * ldc + j] : 0;
        return;
    }
    for (fc_int k0 = 0; k0 < K; k0 += FC_KC) {
        fc_int kc = K - k0 < FC_KC ? K - k0 : FC_KC;
        int b = k0 == 0 ? beta : 1;
        for (fc_int p = 0; p * FC_NR < Nc; p++) {
            const FC_REAL *panel = packed + p * K * FC_NR + k0 * FC_NR;
            fc_int nc = Nc - p * FC_NR < FC_NR ? Nc - p * FC_NR : FC_NR;
            for (fc_int i0 = 0; i0 < M; i0 += MR) {
                int mr = M - i0 < MR ? (int)(M - i0) : MR;
                FC_FN(fc_tile_any)(mr, kc, A + i0 * lda + k0, lda, panel, b,
                                   C + i0 * ldc + p * FC_NR, ldc, nc);
            }
        }
    }
}

#undef FC_VL
#undef FC_NR
#undef FC_KC
