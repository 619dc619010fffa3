/* say: printf to stdout with one write(2), unbuffered, for the target programs: their output
 * must reach the test even when they die right after, and printing must not allocate through
 * stdio's buffers while the program measures its own allocations. Lines past 511 bytes are cut. */
#ifndef ML_TARGET_SAY_H
#define ML_TARGET_SAY_H

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

__attribute__((format(printf, 1, 2), unused)) static void say(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof line) n = sizeof line - 1;
    ssize_t w = write(STDOUT_FILENO, line, (size_t)n);
    (void)w;
}

#endif
