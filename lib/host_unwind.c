/* The host seam's callstacks (see host.h, "Callstacks"): a frame-pointer walker that steps only
 * through code whose unwind tables say the step is exact, and libunwind for the rest.
 *
 * A frame-pointer step (return address at rbp + 8, the caller's rbp at rbp) is what DWARF's call
 * frame information computes exactly where that information says CFA = rbp + 16 and rbp is
 * saved at CFA - 16: code built with frame pointers, after its prologue. At setup (outside the
 * allocator) every loaded object's .eh_frame is read once (host_cfi.c) and those address
 * intervals are kept, sorted, per object; a walk consults them through a small cache of return
 * addresses. Code built without frame pointers (Debian's own libraries), hand-written
 * assembly without CFI, signal frames and JIT code have no interval: the walk never steps out of
 * them by frame pointer, so it never reports a frame it cannot know. */
#define _GNU_SOURCE
#include "host.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <unwind.h>
#define UNW_LOCAL_ONLY
#include <libunwind.h> /* types and constants only: the library is loaded with dlopen */

#include "common.h"
#include "host_cfi.h"

static int mode; /* ML_HOST_UNWIND_* */

void ml__host_unwind_mode(int m)
{
    __atomic_store_n(&mode, m, __ATOMIC_RELAXED);
}

/* ---- libunwind, loaded with dlopen(RTLD_LOCAL) ----
 * Its _Unwind_* functions must never interpose on libgcc_s's, so it is not linked. It takes no
 * lock and allocates nothing on a walk (its per-thread caches come from mmap). */
static struct {
    int (*backtrace)(void **, int);
    int (*init_local)(unw_cursor_t *, unw_context_t *);
    int (*step)(unw_cursor_t *);
    int (*get_reg)(unw_cursor_t *, int, unw_word_t *);
} unw;
static int unw_loaded;

static void load_libunwind(void)
{
    void *lib = dlopen("libunwind.so.8", RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) return;
    int (*set_policy)(void *, int) =
        (int (*)(void *, int))dlsym(lib, "_ULx86_64_set_caching_policy");
    void **space = dlsym(lib, "_ULx86_64_local_addr_space");
    if (set_policy != NULL && space != NULL) set_policy(*space, UNW_CACHE_PER_THREAD);
    unw.init_local = (int (*)(unw_cursor_t *, unw_context_t *))dlsym(lib, "_ULx86_64_init_local");
    unw.step = (int (*)(unw_cursor_t *))dlsym(lib, "_ULx86_64_step");
    unw.get_reg = (int (*)(unw_cursor_t *, int, unw_word_t *))dlsym(lib, "_ULx86_64_get_reg");
    unw.backtrace = (int (*)(void **, int))dlsym(lib, "unw_backtrace");
    if (unw.backtrace != NULL && unw.init_local != NULL && unw.step != NULL && unw.get_reg != NULL)
        __atomic_store_n(&unw_loaded, 1, __ATOMIC_RELEASE);
}

/* ---- the objects' frame-pointer intervals ---- */

typedef struct fp_object {
    uintptr_t lo, hi; /* its executable segments, from the lowest to the highest */
    ml_fp_intervals intervals;
} fp_object;

#define MAX_OBJECTS 512

/* One reading of the loaded objects, in one mapping, never changed once published; a reading
 * that a newer one replaced is unmapped under the lock, so it is read only under the lock. */
typedef struct snapshot {
    unsigned count;
    unsigned long long adds, subs; /* dl_iterate_phdr's counters when it was read */
    fp_object objects[MAX_OBJECTS];
} snapshot;

static snapshot *table;          /* the current reading: under the lock */
static uintptr_t own_lo, own_hi; /* memlimits' own text */
static unsigned long long table_adds, table_subs;
static int building;
static uint32_t generation = 1; /* of the table: cache entries of another one are misses */

/* The table's lock, for lookups that miss the cache and for the swap of a new reading; no
 * other lock is taken under it (the reading itself takes the loader's lock, outside it). Its
 * word holds the holder's pid: in a fork child, a lock held by a thread of the parent (gone)
 * is taken over. Taken with bounded patience: a signal handler that interrupted a lookup and
 * allocates must not wait forever for its own thread. */
static int table_lock;

static int lock_table(void)
{
    int me = 0, word = 0;
    for (int tries = 0; tries < 1000; tries++) {
        if (me == 0) me = (int)syscall(SYS_getpid);
        word = 0;
        if (__atomic_compare_exchange_n(&table_lock, &word, me, 0, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED))
            return 0;
        if (word != me && __atomic_compare_exchange_n(&table_lock, &word, me, 0, __ATOMIC_ACQUIRE,
                                                      __ATOMIC_RELAXED))
            return 0; /* held by a process that is not this one: a thread lost in a fork */
        sched_yield();
    }
    return -1;
}

