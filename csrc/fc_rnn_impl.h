/* Vanilla RNN pointwise passes (see fastcells.h). act: FC_TANH or FC_RELU.
 * relu is written `a < 0 ? 0 : a` so that NaN propagates. */

FC_CLONES
void FC_FN(fc_rnn_fwd_step)(fc_int N, fc_int H, int act, FC_REAL *A, fc_int ld_A,
                            const FC_REAL *b, const FC_REAL *h_prev, fc_int ld_hp,
                            FC_REAL *h_next, fc_int ld_hn, FC_REAL *y, fc_int ld_y,
                            const int64_t *lengths, fc_int t)
{
    for (fc_int n = 0; n < N; n++) {
        FC_REAL *a = A + n * ld_A, *hn = h_next + n * ld_hn, *yn = y + n * ld_y;
        const FC_REAL *hp = h_prev + n * ld_hp;
        if (lengths != NULL && t >= lengths[n]) {
            for (fc_int j = 0; j < H; j++) {
                hn[j] = hp[j];
                yn[j] = 0;
            }
            continue;
        }
        if (act == FC_RELU) {
#pragma GCC ivdep
            for (fc_int j = 0; j < H; j++) {
                FC_REAL v = a[j] + b[j];
                FC_REAL h = v < 0 ? 0 : v;
                a[j] = h;
                hn[j] = h;
                yn[j] = h;
            }
        } else {
#pragma GCC ivdep
            for (fc_int j = 0; j < H; j++) {
                FC_REAL h = FC_FN(fc_tanh)(a[j] + b[j]);
                a[j] = h;
                hn[j] = h;
                yn[j] = h;
            }
        }
    }
}

FC_CLONES
void FC_FN(fc_rnn_bwd_step)(fc_int N, fc_int H, int act, const FC_REAL *A, fc_int ld_A,
                            const FC_REAL *dy, fc_int ld_dy, FC_REAL *dh, fc_int ld_dh,
                            FC_REAL *dA, fc_int ld_dA, const int64_t *lengths, fc_int t)
{
    for (fc_int n = 0; n < N; n++) {
        FC_REAL *dAn = dA + n * ld_dA, *dhn = dh + n * ld_dh;
        if (lengths != NULL && t >= lengths[n]) {
            for (fc_int j = 0; j < H; j++)
                dAn[j] = 0;
            continue;
        }
        const FC_REAL *h = A + n * ld_A, *dyn = dy + n * ld_dy;
        if (act == FC_RELU) {
#pragma GCC ivdep
            for (fc_int j = 0; j < H; j++) {
                /* a product with the 0/1 mask, not a select: 0 * inf is NaN, as in the twin */
                dAn[j] = (dhn[j] + dyn[j]) * (FC_REAL)(h[j] > 0);
                dhn[j] = 0;
            }
        } else {
#pragma GCC ivdep
            for (fc_int j = 0; j < H; j++) {
                dAn[j] = (dhn[j] + dyn[j]) * (1 - h[j] * h[j]);
                dhn[j] = 0;
            }
        }
    }
}
