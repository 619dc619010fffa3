/* File inspection for the launcher (see inspect.h): locating libmemlimits.so from the
 * launcher's own path, resolving a command like execvp(3), and reading ELF program headers to
 * tell, before exec, when the dynamic loader will not preload anything into the command, and
 * reading section headers to tell a Go program, whose heap the limits do not see. */
#define _GNU_SOURCE
#include "inspect.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "host.h"

#ifndef ML_LIBRARY_SONAME
#define ML_LIBRARY_SONAME "libmemlimits.so.0"
#endif
#ifndef ML_BIN_TO_LIB
#define ML_BIN_TO_LIB "../lib"
#endif
#ifndef ML_MULTIARCH
#define ML_MULTIARCH ""
#endif

/* ---- Locating the library ---------------------------------------------------------------- */

static int readable_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, R_OK) == 0;
}

/* LD_PRELOAD separates its entries with spaces and colons and has no quoting. */
static int preloadable_path(const char *path)
{
    return strpbrk(path, ": \t\n") == NULL;
}

static int accept_library(const char *path, char *out, size_t cap, char *why, size_t whycap)
{
    /* Absolute (the command may change directory), but keeping the file's own name: the
     * SONAME symlink stays a symlink, so the path still names what the user installed. */
    char dir[PATH_MAX], real[PATH_MAX + 256];
    const char *slash = strrchr(path, '/');
    const char *base = slash != NULL ? slash + 1 : path;
    int dirlen = slash == NULL ? 1 : slash == path ? 1 : (int)(slash - path);
    snprintf(dir, sizeof dir, "%.*s", dirlen, slash == NULL ? "." : path);
    if (realpath(dir, real) == NULL) {
        snprintf(why, whycap, "cannot resolve the library path '%s': %s", path, strerror(errno));
        return -1;
    }
    size_t used = strlen(real);
    snprintf(real + used, sizeof real - used, "%s%s", used > 1 ? "/" : "", base);
    if (strlen(real) >= cap) {
        snprintf(why, whycap, "the library path '%s' is too long", real);
        return -1;
    }
    if (!preloadable_path(real)) {
        snprintf(why, whycap,
                 "the library path '%s' contains a space or a colon, which LD_PRELOAD cannot "
                 "express",
                 real);
        return -1;
    }
    memcpy(out, real, strlen(real) + 1);
    return 0;
}

/* The directory of the running launcher, from /proc/self/exe (symlinks resolved). */
static int launcher_dir(char *out, size_t cap)
{
    ssize_t n = readlink("/proc/self/exe", out, cap - 1);
    if (n <= 0) return -1;
    out[n] = '\0';
    char *slash = strrchr(out, '/');
    if (slash == NULL) return -1;
    *slash = '\0';
    return 0;
}

int ml_locate_library(char *out, size_t cap, char *why, size_t whycap)
{
    const char *override = getenv("MEMLIMIT_LIBRARY");
    if (override != NULL && override[0] != '\0') {
        if (!readable_file(override)) {
            int missing = access(override, F_OK) != 0;
            snprintf(why, whycap, "MEMLIMIT_LIBRARY='%s': %s", override,
                     missing ? strerror(errno) : "not a readable regular file");
            return -1;
        }
        return accept_library(override, out, cap, why, whycap);
    }

    char dir[PATH_MAX];
    if (launcher_dir(dir, sizeof dir) != 0) {
        snprintf(why, whycap,
                 "cannot find libmemlimits.so: /proc/self/exe is unreadable (set "
                 "MEMLIMIT_LIBRARY)");
        return -1;
    }
    /* Relative to the launcher's directory: the build tree first, then the install tree. */
    const char *const places[] = {"..", ML_BIN_TO_LIB, "../lib/" ML_MULTIARCH, "../lib64",
                                  "../lib"};
    const char *const names[] = {ML_LIBRARY_SONAME, "libmemlimits.so"};
    for (size_t p = 0; p < sizeof places / sizeof places[0]; p++) {
        for (size_t n = 0; n < sizeof names / sizeof names[0]; n++) {
            char path[2 * PATH_MAX + 64];
            const char *place = places[p];
            if (place[0] == '/')
                snprintf(path, sizeof path, "%s/%s", place, names[n]);
            else
                snprintf(path, sizeof path, "%s/%s/%s", dir, place, names[n]);
            if (readable_file(path)) return accept_library(path, out, cap, why, whycap);
        }
    }
    snprintf(why, whycap,
             "cannot find libmemlimits.so near %s (looked in %s/.., %s/%s, ../lib, ../lib64); "
             "set MEMLIMIT_LIBRARY to its path",
             dir, dir, dir, ML_BIN_TO_LIB);
    return -1;
}

