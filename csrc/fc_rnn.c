/* fc_rnn.c: the RNN pointwise helpers, in float and double (see fastcells.h). */
#define FC_IMPL "fc_rnn_impl.h"
#include "fc_instantiate.h"
