/* fastcells.h: the C helpers of the fastcells kernels, declared once (Cython: _csrc.pxd).
 *
 * Conventions (CONVENTIONS.md): N batch, T steps, D inputs, H hidden units, G gate blocks
 * (RNN 1, GRU 3, LSTM 4). A "row" is one sequence's vector at one step; every (N, X) operand is
 * given as a pointer to its first row plus `ld`, the distance in elements between consecutive
 * rows, so that one function serves batch-first (N, T, X) arrays (ld = T*X), time-major (T, N, X)
 * arrays (ld = N*X... per step: ld = X) and plain (N, X) states alike. Sizes and strides are
 * fc_int (64-bit). `lengths` is NULL or (N,) int64: row n is "masked" at step t when
 * t >= lengths[n] (its state is carried unchanged and its output is zero).
 *
 * These functions are the pointwise halves of each time step; the matrix products are done by
 * the callers (fc_gemm_packed, fc_gemm, or BLAS for the one-step cells). They allocate nothing,
 * never fail, and run without the GIL.
 * The default build compiles them three times (x86-64-v4 = AVX-512, x86-64-v3 = AVX2+FMA, and
 * baseline x86-64) and the loader picks the best the CPU has (GCC target_clones, resolved by
 * CPU features); FC_NO_CLONES turns that off (FASTCELLS_NATIVE builds).
 */
#ifndef FASTCELLS_H
#define FASTCELLS_H

#include <stddef.h>
#include <stdint.h>

typedef ptrdiff_t fc_int;

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(FC_NO_CLONES)
/* Feature levels, not CPU models: a resolver that tests for a model (arch=skylake-avx512) picks
 * the baseline on every newer or unlisted CPU. x86-64-v4: AVX-512 F/BW/CD/DQ/VL; x86-64-v3:
 * AVX2, FMA, BMI1/2. */
#define FC_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FC_CLONES
#endif

/* ---- LSTM, blocks [f, g, i, o] ---------------------------------------------------------------
 * Forward, one step, all N rows:
 *   A = gates + b                      (gates holds x_t @ Wx + h_{t-1} @ Wh, (N, 4H), row ld_g)
 *   f, g, i, o = σ(A_f), tanh(A_g), σ(A_i), σ(A_o)
 *   c_next = f ⊙ c_prev + g ⊙ i;  h_next = o ⊙ tanh(c_next);  y = h_next
 * If tanh_c is not NULL (training), the activated f, g, i, o overwrite `gates` and tanh(c_next)
 * is stored in tanh_c: that is all backward needs besides c_prev and h_prev.
 * Masked rows: c_next = c_prev, h_next = h_prev, y = 0. c_next/h_next may alias c_prev/h_prev.
 */
void fc_lstm_fwd_step_f32(fc_int N, fc_int H, float *gates, fc_int ld_g, const float *b,
                          const float *c_prev, fc_int ld_cp, float *c_next, fc_int ld_cn,
                          const float *h_prev, fc_int ld_hp, float *h_next, fc_int ld_hn,
                          float *y, fc_int ld_y, float *tanh_c, fc_int ld_tc,
                          const int64_t *lengths, fc_int t);
void fc_lstm_fwd_step_f64(fc_int N, fc_int H, double *gates, fc_int ld_g, const double *b,
                          const double *c_prev, fc_int ld_cp, double *c_next, fc_int ld_cn,
                          const double *h_prev, fc_int ld_hp, double *h_next, fc_int ld_hn,
                          double *y, fc_int ld_y, double *tanh_c, fc_int ld_tc,
                          const int64_t *lengths, fc_int t);

