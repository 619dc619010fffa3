/* The host seam's system services (see host.h): thin syscall wrappers that are safe on the
 * allocator's slow path. The launcher links this file too; everything that needs the embedded
 * jemalloc or the dynamic linker is in host_runtime.c. */
#define _GNU_SOURCE
#include "host.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

void ml__write_all(int fd, const char *buf, size_t len)
{
    int saved = errno;
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            break;
        }
        buf += w;
        len -= (size_t)w;
    }
    errno = saved;
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
