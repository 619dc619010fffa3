/* Cancellation tokens (see memlimits.h). */
#ifndef ML_TOKEN_H
#define ML_TOKEN_H

#include "memlimits.h"

/* Whether `token` points at a live token (not NULL, not destroyed). */
int ml__token_valid(const ml_token *token);

/* fork of a multithreaded process (thread.h's hooks): prepare takes the tokens' lock, so that no
 * token is half made or half destroyed in the child; parent releases it; the child resets it,
 * and clears the counts of sets that threads which did not survive the fork were making. */
void ml__token_fork_prepare(void);
void ml__token_fork_parent(void);
void ml__token_fork_child(void);

#endif