/* Backward, one step, all N rows (dh, dc are contiguous (N, H)):
 *   in:  dh = dL/dh_t from later steps, dc = dL/dc_t, dy = dL/dhs[t] (with ld_dy = 0 a single
 *        row serves every n: a zero row when no gradient arrives at the outputs)
 *   dh_t = dh + dy
 *   dc_t = dc + dh_t ⊙ o ⊙ (1 - tanh_c²)
 *   dA = [dc_t ⊙ c_prev ⊙ f(1-f),  dc_t ⊙ i ⊙ (1-g²),  dc_t ⊙ g ⊙ i(1-i),  dh_t ⊙ tanh_c ⊙ o(1-o)]
 *   out: dc = dc_t ⊙ f (= dL/dc_{t-1}); dh = 0, to which the caller adds dA @ Whᵀ.
 * Masked rows: dA = 0 and dh, dc pass through unchanged (dy is ignored: the output was a constant).
 */
void fc_lstm_bwd_step_f32(fc_int N, fc_int H, const float *gates, fc_int ld_g,
                          const float *c_prev, fc_int ld_cp, const float *tanh_c, fc_int ld_tc,
                          const float *dy, fc_int ld_dy, float *dh, float *dc,
                          float *dA, fc_int ld_dA, const int64_t *lengths, fc_int t);
void fc_lstm_bwd_step_f64(fc_int N, fc_int H, const double *gates, fc_int ld_g,
                          const double *c_prev, fc_int ld_cp, const double *tanh_c, fc_int ld_tc,
                          const double *dy, fc_int ld_dy, double *dh, double *dc,
                          double *dA, fc_int ld_dA, const int64_t *lengths, fc_int t);

/* ---- vanilla RNN: h_t = act(x_t @ Wx + h_{t-1} @ Wh + b) ------------------------------------
 * act is FC_TANH or FC_RELU. Forward: A holds x_t @ Wx + h_{t-1} @ Wh (row ld_A) and is
 * overwritten with h_t = act(A + b) (backward's act' is a function of it: 1 - h² or [h > 0]).
 * Backward: dA = (dh + dy) ⊙ act'(h); dh = 0, to which the caller adds dA @ Whᵀ (dh: row
 * stride ld_dh, so that a thread can take a band of columns).
 */
enum { FC_TANH = 0, FC_RELU = 1 };

void fc_rnn_fwd_step_f32(fc_int N, fc_int H, int act, float *A, fc_int ld_A, const float *b,
                         const float *h_prev, fc_int ld_hp, float *h_next, fc_int ld_hn,
                         float *y, fc_int ld_y, const int64_t *lengths, fc_int t);
void fc_rnn_fwd_step_f64(fc_int N, fc_int H, int act, double *A, fc_int ld_A, const double *b,
                         const double *h_prev, fc_int ld_hp, double *h_next, fc_int ld_hn,
                         double *y, fc_int ld_y, const int64_t *lengths, fc_int t);
void fc_rnn_bwd_step_f32(fc_int N, fc_int H, int act, const float *A, fc_int ld_A,
                         const float *dy, fc_int ld_dy, float *dh, fc_int ld_dh, float *dA,
                         fc_int ld_dA, const int64_t *lengths, fc_int t);
void fc_rnn_bwd_step_f64(fc_int N, fc_int H, int act, const double *A, fc_int ld_A,
                         const double *dy, fc_int ld_dy, double *dh, fc_int ld_dh,
                         double *dA, fc_int ld_dA, const int64_t *lengths, fc_int t);

/* ---- GRU, blocks [z, r, h], h_t = z ⊙ h_{t-1} + (1 - z) ⊙ ĥ ----------------------------------
 * reset_after=True, b = [b_input (3H); b_recurrent (3H)]:
 *   forward: A (row ld_A) holds a = x_t @ Wx, U (N, 3H contiguous) holds h_{t-1} @ Wh;
 *     z = σ(a_z + b0_z + U_z + b1_z), r = σ(a_r + b0_r + U_r + b1_r), uh = U_h + b1_h,
 *     ĥ = tanh(a_h + b0_h + r ⊙ uh). A is overwritten with [z, r, ĥ] and uh stored (row
 *     ld_uh; ld_uh = 0 lets inference pass one scratch row).
 *   backward: dh_t = dh + dy; dA = [dz σ', dr σ', dĥ tanh'] (input side, for dWx, dX, b0),
 *     dU = [dA_z, dA_r, dA_h ⊙ r] (recurrent side, for dWh, b1); dh = dh_t ⊙ z, to which the
 *     caller adds dU @ Whᵀ. dA and dU share the row stride ld_d.
 */
