/* Cancellation tokens (see memlimits.h). */
#ifndef ML_TOKEN_H
#define ML_TOKEN_H

#include "memlimits.h"

/* Whether `token` points at a live token (not NULL, not destroyed). */
int ml__token_valid(const ml_token *token);

#endif