/* ---- Resolving the command --------------------------------------------------------------- */

static int runnable(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

int ml_resolve_command(const char *name, char *out, size_t cap)
{
    if (name[0] == '\0') return -1;
    if (strchr(name, '/') != NULL) {
        if (!runnable(name) || strlen(name) >= cap) return -1;
        memcpy(out, name, strlen(name) + 1);
        return 0;
    }
    char fallback[256] = "/bin:/usr/bin";
    const char *path = getenv("PATH");
    if (path == NULL) {
        size_t n = confstr(_CS_PATH, fallback, sizeof fallback);
        if (n == 0 || n > sizeof fallback) strcpy(fallback, "/bin:/usr/bin");
        path = fallback;
    }
    for (const char *p = path;; p++) {
        const char *end = strchrnul(p, ':');
        int len = (int)(end - p);
        /* An empty entry is the current directory, as for execvp. */
        int n =
            len == 0 ? snprintf(out, cap, "%s", name) : snprintf(out, cap, "%.*s/%s", len, p, name);
        if (n > 0 && (size_t)n < cap && runnable(out)) return 0;
        if (*end == '\0') break;
        p = end;
    }
    return -1;
}

/* ---- Will the loader preload? ------------------------------------------------------------ */

typedef struct elf_facts {
    int elf;        /* 1: an ELF file */
    int cls;        /* ELFCLASS32 or ELFCLASS64 */
    int data;       /* ELFDATA2LSB or ELFDATA2MSB */
    int machine;    /* e_machine */
    int has_interp; /* has a PT_INTERP program header: the dynamic loader runs */
} elf_facts;

/* Reads the ELF header and program headers of the native byte order. A file that is not ELF,
 * or an ELF of the other byte order (whose machine then differs anyway), leaves has_interp 0. */
static void read_elf(const char *path, elf_facts *f)
{
    unsigned char ident[EI_NIDENT];
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    if (pread(fd, ident, sizeof ident, 0) != (ssize_t)sizeof ident ||
        memcmp(ident, ELFMAG, SELFMAG) != 0) {
        close(fd);
        return;
    }
    f->elf = 1;
    f->cls = ident[EI_CLASS];
    f->data = ident[EI_DATA];
    uint64_t phoff = 0;
    unsigned phnum = 0, phentsize = 0;
    if (f->cls == ELFCLASS64) {
        Elf64_Ehdr eh;
        if (pread(fd, &eh, sizeof eh, 0) == (ssize_t)sizeof eh) {
            f->machine = eh.e_machine;
            phoff = eh.e_phoff;
            phnum = eh.e_phnum;
            phentsize = eh.e_phentsize;
        }
    } else if (f->cls == ELFCLASS32) {
        Elf32_Ehdr eh;
        if (pread(fd, &eh, sizeof eh, 0) == (ssize_t)sizeof eh) {
            f->machine = eh.e_machine;
            phoff = eh.e_phoff;
            phnum = eh.e_phnum;
            phentsize = eh.e_phentsize;
        }
    }
    size_t want = f->cls == ELFCLASS64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr);
    for (unsigned i = 0; i < phnum && phentsize >= want; i++) {
        unsigned char ph[sizeof(Elf64_Phdr)];
        if (pread(fd, ph, want, (off_t)(phoff + (uint64_t)i * phentsize)) != (ssize_t)want) break;
        /* p_type is the first 32-bit word in both classes. */
        uint32_t type;
        memcpy(&type, ph, sizeof type);
        if (type == PT_INTERP) f->has_interp = 1;
    }
    close(fd);
}

