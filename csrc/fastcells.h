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
 * the callers through BLAS. They allocate nothing, never fail, and run without the GIL.
 * The default build compiles them three times (AVX-512, AVX2+FMA, baseline x86-64) and the
 * loader picks the best the CPU has (GCC target_clones); FC_NO_CLONES turns that off.
 */
#ifndef FASTCELLS_H
#define FASTCELLS_H

#include <stddef.h>
#include <stdint.h>

typedef ptrdiff_t fc_int;

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(FC_NO_CLONES)
#define FC_CLONES __attribute__((target_clones("arch=skylake-avx512", "arch=haswell", "default")))
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

/* ---- shared helpers -------------------------------------------------------------------------- */
/* out[j] = sum_r A[r, j] for a (rows, cols) matrix with row stride lda (the bias gradient). */
void fc_colsum_f32(fc_int rows, fc_int cols, const float *A, fc_int lda, float *out);
void fc_colsum_f64(fc_int rows, fc_int cols, const double *A, fc_int lda, double *out);

/* y = act(x) elementwise over n values (act: 0 exp, 1 sigmoid, 2 tanh); used by the tests that
 * bound the activations' error against the C library. */
void fc_activation_f32(int act, fc_int n, const float *x, float *y);
void fc_activation_f64(int act, fc_int n, const double *x, double *y);

#endif /* FASTCELLS_H */
