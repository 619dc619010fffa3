/* The report (see report.h): a short human block or one JSON object (one line, so that several
 * processes can append to one file as JSON Lines). Keys are documented in README "Reports" and
 * are stable. */
#define _GNU_SOURCE
#include "report.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "budget.h"
#include "fmt.h"
#include "heap.h"
#include "host.h"
#include "profile.h"
#include "sampler.h"
#include "task.h"
#include "thread.h"

static const ml_config *config;
static uint64_t start_ns;

typedef struct ml_firing {
    int fired;
    uint32_t thread;     /* registration index of the thread */
    uint64_t allocation; /* that thread's allocation number, from 1 */
    uint64_t size;       /* requested bytes */
    uint64_t count;      /* how many allocations it refused (enomem action) */
} ml_firing;
static ml_firing firings[ML_LIMIT_KINDS];
static const char *const limit_names[ML_LIMIT_KINDS] = {"heap cap", "allocation budget"};

static uint64_t limit_bytes(ml_limit_kind kind)
{
    return kind == ML_LIMIT_HEAP ? ml__heap_cap() : ml__budget_total();
}

int ml__report_record(ml_limit_kind kind, uint32_t thread, uint64_t allocation, uint64_t size)
{
    ml_firing *f = &firings[kind];
    if (__atomic_fetch_add(&f->count, 1, __ATOMIC_RELAXED) != 0) return 0;
    f->thread = thread;
    f->allocation = allocation;
    f->size = size;
    __atomic_store_n(&f->fired, 1, __ATOMIC_RELEASE);
    return 1;
}

uint64_t ml__report_refused(ml_limit_kind kind)
{
    return ML_LOAD(&firings[kind].count);
}

/* ---- The destination ------------------------------------------------------------------------
 *
 * Nothing silently dropped. A report opened only when it is written is lost by a program that
 * used up its descriptors (RLIMIT_NOFILE), and a report to stderr by one that closed stderr
 * before exiting (cat, ls, sort do, in an atexit handler that runs before ours). So the
 * destination is opened once, at init, on a private descriptor: close-on-exec (the next image
 * opens its own) and numbered high (ml__host_dup_high), so that it takes none of the low numbers
 * the program expects to get. A program may still close it (daemons close every descriptor) or
 * put another file at its number, and may remove the file: before each write the descriptor is
 * checked against the device and inode recorded when it was opened, and the file reopened by
 * path if it is no longer ours. A forked child shares the descriptor (appends are single
 * writes), unless the path names the pid (%p): it then opens its own. A report that cannot be
 * written is said with one line on stderr (README "Reports" says what is left when stderr is
 * gone as well). */

typedef struct ml_dest {
    int fd;    /* the private descriptor, -1: none */
    dev_t dev; /* the file it was opened on */
    ino_t ino;
    pid_t pid; /* the process that opened it */
} ml_dest;

static ml_dest file_dest = {-1, 0, 0, 0}; /* a report to a file */
static ml_dest err_dest = {-1, 0, 0, 0};  /* a duplicate of stderr, for a report to stderr */
/* The path pattern, absolute, "%p" unexpanded; "" for stderr. */
static char pattern[sizeof(((ml_report_spec *)0)->path)];
/* What this process publishes in environ for its children: ml__host_env_put keeps the pointers
 * (host.c says why changing environ at init is safe). */
static char published_value[sizeof "MEMLIMITS_REPORT=json:" + sizeof pattern];
static char published_mark[sizeof ML_REPORT_RESOLVED_ENV "=json:" + sizeof pattern];

/* The command line, read once at init: at exit the process may have no descriptor to read it. */
static char command[8192];
static size_t command_len;
static int command_state; /* 0: not read, 1: read, 2: read and cut at sizeof command */

/* strerror may translate, hence load a locale and allocate: not on the slow path. */
static const char *error_text(int err)
{
    const char *text = strerrordesc_np(err);
    return text != NULL ? text : "unknown error";
}

static void record(ml_dest *d, int fd)
{
    struct stat st;
    d->fd = fd;
    d->pid = getpid();
    if (fd >= 0 && fstat(fd, &st) == 0) {
        d->dev = st.st_dev;
        d->ino = st.st_ino;
    }
}

