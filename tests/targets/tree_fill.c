/* tree_fill THREADS BLOCK DIR COUNT: one process of a tree filling the tree's heap cap. THREADS
 * threads allocate BLOCK-byte blocks (and touch them) until malloc fails, and keep them; then the
 * process prints its exact live heap ("live N": ml_heap_live reconciles every thread, all idle
 * now) and waits, holding everything, until COUNT processes have said so by creating a file in
 * DIR, so that the test adds up live heaps that coexisted. */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "memlimits.h"
#include "say.h"

static size_t block;

static void *fill(void *arg)
{
    (void)arg;
    void **list = NULL;
    for (;;) {
        void **p = malloc(block);
        if (p == NULL) break;
        memset(p, 1, block);
        *p = list; /* kept: the blocks stay live */
        list = p;
    }
    return list;
}

static int count_files(const char *dir)
{
    int n = 0;
    DIR *d = opendir(dir);
    for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    if (d != NULL) closedir(d);
    return n;
}

int main(int argc, char **argv)
{
    if (argc != 5) return 2;
    int threads = atoi(argv[1]), count = atoi(argv[4]);
    block = (size_t)strtoull(argv[2], NULL, 10);
    pthread_t tid[64];
    if (threads < 1 || threads > 64 || block < sizeof(void *)) return 2;
    for (int i = 0; i < threads; i++)
        if (pthread_create(&tid[i], NULL, fill, NULL) != 0) return 3;
    for (int i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    say("live %llu\n", (unsigned long long)ml_heap_live());
    char path[4096];
    snprintf(path, sizeof path, "%s/%d", argv[3], (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    if (fd >= 0) close(fd);
    struct timespec pause = {0, 5 * 1000 * 1000};
    for (int waited = 0; count_files(argv[3]) < count && waited < 4000; waited++)
        nanosleep(&pause, NULL);
    return 0;
}
