/* Helpers shared by all cells (see fastcells.h). Included by fc_common.c once per FC_REAL. */

FC_CLONES
void FC_FN(fc_colsum)(fc_int rows, fc_int cols, const FC_REAL *A, fc_int lda, FC_REAL *out)
{
    for (fc_int j = 0; j < cols; j++)
        out[j] = 0;
    for (fc_int r = 0; r < rows; r++) {
        const FC_REAL *a = A + r * lda;
        for (fc_int j = 0; j < cols; j++)
            out[j] += a[j];
    }
}

FC_CLONES
void FC_FN(fc_activation)(int act, fc_int n, const FC_REAL *x, FC_REAL *y)
{
    if (act == 0)
        for (fc_int k = 0; k < n; k++) y[k] = FC_FN(fc_exp)(x[k]);
    else if (act == 1)
        for (fc_int k = 0; k < n; k++) y[k] = FC_FN(fc_sigmoid)(x[k]);
    else
        for (fc_int k = 0; k < n; k++) y[k] = FC_FN(fc_tanh)(x[k]);
}