/* Whether d's descriptor is still the writable file recorded, and (links) still has a name. */
static int still_ours(const ml_dest *d, int links)
{
    struct stat st;
    if (d->fd < 0 || fstat(d->fd, &st) != 0) return 0;
    if (st.st_dev != d->dev || st.st_ino != d->ino) return 0;
    if (links && S_ISREG(st.st_mode) && st.st_nlink == 0) return 0;
    int flags = fcntl(d->fd, F_GETFL);
    return flags >= 0 && (flags & O_ACCMODE) != O_RDONLY;
}

/* Where this process's lines to stderr go: the duplicate taken at init while it is ours. */
static int stderr_fd(void)
{
    return still_ours(&err_dest, 0) ? err_dest.fd : STDERR_FILENO;
}

void ml__report_announce(ml_limit_kind kind, uint32_t thread, uint64_t allocation, uint64_t size,
                         const ml_action *action)
{
    char storage[256];
    ml_buf b = ML_BUF_INIT(storage);
    ml__buf_str(&b, "memlimits: ");
    ml__buf_str(&b, limit_names[kind]);
    ml__buf_str(&b, " of ");
    ml__buf_size(&b, limit_bytes(kind));
    ml__buf_str(&b, " exceeded by allocation #");
    ml__buf_u64(&b, allocation);
    ml__buf_str(&b, " of thread ");
    ml__buf_u64(&b, thread);
    ml__buf_str(&b, " (");
    ml__buf_u64(&b, size);
    ml__buf_str(&b, " bytes)");
    if (action->kind == ML_ACTION_EXIT) {
        ml__buf_str(&b, "; exiting with status ");
        ml__buf_u64(&b, (uint64_t)action->arg);
    } else if (action->kind == ML_ACTION_ABORT) {
        ml__buf_str(&b, "; aborting");
    } else if (action->kind == ML_ACTION_SIGNAL) {
        const char *name = ml__signal_name(action->arg);
        ml__buf_str(&b, "; raising SIG");
        ml__buf_str(&b, name ? name : "?");
    }
    ml__buf_str(&b, "\n");
    ml__buf_flush(&b, stderr_fd());
}

/* Expands the pattern's "%p" and "%%" (options.c). Returns 0, or -1 when out is too small. */
static int expand_path(const char *path, char *out, size_t cap)
{
    return ml__report_path_expand(path, (long)getpid(), out, cap) < cap ? 0 : -1;
}

/* Opens the report file into file_dest. Returns 0 or an errno; path (PATH_MAX bytes, which
 * always suffice) receives the pattern expanded. */
static int open_file(char *path)
{
    if (expand_path(pattern, path, PATH_MAX) != 0) return ENAMETOOLONG;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return errno;
    int high = ml__host_dup_high(fd);
    if (high >= 0) {
        close(fd);
        fd = high;
    }
    record(&file_dest, fd);
    return 0;
}

/* Makes file_dest this process's own, writable file at the path, reopening it when it is not.
 * Returns 0 or an errno; path (PATH_MAX bytes) receives the expanded path. */
static int ensure_file(char *path)
{
    int ours = still_ours(&file_dest, 1);
    int own_path = file_dest.pid == getpid() || strstr(pattern, "%p") == NULL;
    if (ours && own_path) return expand_path(pattern, path, PATH_MAX) != 0 ? ENAMETOOLONG : 0;
    /* Ours but no longer the right file (removed, or the parent's %p file): close it first, so
     * that the reopening has a descriptor even when the program used up all the others. */
    if (ours) close(file_dest.fd);
    file_dest.fd = -1;
    return open_file(path);
}

int ml__report_absolute(const char *path, const char *cwd, char *out, size_t cap)
{
    ml_buf b = {out, cap - 1, 0, 0};
    for (const char *s = cwd; *s != '\0'; s++)
        ml__buf_mem(&b, *s == '%' ? "%%" : s, *s == '%' ? 2 : 1);
    if (b.len == 0 || out[b.len - 1] != '/') ml__buf_str(&b, "/");
    ml__buf_str(&b, path);
    out[b.len] = '\0';
    return b.truncated ? -1 : 0;
}

