/* wl_small_objects: many small, short-lived objects on one thread, the load of a compiler, an
 * interpreter or a parser. Each of ITERATIONS rounds builds a binary tree of depth DEPTH whose
 * nodes carry a small string of random length (8..120 bytes), walks it, and frees it; one tree
 * of the same depth lives through the whole run, as a program's long-lived data does. Node and
 * string sizes mix 32-byte nodes with strings from 8 to 120 bytes: several small size classes.
 *
 * usage: wl_small_objects [ITERATIONS=80] [DEPTH=16] [SEED=1]
 */
#include "bench_common.h"

static const char *prog = "wl_small_objects";

struct node {
    struct node *left, *right;
    char *name;
    uint32_t len;
};

static struct node *build(unsigned depth, uint64_t *rng)
{
    struct node *n = malloc(sizeof *n);
    if (n == NULL) bench_die(prog, "malloc returned NULL");
    n->len = (uint32_t)bench_range(rng, 8, 120);
    n->name = malloc(n->len);
    if (n->name == NULL) bench_die(prog, "malloc returned NULL");
    memset(n->name, 'a' + (int)(n->len % 26), n->len);
    if (depth > 0) {
        n->left = build(depth - 1, rng);
        n->right = build(depth - 1, rng);
    } else {
        n->left = n->right = NULL;
    }
    return n;
}

static uint64_t walk(const struct node *n)
{
    if (n == NULL) return 0;
    return (uint64_t)(unsigned char)n->name[n->len - 1] + walk(n->left) + walk(n->right);
}

static void drop(struct node *n)
{
    if (n == NULL) return;
    drop(n->left);
    drop(n->right);
    free(n->name);
    free(n);
}

struct job {
    uint64_t iterations, depth, seed, checksum;
};

static void work(void *arg)
{
    struct job *j = arg;
    uint64_t rng = bench_mix(j->seed, 0);
    struct node *keep = build((unsigned)j->depth, &rng);
    uint64_t sum = 0;
    for (uint64_t i = 0; i < j->iterations; i++) {
        struct node *t = build((unsigned)j->depth, &rng);
        sum += walk(t);
        drop(t);
    }
    sum += walk(keep);
    drop(keep);
    j->checksum = sum;
}

int main(int argc, char **argv)
{
    struct job j = {0};
    j.iterations = bench_arg(argc, argv, 1, 80, 1, UINT64_MAX);
    j.depth = bench_arg(argc, argv, 2, 16, 0, 28);
    j.seed = bench_arg(argc, argv, 3, 1, 0, UINT64_MAX);
    bench_task_init(prog);

    uint64_t start = bench_now_ns();
    bench_run(prog, work, &j);
    uint64_t end = bench_now_ns();

    char extra[128];
    snprintf(extra, sizeof extra, " objects=%" PRIu64 " checksum=%" PRIu64,
             (uint64_t)((j.iterations + 1) * 2 * ((2ull << j.depth) - 1)), j.checksum);
    bench_report(start, end, extra);
    return 0;
}
