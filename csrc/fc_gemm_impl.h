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

/* Rows of the panel written per pass over Bᵀ (trans): the block of the panel stays in L1
 * (64 rows x NR = 8 KB in float) while each of its NR columns is read as one contiguous run. */
#define FC_PACK_KB 64

static inline __attribute__((always_inline)) void
FC_FN(fc_pack_body)(fc_int K, fc_int Nc, const FC_REAL *B, fc_int ldb, int trans,
                    FC_REAL *packed)
{
    for (fc_int p = 0; p * FC_NR < Nc; p++) {
        FC_REAL *panel = packed + p * K * FC_NR;
        fc_int j0 = p * FC_NR, nc = Nc - j0 < FC_NR ? Nc - j0 : FC_NR;
        if (trans) /* B given as Bᵀ (Nc x K): panel column jj is row j0 + jj of Bᵀ */
            for (fc_int kb = 0; kb < K; kb += FC_PACK_KB) {
                fc_int ke = K - kb < FC_PACK_KB ? K : kb + FC_PACK_KB;
                for (fc_int jj = 0; jj < nc; jj++) {
                    const FC_REAL *src = B + (j0 + jj) * ldb;
                    for (fc_int k = kb; k < ke; k++)
                        panel[k * FC_NR + jj] = src[k];
                }
                for (fc_int jj = nc; jj < FC_NR; jj++) /* zero padding of the last panel */
                    for (fc_int k = kb; k < ke; k++)
                        panel[k * FC_NR + jj] = 0;
            }
        else if (nc == FC_NR) /* a whole panel: each row is one NR-wide copy */
            for (fc_int k = 0; k < K; k++)
                memcpy(panel + k * FC_NR, B + k * ldb + j0, FC_NR * sizeof(FC_REAL));
        else
            for (fc_int k = 0; k < K; k++) {
                for (fc_int jj = 0; jj < nc; jj++)
                    panel[k * FC_NR + jj] = B[k * ldb + j0 + jj];
                for (fc_int jj = nc; jj < FC_NR; jj++)
                    panel[k * FC_NR + jj] = 0;
            }
    }
}

FC_CLONES
void FC_FN(fc_pack)(fc_int K, fc_int Nc, const FC_REAL *B, fc_int ldb, int trans,
                    FC_REAL *packed)
{
    FC_FN(fc_pack_body)(K, Nc, B, ldb, trans, packed);
}

/* One MR x NR tile: C[0:mr, 0:nc] = A[0:mr, 0:kc] @ panel[0:kc] + beta C (beta 0 or 1). A is
 * packed k-major when si == 0 (element (i, k) at A[k * mr + i]: the mr broadcasts of each k are
 * adjacent), else read in place (element (i, k) at A[i * si + k * sk]). C's rows
 * are prefetched first (they are read at the end); along the way the tile prefetches npf
 * 128-byte rows from pf into L2 (its share of the next panel slice). */