/* Says something about the destination in one line: "memlimits: MEMLIMITS_REPORT='value': what
 * PATH: reason" and the rest. */
static void say_about(ml_buf *b, const char *value, const char *what, const char *path, int err,
                      const char *rest)
{
    ml__buf_str(b, "memlimits: MEMLIMITS_REPORT='");
    ml__buf_escaped(b, value);
    ml__buf_str(b, "': ");
    ml__buf_str(b, what);
    ml__buf_escaped(b, path);
    if (err != 0) {
        ml__buf_str(b, ": ");
        ml__buf_str(b, error_text(err));
    }
    ml__buf_str(b, rest);
}

/* Makes the report path absolute against the working directory, into pattern. Returns 0, or -1
 * with err filled. */
static int resolve(const char *path, const char *value, char *err, size_t errcap)
{
    ml_buf e = {err, errcap - 1, 0, 0};
    char cwd[PATH_MAX];
    if (path[0] == '/') {
        memcpy(pattern, path, strlen(path) + 1);
        return 0;
    }
    if (getcwd(cwd, sizeof cwd) == NULL) {
        say_about(&e, value, "cannot make the path absolute: no working directory", "", errno, "");
    } else if (ml__report_absolute(path, cwd, pattern, sizeof pattern) != 0) {
        say_about(&e, value, "made absolute against ", cwd, 0, ", the path is longer than ");
        ml__buf_u64(&e, sizeof pattern - 1);
        ml__buf_str(&e, " bytes");
    } else {
        return 0;
    }
    err[e.len] = '\0';
    return -1;
}

/* Publishes the destination for the children, in environ (which exec passes on): the value with
 * the path in its absolute form, and the mark that says an ancestor resolved it. */
static void publish(ml_report_kind kind)
{
    const char *prefix = kind == ML_REPORT_JSON ? "json:" : "";
    ml_buf v = ML_BUF_INIT(published_value), m = ML_BUF_INIT(published_mark);
    ml__buf_str(&v, "MEMLIMITS_REPORT=");
    ml__buf_str(&m, ML_REPORT_RESOLVED_ENV "=");
    ml__buf_str(&v, prefix);
    ml__buf_str(&m, prefix);
    ml__buf_str(&v, pattern);
    ml__buf_str(&m, pattern);
    /* Both fit: each buffer holds its name, the prefix and the pattern. Without the mark (no
     * memory to map), a child that cannot open the file stops, as the first process would. */
    ml__host_env_put(published_value);
    ml__host_env_put(published_mark);
}

/* Reads /proc/self/cmdline into command. */
static void read_command(void)
{
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    size_t n = 0;
    while (n < sizeof command) {
        ssize_t r = read(fd, command + n, sizeof command - n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        n += (size_t)r;
    }
    char more;
    int cut = n == sizeof command && read(fd, &more, 1) == 1;
    close(fd);
    command_len = n;
    command_state = cut ? 2 : 1;
}

int ml__report_setup(const ml_config *cfg, char *err, size_t errcap)
{
    config = cfg;
    start_ns = ml__now_ns();
    if (cfg->report.kind == ML_REPORT_OFF) return 0;
    int saved = errno;
    read_command();
    if (cfg->report.path[0] == '\0') {
        record(&err_dest, ml__host_dup_high(STDERR_FILENO));
        errno = saved;
        return 0;
    }
    /* The first process to see this value is one without the mark of an ancestor that resolved
     * it; only that one may refuse to start. A value changed on the way down (a script setting
     * its own MEMLIMITS_REPORT) no longer matches the mark: the process that sees it first
     * resolves it in turn. */
    const char *value = ml__getenv("MEMLIMITS_REPORT");
    const char *mark = ml__getenv(ML_REPORT_RESOLVED_ENV);
    if (value == NULL) value = ""; /* a configuration not from the environment (tests) */
    int inherited = mark != NULL && strcmp(mark, value) == 0;
    if (resolve(cfg->report.path, value, err, errcap) != 0) {
        if (!inherited) {
            errno = saved;
            return -1;
        }
        /* Only a mark set by hand gets here: an ancestor publishes absolute paths. */
        memcpy(pattern, cfg->report.path, strlen(cfg->report.path) + 1);
    }
    char path[PATH_MAX];
    int failure = open_file(path);
    ml_buf e = {err, errcap - 1, 0, 0};
    if (failure == 0) {
        if (!inherited && value[0] != '\0') publish(cfg->report.kind);
    } else if (!inherited) {
        say_about(&e, value, "cannot open for appending ", path, failure, "");
        err[e.len] = '\0';
        errno = saved;
        return -1;
    } else {
        char line[PATH_MAX + 1024];
        ml_buf b = ML_BUF_INIT(line);
        say_about(&b, value, "cannot open for appending ", path, failure, "; pid ");
        ml__buf_u64(&b, (uint64_t)getpid());
        ml__buf_str(&b, " runs on, and tries again when it writes its report\n");
        ml__buf_flush(&b, STDERR_FILENO);
    }
    errno = saved;
    return 0;
}

/* ---- The command line ------------------------------------------------------------------------ */

/* The length of the UTF-8 sequence at s (n bytes available), or 0 when there is none: overlong
 * forms, surrogates and code points above U+10FFFF are not UTF-8 (RFC 3629). */
static size_t utf8_length(const unsigned char *s, size_t n)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf; /* the range of the second byte */
    size_t len;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf) return 0;
    return len;
}

