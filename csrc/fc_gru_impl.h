/* GRU pointwise passes (see fastcells.h), blocks [z, r, h], h_t = z ⊙ h_{t-1} + (1 - z) ⊙ ĥ.
 * Masked rows (t >= lengths[n]) carry h and produce zero outputs and zero gradients. */

/* ---- reset_after=True: one recurrent GEMM per step, U = h_{t-1} @ Wh ---- */
FC_CLONES
void FC_FN(fc_gru_fwd_step)(fc_int N, fc_int H, FC_REAL *A, fc_int ld_A, const FC_REAL *U,
                            const FC_REAL *b, const FC_REAL *h_prev, fc_int ld_hp,
                            FC_REAL *h_next, fc_int ld_hn, FC_REAL *y, fc_int ld_y,
                            FC_REAL *uh, fc_int ld_uh, const int64_t *lengths, fc_int t)
{
    const FC_REAL *b0 = b, *b1 = b + 3 * H; /* input and recurrent bias rows */
    for (fc_int n = 0; n < N; n++) {
        FC_REAL *a = A + n * ld_A, *hn = h_next + n * ld_hn, *yn = y + n * ld_y;
        const FC_REAL *u = U + n * 3 * H, *hp = h_prev + n * ld_hp;
        if (lengths != NULL && t >= lengths[n]) {
            for (fc_int j = 0; j < H; j++) {
                hn[j] = hp[j];
                yn[j] = 0;
            }
            continue;
        }
        FC_REAL *az = a, *ar = a + H, *ah = a + 2 * H;
        FC_REAL *uhn = uh + n * ld_uh;
#pragma GCC ivdep
        for (fc_int j = 0; j < H; j++) {
            FC_REAL z = FC_FN(fc_sigmoid)(az[j] + b0[j] + u[j] + b1[j]);
            FC_REAL r = FC_FN(fc_sigmoid)(ar[j] + b0[H + j] + u[H + j] + b1[H + j]);
            FC_REAL un = u[2 * H + j] + b1[2 * H + j];
            FC_REAL hh = FC_FN(fc_tanh)(ah[j] + b0[2 * H + j] + r * un);
            FC_REAL h = z * hp[j] + (1 - z) * hh;
            az[j] = z; ar[j] = r; ah[j] = hh;
            hn[j] = h;
            yn[j] = h;
            uhn[j] = un;
        }
    }
}

FC_CLONES
void FC_FN(fc_gru_bwd_step)(fc_int N, fc_int H, const FC_REAL *G, fc_int ld_G,
                            const FC_REAL *uh, fc_int ld_uh, const FC_REAL *h_prev, fc_int ld_hp,
                            const FC_REAL *dy, fc_int ld_dy, FC_REAL *dh, FC_REAL *dA,
                            FC_REAL *dU, fc_int ld_d, const int64_t *lengths, fc_int t)
{
    for (fc_int n = 0; n < N; n++) {
        FC_REAL *dAn = dA + n * ld_d, *dUn = dU + n * ld_d, *dhn = dh + n * H;
        if (lengths != NULL && t >= lengths[n]) {
            for (fc_int j = 0; j < 3 * H; j++) {
                dAn[j] = 0;
                dUn[j] = 0;
            }
            continue;
        }
        const FC_REAL *z = G + n * ld_G, *r = z + H, *hh = z + 2 * H;
        const FC_REAL *un = uh + n * ld_uh, *hp = h_prev + n * ld_hp, *dyn = dy + n * ld_dy;
#pragma GCC ivdep
        for (fc_int j = 0; j < H; j++) {
            FC_REAL dht = dhn[j] + dyn[j];
            FC_REAL dah = dht * (1 - z[j]) * (1 - hh[j] * hh[j]);
            FC_REAL daz = dht * (hp[j] - hh[j]) * z[j] * (1 - z[j]);
            FC_REAL dar = dah * un[j] * r[j] * (1 - r[j]);
            dAn[j] = daz; dAn[H + j] = dar; dAn[2 * H + j] = dah;
            dUn[j] = daz; dUn[H + j] = dar; dUn[2 * H + j] = dah * r[j];
            dhn[j] = dht * z[j]; /* the caller adds dU @ Whᵀ */
        }
    }
}