static inline __attribute__((always_inline)) void
FC_FN(fc_tile)(const int mr, fc_int kc, const FC_REAL *A, fc_int si, fc_int sk,
               const FC_REAL *panel, int beta, FC_REAL *C, fc_int ldc, fc_int nc,
               const char *pf, fc_int npf)
{
    typedef FC_FN(fc_vec) vec;
    vec acc[8][2];
    FC_REAL edge[8][FC_NR];
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++) {
        acc[i][0] = (vec){0};
        acc[i][1] = (vec){0};
        __builtin_prefetch(C + i * ldc, 1, 3);
        __builtin_prefetch(C + i * ldc + FC_NR - 1, 1, 3);
    }
    for (fc_int k = 0; k < kc; k++) {
        vec b0 = *(const vec *)(panel + k * FC_NR);
        vec b1 = *(const vec *)(panel + k * FC_NR + FC_VL);
        if (k < npf) {
            __builtin_prefetch(pf + 128 * k, 0, 2);
            __builtin_prefetch(pf + 128 * k + 64, 0, 2);
        }
#pragma GCC unroll 8
        for (int i = 0; i < mr; i++) {
            FC_REAL a = si == 0 ? A[k * mr + i] : A[i * si + k * sk];
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
    for (int i = 0; i < mr; i++) {
        *(vec *)edge[i] = acc[i][0];
        *(vec *)(edge[i] + FC_VL) = acc[i][1];
        for (fc_int j = 0; j < nc; j++)
            C[i * ldc + j] = beta ? C[i * ldc + j] + edge[i][j] : edge[i][j];
    }
}

static inline __attribute__((always_inline)) void
FC_FN(fc_tile_any)(int mr, fc_int kc, const FC_REAL *A, fc_int si, fc_int sk,
                   const FC_REAL *panel, int beta, FC_REAL *C, fc_int ldc, fc_int nc,
                   const char *pf, fc_int npf)
{
    if (si == 0) /* packed A */
        switch (mr) { /* a constant mr lets the compiler unroll the tile fully */
        case 8: FC_FN(fc_tile)(8, kc, A, 0, 0, panel, beta, C, ldc, nc, pf, npf); return;
        case 7: FC_FN(fc_tile)(7, kc, A, 0, 0, panel, beta, C, ldc, nc, pf, npf); return;
        case 6: FC_FN(fc_tile)(6, kc, A, 0, 0, panel, beta, C, ldc, nc, pf, npf); return;
        case 5: FC_FN(fc_tile)(5, kc, A, 0, 0, panel, beta, C, ldc, nc, pf, npf); return;
        case 4: FC_FN(fc_tile)(4, kc, A, 0, 0, panel, beta, C, ldc, nc, pf, npf); return;
        case 3: FC_FN(fc_tile)(3, kc, A, 0, 0, panel, beta, C, ldc, nc, pf, npf); return;
        case 2: FC_FN(fc_tile)(2, kc, A, 0, 0, panel, beta, C, ldc, nc, pf, npf); return;
        default: FC_FN(fc_tile)(1, kc, A, 0, 0, panel, beta, C, ldc, nc, pf, npf); return;
        }
    switch (mr) { /* A in place: element (i, k) at A[i * si + k * sk] */
    case 8: FC_FN(fc_tile)(8, kc, A, si, sk, panel, beta, C, ldc, nc, pf, npf); break;
    case 7: FC_FN(fc_tile)(7, kc, A, si, sk, panel, beta, C, ldc, nc, pf, npf); break;
    case 6: FC_FN(fc_tile)(6, kc, A, si, sk, panel, beta, C, ldc, nc, pf, npf); break;
    case 5: FC_FN(fc_tile)(5, kc, A, si, sk, panel, beta, C, ldc, nc, pf, npf); break;
    case 4: FC_FN(fc_tile)(4, kc, A, si, sk, panel, beta, C, ldc, nc, pf, npf); break;
    case 3: FC_FN(fc_tile)(3, kc, A, si, sk, panel, beta, C, ldc, nc, pf, npf); break;
    case 2: FC_FN(fc_tile)(2, kc, A, si, sk, panel, beta, C, ldc, nc, pf, npf); break;
    default: FC_FN(fc_tile)(1, kc, A, si, sk, panel, beta, C, ldc, nc, pf, npf); break;
    }
}

/* A is packed too, one block of FC_MC rows x FC_KC columns at a time (64 KB, kept in L2 while
 * every panel passes it), into micro-panels of MR rows, each k-major (see fc_tile): the tile then
 * reads A as one sequential stream instead of MR strided rows, and a block of many rows (an input
 * projection) no longer streams from L2 once per panel. While a panel slice is in use, the next
 * one is prefetched into L2, shared among the row tiles (the panels of a large B come from L3).
 * The packing moves data only: each C element is the sum over k in order, block by block of
 * FC_KC (then + C), whatever the blocking of rows and columns, so any split of C among threads
 * gives the same bits. The buffers are per-thread (fc_gemm.c). */
#define FC_MC (FC_APACK_BYTES / (fc_int)sizeof(FC_REAL) / FC_KC)
#define FC_NCB (FC_BPACK_BYTES / (fc_int)sizeof(FC_REAL) / FC_KC / FC_NR * FC_NR)

/* C[M x Nc] = op(A)[:, k0:k0+kc] @ (rows k0..k0+kc of B, packed: panel p at Bp + p*pstride)
 * + beta C. op(A) is A (M x K, row stride lda) or, with trans_a, Aᵀ for A given as (K x M).
 * after: the panel slice that comes after the last one (prefetched while it is used). */
static inline __attribute__((always_inline)) void
FC_FN(fc_macro)(fc_int M, fc_int Nc, fc_int kc, fc_int k0, const FC_REAL *A, fc_int lda,
                int trans_a, const FC_REAL *Bp, fc_int pstride, const FC_REAL *after, int beta,
                FC_REAL *C, fc_int ldc)
{
    const int MR = fc_gemm_rows();
    FC_REAL *ap = (FC_REAL *)fc_apack_buf;
    fc_int np = (Nc + FC_NR - 1) / FC_NR;
    fc_int pairs = kc * FC_NR * (fc_int)sizeof(FC_REAL) / 128; /* 128-byte rows of a slice */
    /* A narrow product (a few panels) uses A in place: packing would cost more than it saves */
    int pack_a = np >= 8;
    fc_int si = trans_a ? 1 : lda, sk = trans_a ? lda : 1;
    for (fc_int i0 = 0; i0 < M; i0 += FC_MC) {
        fc_int mc = M - i0 < FC_MC ? M - i0 : FC_MC;
        for (fc_int r = 0; pack_a && r < mc; r += MR) { /* micro-panel r at ap + r*kc */
            int mr = mc - r < MR ? (int)(mc - r) : MR;
            FC_REAL *dst = ap + r * kc;
            if (trans_a)
                for (fc_int k = 0; k < kc; k++) {
                    const FC_REAL *a = A + (k0 + k) * lda + i0 + r;
                    for (int i = 0; i < mr; i++)
                        dst[k * mr + i] = a[i];
                }
            else
                for (int i = 0; i < mr; i++) {
                    const FC_REAL *a = A + (i0 + r + i) * lda + k0;
                    for (fc_int k = 0; k < kc; k++)
                        dst[k * mr + i] = a[k];
                }
        }
        fc_int ntiles = (mc + MR - 1) / MR, per = (pairs + ntiles - 1) / ntiles;
        for (fc_int p = 0; p < np; p++) {
            const FC_REAL *panel = Bp + p * pstride;
            const char *next = (const char *)(p + 1 < np ? panel + pstride : after);
            fc_int nc = Nc - p * FC_NR < FC_NR ? Nc - p * FC_NR : FC_NR;
            for (fc_int r = 0, ti = 0; r < mc; r += MR, ti++) {
                int mr = mc - r < MR ? (int)(mc - r) : MR;
                fc_int first = ti * per, n = pairs - first < per ? pairs - first : per;
                const FC_REAL *a = pack_a ? ap + r * kc : A + (i0 + r) * si + k0 * sk;
                FC_FN(fc_tile_any)(mr, kc, a, pack_a ? 0 : si, sk, panel, beta,
                                   C + (i0 + r) * ldc + p * FC_NR, ldc, nc,
                                   next + 128 * first, n < 0 ? 0 : n);
            }
        }
    }
}

/* K = 0: C = beta C. */
static void FC_FN(fc_gemm_k0)(fc_int M, fc_int Nc, int beta, FC_REAL *C, fc_int ldc)
{
    for (fc_int i = 0; i < M; i++)
        for (fc_int j = 0; j < Nc; j++)
            C[i * ldc + j] = beta ? C[i * ldc + j] : 0;
}

FC_CLONES
void FC_FN(fc_gemm_packed)(fc_int M, fc_int Nc, fc_int K, const FC_REAL *A, fc_int lda,
                           const FC_REAL *packed, int beta, FC_REAL *C, fc_int ldc)
{
    if (K == 0) {
        FC_FN(fc_gemm_k0)(M, Nc, beta, C, ldc);
        return;
    }
    for (fc_int k0 = 0; k0 < K; k0 += FC_KC) {
        fc_int kc = K - k0 < FC_KC ? K - k0 : FC_KC;
        const FC_REAL *Bp = packed + k0 * FC_NR;
        /* after the last panel of this block: the first of the next (or itself) */
        const FC_REAL *after = k0 + FC_KC < K ? packed + (k0 + FC_KC) * FC_NR : Bp;
        FC_FN(fc_macro)(M, Nc, kc, k0, A, lda, 0, Bp, K * FC_NR, after, k0 == 0 ? beta : 1, C,
                        ldc);
    }
}

/* C1 = op(A1) @ op(B) + beta C1 and, with M2 > 0, C2 = op(A2) @ op(B) + beta C2 (A2 and C2
 * with their own strides): each block of B is packed once for both products. One expansion of
 * fc_macro serves both (a loop, not unrolled), and fc_gemm too: each costs build time. */
FC_CLONES
static void FC_FN(fc_gemm_two)(int trans_a, int trans_b, fc_int M1, const FC_REAL *A1,
                               fc_int lda1, FC_REAL *C1, fc_int ldc1, fc_int M2,
                               const FC_REAL *A2, fc_int lda2, FC_REAL *C2, fc_int ldc2,
                               fc_int Nc, fc_int K, const FC_REAL *B, fc_int ldb, int beta)
{
    FC_REAL *bp = (FC_REAL *)fc_bpack_buf;
    if (K == 0) {
        FC_FN(fc_gemm_k0)(M1, Nc, beta, C1, ldc1);
        FC_FN(fc_gemm_k0)(M2, Nc, beta, C2, ldc2);
        return;
    }
    for (fc_int j0 = 0; j0 < Nc; j0 += FC_NCB) {
        fc_int nc = Nc - j0 < FC_NCB ? Nc - j0 : FC_NCB;
        for (fc_int k0 = 0; k0 < K; k0 += FC_KC) {
            fc_int kc = K - k0 < FC_KC ? K - k0 : FC_KC;
            /* B's block (rows k0.., columns j0..) packed: panels of kc rows */
            FC_FN(fc_pack_body)(kc, nc, trans_b ? B + j0 * ldb + k0 : B + k0 * ldb + j0, ldb,
                                trans_b, bp);
#pragma GCC unroll 1
            for (int op = 0; op < 2; op++) {
                fc_int M = op ? M2 : M1, lda = op ? lda2 : lda1, ldc = op ? ldc2 : ldc1;
                if (M > 0)
                    FC_FN(fc_macro)(M, nc, kc, k0, op ? A2 : A1, lda, trans_a, bp, kc * FC_NR,
                                    bp, k0 == 0 ? beta : 1, (op ? C2 : C1) + j0, ldc);
            }
        }
    }
}

void FC_FN(fc_gemm)(int trans_a, int trans_b, fc_int M, fc_int Nc, fc_int K, const FC_REAL *A,
                    fc_int lda, const FC_REAL *B, fc_int ldb, int beta, FC_REAL *C, fc_int ldc)
{
    FC_FN(fc_gemm_two)(trans_a, trans_b, M, A, lda, C, ldc, 0, A, lda, C, ldc, Nc, K, B, ldb,
                       beta);
}

void FC_FN(fc_gemm_tn2)(fc_int M1, const FC_REAL *A1, fc_int lda1, FC_REAL *C1, fc_int ldc1,
                        fc_int M2, const FC_REAL *A2, fc_int lda2, FC_REAL *C2, fc_int ldc2,
                        fc_int Nc, fc_int K, const FC_REAL *B, fc_int ldb)
{
    FC_FN(fc_gemm_two)(1, 0, M1, A1, lda1, C1, ldc1, M2, A2, lda2, C2, ldc2, Nc, K, B, ldb, 0);
}

/* One row: y (Nc) = x (K, stride incx) @ W (K x Nc, row stride ldw) + beta y (beta 0 or 1).
 * For a batch of one (the one-step cells, N = 1 sequences): a block of up to FC_GEMV_NV vectors
 * of y stays in registers while the K rows of W stream past it, each element used once. Every
 * column is summed in the same order (k = 0, 1, ..., then + y; mirrored, k = K-1, ..., 0, then
 * + y), whichever path computes it.
 * Each vector's sum is a chain of K dependent multiply-adds, so a block of few vectors runs at
 * the FMA latency: the two unaligned edge vectors (head and tail, below) ride along with the
 * last block when the registers allow (fc_gemv_max_vectors) instead of taking a pass of their
 * own (measured, tiny RNN inference, 1x100x32x64, whose Wh sits in L1: 38.4 -> 31.7 us per
 * call, best of 8 processes each; the LSTM's and GRU's, whose Wh streams from L2, within the
 * noise). */
#define FC_GEMV_NV 8

/* nv vectors of y from W (columns [0, nv*VL)); with `edges`, also the vectors of columns
 * [0, VL) of E0 and E1 (any alignment) into lanes0, lanes1 (no beta: the caller adds y). */
static inline __attribute__((always_inline)) void
FC_FN(fc_gemv_block)(const int nv, const int edges, fc_int K, const FC_REAL *x, fc_int incx,
                     const FC_REAL *W, fc_int ldw, int beta, FC_REAL *y, const FC_REAL *E0,
                     const FC_REAL *E1, FC_REAL *lanes0, FC_REAL *lanes1)
{
    typedef FC_FN(fc_vec) vec;
    vec acc[FC_GEMV_NV], acc0 = (vec){0}, acc1 = (vec){0};
#pragma GCC unroll 8
    for (int v = 0; v < nv; v++)
        acc[v] = (vec){0};
    for (fc_int k = 0; k < K; k++) {
        FC_REAL a = x[k * incx];
        const FC_REAL *w = W + k * ldw;
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++)
            acc[v] += a * *(const vec *)(w + v * FC_VL);
        if (edges) {
            acc0 += a * *(const vec *)(E0 + k * ldw);
            acc1 += a * *(const vec *)(E1 + k * ldw);
        }
    }
#pragma GCC unroll 8
    for (int v = 0; v < nv; v++) {
        if (beta)
            acc[v] += *(const vec *)(y + v * FC_VL);
        *(vec *)(y + v * FC_VL) = acc[v];
    }
    if (edges) {
        *(vec *)lanes0 = acc0;
        *(vec *)lanes1 = acc1;
    }
}