static void unlock_table(void)
{
    __atomic_store_n(&table_lock, 0, __ATOMIC_RELEASE);
}

static int classify(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    snapshot *t = data;
    if (t->count == MAX_OBJECTS) return 1;
    fp_object *o = &t->objects[t->count];
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    const uint8_t *hdr = NULL;
    for (unsigned i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            uintptr_t s = info->dlpi_addr + ph->p_vaddr;
            if (s < lo) lo = s;
            if (s + ph->p_memsz > hi) hi = s + ph->p_memsz;
        }
        if (ph->p_type == PT_GNU_EH_FRAME) hdr = (const uint8_t *)(info->dlpi_addr + ph->p_vaddr);
    }
    if (hi == 0) return 0;
    o->lo = lo, o->hi = hi;
    if (hdr != NULL) ml__host_fp_intervals(hdr, &o->intervals);
    if (lo <= (uintptr_t)ml__host_backtrace && (uintptr_t)ml__host_backtrace < hi) {
        __atomic_store_n(&own_lo, lo, __ATOMIC_RELAXED);
        __atomic_store_n(&own_hi, hi, __ATOMIC_RELAXED);
    }
    t->count++;
    return 0;
}

static int read_counters(struct dl_phdr_info *info, size_t size, void *data)
{
    unsigned long long *c = data;
    if (size < offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs) return 1;
    c[0] = info->dlpi_adds;
    c[1] = info->dlpi_subs;
    return 1;
}

static void free_snapshot(snapshot *t)
{
    for (unsigned i = 0; i < t->count; i++)
        ml__host_fp_intervals_free(&t->objects[i].intervals);
    munmap(t, sizeof *t);
}

/* Reads every loaded object's tables into a new snapshot and publishes it; one thread at a
 * time (another one finding a reading under way goes on with the current one). Allocates with
 * mmap only, so it may run inside the allocator (after a dlopen). */
static void build_table(void)
{
    if (__atomic_exchange_n(&building, 1, __ATOMIC_ACQUIRE)) return;
    snapshot *t = mmap(NULL, sizeof *t, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (t != MAP_FAILED) {
        unsigned long long c[2] = {0, 0};
        dl_iterate_phdr(read_counters, c);
        t->adds = c[0], t->subs = c[1];
        dl_iterate_phdr(classify, t);
        snapshot *old = NULL;
        if (lock_table() == 0) {
            old = table;
            table = t;
            __atomic_store_n(&table_adds, t->adds, __ATOMIC_RELAXED);
            __atomic_store_n(&table_subs, t->subs, __ATOMIC_RELAXED);
            __atomic_add_fetch(&generation, 1, __ATOMIC_RELEASE);
            unlock_table();
        } else {
            old = t;
        }
        if (old != NULL) free_snapshot(old);
    }
    __atomic_store_n(&building, 0, __ATOMIC_RELEASE);
}

/* What a return address is: not in the text of a loaded object (0), in it but not where a
 * frame-pointer step is exact (1), where it is (2). Looked up by pc - 1, inside the call. */
enum { PC_UNKNOWN, PC_TEXT, PC_EXACT, PC_BUSY };

static int lookup(const snapshot *t, uintptr_t pc)
{
    for (unsigned i = 0; t != NULL && i < t->count; i++) {
        const fp_object *o = &t->objects[i];
        if (pc < o->lo || pc >= o->hi) continue;
        const uintptr_t *pairs = o->intervals.pairs;
        size_t lo = 0, hi = o->intervals.count;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (pc < pairs[2 * mid])
                hi = mid;
            else if (pc >= pairs[2 * mid + 1])
                lo = mid + 1;
            else
                return PC_EXACT;
        }
        return PC_TEXT;
    }
    return PC_UNKNOWN;
}

/* The cache of verdicts: (pc << 16) | (generation & 0x7fff) << 1 | exact, for pc - 1 below
 * 2^48, indexed by a hash of pc; filled under the lock, read without it. */
#define CACHE_SIZE 4096
static uint64_t cache[CACHE_SIZE];

static ML_NOINLINE int classify_slow(uintptr_t pc, uint64_t *slot, uint64_t tag, uint32_t gen)
{
    if (lock_table() != 0) return PC_BUSY;
    int verdict = lookup(table, pc);
    if (verdict != PC_UNKNOWN && gen == __atomic_load_n(&generation, __ATOMIC_RELAXED))
        __atomic_store_n(slot, ((uint64_t)pc << 16) | tag | (verdict == PC_EXACT),
                         __ATOMIC_RELAXED);
    unlock_table();
    return verdict;
}