void fc_gru_fwd_step_f32(fc_int N, fc_int H, float *A, fc_int ld_A, const float *U,
                         const float *b, const float *h_prev, fc_int ld_hp, float *h_next,
                         fc_int ld_hn, float *y, fc_int ld_y, float *uh, fc_int ld_uh,
                         const int64_t *lengths, fc_int t);
void fc_gru_fwd_step_f64(fc_int N, fc_int H, double *A, fc_int ld_A, const double *U,
                         const double *b, const double *h_prev, fc_int ld_hp, double *h_next,
                         fc_int ld_hn, double *y, fc_int ld_y, double *uh, fc_int ld_uh,
                         const int64_t *lengths, fc_int t);
void fc_gru_bwd_step_f32(fc_int N, fc_int H, const float *G, fc_int ld_G, const float *uh,
                         fc_int ld_uh, const float *h_prev, fc_int ld_hp, const float *dy,
                         fc_int ld_dy, float *dh, float *dA, float *dU, fc_int ld_d,
                         const int64_t *lengths, fc_int t);
void fc_gru_bwd_step_f64(fc_int N, fc_int H, const double *G, fc_int ld_G, const double *uh,
                         fc_int ld_uh, const double *h_prev, fc_int ld_hp, const double *dy,
                         fc_int ld_dy, double *dh, double *dA, double *dU, fc_int ld_d,
                         const int64_t *lengths, fc_int t);

/* reset_after=False, b (3H,): two passes per step around the GEMM (r ⊙ h_{t-1}) @ Wh_h.
 *   rb_fwd_gates: A_z, A_r hold x@Wx + h_{t-1}@Wh (z, r columns); overwritten with z, r;
 *     rh = r ⊙ h_{t-1} (zero for masked rows).
 *   rb_fwd_out: A_h holds x@Wx_h + rh@Wh_h; ĥ = tanh(A_h + b_h) overwrites it; h_t, y.
 *   rb_bwd_out: dA_z = dh_t (h_{t-1} - ĥ) σ', dA_h = dh_t (1 - z) tanh'; dh = dh_t ⊙ z
 *     (masked rows: dA = 0, dh passes). Then the caller computes drh = dA_h @ Wh_hᵀ.
 *   rb_bwd_gates: dA_r = drh ⊙ h_{t-1} ⊙ σ'(r); dh += drh ⊙ r. Then the caller adds
 *     [dA_z, dA_r] @ Wh_zrᵀ to dh.
 */
void fc_gru_rb_fwd_gates_f32(fc_int N, fc_int H, float *A, fc_int ld_A, const float *b,
                             const float *h_prev, fc_int ld_hp, float *rh, fc_int ld_rh,
                             const int64_t *lengths, fc_int t);
void fc_gru_rb_fwd_gates_f64(fc_int N, fc_int H, double *A, fc_int ld_A, const double *b,
                             const double *h_prev, fc_int ld_hp, double *rh, fc_int ld_rh,
                             const int64_t *lengths, fc_int t);
void fc_gru_rb_fwd_out_f32(fc_int N, fc_int H, float *A, fc_int ld_A, const float *b,
                           const float *h_prev, fc_int ld_hp, float *h_next, fc_int ld_hn,
                           float *y, fc_int ld_y, const int64_t *lengths, fc_int t);
void fc_gru_rb_fwd_out_f64(fc_int N, fc_int H, double *A, fc_int ld_A, const double *b,
                           const double *h_prev, fc_int ld_hp, double *h_next, fc_int ld_hn,
                           double *y, fc_int ld_y, const int64_t *lengths, fc_int t);
void fc_gru_rb_bwd_out_f32(fc_int N, fc_int H, const float *G, fc_int ld_G, const float *h_prev,
                           fc_int ld_hp, const float *dy, fc_int ld_dy, float *dh, float *dA,
                           fc_int ld_dA, const int64_t *lengths, fc_int t);
