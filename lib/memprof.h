/* The profiler (memprof.c): profiles with their own sampling streams per thread, tracked blocks
 * and the tracker callbacks of include/memlimits.h. The slow path's hub calls it at each event
 * (busy) to draw the samples of the allocation at hand and to arm the countdown; the entry
 * points' slow halves call it (not busy) to place a sampled block, run the callbacks, and run
 * the free callbacks queued on the thread. It calls nothing above it: the free of a tracked
 * block reaches it through the upcall registered with the host (host_tracked.c). */
#ifndef ML_MEMPROF_H
#define ML_MEMPROF_H

#include <stddef.h>
#include <stdint.h>

#include "memlimits.h"
#include "thread.h"

/* Nonzero once a profile was started in the process: until then the hub and the entry points
 * skip the profiler with one load (no instruction of theirs runs without it). */
extern ML_HIDDEN int ml__memprof_started;
#define ML_MEMPROF_STARTED() ML_UNLIKELY(ML_LOAD(&ml__memprof_started))

/* At an event (busy): `before` units were charged since the countdown was armed, then the
 * allocation at hand: `n` bytes and `extra` units beyond them (0 and 0 when it is refused). The
 * profiles' streams run on units, as the countdown and the thread's sampler do (event.c): each
 * byte is sampled with probability 1 / mean, the extra units never are, and the countdown runs
 * out at the allocation that holds a sampled byte, not one allocation early. Brings every
 * profile's stream up to date and draws the samples of the n bytes; ml__memprof_sampled() then
 * says whether any profile sampled them. */
void ml__memprof_take(ml_thread *t, uint64_t before, uint64_t n, uint64_t extra);
/* The short event's take (event.c's event_short): when none of the `units` charged since the
 * countdown was armed (the allocation at hand's included) holds a sampled byte of any profile,
 * and the thread has nothing else for the profiler's streams (no callback running, no
 * unsampled units of callbacks to take out, no profile started or stopped since it last
 * looked), moves every stream past them, marks the allocation unsampled and returns the
 * memprof component for the next arming (>= 1; ML_NONE when no profile runs). Otherwise returns
 * 0 and changes nothing: the event takes the full path. Queued free callbacks are the caller's
 * to run after the allocation (alloc.c's done), as after a full event. Busy. */
uint64_t ml__memprof_pass(uint64_t units);
int ml__memprof_sampled(void);
/* The countdown's memprof component: units up to the next sampled byte of any profile; ML_NONE
 * when none runs or a callback runs. Busy. (Queued free callbacks make the next allocation an
 * event by forcing it when they are queued.) */
uint64_t ml__memprof_left(void);

/* A block for a sampled allocation, in the tracked arena (NULL: none could be had; the caller
 * then allocates an ordinary block and the samples are lost). */
void *ml__memprof_block(size_t n, size_t align, int zero);
/* Runs the alloc callbacks of the sampled block p (not busy). Returns p, or NULL when a callback
 * refused it: p was then released. `ret` is the allocation's caller (callstacks start there). */
void *ml__memprof_track(void *p, size_t n, ml_alloc_kind kind, const void *ret);
/* The sampled allocation at hand gets no tracked block: it must stay where the program put it
 * (an arena it named; xallocx's growth in place), or none could be had. Each profile that
 * sampled it counts the block and its samples (ml_memprof_untracked). Not busy. */
void ml__memprof_untracked(void);
/* realloc of p (tracked, or the new request sampled): moves the block, runs the callbacks.
 * Returns the new block, or NULL (p untouched; errno ENOMEM). Not busy. ml__memprof_reallocx:
 * the same for rallocx, the new block aligned to `align` (0: malloc's) and, when `zero`,
 * zeroed beyond the old block's usable size. */
void *ml__memprof_realloc(void *p, size_t n, const void *ret, int sampled);
void *ml__memprof_reallocx(void *p, size_t n, size_t align, int zero, const void *ret, int sampled);

/* Free callbacks queued on this thread (the block was released inside jemalloc's free). */
int ml__memprof_pending(void);
/* Runs them, unless a callback is running on this thread (then they wait for its end). */
void ml__memprof_drain(void);
/* The calling thread exits (its last destructor round): queued callbacks run, kept blocks are
 * released. */
void ml__memprof_thread_exit(void);
/* In a fork child: every profile and tracked block of the parent is forgotten. */
void ml__memprof_fork_child(void);
/* The calling thread's callstack, up to max frames, innermost first, starting at the frame that
 * returns to `ret` (NULL: at the first frame outside memlimits). */
unsigned ml__memprof_capture(void **frames, unsigned max, const void *ret);

#endif