static inline int classify_pc(uintptr_t ret_addr, uint64_t tag, uint32_t gen)
{
    uintptr_t pc = ret_addr - 1;
    if (ML_UNLIKELY(pc >= ((uintptr_t)1 << 48))) return PC_UNKNOWN;
    uint64_t *slot = &cache[(pc ^ (pc >> 12)) & (CACHE_SIZE - 1)];
    uint64_t v = __atomic_load_n(slot, __ATOMIC_RELAXED);
    if (ML_LIKELY((v & ~(uint64_t)1) == (((uint64_t)pc << 16) | tag)))
        return PC_TEXT + (int)(v & 1);
    return classify_slow(pc, slot, tag, gen);
}

/* Loads and unloads since the build: the table is rebuilt (a dlopen or dlclose between two
 * walks; inside the allocator if need be: nothing here allocates). dl_iterate_phdr takes the
 * loader's lock for one callback, as every unwinder's lookup does. */
static uint32_t current_generation(void)
{
    unsigned long long c[2] = {0, 0};
    dl_iterate_phdr(read_counters, c);
    if (c[0] != __atomic_load_n(&table_adds, __ATOMIC_RELAXED) ||
        c[1] != __atomic_load_n(&table_subs, __ATOMIC_RELAXED))
        build_table();
    return __atomic_load_n(&generation, __ATOMIC_ACQUIRE);
}

/* ---- the thread's stack ----
 * Frames are read only inside the mapping that holds the stack pointer, found in
 * /proc/self/maps with system calls only (no stdio, no malloc). A stack that stays for the
 * thread's life is remembered: the main thread's (found at setup, from __libc_stack_end; with
 * its growth down to RLIMIT_STACK, below which the kernel maps nothing else) and, per thread,
 * the mapping that also holds the thread's descriptor (glibc puts it at the top of the thread's
 * stack). Any other stack (a coroutine's, an alternate signal stack) is looked up at each walk,
 * since it may be unmapped and its range reused between two walks. */
extern void *__libc_stack_end;
static uintptr_t main_lo, main_hi;
static ML_TLS uintptr_t stack_lo, stack_hi;

