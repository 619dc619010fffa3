/* Child-process runner for the tests (see child.h). */
#define _GNU_SOURCE
#include "child.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

const char *ml_test_lib(void)
{
    return ML_TEST_LIB;
}

const char *ml_test_target(const char *name)
{
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s", ML_TEST_TARGET_DIR, name);
    return path;
}

static void append(char **buf, size_t *len, const char *data, size_t n)
{
    *buf = realloc(*buf, *len + n + 1);
    memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = '\0';
}

int ml_child_run(const char *const argv[], const char *const env[], int preload, const char *input,
                 int timeout_s, ml_child *out)
{
    return ml_child_run_signalling(argv, env, preload, input, timeout_s, NULL, 0, out);
}

int ml_child_run_signalling(const char *const argv[], const char *const env[], int preload,
                            const char *input, int timeout_s, const char *ready, int sig,
                            ml_child *out)
{
    int outp[2], errp[2], inp[2];
    memset(out, 0, sizeof *out);
    out->out = calloc(1, 1);
    out->err = calloc(1, 1);
    if (pipe2(outp, O_CLOEXEC) || pipe2(errp, O_CLOEXEC) || pipe2(inp, O_CLOEXEC)) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        dup2(inp[0], 0);
        dup2(outp[1], 1);
        dup2(errp[1], 2);
        if (sig != 0) signal(sig, SIG_DFL);
        if (preload) setenv("LD_PRELOAD", ml_test_lib(), 1);
        for (size_t i = 0; env != NULL && env[i] != NULL; i++)
            putenv((char *)env[i]);
        execvp(argv[0], (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(outp[1]);
    close(errp[1]);
    close(inp[0]);
    if (input != NULL) {
        size_t n = strlen(input), off = 0;
        signal(SIGPIPE, SIG_IGN);
        while (off < n) {
            ssize_t w = write(inp[1], input + off, n - off);
            if (w <= 0) break;
            off += (size_t)w;
        }
    }
    close(inp[1]);
    struct pollfd fds[2] = {{outp[0], POLLIN, 0}, {errp[0], POLLIN, 0}};
    int open_fds = 2;
    time_t deadline = time(NULL) + timeout_s;
    int killed = 0, signalled = 0;
    while (open_fds > 0) {
        int left = (int)(deadline - time(NULL));
        if (left <= 0) {
            if (!killed) kill(pid, SIGKILL);
            killed = 1;
            left = 1;
        }
        if (poll(fds, 2, left * 1000) < 0 && errno != EINTR) break;
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
            char buf[65536];
            ssize_t n = read(fds[i].fd, buf, sizeof buf);
            if (n <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
            } else if (i == 0) {
                append(&out->out, &out->out_len, buf, (size_t)n);
            } else {
                append(&out->err, &out->err_len, buf, (size_t)n);
            }
        }
        if (ready != NULL && !signalled && strstr(out->out, ready) != NULL) {
            kill(pid, sig);
            signalled = 1;
        }
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    out->exited = WIFEXITED(st);
    out->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    out->signal = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
    return 0;
}

void ml_child_free(ml_child *c)
{
    free(c->out);
    free(c->err);
}
