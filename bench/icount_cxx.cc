// icount_cxx: one variant of C++'s operator new/delete in a loop, for instruction counts under
// callgrind (bench/run_icount.sh; see icount.h). Usage: `icount_cxx OPERATION N`,
// `icount_cxx --list`. The operators are called by name, so that each variant is the one
// measured; the allocator is chosen with LD_PRELOAD (glibc: libstdc++'s operators over malloc).
#include <new>

#include "icount.h"

static void *slots[ICOUNT_SLOTS];
static size_t sizes[ICOUNT_SLOTS];
static const std::align_val_t a64{64};

static int op_new(uint64_t n)
{
    uint64_t s = 88172645463325252ull;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = icount_next(&s);
        void **slot = &slots[r & (ICOUNT_SLOTS - 1)];
        ::operator delete(*slot);
        *slot = ::operator new(icount_small(r));
    }
    return 0;
}

static int op_new_array(uint64_t n)
{
    uint64_t s = 88172645463325252ull;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = icount_next(&s);
        void **slot = &slots[r & (ICOUNT_SLOTS - 1)];
        ::operator delete[](*slot);
        *slot = ::operator new[](icount_small(r));
    }
    return 0;
}

static int op_new_sized(uint64_t n)
{
    uint64_t s = 88172645463325252ull;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = icount_next(&s);
        unsigned k = r & (ICOUNT_SLOTS - 1);
        if (slots[k] != nullptr) ::operator delete(slots[k], sizes[k]);
        sizes[k] = icount_small(r);
        slots[k] = ::operator new(sizes[k]);
    }
    return 0;
}

static int op_new_array_sized(uint64_t n)
{
    uint64_t s = 88172645463325252ull;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = icount_next(&s);
        unsigned k = r & (ICOUNT_SLOTS - 1);
        if (slots[k] != nullptr) ::operator delete[](slots[k], sizes[k]);
        sizes[k] = icount_small(r);
        slots[k] = ::operator new[](sizes[k]);
    }
    return 0;
}

static int op_new_nothrow(uint64_t n)
{
    uint64_t s = 88172645463325252ull;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = icount_next(&s);
        void **slot = &slots[r & (ICOUNT_SLOTS - 1)];
        ::operator delete(*slot, std::nothrow);
        *slot = ::operator new(icount_small(r), std::nothrow);
        if (*slot == nullptr) return 1;
    }
    return 0;
}

static int op_new_aligned(uint64_t n)
{
    uint64_t s = 88172645463325252ull;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = icount_next(&s);
        void **slot = &slots[r & (ICOUNT_SLOTS - 1)];
        if (*slot != nullptr) ::operator delete(*slot, a64);
        *slot = ::operator new(icount_small(r), a64);
    }
    return 0;
}

static int op_new_aligned_sized(uint64_t n)
{
    uint64_t s = 88172645463325252ull;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = icount_next(&s);
        unsigned k = r & (ICOUNT_SLOTS - 1);
        if (slots[k] != nullptr) ::operator delete(slots[k], sizes[k], a64);
        sizes[k] = icount_small(r);
        slots[k] = ::operator new(sizes[k], a64);
    }
    return 0;
}

static int op_new_aligned_nothrow(uint64_t n)
{
    uint64_t s = 88172645463325252ull;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = icount_next(&s);
        void **slot = &slots[r & (ICOUNT_SLOTS - 1)];
        if (*slot != nullptr) ::operator delete(*slot, a64, std::nothrow);
        *slot = ::operator new(icount_small(r), a64, std::nothrow);
        if (*slot == nullptr) return 1;
    }
    return 0;
}

static const icount_op ops[] = {
    {"new", "operator delete + operator new, 16-527 B", op_new},
    {"new_array", "operator delete[] + operator new[], 16-527 B", op_new_array},
    {"new_sized", "sized operator delete + operator new, 16-527 B", op_new_sized},
    {"new_array_sized", "sized operator delete[] + operator new[], 16-527 B",
     op_new_array_sized},
    {"new_nothrow", "nothrow delete + nothrow new, 16-527 B", op_new_nothrow},
    {"new_aligned", "aligned delete + new (align_val_t 64), 16-527 B", op_new_aligned},
    {"new_aligned_sized", "sized aligned delete + aligned new (64), 16-527 B",
     op_new_aligned_sized},
    {"new_aligned_nothrow", "nothrow aligned delete + new (64), 16-527 B",
     op_new_aligned_nothrow},
};

int main(int argc, char **argv)
{
    return icount_main(argc, argv, ops, sizeof ops / sizeof ops[0]);
}
