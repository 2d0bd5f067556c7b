/* fc_gru.c: the GRU pointwise helpers, in float and double (see fastcells.h). */
#define FC_IMPL "fc_gru_impl.h"
#include "fc_instantiate.h"