#define FC_GEMV_CASE(n, e)                                                                     \
    case n: FC_FN(fc_gemv_block)(n, e, K, x, incx, W, ldw, beta, y, E0, E1, l0, l1); break;

/* fc_gemv_block for a run-time nv in 0..8 (0: the edges alone) */
static inline __attribute__((always_inline)) void
FC_FN(fc_gemv_any)(int nv, int edges, fc_int K, const FC_REAL *x, fc_int incx,
                   const FC_REAL *W, fc_int ldw, int beta, FC_REAL *y, const FC_REAL *E0,
                   const FC_REAL *E1, FC_REAL *l0, FC_REAL *l1)
{
    if (edges)
        switch (nv) {
        FC_GEMV_CASE(8, 1) FC_GEMV_CASE(7, 1) FC_GEMV_CASE(6, 1) FC_GEMV_CASE(5, 1)
        FC_GEMV_CASE(4, 1) FC_GEMV_CASE(3, 1) FC_GEMV_CASE(2, 1) FC_GEMV_CASE(1, 1)
        FC_GEMV_CASE(0, 1) default: break;
        }
    else
        switch (nv) {
        FC_GEMV_CASE(8, 0) FC_GEMV_CASE(7, 0) FC_GEMV_CASE(6, 0) FC_GEMV_CASE(5, 0)
        FC_GEMV_CASE(4, 0) FC_GEMV_CASE(3, 0) FC_GEMV_CASE(2, 0) FC_GEMV_CASE(1, 0)
        default: break;
        }
}
#undef FC_GEMV_CASE