/* The interpreter of a "#!" script, into out; returns 0, or -1 when path is not a script. */
static int script_interpreter(const char *path, char *out, size_t cap)
{
    char line[PATH_MAX + 3];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, line, sizeof line - 1);
    close(fd);
    if (n < 2 || line[0] != '#' || line[1] != '!') return -1;
    line[n] = '\0';
    char *s = line + 2;
    s += strspn(s, " \t");
    size_t len = strcspn(s, " \t\n");
    if (len == 0 || len >= cap) return -1;
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}

static const char *class_name(int cls)
{
    return cls == ELFCLASS32 ? "32-bit" : cls == ELFCLASS64 ? "64-bit" : "unknown-class";
}

static void warn(const char *what, const char *reason)
{
    fprintf(stderr,
            "memlimit: warning: %s %s; no limit applies to it, and it writes no report (the "
            "tree's report names it)\n",
            what, reason);
}

/* Whether exec of `path` will run in the loader's secure mode, which ignores LD_PRELOAD
 * entries with a slash: the set-user-ID or set-group-ID bit changing an ID of ours, or file
 * capabilities for a non-root user (execve(2), ld.so(8) "secure-execution mode"). */
static int warn_secure(const char *path, const char *what)
{
    struct stat st;
    struct statvfs vfs;
    if (stat(path, &st) != 0) return 0;
    if (statvfs(path, &vfs) == 0 && (vfs.f_flag & ST_NOSUID)) return 0;
    if ((st.st_mode & S_ISUID) && st.st_uid != getuid()) {
        warn(what, "is set-user-ID: the dynamic loader ignores LD_PRELOAD for it");
        return 1;
    }
    if ((st.st_mode & S_ISGID) && (st.st_mode & S_IXGRP) && st.st_gid != getgid()) {
        warn(what, "is set-group-ID: the dynamic loader ignores LD_PRELOAD for it");
        return 1;
    }
    if (getuid() != 0 && getxattr(path, "security.capability", NULL, 0) > 0) {
        warn(what, "has file capabilities: the dynamic loader ignores LD_PRELOAD for it");
        return 1;
    }
    return 0;
}

int ml_warn_unpreloadable(const char *path, const char *library)
{
    char interp[PATH_MAX], what[2 * PATH_MAX + 64];
    const char *exe = path;
    if (script_interpreter(path, interp, sizeof interp) == 0) {
        exe = interp;
        snprintf(what, sizeof what, "'%s' (the interpreter of '%s')", interp, path);
    } else {
        snprintf(what, sizeof what, "'%s'", path);
    }
    elf_facts cmd, lib;
    read_elf(exe, &cmd);
    if (!cmd.elf) return 0; /* not ELF: the kernel's business; the loader never sees it */
    read_elf(library, &lib);
    if (lib.elf && (cmd.cls != lib.cls || cmd.machine != lib.machine || cmd.data != lib.data)) {
        char reason[PATH_MAX + 128];
        snprintf(reason, sizeof reason,
                 "is a %s ELF for machine %d and %s is a %s ELF for machine %d: the loader "
                 "cannot preload it",
                 class_name(cmd.cls), cmd.machine, library, class_name(lib.cls), lib.machine);
        warn(what, reason);
        return 1;
    }
    if (!cmd.has_interp) {
        warn(what, "is statically linked: there is no dynamic loader to apply LD_PRELOAD");
        return 1;
    }
    if (warn_secure(exe, what)) return 1;
    if (ml__host_is_go_program(exe)) {
        fprintf(stderr,
                "memlimit: warning: %s is a Go program: its heap is Go's own, not malloc's, so the "
                "limits bound only what it allocates through malloc; it ends without exit "
                "handlers (the tree's report lists it as not accounted)\n",
                what);
        return 1;
    }
    return 0;
}
