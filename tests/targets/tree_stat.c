/* tree_stat spend MIB: allocates MIB MiB in 64 KiB blocks, each freed at once (the budget counts
 * allocations, not the live heap), and exits.
 * tree_stat print: prints what ml_stat and ml_quick_stat say of the budget, one line:
 * "total T used U left L quick_used Q". */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "memlimits.h"
#include "say.h"

#define BLOCK (64 * 1024)

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "spend") == 0) {
        long mib = strtol(argv[2], NULL, 10);
        for (long i = 0; i < mib * (1024 * 1024 / BLOCK); i++) {
            void *volatile p = malloc(BLOCK);
            if (p == NULL) return say("refused after %ld blocks\n", i), 1;
            free(p);
        }
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "print") == 0) {
        ml_stats s = ML_STATS_INIT, q = ML_STATS_INIT;
        ml_stat(&s);
        ml_quick_stat(&q);
        say("total %llu used %llu left %llu quick_used %llu\n", (unsigned long long)s.budget_total,
            (unsigned long long)s.budget_used, (unsigned long long)s.budget_left,
            (unsigned long long)q.budget_used);
        return 0;
    }
    say("usage: tree_stat spend MIB | tree_stat print\n");
    return 2;
}