/* Calls each() on every argument of a /proc/self/cmdline buffer. */
static void each_argument(ml_buf *b, const char *cmdline, size_t len,
                          void (*each)(ml_buf *b, const unsigned char *arg, size_t n, int first))
{
    for (size_t at = 0; at < len;) {
        const char *end = memchr(cmdline + at, '\0', len - at);
        size_t n = end != NULL ? (size_t)(end - (cmdline + at)) : len - at;
        each(b, (const unsigned char *)cmdline + at, n, at == 0);
        at += n + 1;
    }
}

static const char hex_digits[] = "0123456789abcdef";

static void json_argument(ml_buf *b, const unsigned char *s, size_t n, int first)
{
    ml__buf_str(b, first ? "\"" : ",\"");
    for (size_t i = 0, len; i < n; i += len) {
        unsigned char c = s[i];
        len = utf8_length(s + i, n - i);
        if (c == '"' || c == '\\') {
            ml__buf_mem(b, c == '"' ? "\\\"" : "\\\\", 2);
        } else if (c == '\n' || c == '\t' || c == '\r') {
            ml__buf_mem(b, c == '\n' ? "\\n" : c == '\t' ? "\\t" : "\\r", 2);
        } else if (c < 0x20) {
            char esc[6] = {'\\', 'u', '0', '0', hex_digits[c >> 4], hex_digits[c & 15]};
            ml__buf_mem(b, esc, 6);
        } else if (len == 0) {
            ml__buf_str(b, "\\ufffd");
            len = 1;
        } else {
            ml__buf_mem(b, (const char *)s + i, len);
        }
    }
    ml__buf_str(b, "\"");
}

void ml__report_command_json(ml_buf *b, const char *cmdline, size_t len)
{
    ml__buf_str(b, "[");
    each_argument(b, cmdline, len, json_argument);
    ml__buf_str(b, "]");
}

/* Bytes that a shell takes literally anywhere in a word. */
static int shell_plain(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("_@%+=:,./-", c) != NULL);
}

