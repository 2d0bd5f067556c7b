/* fc_lstm.c: the LSTM pointwise helpers, in float and double (see fastcells.h). */
#define FC_IMPL "fc_lstm_impl.h"
#include "fc_instantiate.h"
