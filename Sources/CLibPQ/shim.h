#ifndef DECKHAND_CLIBPQ_SHIM_H
#define DECKHAND_CLIBPQ_SHIM_H

#include <libpq-fe.h>

#endif