/* ---- reset_after=False: the z, r part of the recurrent product comes first ---- */
FC_CLONES
void FC_FN(fc_gru_rb_fwd_gates)(fc_int N, fc_int H, FC_REAL *A, fc_int ld_A, const FC_REAL *b,
                                const FC_REAL *h_prev, fc_int ld_hp, FC_REAL *rh, fc_int ld_rh,
                                const int64_t *lengths, fc_int t)
{
    for (fc_int n = 0; n < N; n++) {
        FC_REAL *rhn = rh + n * ld_rh;
        if (lengths != NULL && t >= lengths[n]) {
            for (fc_int j = 0; j < H; j++)
                rhn[j] = 0;
            continue;
        }
        FC_REAL *az = A + n * ld_A, *ar = az + H;
        const FC_REAL *hp = h_prev + n * ld_hp;
#pragma GCC ivdep
        for (fc_int j = 0; j < H; j++) {
            FC_REAL z = FC_FN(fc_sigmoid)(az[j] + b[j]);
            FC_REAL r = FC_FN(fc_sigmoid)(ar[j] + b[H + j]);
            az[j] = z;
            ar[j] = r;
            rhn[j] = r * hp[j];
        }
    }
}

FC_CLONES
void FC_FN(fc_gru_rb_fwd_out)(fc_int N, fc_int H, FC_REAL *A, fc_int ld_A, const FC_REAL *b,
                              const FC_REAL *h_prev, fc_int ld_hp, FC_REAL *h_next, fc_int ld_hn,
                              FC_REAL *y, fc_int ld_y, const int64_t *lengths, fc_int t)
{
    for (fc_int n = 0; n < N; n++) {
        FC_REAL *hn = h_next + n * ld_hn, *yn = y + n * ld_y;
        const FC_REAL *hp = h_prev + n * ld_hp;
        if (lengths != NULL && t >= lengths[n]) {
            for (fc_int j = 0; j < H; j++) {
                hn[j] = hp[j];
                yn[j] = 0;
            }
            continue;
        }
        const FC_REAL *z = A + n * ld_A;
        FC_REAL *ah = A + n * ld_A + 2 * H;
#pragma GCC ivdep
        for (fc_int j = 0; j < H; j++) {
            FC_REAL hh = FC_FN(fc_tanh)(ah[j] + b[2 * H + j]);
            FC_REAL h = z[j] * hp[j] + (1 - z[j]) * hh;
            ah[j] = hh;
            hn[j] = h;
            yn[j] = h;
        }
    }
}

FC_CLONES
void FC_FN(fc_gru_rb_bwd_out)(fc_int N, fc_int H, const FC_REAL *G, fc_int ld_G,
                              const FC_REAL *h_prev, fc_int ld_hp, const FC_REAL *dy,
                              fc_int ld_dy, FC_REAL *dh, FC_REAL *dA, fc_int ld_dA,
                              const int64_t *lengths, fc_int t)
{
    for (fc_int n = 0; n < N; n++) {
        FC_REAL *dAn = dA + n * ld_dA, *dhn = dh + n * H;
        if (lengths != NULL && t >= lengths[n]) {
            for (fc_int j = 0; j < 3 * H; j++)
                dAn[j] = 0;
            continue;
        }
        const FC_REAL *z = G + n * ld_G, *hh = z + 2 * H;
        const FC_REAL *hp = h_prev + n * ld_hp, *dyn = dy + n * ld_dy;
#pragma GCC ivdep
        for (fc_int j = 0; j < H; j++) {
            FC_REAL dht = dhn[j] + dyn[j];
            dAn[j] = dht * (hp[j] - hh[j]) * z[j] * (1 - z[j]);
            dAn[2 * H + j] = dht * (1 - z[j]) * (1 - hh[j] * hh[j]);
            dhn[j] = dht * z[j];
        }
    }
}

FC_CLONES
void FC_FN(fc_gru_rb_bwd_gates)(fc_int N, fc_int H, const FC_REAL *G, fc_int ld_G,
                                const FC_REAL *h_prev, fc_int ld_hp, const FC_REAL *drh,
                                FC_REAL *dh, FC_REAL *dA, fc_int ld_dA,
                                const int64_t *lengths, fc_int t)
{
    for (fc_int n = 0; n < N; n++) {
        if (lengths != NULL && t >= lengths[n])
            continue; /* dA was zeroed by fc_gru_rb_bwd_out, dh passes through */
        const FC_REAL *r = G + n * ld_G + H, *hp = h_prev + n * ld_hp, *drhn = drh + n * H;
        FC_REAL *dar = dA + n * ld_dA + H, *dhn = dh + n * H;
#pragma GCC ivdep
        for (fc_int j = 0; j < H; j++) {
            dar[j] = drhn[j] * hp[j] * r[j] * (1 - r[j]);
            dhn[j] += drhn[j] * r[j];
        }
    }
}
