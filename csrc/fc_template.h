/* fc_template.h: lets one source file define a float and a double version of each function.
 * A file includes its *_impl.h twice, with FC_REAL float / FC_SFX f32 and double / f64 defined;
 * FC_FN(name) names the version (fc_lstm_fwd_step -> fc_lstm_fwd_step_f32). */
#ifndef FC_TEMPLATE_H
#define FC_TEMPLATE_H
#define FC_CAT_(a, b) a##_##b
#define FC_CAT(a, b) FC_CAT_(a, b)
#define FC_FN(name) FC_CAT(name, FC_SFX)
#endif