void fc_gru_rb_bwd_out_f64(fc_int N, fc_int H, const double *G, fc_int ld_G,
                           const double *h_prev, fc_int ld_hp, const double *dy, fc_int ld_dy,
                           double *dh, double *dA, fc_int ld_dA, const int64_t *lengths,
                           fc_int t);
void fc_gru_rb_bwd_gates_f32(fc_int N, fc_int H, const float *G, fc_int ld_G,
                             const float *h_prev, fc_int ld_hp, const float *drh, float *dh,
                             float *dA, fc_int ld_dA, const int64_t *lengths, fc_int t);
void fc_gru_rb_bwd_gates_f64(fc_int N, fc_int H, const double *G, fc_int ld_G,
                             const double *h_prev, fc_int ld_hp, const double *drh, double *dh,
                             double *dA, fc_int ld_dA, const int64_t *lengths, fc_int t);

/* ---- packed GEMM for the recurrent products ---------------------------------------------------
 * C (M x Nc, row stride ldc) = A (M x K, row stride lda) @ B + beta * C, beta 0 or 1, with B
 * packed once by fc_pack into fc_packed_size(K, Nc) elements (B is (K x Nc) with row stride
 * ldb, or with trans != 0 given as Bᵀ, an (Nc x K) array with row stride ldb). The packed
 * buffer must be aligned to the element size. fc_gemm_rows: the register tile's rows for this
 * CPU (used by fc_gemm_packed; exposed for the tests).
 */
int fc_gemm_rows(void);
int fc_gemv_max_vectors(void);
fc_int fc_packed_size_f32(fc_int K, fc_int Nc);
fc_int fc_packed_size_f64(fc_int K, fc_int Nc);
void fc_pack_f32(fc_int K, fc_int Nc, const float *B, fc_int ldb, int trans, float *packed);
void fc_pack_f64(fc_int K, fc_int Nc, const double *B, fc_int ldb, int trans, double *packed);
void fc_gemm_packed_f32(fc_int M, fc_int Nc, fc_int K, const float *A, fc_int lda,
                        const float *packed, int beta, float *C, fc_int ldc);
void fc_gemm_packed_f64(fc_int M, fc_int Nc, fc_int K, const double *A, fc_int lda,
                        const double *packed, int beta, double *C, fc_int ldc);
/* C (M x Nc) = op(A) @ op(B) + beta * C for the one-off products (input projections, weight
 * and input gradients): op(A) is A (M x K, row stride lda) or with trans_a Aᵀ for A given as
 * (K x M); op(B) is B (K x Nc, row stride ldb) or with trans_b Bᵀ for B given as (Nc x K). The
 * micro-kernel of fc_gemm_packed, with B packed block by block into a per-thread buffer; each
 * element is summed in the same order however C is split among threads. */
void fc_gemm_f32(int trans_a, int trans_b, fc_int M, fc_int Nc, fc_int K, const float *A,
                 fc_int lda, const float *B, fc_int ldb, int beta, float *C, fc_int ldc);
void fc_gemm_f64(int trans_a, int trans_b, fc_int M, fc_int Nc, fc_int K, const double *A,
                 fc_int lda, const double *B, fc_int ldb, int beta, double *C, fc_int ldc);
/* The weight gradients of one step's gates, both at once: C1 (M1 x Nc) = A1ᵀ @ B and C2 (M2 x Nc)
 * = A2ᵀ @ B, for A1 (K x M1), A2 (K x M2), B (K x Nc), with their own row strides; each block
 * of B is packed once for both (fc_gemm packs it once per call). Each element has the bits
 * that fc_gemm gives it. */
void fc_gemm_tn2_f32(fc_int M1, const float *A1, fc_int lda1, float *C1, fc_int ldc1, fc_int M2,
                     const float *A2, fc_int lda2, float *C2, fc_int ldc2, fc_int Nc, fc_int K,
                     const float *B, fc_int ldb);