static int read_mapping(uintptr_t addr, uintptr_t *lo_out, uintptr_t *hi_out)
{
    int fd = (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    char buf[4096];
    size_t have = 0;
    int found = 0;
    while (!found) {
        long got = syscall(SYS_read, fd, buf + have, sizeof buf - have);
        if (got <= 0) break;
        have += (size_t)got;
        size_t start = 0;
        for (size_t i = 0; i < have && !found; i++) {
            if (buf[i] != '\n') continue;
            uintptr_t lo = 0, hi = 0;
            size_t j = start;
            for (; j < i && buf[j] != '-'; j++)
                lo = lo * 16 + (uintptr_t)(buf[j] <= '9' ? buf[j] - '0' : (buf[j] | 32) - 'a' + 10);
            for (j++; j < i && buf[j] != ' '; j++)
                hi = hi * 16 + (uintptr_t)(buf[j] <= '9' ? buf[j] - '0' : (buf[j] | 32) - 'a' + 10);
            if (addr >= lo && addr < hi) *lo_out = lo, *hi_out = hi, found = 1;
            start = i + 1;
        }
        if (start == 0 && have == sizeof buf) break; /* a line longer than the buffer */
        memmove(buf, buf + start, have - start);
        have -= start;
    }
    syscall(SYS_close, fd);
    return found ? 0 : -1;
}

static void find_main_stack(void)
{
    uintptr_t lo, hi;
    struct rlimit rl;
    if (main_hi != 0 || read_mapping((uintptr_t)__libc_stack_end, &lo, &hi) != 0) return;
    if (getrlimit(RLIMIT_STACK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < hi &&
        hi - rl.rlim_cur < lo)
        lo = hi - rl.rlim_cur;
    main_lo = lo;
    __atomic_store_n(&main_hi, hi, __ATOMIC_RELEASE);
}

/* The end of the stack that holds sp; 0 when it cannot be known. */
static uintptr_t stack_end(uintptr_t sp)
{
    uintptr_t hi = __atomic_load_n(&main_hi, __ATOMIC_ACQUIRE), lo;
    if (sp - main_lo < hi - main_lo) return hi;
    if (sp - stack_lo < stack_hi - stack_lo) return stack_hi;
    if (read_mapping(sp, &lo, &hi) != 0) return 0;
    uintptr_t self = (uintptr_t)pthread_self();
    if (self - lo < hi - lo) stack_lo = lo, stack_hi = hi;
    return hi;
}

/* ---- the walks ---- */

/* libgcc's unwinder, which this library links: no dlopen, no descriptor and no malloc on its
 * path, but no cache either: for the rare callstack of a limit's firing without libunwind. */
typedef struct gcc_walk {
    void **frames;
    unsigned n, max;
} gcc_walk;

static _Unwind_Reason_Code gcc_step(struct _Unwind_Context *ctx, void *arg)
{
    gcc_walk *w = arg;
    if (w->n >= w->max) return _URC_END_OF_STACK;
    uintptr_t ip = _Unwind_GetIP(ctx);
    if (ip == 0) return _URC_END_OF_STACK;
    w->frames[w->n++] = (void *)ip;
    return _URC_NO_REASON;
}

int ml__host_in_own_text(const void *addr)
{
    static uintptr_t own_base;
    Dl_info info;
    if (own_base == 0 && dladdr((void *)ml__host_backtrace, &info) != 0)
        own_base = (uintptr_t)info.dli_fbase;
    return dladdr(addr, &info) != 0 && (uintptr_t)info.dli_fbase == own_base;
}

/* A whole walk by libunwind (or libgcc without it), then memlimits' frames cut off: those below
 * `ret`, or, ret NULL or not found, those in memlimits' own object. */
static ML_NOINLINE unsigned walk_whole(void **frames, unsigned max, const void *ret)
{
    void *raw[256 + 24];
    unsigned want = max + 24 > 280 ? 280 : max + 24, n = 0;
    if (__atomic_load_n(&unw_loaded, __ATOMIC_ACQUIRE)) {
        int got = unw.backtrace(raw, (int)want);
        n = got > 0 ? (unsigned)got : 0;
    } else {
        gcc_walk w = {raw, 0, want};
        _Unwind_Backtrace(gcc_step, &w);
        n = w.n;
    }
    unsigned start = 0;
    if (ret != NULL) {
        while (start < n && raw[start] != ret)
            start++;
        if (start == n) start = 0;
    }
    if (start == 0 || ret == NULL)
        while (start < n && ml__host_in_own_text(raw[start]))
            start++;
    unsigned len = n - start < max ? n - start : max;
    memcpy(frames, raw + start, len * sizeof *frames);
    return len;
}

/* libunwind from frame (pc, sp, fp), already recorded: rip, rsp and rbp are all a step needs
 * where the frame-pointer walk stopped (its CFA is computed from rsp or rbp; the other
 * registers' values matter only for frames whose rules read them, which libunwind finds). */
static unsigned walk_on(void **frames, unsigned n, unsigned max, uintptr_t pc, uintptr_t sp,
                        uintptr_t fp)
{
    unw_context_t uc;
    unw_cursor_t cursor;
    memset(&uc, 0, sizeof uc);
    uc.uc_mcontext.gregs[REG_RIP] = (greg_t)pc;
    uc.uc_mcontext.gregs[REG_RSP] = (greg_t)sp;
    uc.uc_mcontext.gregs[REG_RBP] = (greg_t)fp;
    if (unw.init_local(&cursor, &uc) != 0) return n;
    while (n < max && unw.step(&cursor) > 0) {
        unw_word_t ip;
        if (unw.get_reg(&cursor, UNW_REG_IP, &ip) != 0 || ip == 0) break;
        frames[n++] = (void *)ip;
    }
    return n;
}

#define WALK_ON_AFTER 48 /* frames (bench/run_memprof_bench.sh) */

/* Call sites whose last walk by frame pointer met a frame without one before WALK_ON_AFTER
 * frames, keyed by the caller's return address and the depth of the walker's frame: their next
 * walk is libunwind's from the start, without the frame-pointer part it would redo (a program
 * built with frame pointers still has glibc's frames below main). Only the method depends on
 * it: both give the same frames. Per thread, direct-mapped, overwritten on collision. */
#define SHALLOW_SITES 64
static ML_TLS uintptr_t shallow[SHALLOW_SITES];

static inline uintptr_t *shallow_slot(const void *ret, uintptr_t fp)
{
    uintptr_t key = (uintptr_t)ret ^ (fp << 16) ^ (fp >> 4);
    return &shallow[(key ^ (key >> 6) ^ (key >> 12)) & (SHALLOW_SITES - 1)];
}

/* The walk. Frame i is (pc, fp, sp): a return address, the rbp and the rsp of the function it
 * returns into. A step reads the caller's return address at fp + 8 and its rbp at fp only when
 * the tables say CFA = rbp + 16 at pc - 1, and only when fp is 16-byte aligned, at or above sp
 * (so frames strictly increase) and below the stack's end. memlimits' own frames (built with
 * frame pointers) are walked the same way and not recorded, up to the frame of `ret`. */
ML_NOINLINE unsigned ml__host_backtrace(void **frames, unsigned max, const void *ret)
{
    int m = __atomic_load_n(&mode, __ATOMIC_RELAXED);
    if (max == 0) return 0;
    int fp_only = m == ML_HOST_UNWIND_FP;
    if (m == ML_HOST_UNWIND_LIBUNWIND || __atomic_load_n(&generation, __ATOMIC_ACQUIRE) == 1)
        return fp_only ? 0 : walk_whole(frames, max, ret); /* no tables (yet) */
    uintptr_t fp = (uintptr_t)__builtin_frame_address(0);
    uintptr_t *site = shallow_slot(ret, fp), site_key = (uintptr_t)ret ^ fp;
    if (!fp_only && ret != NULL && *site == site_key) return walk_whole(frames, max, ret);
    uintptr_t end = stack_end(fp);
    if (end == 0) return fp_only ? 0 : walk_whole(frames, max, ret);
    uint32_t gen = current_generation();
    uint64_t tag = (uint64_t)(gen & 0x7fff) << 1;
    uintptr_t own_from = __atomic_load_n(&own_lo, __ATOMIC_RELAXED);
    uintptr_t own_to = __atomic_load_n(&own_hi, __ATOMIC_RELAXED);
    /* This function's own frame: built with a frame pointer. */
    uintptr_t sp = fp + 16, pc = ((const uintptr_t *)fp)[1];
    fp = ((const uintptr_t *)fp)[0];
    /* memlimits' frames up to the caller's: all exact (built with frame pointers); anything
     * else is a caller that is not where it was expected (a walk from jemalloc's C++ fallback),
     * and the whole walk is left to libunwind. */
    int what;
    for (unsigned own = 0;; own++) {
        what = classify_pc(pc, tag, gen);
        if (ret != NULL ? pc == (uintptr_t)ret : !(own_from <= pc && pc < own_to)) break;
        if (what != PC_EXACT || own == 32 || (fp & 15) != 0 || fp < sp || fp > end - 16)
            return fp_only ? 0 : walk_whole(frames, max, ret);
        sp = fp + 16;
        pc = ((const uintptr_t *)fp)[1];
        fp = ((const uintptr_t *)fp)[0];
    }
    unsigned n = 0;
    for (;;) {
        /* Outside every object's text (JIT code, or an object loaded while another thread was
         * reading the tables), or the table's lock not had: fp ends the stack, auto asks
         * libunwind (which finds objects itself). */
        if (what == PC_UNKNOWN || what == PC_BUSY)
            return fp_only ? n : walk_whole(frames, max, ret);
        frames[n++] = (void *)pc;
        if (n == max) break;
        if (what != PC_EXACT) {
            if (fp_only) break;
            /* auto: libunwind carries on from this frame. Its walk on from a given frame (a
             * cursor, one uncached unw_step per frame) costs about 30 frames of its cached
             * whole-stack walk (unw_backtrace) for glibc's three frames below main: when fewer
             * frames were walked, it walks the whole stack instead. Without libunwind (the
             * callstack of a firing, no profile), libgcc's unwinder walks the whole stack. */
            if (__atomic_load_n(&unw_loaded, __ATOMIC_ACQUIRE) && n >= WALK_ON_AFTER)
                return walk_on(frames, n, max, pc, sp, fp);
            if (ret != NULL) *site = site_key;
            return walk_whole(frames, max, ret);
        }
        if ((fp & 15) != 0 || fp < sp || fp > end - 16) break;
        sp = fp + 16;
        pc = ((const uintptr_t *)fp)[1];
        fp = ((const uintptr_t *)fp)[0];
        what = classify_pc(pc, tag, gen);
    }
    return n;
}

static void ensure_table(void)
{
    if (__atomic_load_n(&generation, __ATOMIC_ACQUIRE) == 1 &&
        __atomic_load_n(&mode, __ATOMIC_RELAXED) != ML_HOST_UNWIND_LIBUNWIND) {
        find_main_stack();
        build_table();
    }
}

void ml__host_backtrace_setup(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    if (__atomic_load_n(&mode, __ATOMIC_RELAXED) != ML_HOST_UNWIND_FP)
        pthread_once(&once, load_libunwind);
    ensure_table();
}

void ml__host_backtrace_warm(void)
{
    void *frames[8];
    ensure_table();
    ml__host_backtrace(frames, 8, NULL);
}
