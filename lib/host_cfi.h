/* Call frame information, for the callstack walker (host_unwind.c): the address intervals of
 * one loaded object where DWARF's rules are CFA = rbp + 16, rbp saved at CFA - 16 and the return
 * address at CFA - 8, so that a frame-pointer step there is exactly what the unwind tables
 * compute. x86-64 only. Allocates with mmap only; reads the object's mapped .eh_frame. */
#ifndef ML_HOST_CFI_H
#define ML_HOST_CFI_H

#include <stddef.h>
#include <stdint.h>

typedef struct ml_fp_intervals {
    uintptr_t *pairs;  /* [lo, hi) pairs, absolute addresses, sorted, disjoint */
    size_t count, cap; /* pairs */
} ml_fp_intervals;

/* Reads the intervals of the object whose .eh_frame_hdr (PT_GNU_EH_FRAME) is at `hdr`, mapped.
 * Returns 0, or -1 when the header is not in the form GNU ld and lld write (no intervals). An
 * FDE it cannot follow (or a mapping it cannot grow) gives fewer intervals, never wrong ones. */
int ml__host_fp_intervals(const uint8_t *hdr, ml_fp_intervals *out);
void ml__host_fp_intervals_free(ml_fp_intervals *iv);

#endif