static void text_argument(ml_buf *b, const unsigned char *s, size_t n, int first)
{
    int plain = n > 0, dollar = 0;
    for (size_t i = 0, len; i < n; i += len ? len : 1) {
        len = utf8_length(s + i, n - i);
        plain &= shell_plain(s[i]);
        dollar |= s[i] < 0x20 || s[i] == 0x7f || len == 0;
    }
    if (!first) ml__buf_str(b, " ");
    if (plain) {
        ml__buf_mem(b, (const char *)s, n);
    } else if (!dollar) {
        /* '...' takes every byte literally but the quote itself: 'it'\''s'. */
        ml__buf_str(b, "'");
        for (size_t i = 0; i < n; i++)
            ml__buf_mem(b, s[i] == '\'' ? "'\\''" : (const char *)s + i, s[i] == '\'' ? 4 : 1);
        ml__buf_str(b, "'");
    } else {
        /* $'...' (bash, ksh, zsh, POSIX.1-2024) for control bytes and bytes that are not UTF-8,
         * which '...' would put on the line as they are. */
        ml__buf_str(b, "$'");
        for (size_t i = 0, len; i < n; i += len) {
            unsigned char c = s[i];
            len = utf8_length(s + i, n - i);
            if (c == '\'' || c == '\\') {
                ml__buf_mem(b, c == '\'' ? "\\'" : "\\\\", 2);
            } else if (c == '\n' || c == '\t' || c == '\r') {
                ml__buf_mem(b, c == '\n' ? "\\n" : c == '\t' ? "\\t" : "\\r", 2);
            } else if (c < 0x20 || c == 0x7f || len == 0) {
                char esc[4] = {'\\', 'x', hex_digits[c >> 4], hex_digits[c & 15]};
                ml__buf_mem(b, esc, 4);
                len = 1;
            } else {
                ml__buf_mem(b, (const char *)s + i, len);
            }
        }
        ml__buf_str(b, "'");
    }
}

void ml__report_command_text(ml_buf *b, const char *cmdline, size_t len)
{
    each_argument(b, cmdline, len, text_argument);
}

typedef struct facts {
    const ml_config *cfg;
    int pid, status, sig, active;
    const char *event;
    uint64_t heap_cap, budget, global, peak, live, allocated, allocations, samples, wall_ns;
} facts;

static void gather(facts *f, const char *event, int status, int sig)
{
    f->cfg = config;
    if (command_state == 0) read_command(); /* /proc was not there at init */
    f->pid = getpid();
    f->status = status;
    f->sig = sig;
    f->event = event;
    f->active = ml__host_owns_malloc(&ml__self.allocations_down);
    f->heap_cap = ml__heap_cap();
    f->budget = ml__budget_total();
    f->global = ml__global_limit();
    ml_thread *t = &ml__self;
    if (t->state != ML_THREAD_NEW && !t->busy) ml__heap_flush(t);
    if (!t->busy) ml__heap_reconcile();
    f->peak = ml__heap_peak();
    f->live = ml__heap_live();
    ml__totals(&f->allocated, &f->allocations, &f->samples);
    f->wall_ns = ml__now_ns() - start_ns;
}

static const char *const limit_keys[ML_LIMIT_KINDS] = {"heap", "alloc"};