void fc_gemm_tn2_f64(fc_int M1, const double *A1, fc_int lda1, double *C1, fc_int ldc1,
                     fc_int M2, const double *A2, fc_int lda2, double *C2, fc_int ldc2, fc_int Nc,
                     fc_int K, const double *B, fc_int ldb);
/* One row, no packing: y (Nc) = x (K, stride incx) @ W (K x Nc, row stride ldw) + beta * y,
 * beta 0 or 1 (the products of a batch of one; faster than BLAS's GEMV at these sizes). Each
 * column is summed over k = 0, 1, ..., K-1, or with `mirror` from K-1 down to 0 (the recurrent
 * loops mirror every other step, so that each step starts on the part of W that the L1 cache
 * still holds from the previous one). */
void fc_gemv_f32(fc_int K, fc_int Nc, const float *x, fc_int incx, const float *W, fc_int ldw,
                 int beta, float *y, int mirror);
void fc_gemv_f64(fc_int K, fc_int Nc, const double *x, fc_int incx, const double *W,
                 fc_int ldw, int beta, double *y, int mirror);

/* ---- threads (fc_pool.c) ----------------------------------------------------------------------
 * fc_parallel runs task(ctx, tid, team) for tid = 0 .. team-1 at once (the caller is tid 0) and
 * returns when all are done, returning team: nth, or fewer when only some workers could be
 * started or come within patience_ns (a sleeping worker's wake-up can take milliseconds; the
 * late ones sit the run out). Workers that sleep (idle over 1 ms) are woken only for a run
 * with 50 us of patience or more, or one that starts within 1 ms of the end of the last run or
 * fc_pool_ready call; else the run goes on without them. It runs task(ctx, 0, 1) alone, and
 * returns 1, when nth <= 1, when another run is in progress, or when no worker is there in
 * time. Inside a task, fc_barrier(team) waits until all threads of the run have reached it. */
typedef void (*fc_task)(void *ctx, int tid, int nth);
int fc_parallel(int nth, fc_task task, void *ctx, long long patience_ns);
void fc_barrier(int nth);
/* Whether a run with this patience, started now, would find workers (some are awake, none has
 * been started yet, or it would wake them); 0 when all sleep and it would not, or when another
 * run is in progress. A call counts as a run for the rule of bursts: the second of two cold
 * calls within 1 ms wakes the workers, for the calls after it. (threads.for_units asks before
 * it splits a short run.) */
int fc_pool_ready(long long patience_ns);
/* For the tests: the pool's workers, how many sleep, how many times they were woken (by a run
 * or fc_pool_ready) and how many runs went on with fewer workers than they asked for (the
 * limit below aside, late or asleep); and a limit on the workers of every run from now on
 * (-1: none), to run tasks on smaller teams. */
void fc_pool_stats(int *workers, int *sleeping, long long *wakes, long long *short_runs);
void fc_pool_limit(int max_workers);
/* The time, in ns, for the caller and a worker to pass a cache line there and back (the median
 * of bursts' means, over `trips` trips at most; a barrier costs about one): it depends on where
 * the two threads run (a virtual machine's vCPUs can move between a host's cores). -1 when no
 * worker can run, or none comes within 0.2 ms and then 1 ms more on a second try. */
long long fc_round_trip_ns(int trips);

/* ---- shared helpers -------------------------------------------------------------------------- */
/* out[j] = sum_r A[r, j] for a (rows, cols) matrix with row stride lda (the bias gradient). */
void fc_colsum_f32(fc_int rows, fc_int cols, const float *A, fc_int lda, float *out);
void fc_colsum_f64(fc_int rows, fc_int cols, const double *A, fc_int lda, double *out);

/* y = act(x) elementwise over n values (act: 0 exp, 1 sigmoid, 2 tanh); used by the tests that
 * bound the activations' error against the C library. */
void fc_activation_f32(int act, fc_int n, const float *x, float *y);
void fc_activation_f64(int act, fc_int n, const double *x, double *y);

#endif /* FASTCELLS_H */
