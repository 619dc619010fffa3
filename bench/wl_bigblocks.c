/* wl_bigblocks: churn of large blocks (1 MiB and more), the load of image and buffer-heavy
 * programs. SLOTS blocks are live at once; OPS times a random slot's block is freed and replaced
 * by a new one of random size in MIN_KIB..MAX_KIB KiB, of which every page is written once (a
 * program fills the buffers it asks for). The cost is the allocator's page management: whether
 * freed pages are kept for reuse, purged (madvise) and faulted back in, or unmapped and mapped
 * again; it shows as system time.
 *
 * usage: wl_bigblocks [OPS=400] [SLOTS=4] [MIN_KIB=1024] [MAX_KIB=16384] [SEED=1]
 */
#include "bench_common.h"

#include <unistd.h>

static const char *prog = "wl_bigblocks";

struct job {
    uint64_t ops, slots, min, max, seed, checksum;
};

static void work(void *arg)
{
    struct job *j = arg;
    uint64_t rng = bench_mix(j->seed, 0);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char **slot = calloc(j->slots, sizeof *slot);
    if (slot == NULL) bench_die(prog, "out of memory");
    uint64_t sum = 0;
    for (uint64_t i = 0; i < j->ops; i++) {
        uint64_t k = bench_rand(&rng) % j->slots;
        size_t size = (size_t)bench_range(&rng, j->min << 10, j->max << 10);
        free(slot[k]);
        char *p = malloc(size);
        if (p == NULL) bench_die(prog, "malloc returned NULL");
        for (size_t off = 0; off < size; off += page)
            p[off] = (char)i;
        p[size - 1] = (char)i;
        sum += (unsigned char)p[0];
        slot[k] = p;
    }
    for (uint64_t k = 0; k < j->slots; k++)
        free(slot[k]);
    free(slot);
    j->checksum = sum;
}

int main(int argc, char **argv)
{
    struct job j = {0};
    j.ops = bench_arg(argc, argv, 1, 400, 1, UINT64_MAX);
    j.slots = bench_arg(argc, argv, 2, 4, 1, 1 << 20);
    j.min = bench_arg(argc, argv, 3, 1024, 1, 1 << 22);
    j.max = bench_arg(argc, argv, 4, 16384, j.min, 1 << 22);
    j.seed = bench_arg(argc, argv, 5, 1, 0, UINT64_MAX);
    bench_task_init(prog);

    uint64_t start = bench_now_ns();
    bench_run(prog, work, &j);
    uint64_t end = bench_now_ns();

    char extra[128];
    snprintf(extra, sizeof extra, " ops=%" PRIu64 " checksum=%" PRIu64, j.ops, j.checksum);
    bench_report(start, end, extra);
    return 0;
}