static void text_report(ml_buf *b, const facts *f)
{
    ml__buf_str(b, "memlimits report (");
    ml__buf_str(b, f->event);
    ml__buf_str(b, "): pid ");
    ml__buf_u64(b, (uint64_t)f->pid);
    ml__buf_str(b, ", command: ");
    ml__report_command_text(b, command, command_len);
    if (command_state == 2) ml__buf_str(b, " ... (command line cut)");
    ml__buf_str(b, "\n");
    if (!f->active)
        ml__buf_str(b, "  WARNING: memlimits does not own malloc in this process; no limit "
                       "applies\n");
    for (int k = 0; k < ML_LIMIT_KINDS; k++) {
        uint64_t limit = k == ML_LIMIT_HEAP ? f->heap_cap : f->budget;
        const ml_firing *fire = &firings[k];
        ml__buf_str(b, k == ML_LIMIT_HEAP ? "  heap cap:          " : "  allocation budget: ");
        if (limit == ML_NONE) {
            ml__buf_str(b, "none\n");
            continue;
        }
        ml__buf_size(b, limit);
        if (ML_LOAD(&fire->fired)) {
            ml__buf_str(b, ", FIRED at allocation #");
            ml__buf_u64(b, fire->allocation);
            ml__buf_str(b, " of thread ");
            ml__buf_u64(b, fire->thread);
            ml__buf_str(b, " (");
            ml__buf_u64(b, fire->size);
            ml__buf_str(b, " bytes); allocations refused: ");
            ml__buf_u64(b, ML_LOAD(&fire->count));
            ml__buf_str(b, "\n");
            ml__profile_firing_text(b, k);
        } else {
            ml__buf_str(b, ", not reached\n");
        }
    }
    /* The global memory limit interrupts tasks (ml_run reports those), never the process. */
    ml__buf_str(b, "  global limit:      ");
    if (f->global == ML_NONE) {
        ml__buf_str(b, "none\n");
    } else {
        ml__buf_size(b, f->global);
        ml__buf_str(b, " (for tasks run under it)\n");
    }
    uint64_t blocks, samples;
    if (ml__profile_untracked(&blocks, &samples) && blocks > 0) {
        ml__buf_str(b, "  heap profile:      ");
        ml__buf_u64(b, blocks);
        ml__buf_str(b, " sampled blocks (");
        ml__buf_u64(b, samples);
        ml__buf_str(b, " samples) could not be tracked and are missing from it (blocks in an "
                       "arena the program named, xallocx's growth, no tracked block left)\n");
    }
    ml__buf_str(b, "  live heap:         peak ");
    ml__buf_u64(b, f->peak);
    ml__buf_str(b, " bytes, final ");
    ml__buf_u64(b, f->live);
    ml__buf_str(b, " bytes\n  allocated:         ");
    ml__buf_u64(b, f->allocated);
    ml__buf_str(b, " bytes in ");
    ml__buf_u64(b, f->allocations);
    ml__buf_str(b, " allocations\n  samples:           ");
    ml__buf_u64(b, f->samples);
    ml__buf_str(b, " (mean gap ");
    ml__buf_u64(b, ml__sampler_mean());
    ml__buf_str(b, " bytes; estimated bytes allocated ");
    ml__buf_u64(b, f->samples * ml__sampler_mean());
    ml__buf_str(b, ")\n  wall time:         ");
    ml__buf_fixed(b, f->wall_ns / 1000000, 3);
    ml__buf_str(b, " s\n");
    if (f->status >= 0) {
        ml__buf_str(b, "  exit status:       ");
        ml__buf_u64(b, (uint64_t)f->status);
        ml__buf_str(b, "\n");
    }
    if (f->sig > 0) {
        ml__buf_str(b, "  signal:            SIG");
        ml__buf_str(b, ml__signal_name(f->sig) ? ml__signal_name(f->sig) : "?");
        ml__buf_str(b, "\n");
    }
}

static void json_u64_or_null(ml_buf *b, uint64_t v)
{
    if (v == ML_NONE)
        ml__buf_str(b, "null");
    else
        ml__buf_u64(b, v);
}

