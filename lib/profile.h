/* Heap profiles of unmodified programs (profile.c): the built-in heap profile that
 * MEMLIMITS_PROFILE starts (a profile of memprof.c with its own tracker and callstacks), written
 * in the gperftools heap-profile text format at exit, when a process limit fires, and on demand
 * (ml_heap_profile_write); and the callstack of the allocation that fired a limit, for the
 * report. */
#ifndef ML_PROFILE_H
#define ML_PROFILE_H

#include <stdint.h>

#include "fmt.h"

/* Depth of the built-in profile's callstacks and of a firing's callstack. */
#define ML_PROFILE_DEPTH 64

/* Starts the built-in heap profile with the given mean gap, to be written to `path` ("%p": the
 * pid). Outside the allocator (the constructor). Returns 0 or -1 (errno). */
int ml__profile_start(const char *path, uint64_t mean_gap);
/* Writes the built-in profile to its path (at exit), or to "PATH.limit" (the first firing of a
 * process limit; from the slow path, busy: it gives up if the profile's lock is taken). */
void ml__profile_write_exit(void);
void ml__profile_write_limit(void);

/* In a fork child (after memprof.c's reset): the built-in profile starts afresh. */
void ml__profile_fork_child(void);

/* Warms the unwinder outside the allocator, so that a firing's callstack can be taken inside
 * it; until then firings have no callstack. `profiling`: a heap profile runs, so libunwind is
 * loaded (fast, cached, but it holds two descriptors); otherwise libgcc's unwinder serves. */
void ml__profile_firing_setup(int profiling);
/* Records the calling thread's callstack as the one that fired limit `kind` (the first time
 * only). Busy, inside the allocator: unwinds, allocates nothing. */
void ml__profile_note_firing(int kind);
/* Appends the symbolized callstack of limit `kind`'s firing to a text report (one indented line
 * per frame) or a JSON report (`,"callstack":[...]`); nothing when none was recorded. */
void ml__profile_firing_text(ml_buf *b, int kind);
void ml__profile_firing_json(ml_buf *b, int kind);

/* The built-in profile's sampled blocks that it could not track (ml_memprof_untracked), which
 * its heap profiles therefore miss. Returns 0 when no built-in profile runs. */
int ml__profile_untracked(uint64_t *blocks, uint64_t *samples);

#endif
