/* What the launcher finds out before it execs: where libmemlimits.so is, where a command is,
 * and whether the dynamic loader will honour LD_PRELOAD for it (static, setuid, file
 * capabilities, another ELF class or machine). Plain file inspection: nothing is run. */
#ifndef ML_INSPECT_H
#define ML_INSPECT_H

#include <stddef.h>

/* Finds the library to preload, as an absolute path, into out. Order: $MEMLIMIT_LIBRARY; the
 * build tree (launcher in BUILD/tools/, library in BUILD/); the install tree (launcher in
 * PREFIX/bin, library in the configured libdir, then PREFIX/lib/<multiarch>, lib64, lib).
 * Returns 0, or -1 with a one-line reason (no "memlimit: " prefix) in why. */
int ml_locate_library(char *out, size_t cap, char *why, size_t whycap);

/* Resolves a command the way execvp(3) will: a name containing '/' as is, otherwise the first
 * executable regular file of that name in $PATH. Returns 0 with the path in out, or -1 when
 * none would run (execvp then reports the reason). */
int ml_resolve_command(const char *name, char *out, size_t cap);

/* Writes one warning line per reason LD_PRELOAD will not apply to the executable at `path`
 * (following one "#!" interpreter), for the library at `library`. Returns how many. */
int ml_warn_unpreloadable(const char *path, const char *library);

#endif