static void json_report(ml_buf *b, const facts *f)
{
    ml__buf_str(b, "{\"memlimits_report\":2,\"event\":");
    ml__buf_json_str(b, f->event);
    ml__buf_str(b, ",\"pid\":");
    ml__buf_u64(b, (uint64_t)f->pid);
    ml__buf_str(b, ",\"command\":");
    ml__report_command_json(b, command, command_len);
    ml__buf_str(b, ",\"command_truncated\":");
    ml__buf_str(b, command_state == 2 ? "true" : "false");
    ml__buf_str(b, ",\"active\":");
    ml__buf_str(b, f->active ? "true" : "false");
    ml__buf_str(b, ",\"limits\":{");
    for (int k = 0; k < ML_LIMIT_KINDS; k++) {
        const ml_firing *fire = &firings[k];
        if (k > 0) ml__buf_str(b, ",");
        ml__buf_str(b, "\"");
        ml__buf_str(b, limit_keys[k]);
        ml__buf_str(b, "\":{\"bytes\":");
        json_u64_or_null(b, k == ML_LIMIT_HEAP ? f->heap_cap : f->budget);
        ml__buf_str(b, ",\"fired\":");
        ml__buf_str(b, ML_LOAD(&fire->fired) ? "true" : "false");
        if (ML_LOAD(&fire->fired)) {
            ml__buf_str(b, ",\"thread\":");
            ml__buf_u64(b, fire->thread);
            ml__buf_str(b, ",\"allocation\":");
            ml__buf_u64(b, fire->allocation);
            ml__buf_str(b, ",\"size\":");
            ml__buf_u64(b, fire->size);
            ml__buf_str(b, ",\"refused\":");
            ml__buf_u64(b, ML_LOAD(&fire->count));
            ml__profile_firing_json(b, k);
        }
        ml__buf_str(b, "}");
    }
    ml__buf_str(b, ",\"global\":{\"bytes\":");
    json_u64_or_null(b, f->global);
    ml__buf_str(b, "}},\"heap_peak\":");
    ml__buf_u64(b, f->peak);
    ml__buf_str(b, ",\"heap_final\":");
    ml__buf_u64(b, f->live);
    ml__buf_str(b, ",\"allocated_bytes\":");
    ml__buf_u64(b, f->allocated);
    ml__buf_str(b, ",\"allocations\":");
    ml__buf_u64(b, f->allocations);
    ml__buf_str(b, ",\"samples\":");
    ml__buf_u64(b, f->samples);
    ml__buf_str(b, ",\"sample_mean\":");
    ml__buf_u64(b, ml__sampler_mean());
    uint64_t blocks, samples;
    ml__buf_str(b, ",\"heap_profile_untracked\":");
    if (ml__profile_untracked(&blocks, &samples)) {
        ml__buf_str(b, "{\"blocks\":");
        ml__buf_u64(b, blocks);
        ml__buf_str(b, ",\"samples\":");
        ml__buf_u64(b, samples);
        ml__buf_str(b, "}");
    } else {
        ml__buf_str(b, "null");
    }
    ml__buf_str(b, ",\"wall_seconds\":");
    ml__buf_fixed(b, f->wall_ns / 1000000, 3);
    ml__buf_str(b, ",\"exit_status\":");
    if (f->status >= 0)
        ml__buf_u64(b, (uint64_t)f->status);
    else
        ml__buf_str(b, "null");
    ml__buf_str(b, ",\"signal\":");
    if (f->sig > 0)
        ml__buf_json_str(b, ml__signal_name(f->sig) ? ml__signal_name(f->sig) : "?");
    else
        ml__buf_str(b, "null");
    ml__buf_str(b, "}\n");
}

/* Writes the report in b to the file, and says on stderr when it cannot. */
static void write_file(const ml_buf *b, const char *event)
{
    char path[PATH_MAX];
    const char *doing = "cannot open for appending ";
    int failure = ensure_file(path);
    if (failure == 0) {
        doing = "cannot write to ";
        failure = ml__write_all(file_dest.fd, b->data, b->len);
    }
    if (failure == 0) return;
    char storage[PATH_MAX + 256];
    ml_buf line = ML_BUF_INIT(storage);
    ml__buf_str(&line, "memlimits: the ");
    ml__buf_str(&line, event);
    ml__buf_str(&line, " report of pid ");
    ml__buf_u64(&line, (uint64_t)getpid());
    ml__buf_str(&line, " is lost: ");
    ml__buf_str(&line, doing);
    ml__buf_str(&line, path);
    ml__buf_str(&line, ": ");
    ml__buf_str(&line, error_text(failure));
    ml__buf_str(&line, "\n");
    ml__buf_flush(&line, stderr_fd());
}

void ml__report_write(const char *event, int status, int sig)
{
    const ml_config *cfg = config;
    if (cfg == NULL || cfg->report.kind == ML_REPORT_OFF) return;
    /* Room for the rest and the longest command line kept (8 KiB) in either form: at most 6
     * bytes of JSON (\u0001, \ufffd) or 4 of text ($'\x01') for each of its bytes. */
    static char storage[65536];
    static int writing;
    if (__atomic_exchange_n(&writing, 1, __ATOMIC_ACQUIRE)) return; /* one report at a time */
    int saved = errno;
    facts f;
    gather(&f, event, status, sig);
    ml_buf b = ML_BUF_INIT(storage);
    if (cfg->report.kind == ML_REPORT_JSON)
        json_report(&b, &f);
    else
        text_report(&b, &f);
    if (pattern[0] != '\0')
        write_file(&b, event);
    else
        ml__buf_flush(&b, stderr_fd()); /* when stderr is gone too, nothing can say so */
    errno = saved;
    __atomic_store_n(&writing, 0, __ATOMIC_RELEASE);
}
