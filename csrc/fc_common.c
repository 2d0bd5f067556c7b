/* fc_common.c: the shared pointwise helpers, in float and double (see fastcells.h). */
#define FC_IMPL "fc_common_impl.h"
#include "fc_instantiate.h"
