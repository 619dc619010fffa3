/* The host seam's system services (see host.h): thin syscall wrappers that are safe on the
 * allocator's slow path. The launcher links this file too; everything that needs the embedded
 * jemalloc or the dynamic linker is in host_runtime.c. */
#define _GNU_SOURCE
#include "host.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

int ml__write_all(int fd, const char *buf, size_t len)
{
    int saved = errno, failure = 0;
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            failure = errno;
            break;
        }
        if (w == 0) {
            failure = EIO; /* not for regular files, pipes or terminals; never loop on it */
            break;
        }
        buf += w;
        len -= (size_t)w;
    }
    errno = saved;
    return failure;
}

int ml__host_dup_high(int fd)
{
    int saved = errno;
    struct rlimit rl;
    rlim_t top = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < top) top = rl.rlim_cur;
    int high = top >= 16 + 3 ? fcntl(fd, F_DUPFD_CLOEXEC, (int)top - 16) : -1;
    errno = saved;
    return high;
}

/* Why changing environ at init is safe. Init may run inside the first malloc, called from
 * anywhere, even from glibc's setenv growing its array. Nothing here allocates or frees: the
 * entry is the caller's static string and a grown array comes from mmap; old strings and arrays
 * are left as they were, so code that holds them (main's envp, a getenv in progress) reads valid,
 * NUL-terminated data, and a reader sees either the old pointer or the new one (one aligned
 * store). glibc's setenv, putenv and unsetenv accept an environ the program replaced: they copy
 * it into an array of their own the next time they grow it, and never free ours. One loss is
 * possible: when init runs inside setenv's own realloc, setenv then copies as many entries as it
 * counted before, so an entry appended here is dropped (a replaced one is kept). */
int ml__host_env_put(char *entry)
{
    size_t name_len = (size_t)(strchr(entry, '=') - entry) + 1, n = 0;
    char **env = environ;
    int replaced = 0;
    for (; env != NULL && env[n] != NULL; n++) {
        if (strncmp(env[n], entry, name_len) == 0) {
            env[n] = entry;
            replaced = 1;
        }
    }
    if (replaced) return 0;
    char **grown = mmap(NULL, (n + 2) * sizeof *grown, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (grown == MAP_FAILED) return -1;
    if (n > 0) memcpy(grown, env, n * sizeof *grown);
    grown[n] = entry;
    grown[n + 1] = NULL;
    environ = grown;
    return 0;
}

uint64_t ml__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t ml__os_entropy(void)
{
    uint64_t v = 0;
    int saved = errno;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v)
        v = ml__now_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&v;
    errno = saved;
    return v;
}

int ml__gettid(void)
{
    return (int)syscall(SYS_gettid);
}

char *const *ml__environment(void)
{
    return environ;
}

const char *ml__getenv(const char *name)
{
    size_t len = strlen(name);
    if (environ == NULL) return NULL;
    for (char **e = environ; *e != NULL; e++)
        if (strncmp(*e, name, len) == 0 && (*e)[len] == '=') return *e + len + 1;
    return NULL;
}

size_t ml__page_size(void)
{
    static size_t page;
    if (page == 0) page = (size_t)sysconf(_SC_PAGESIZE);
    return page;
}

int ml__host_is_go_program(const char *path)
{
    static const char *const names[] = {".go.buildinfo", ".note.go.buildid"};
    int saved = errno, found = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    Elf64_Ehdr eh;
    Elf64_Shdr names_section;
    if (fd < 0) return 0;
    if (pread(fd, &eh, sizeof eh, 0) == (ssize_t)sizeof eh &&
        memcmp(eh.e_ident, ELFMAG, SELFMAG) == 0 && eh.e_ident[EI_CLASS] == ELFCLASS64 &&
        eh.e_shentsize == sizeof(Elf64_Shdr) && eh.e_shstrndx < eh.e_shnum &&
        pread(fd, &names_section, sizeof names_section,
              (off_t)(eh.e_shoff + (uint64_t)eh.e_shstrndx * sizeof(Elf64_Shdr))) ==
            (ssize_t)sizeof names_section) {
        for (unsigned i = 0; i < eh.e_shnum && !found; i++) {
            Elf64_Shdr sh;
            char name[24] = "";
            if (pread(fd, &sh, sizeof sh, (off_t)(eh.e_shoff + (uint64_t)i * sizeof sh)) !=
                    (ssize_t)sizeof sh ||
                pread(fd, name, sizeof name - 1, (off_t)(names_section.sh_offset + sh.sh_name)) <=
                    0)
                continue;
            for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
                found |= strcmp(name, names[k]) == 0;
        }
    }
    close(fd);
    errno = saved;
    return found;
}
