/* fc_math.h: branch-free exp, sigmoid and tanh that the compiler can vectorize.
 *
 * The C library's expf/tanhf are scalar calls; in a loop over a gate row they cost more than the
 * GEMMs (measured: about 60% of an LSTM inference pass at (32, 100, 128, 256)). These versions
 * are plain arithmetic, comparisons turned into selects and bit casts, so a loop that calls them
 * vectorizes (SSE2 by default, AVX2/AVX-512 in the run-time clones, see fastcells.h).
 *
 * exp: x = k ln2 + r with |r| <= ln2/2 (Cody-Waite, ln2 split in two), e^r by a Taylor polynomial
 * (degree 7 for float: truncation 5e-9 relative; degree 13 for double: 4e-18), 2^k built in the
 * exponent bits, computed on the argument clamped to [-87, 88] (float) / [-708, 709] (double);
 * beyond that range the result is +inf above and 0 below, as IEEE overflow and underflow give
 * (so sigmoid(-inf) is exactly 0 and 0 * inf in a formula is NaN, as in the NumPy twin). NaN
 * propagates.
 * sigmoid(x) = 1 / (1 + exp(-x)); saturates to exactly 1 and to (near) 0, never NaN for finite x.
 * tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|), and for |x| < 0.2, where that quotient
 * cancels, its odd Taylor series (to x^11 for float, x^19 for double; truncation < 1e-9 and
 * < 1e-17 relative). Maximum errors against the C library (tests/test_math.py): exp <= 2 ulp, sigmoid <= 3 ulp
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

/* e^x for x in [-87, 88] (or NaN): the reduction and the polynomial, no range handling. */
FC_INLINE float fc_exp_core_f32(float x)
{
    const float shift = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float kf = x * 1.44269504088896341f + shift;
    uint32_t ki;
    memcpy(&ki, &kf, sizeof ki); /* low bits of kf hold k = round(x / ln2) */
    kf -= shift;
    float r = x - kf * 0.693145751953125f;
    r = r - kf * 1.428606765330187045e-06f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    uint32_t si = (ki << 23) + 0x3f800000u; /* bits of 2^k */
    float s;
    memcpy(&s, &si, sizeof s);
    return p * s;
}

FC_INLINE float fc_exp_f32(float x)
{
    float c = x > 88.0f ? 88.0f : x;
    c = c < -87.0f ? -87.0f : c;
    float p = fc_exp_core_f32(c);
    p = x > 88.0f ? (float)INFINITY : p;
    return x < -87.0f ? 0.0f : p;
}

FC_INLINE double fc_exp_core_f64(double x)
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
    p = p * r + 1.0;
    uint64_t si = (ki << 52) + 0x3ff0000000000000ull;
    double s;
    memcpy(&s, &si, sizeof s);
    return p * s;
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
    float y = -2.0f * ax; /* <= 0 (or NaN) */
    float e = fc_exp_core_f32(y < -87.0f ? -87.0f : y);
    float t = (1.0f - e) / (1.0f + e);
    float x2 = ax * ax; /* odd series ax * P(ax^2) */
    float p = -1382.0f / 155925.0f;
    p = p * x2 + 62.0f / 2835.0f;
    p = p * x2 - 17.0f / 315.0f;
    p = p * x2 + 2.0f / 15.0f;
    p = p * x2 - 1.0f / 3.0f;
    p = p * x2 + 1.0f;
    t = ax < 0.2f ? ax * p : t;
    return x < 0.0f ? -t : t;
}

FC_INLINE double fc_tanh_f64(double x)
{
    double ax = x < 0.0 ? -x : x;
    double y = -2.0 * ax;
    double e = fc_exp_core_f64(y < -708.0 ? -708.0 : y);
    double t = (1.0 - e) / (1.0 + e);
    double x2 = ax * ax;
    double p = -443861162.0 / 1856156927625.0;
    p = p * x2 + 6404582.0 / 10854718875.0;
    p = p * x2 - 929569.0 / 638512875.0;
    p = p * x2 + 21844.0 / 6081075.0;
    p = p * x2 - 1382.0 / 155925.0;
    p = p * x2 + 62.0 / 2835.0;
    p = p * x2 - 17.0 / 315.0;
    p = p * x2 + 2.0 / 15.0;
    p = p * x2 - 1.0 / 3.0;
    p = p * x2 + 1.0;
    t = ax < 0.2 ? ax * p : t;
    return x < 0.0 ? -t : t;
}

#endif /* FC_MATH_H */
