/* wl_strbuild: a realloc-heavy string builder, the load of code that appends to buffers grown
 * to fit exactly (no doubling): each append of 1..64 bytes is a realloc to the new length plus
 * one. LIVE builders are open at once; APPENDS appends in total go to random builders, and a
 * builder whose string passes its target length (random, 1 KiB..256 KiB) is checked and freed,
 * and starts over. Most reallocs stay within a size class or grow in place; those crossing a
 * class move the string, and large strings cross jemalloc's large classes and glibc's mmap
 * threshold.
 *
 * usage: wl_strbuild [APPENDS=20000000] [LIVE=64] [SEED=1]
 */
#include "bench_common.h"

static const char *prog = "wl_strbuild";

struct builder {
    char *buf;
    size_t len, target;
};

struct job {
    uint64_t appends, live, seed, checksum, reallocs, finished;
};

static void work(void *arg)
{
    struct job *j = arg;
    uint64_t rng = bench_mix(j->seed, 0);
    struct builder *b = calloc(j->live, sizeof *b);
    if (b == NULL) bench_die(prog, "out of memory");
    for (uint64_t i = 0; i < j->live; i++)
        b[i].target = bench_range(&rng, 1024, 256 << 10);
    static const char alphabet[64] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
    uint64_t sum = 0;
    for (uint64_t i = 0; i < j->appends; i++) {
        uint64_t r = bench_rand(&rng);
        struct builder *s = &b[r % j->live];
        size_t chunk = 1 + (size_t)((r >> 32) % 64);
        char *grown = realloc(s->buf, s->len + chunk + 1);
        if (grown == NULL) bench_die(prog, "realloc returned NULL");
        s->buf = grown;
        memcpy(s->buf + s->len, alphabet, chunk);
        s->len += chunk;
        s->buf[s->len] = '\0';
        j->reallocs++;
        if (s->len >= s->target) {
            sum += strlen(s->buf);
            free(s->buf);
            s->buf = NULL;
            s->len = 0;
            s->target = bench_range(&rng, 1024, 256 << 10);
            j->finished++;
        }
    }
    for (uint64_t i = 0; i < j->live; i++)
        free(b[i].buf);
    free(b);
    j->checksum = sum;
}

int main(int argc, char **argv)
{
    struct job j = {0};
    j.appends = bench_arg(argc, argv, 1, 20000000, 1, UINT64_MAX);
    j.live = bench_arg(argc, argv, 2, 64, 1, 1000000);
    j.seed = bench_arg(argc, argv, 3, 1, 0, UINT64_MAX);
    bench_task_init(prog);

    uint64_t start = bench_now_ns();
    bench_run(prog, work, &j);
    uint64_t end = bench_now_ns();

    char extra[128];
    snprintf(extra, sizeof extra, " reallocs=%" PRIu64 " strings=%" PRIu64, j.reallocs, j.finished);
    bench_report(start, end, extra);
    return 0;
}
