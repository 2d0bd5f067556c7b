# The C helpers of csrc/, declared once (their contracts are in csrc/fastcells.h).
from libc.stdint cimport int64_t

cdef extern from "fastcells.h" nogil:
    ctypedef Py_ssize_t fc_int

    void fc_lstm_fwd_step_f32(fc_int N, fc_int H, float *gates, fc_int ld_g, const float *b,
                              const float *c_prev, fc_int ld_cp, float *c_next, fc_int ld_cn,
                              const float *h_prev, fc_int ld_hp, float *h_next, fc_int ld_hn,
                              float *y, fc_int ld_y, float *tanh_c, fc_int ld_tc,
                              const int64_t *lengths, fc_int t)
    void fc_lstm_fwd_step_f64(fc_int N, fc_int H, double *gates, fc_int ld_g, const double *b,
                              const double *c_prev, fc_int ld_cp, double *c_next, fc_int ld_cn,
                              const double *h_prev, fc_int ld_hp, double *h_next, fc_int ld_hn,
                              double *y, fc_int ld_y, double *tanh_c, fc_int ld_tc,
                              const int64_t *lengths, fc_int t)
    void fc_lstm_bwd_step_f32(fc_int N, fc_int H, const float *gates, fc_int ld_g,
                              const float *c_prev, fc_int ld_cp, const float *tanh_c, fc_int ld_tc,
                              const float *dy, fc_int ld_dy, float *dh, float *dc,
                              float *dA, fc_int ld_dA, const int64_t *lengths, fc_int t)
    void fc_lstm_bwd_step_f64(fc_int N, fc_int H, const double *gates, fc_int ld_g,
                              const double *c_prev, fc_int ld_cp, const double *tanh_c,
                              fc_int ld_tc, const double *dy, fc_int ld_dy, double *dh,
                              double *dc, double *dA, fc_int ld_dA, const int64_t *lengths,
                              fc_int t)

    void fc_colsum_f32(fc_int rows, fc_int cols, const float *A, fc_int lda, float *out)
    void fc_colsum_f64(fc_int rows, fc_int cols, const double *A, fc_int lda, double *out)
    void fc_activation_f32(int act, fc_int n, const float *x, float *y)
    void fc_activation_f64(int act, fc_int n, const double *x, double *y)

    enum: FC_TANH, FC_RELU

    void fc_rnn_fwd_step_f32(fc_int N, fc_int H, int act, float *A, fc_int ld_A, const float *b,
                             const float *h_prev, fc_int ld_hp, float *h_next, fc_int ld_hn,
                             float *y, fc_int ld_y, const int64_t *lengths, fc_int t)
    void fc_rnn_fwd_step_f64(fc_int N, fc_int H, int act, double *A, fc_int ld_A,
                             const double *b, const double *h_prev, fc_int ld_hp,
                             double *h_next, fc_int ld_hn, double *y, fc_int ld_y,
                             const int64_t *lengths, fc_int t)
    void fc_rnn_bwd_step_f32(fc_int N, fc_int H, int act, const float *A, fc_int ld_A,
                             const float *dy, fc_int ld_dy, float *dh, fc_int ld_dh, float *dA,
                             fc_int ld_dA, const int64_t *lengths, fc_int t)
    void fc_rnn_bwd_step_f64(fc_int N, fc_int H, int act, const double *A, fc_int ld_A,
                             const double *dy, fc_int ld_dy, double *dh, fc_int ld_dh,
                             double *dA, fc_int ld_dA, const int64_t *lengths, fc_int t)

    void fc_gru_fwd_step_f32(fc_int N, fc_int H, float *A, fc_int ld_A, const float *U,
                             const float *b, const float *h_prev, fc_int ld_hp, float *h_next,
                             fc_int ld_hn, float *y, fc_int ld_y, float *uh, fc_int ld_uh,
                             const int64_t *lengths, fc_int t)
    void fc_gru_fwd_step_f64(fc_int N, fc_int H, double *A, fc_int ld_A, const double *U,
                             const double *b, const double *h_prev, fc_int ld_hp,
                             double *h_next, fc_int ld_hn, double *y, fc_int ld_y, double *uh,
                             fc_int ld_uh, const int64_t *lengths, fc_int t)
    void fc_gru_bwd_step_f32(fc_int N, fc_int H, const float *G, fc_int ld_G, const float *uh,
                             fc_int ld_uh, const float *h_prev, fc_int ld_hp, const float *dy,
                             fc_int ld_dy, float *dh, float *dA, float *dU, fc_int ld_d,
                             const int64_t *lengths, fc_int t)
    void fc_gru_bwd_step_f64(fc_int N, fc_int H, const double *G, fc_int ld_G,
                             const double *uh, fc_int ld_uh, const double *h_prev,
                             fc_int ld_hp, const double *dy, fc_int ld_dy, double *dh,
                             double *dA, double *dU, fc_int ld_d, const int64_t *lengths,
                             fc_int t)
    void fc_gru_rb_fwd_gates_f32(fc_int N, fc_int H, float *A, fc_int ld_A, const float *b,
                                 const float *h_prev, fc_int ld_hp, float *rh, fc_int ld_rh,
                                 const int64_t *lengths, fc_int t)
    void fc_gru_rb_fwd_gates_f64(fc_int N, fc_int H, double *A, fc_int ld_A, const double *b,
                                 const double *h_prev, fc_int ld_hp, double *rh, fc_int ld_rh,
                                 const int64_t *lengths, fc_int t)
    void fc_gru_rb_fwd_out_f32(fc_int N, fc_int H, float *A, fc_int ld_A, const float *b,
                               const float *h_prev, fc_int ld_hp, float *h_next, fc_int ld_hn,
                               float *y, fc_int ld_y, const int64_t *lengths, fc_int t)
    void fc_gru_rb_fwd_out_f64(fc_int N, fc_int H, double *A, fc_int ld_A, const double *b,
                               const double *h_prev, fc_int ld_hp, double *h_next,
                               fc_int ld_hn, double *y, fc_int ld_y, const int64_t *lengths,
                               fc_int t)
    void fc_gru_rb_bwd_out_f32(fc_int N, fc_int H, const float *G, fc_int ld_G,
                               const float *h_prev, fc_int ld_hp, const float *dy, fc_int ld_dy,
                               float *dh, float *dA, fc_int ld_dA, const int64_t *lengths,
                               fc_int t)
    void fc_gru_rb_bwd_out_f64(fc_int N, fc_int H, const double *G, fc_int ld_G,
                               const double *h_prev, fc_int ld_hp, const double *dy,
                               fc_int ld_dy, double *dh, double *dA, fc_int ld_dA,
                               const int64_t *lengths, fc_int t)
    void fc_gru_rb_bwd_gates_f32(fc_int N, fc_int H, const float *G, fc_int ld_G,
                                 const float *h_prev, fc_int ld_hp, const float *drh, float *dh,
                                 float *dA, fc_int ld_dA, const int64_t *lengths, fc_int t)
    void fc_gru_rb_bwd_gates_f64(fc_int N, fc_int H, const double *G, fc_int ld_G,
                                 const double *h_prev, fc_int ld_hp, const double *drh,
                                 double *dh, double *dA, fc_int ld_dA, const int64_t *lengths,
                                 fc_int t)

    int fc_gemm_rows()
    fc_int fc_packed_size_f32(fc_int K, fc_int Nc)
    fc_int fc_packed_size_f64(fc_int K, fc_int Nc)
    void fc_pack_f32(fc_int K, fc_int Nc, const float *B, fc_int ldb, int trans, float *packed)
    void fc_pack_f64(fc_int K, fc_int Nc, const double *B, fc_int ldb, int trans,
                     double *packed)
    void fc_gemm_packed_f32(fc_int M, fc_int Nc, fc_int K, const float *A, fc_int lda,
                            const float *packed, int beta, float *C, fc_int ldc)
    void fc_gemm_packed_f64(fc_int M, fc_int Nc, fc_int K, const double *A, fc_int lda,
                            const double *packed, int beta, double *C, fc_int ldc)
    void fc_gemm_f32(int trans_a, int trans_b, fc_int M, fc_int Nc, fc_int K, const float *A,
                     fc_int lda, const float *B, fc_int ldb, int beta, float *C, fc_int ldc)
    void fc_gemm_f64(int trans_a, int trans_b, fc_int M, fc_int Nc, fc_int K, const double *A,
                     fc_int lda, const double *B, fc_int ldb, int beta, double *C, fc_int ldc)
    void fc_gemm_tn2_f32(fc_int M1, const float *A1, fc_int lda1, float *C1, fc_int ldc1,
                         fc_int M2, const float *A2, fc_int lda2, float *C2, fc_int ldc2,
                         fc_int Nc, fc_int K, const float *B, fc_int ldb)
    void fc_gemm_tn2_f64(fc_int M1, const double *A1, fc_int lda1, double *C1, fc_int ldc1,
                         fc_int M2, const double *A2, fc_int lda2, double *C2, fc_int ldc2,
                         fc_int Nc, fc_int K, const double *B, fc_int ldb)
    void fc_gemv_f32(fc_int K, fc_int Nc, const float *x, fc_int incx, const float *W,
                     fc_int ldw, int beta, float *y, int mirror)
    void fc_gemv_f64(fc_int K, fc_int Nc, const double *x, fc_int incx, const double *W,
                     fc_int ldw, int beta, double *y, int mirror)

    ctypedef void (*fc_task)(void *ctx, int tid, int nth) noexcept nogil
    int fc_parallel(int nth, fc_task task, void *ctx, long long patience_ns)
    void fc_pool_stats(int *workers, int *sleeping, long long *wakes, long long *short_runs)
    void fc_pool_limit(int max_workers)
    int fc_pool_ready(long long patience_ns)
    void fc_barrier(int nth)
    long long fc_round_trip_ns(int trips)
