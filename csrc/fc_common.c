/* fc_common.c: helpers shared by all cells, in float and double. */
#include "fastcells.h"
#include "fc_math.h"
#include "fc_template.h"

#define FC_REAL float
#define FC_SFX f32
#include "fc_common_impl.h"
#undef FC_REAL
#undef FC_SFX

#define FC_REAL double
#define FC_SFX f64
#include "fc_common_impl.h"
#undef FC_REAL
#undef FC_SFX
