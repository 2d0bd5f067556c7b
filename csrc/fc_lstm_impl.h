/* LSTM pointwise passes (see fastcells.h for the contract). Included by fc_lstm.c once per
 * FC_REAL. Each inner loop over the H units is branch-free so that it vectorizes; `ivdep` tells
 * the compiler what is true here: no iteration depends on another (outputs may alias inputs only
 * at the same index, as c_next and c_prev do in inference). */

FC_CLONES
void FC_FN(fc_lstm_fwd_step)(fc_int N, fc_int H, FC_REAL *gates, fc_int ld_g, const FC_REAL *b,
                             const FC_REAL *c_prev, fc_int ld_cp, FC_REAL *c_next, fc_int ld_cn,
                             const FC_REAL *h_prev, fc_int ld_hp, FC_REAL *h_next, fc_int ld_hn,
                             FC_REAL *y, fc_int ld_y, FC_REAL *tanh_c, fc_int ld_tc,
                             const int64_t *lengths, fc_int t)
{
    const FC_REAL *bf = b, *bg = b + H, *bi = b + 2 * H, *bo = b + 3 * H;
    for (fc_int n = 0; n < N; n++) {
        FC_REAL *A = gates + n * ld_g;
        const FC_REAL *cp = c_prev + n * ld_cp, *hp = h_prev + n * ld_hp;
        FC_REAL *cn = c_next + n * ld_cn, *hn = h_next + n * ld_hn, *yn = y + n * ld_y;
        if (lengths != NULL && t >= lengths[n]) { /* past the end: carry the state */
            for (fc_int j = 0; j < H; j++) {
                cn[j] = cp[j];
                hn[j] = hp[j];
                yn[j] = 0;
            }
            continue;
        }
        FC_REAL *Af = A, *Ag = A + H, *Ai = A + 2 * H, *Ao = A + 3 * H;
        if (tanh_c != NULL) { /* training: keep the activations for backward */
            FC_REAL *tc = tanh_c + n * ld_tc;
#pragma GCC ivdep
            for (fc_int j = 0; j < H; j++) {
                FC_REAL f = FC_FN(fc_sigmoid)(Af[j] + bf[j]);
                FC_REAL g = FC_FN(fc_tanh)(Ag[j] + bg[j]);
                FC_REAL i = FC_FN(fc_sigmoid)(Ai[j] + bi[j]);
                FC_REAL o = FC_FN(fc_sigmoid)(Ao[j] + bo[j]);
                FC_REAL c = f * cp[j] + g * i;
                FC_REAL tch = FC_FN(fc_tanh)(c);
                Af[j] = f; Ag[j] = g; Ai[j] = i; Ao[j] = o;
                tc[j] = tch;
                cn[j] = c;
                hn[j] = o * tch;
                yn[j] = o * tch;
            }
        } else { /* inference: nothing is kept */
#pragma GCC ivdep
            for (fc_int j = 0; j < H; j++) {
                FC_REAL f = FC_FN(fc_sigmoid)(Af[j] + bf[j]);
                FC_REAL g = FC_FN(fc_tanh)(Ag[j] + bg[j]);
                FC_REAL i = FC_FN(fc_sigmoid)(Ai[j] + bi[j]);
                FC_REAL o = FC_FN(fc_sigmoid)(Ao[j] + bo[j]);
                FC_REAL c = f * cp[j] + g * i;
                FC_REAL h = o * FC_FN(fc_tanh)(c);
                cn[j] = c;
                hn[j] = h;
                yn[j] = h;
            }
        }
    }
}

FC_CLONES
void FC_FN(fc_lstm_bwd_step)(fc_int N, fc_int H, const FC_REAL *gates, fc_int ld_g,
                             const FC_REAL *c_prev, fc_int ld_cp, const FC_REAL *tanh_c,
                             fc_int ld_tc, const FC_REAL *dy, fc_int ld_dy, FC_REAL *dh,
                             FC_REAL *dc, FC_REAL *dA, fc_int ld_dA, const int64_t *lengths,
                             fc_int t)
{
    for (fc_int n = 0; n < N; n++) {
        FC_REAL *dAn = dA + n * ld_dA, *dhn = dh + n * H, *dcn = dc + n * H;
        if (lengths != NULL && t >= lengths[n]) { /* past the end: gradients pass through */
            for (fc_int j = 0; j < 4 * H; j++)
                dAn[j] = 0;
            continue;
        }
        const FC_REAL *A = gates + n * ld_g, *cp = c_prev + n * ld_cp, *tc = tanh_c + n * ld_tc;
        const FC_REAL *f = A, *g = A + H, *i = A + 2 * H, *o = A + 3 * H;
        const FC_REAL *dyn = dy + n * ld_dy;
        FC_REAL *dAf = dAn, *dAg = dAn + H, *dAi = dAn + 2 * H, *dAo = dAn + 3 * H;
#pragma GCC ivdep
        for (fc_int j = 0; j < H; j++) {
            FC_REAL dht = dhn[j] + dyn[j];
            FC_REAL dct = dcn[j] + dht * o[j] * (1 - tc[j] * tc[j]);
            dAf[j] = dct * cp[j] * f[j] * (1 - f[j]);
            dAg[j] = dct * i[j] * (1 - g[j] * g[j]);
            dAi[j] = dct * g[j] * i[j] * (1 - i[j]);
            dAo[j] = dht * tc[j] * o[j] * (1 - o[j]);
            dcn[j] = dct * f[j];
            dhn[j] = 0;
        }
    }
}
