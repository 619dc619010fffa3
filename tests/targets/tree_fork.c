/* tree_fork: the parent allocates 8 MiB and forks; the child, which shares those pages, allocates
 * 4 MiB of its own and exits normally; the parent waits for it. The tree's report must show the
 * child with a slot of its own, charged for its 4 MiB only. */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "say.h"

/* Kept in a volatile global, so that the compiler cannot elide the malloc/free pairs. */
static void *volatile kept;

static void *take(size_t mib)
{
    char *p = malloc(mib << 20);
    if (p != NULL) memset(p, 1, mib << 20);
    kept = p;
    return p;
}

int main(void)
{
    void *parent = take(8);
    pid_t pid = fork();
    if (pid == 0) {
        void *child = take(4);
        say("child %d\n", (int)getpid());
        free(child);
        exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    free(parent);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