/* mirror: the blocks in reverse order and each from its last row up (x and W walked with
 * negative strides). A product of one row per step streams all of W from L2 when it exceeds the
 * L1 data cache; mirroring every other step starts each step with what the previous one read
 * last, which L1 still holds (measured in a C loop of 100 steps with a pointwise stand-in,
 * AMD EPYC, 32 KiB L1d, float32: (64 x 192) 0.567 -> 0.457 us a step, (64 x 256) 0.764 ->
 * 0.651; the blocks reversed alone: 0.503 and 0.765, rows 1 KiB apart alias the same L1
 * sets). Each column is then summed from k = K-1 down: the sum of the forward order over x and
 * W with their rows reversed, bit for bit. */
FC_CLONES
void FC_FN(fc_gemv)(fc_int K, fc_int Nc, const FC_REAL *x, fc_int incx, const FC_REAL *W,
                    fc_int ldw, int beta, FC_REAL *y, int mirror)
{
    typedef FC_FN(fc_vec) vec;
    if (K == 0) { /* an empty sum (W and x may be NULL: no pointer is formed from them) */
        for (fc_int j = 0; j < Nc; j++)
            y[j] = beta ? y[j] : 0;
        return;
    }
    /* the alignment of W's rows, before a mirror moves W to its last row */
    int aligned_rows = (uintptr_t)W % sizeof(FC_REAL) == 0
                       && (ldw * (fc_int)sizeof(FC_REAL)) % 64 == 0;
    fc_int head = (fc_int)(((64 - (uintptr_t)W % 64) % 64) / sizeof(FC_REAL));
    if (mirror) {
        x += (K - 1) * incx;
        W += (K - 1) * ldw;
        incx = -incx;
        ldw = -ldw;
    }
    if (Nc < FC_VL) { /* narrower than one vector: each row through a zero-padded vector, so
                       * that a column rounds as on the vector paths (a scalar loop may not
                       * contract its multiply-adds alike) */
        FC_REAL row[FC_VL] __attribute__((aligned(64))), lanes[FC_VL];
        vec acc = (vec){0};
        for (fc_int j = Nc; j < FC_VL; j++)
            row[j] = 0;
        for (fc_int k = 0; k < K; k++) {
            for (fc_int j = 0; j < Nc; j++)
                row[j] = W[k * ldw + j];
            acc += x[k * incx] * *(const vec *)row;
        }
        *(vec *)lanes = acc;
        for (fc_int j = 0; j < Nc; j++)
            y[j] = beta ? lanes[j] + y[j] : lanes[j];
        return;
    }
    /* NumPy aligns arrays to 16 bytes, and a 64-byte load that straddles two cache lines
     * costs nearly two. When every row of W starts at the same offset in its cache line, the
     * body (whole vectors) starts at the first 64-byte boundary: columns [head, head + body).
     * The `head` columns before it and the `tail` columns after it come from one unaligned
     * vector per row each (columns [0, VL) and [Nc - VL, Nc)), with the last block. */
    if (!aligned_rows)
        head = 0;
    fc_int body = (Nc - head) / FC_VL * FC_VL, tail = Nc - head - body;
    int edges = head > 0 || tail > 0;
    FC_REAL lanes_h[FC_VL] __attribute__((aligned(64)));
    FC_REAL lanes_t[FC_VL] __attribute__((aligned(64)));
    int rest = (int)(body / FC_VL % FC_GEMV_NV); /* vectors of the last, partial block */
    int fold = edges && rest + 2 <= fc_gemv_max_vectors(); /* edges with the partial block */
    /* the passes: the full blocks, the partial one (with the edges when they fold in), the
     * edges alone (when they do not) */
    fc_int full = body / (FC_GEMV_NV * FC_VL);
    fc_int passes = full + (rest > 0 || fold) + (edges && !fold);
    for (fc_int i = 0; i < passes; i++) {
        fc_int pass = mirror ? passes - 1 - i : i;
        fc_int j = head + pass * FC_GEMV_NV * FC_VL;
        if (pass < full)
            FC_FN(fc_gemv_any)(FC_GEMV_NV, 0, K, x, incx, W + j, ldw, beta, y + j, W, W,
                               lanes_h, lanes_t);
        else if (pass == full && (rest > 0 || fold))
            FC_FN(fc_gemv_any)(rest, fold, K, x, incx, W + j, ldw, beta, y + j, W,
                               W + Nc - FC_VL, lanes_h, lanes_t);
        else
            FC_FN(fc_gemv_any)(0, 1, K, x, incx, W, ldw, beta, y, W, W + Nc - FC_VL, lanes_h,
                               lanes_t);
    }
    if (edges) {
        for (fc_int i = 0; i < head; i++)
            y[i] = beta ? lanes_h[i] + y[i] : lanes_h[i];
        for (fc_int i = Nc - tail; i < Nc; i++)
            y[i] = beta ? lanes_t[i - (Nc - FC_VL)] + y[i] : lanes_t[i - (Nc - FC_VL)];
    }
}

#undef FC_GEMV_NV
#undef FC_VL
#undef FC_NR
#undef FC_KC
#undef FC_PACK_KB
#undef FC_MC
#undef FC_NCB
