/* fc_instantiate.h: compiles the implementation file named by FC_IMPL twice, for float (FC_REAL
 * float, names *_f32) and double (*_f64). Usage, in a .c file:
 *     #define FC_IMPL "fc_lstm_impl.h"
 *     #include "fc_instantiate.h"
 * Inside an implementation, FC_FN(name) names the current version (fc_lstm_fwd_step_f32...). */
#include "fastcells.h"
#include "fc_math.h"

#define FC_CAT_(a, b) a##_##b
#define FC_CAT(a, b) FC_CAT_(a, b)
#define FC_FN(name) FC_CAT(name, FC_SFX)

#define FC_REAL float
#define FC_SFX f32
#include FC_IMPL
#undef FC_REAL
#undef FC_SFX

#define FC_REAL double
#define FC_SFX f64
#include FC_IMPL
#undef FC_REAL
#undef FC_SFX
