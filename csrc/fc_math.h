/* fc_math.h: branch-free exp, sigmoid and tanh that the compiler can vectorize.
 *
 * The C library's expf/tanhf are scalar calls; in a loop over a gate row they cost more than the
 * GEMMs (measured: about 60% of an LSTM inference pass at (32, 100, 128, 256)). These versions
 * are plain arithmetic, comparisons turned into selects and bit casts, so a loop that calls them
 * vectorizes (SSE2 by default, AVX2/AVX-512 in the run-time clones, see fastcells.h).
 *
 * exp: x = k ln2 + r with |r| <= ln2/2 (Cody-Waite, ln2 split in two), e^r - 1 = r P(r) with P
 * the minimax polynomial of degree 5 for float (e^r to 3e-9 relative) and the Taylor series to
 * r^13 for double (4e-18), then e^x = 2^k (e^r - 1) + 2^k in one fused multiply-add, 2^k built
 * in the exponent bits, computed on the argument clamped to [-87, 88] (float) / [-708, 709]
 * (double); beyond that range the result is +inf above and 0 below, as IEEE overflow and
 * underflow give (so sigmoid(-inf) is exactly 0 and 0 * inf in a formula is NaN, as in the NumPy
 * twin). NaN propagates.
 * sigmoid(x) = 1 / (1 + exp(-x)); saturates to exactly 1 and to (near) 0, never NaN for finite x.
 * tanh(x) = sign(x) (-E) / (2 + E), E = e^y - 1 = 2^k (e^r - 1) + (2^k - 1) for y = -2|x|: E
 * keeps its relative accuracy as y -> 0 (2^k - 1 is exact), so the quotient needs no separate
 * series near 0 (an earlier version switched to one below |x| = 0.2: the LSTM pointwise step
 * took 2.2 ns per unit then, 1.75 now, measured on an AMD EPYC (Zen 4) with AVX-512).
 * Maximum errors against the C library (tests/test_math.py): exp <= 2 ulp, sigmoid <= 3 ulp
 * (and <= 2 eps absolute), tanh <= 3 ulp, in float and double.
 */
#ifndef FC_MATH_H
#define FC_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* always_inline: GCC inlines an ordinary inline function only into callers of the same target
 * architecture, and the kernels are compiled as AVX-512/AVX2 clones (FC_CLONES); a call per
 * element would also stop the loops from vectorizing. */
#define FC_INLINE static inline __attribute__((always_inline))

/* x = k ln2 + r: returns e^r - 1 as r times a polynomial (so without cancellation near 0) and
 * sets *s = 2^k; x in [-87, 88] (or NaN), no range handling. The polynomial is the minimax fit
 * of degree 6 to e^r on [-ln2/2, ln2/2] with the 1 + r of its Taylor series kept exact
 * (3e-9 relative: one fused multiply-add fewer than the Taylor series of degree 7, as close). */
FC_INLINE float fc_expm1_reduced_f32(float x, float *s)
{
    const float shift = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float kf = x * 1.44269504088896341f + shift;
    uint32_t ki;
    memcpy(&ki, &kf, sizeof ki); /* low bits of kf hold k = round(x / ln2) */
    kf -= shift;
    float r = x - kf * 0.693145751953125f;
    r = r - kf * 1.428606765330187045e-06f;
    float p = 0.0013814613093535533f;
    p = p * r + 0.00836870996135995f;
    p = p * r + 0.041668387373897414f;
    p = p * r + 0.16666520688656683f;
    p = p * r + 0.4999999345162589f;
    p = p * r + 1.0f;
    uint32_t si = (ki << 23) + 0x3f800000u; /* bits of 2^k */
    memcpy(s, &si, sizeof si);
    return p * r;
}

/* e^x for x in [-87, 88] (or NaN): 2^k (e^r - 1) + 2^k, one rounding */
FC_INLINE float fc_exp_core_f32(float x)
{
    float s, q = fc_expm1_reduced_f32(x, &s);
    return s * q + s;
}

/* e^x - 1 for x in [-87, 0] (or NaN): 2^k (e^r - 1) + (2^k - 1), where 2^k - 1 is exact */
FC_INLINE float fc_expm1_core_f32(float x)
{
    float s, q = fc_expm1_reduced_f32(x, &s);
    return s * q + (s - 1.0f);
}

FC_INLINE float fc_exp_f32(float x)
{
    float c = x > 88.0f ? 88.0f : x;
    c = c < -87.0f ? -87.0f : c;
    float p = fc_exp_core_f32(c);
    p = x > 88.0f ? (float)INFINITY : p;
    return x < -87.0f ? 0.0f : p;
}

/* as fc_expm1_reduced_f32, in double: the Taylor series of degree 13 (truncation 4e-18) */
FC_INLINE double fc_expm1_reduced_f64(double x, double *s)
{
    const double shift = 6755399441055744.0; /* 1.5 * 2^52 */
    double kd = x * 1.4426950408889634074 + shift;
    uint64_t ki;
    memcpy(&ki, &kd, sizeof ki);
    kd -= shift;
    double r = x - kd * 6.93147180369123816490e-01;
    r = r - kd * 1.90821492927058770002e-10;
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    uint64_t si = (ki << 52) + 0x3ff0000000000000ull;
    memcpy(s, &si, sizeof si);
    return p * r;
}

FC_INLINE double fc_exp_core_f64(double x)
{
    double s, q = fc_expm1_reduced_f64(x, &s);
    return s * q + s;
}

FC_INLINE double fc_expm1_core_f64(double x)
{
    double s, q = fc_expm1_reduced_f64(x, &s);
    return s * q + (s - 1.0);
}

FC_INLINE double fc_exp_f64(double x)
{
    double c = x > 709.0 ? 709.0 : x;
    c = c < -708.0 ? -708.0 : c;
    double p = fc_exp_core_f64(c);
    p = x > 709.0 ? (double)INFINITY : p;
    return x < -708.0 ? 0.0 : p;
}

/* sigmoid and tanh skip the range handling that cannot change their result: below the clamp,
 * e^-87 (e^-708) is normal and 1 + it rounds to 1, exactly as 1 + 0 (the same bits as with
 * fc_exp, for fewer operations: these run five times per LSTM unit and step). */
FC_INLINE float fc_sigmoid_f32(float x)
{
    float c = x < -88.0f ? -88.0f : x; /* e^-x: +inf below -88, hence 0 */
    c = c > 87.0f ? 87.0f : c;
    float s = 1.0f / (1.0f + fc_exp_core_f32(-c));
    return x < -88.0f ? 0.0f : s;
}

FC_INLINE double fc_sigmoid_f64(double x)
{
    double c = x < -709.0 ? -709.0 : x;
    c = c > 708.0 ? 708.0 : c;
    double s = 1.0 / (1.0 + fc_exp_core_f64(-c));
    return x < -709.0 ? 0.0 : s;
}

FC_INLINE float fc_tanh_f32(float x)
{
    float ax = x < 0.0f ? -x : x;
    float y = -2.0f * ax;                                    /* <= 0 (or NaN) */
    float e = fc_expm1_core_f32(y < -87.0f ? -87.0f : y); /* e^y - 1, in [-1, 0] */
    float t = -e / (2.0f + e);
    return x < 0.0f ? -t : t;
}

FC_INLINE double fc_tanh_f64(double x)
{
    double ax = x < 0.0 ? -x : x;
    double y = -2.0 * ax;
    double e = fc_expm1_core_f64(y < -708.0 ? -708.0 : y);
    double t = -e / (2.0 + e);
    return x < 0.0 ? -t : t;
}

#endif /* FC_MATH_H */
