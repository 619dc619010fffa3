/* The report (see report.h): a short human block or one JSON object (one line, so that several
 * processes can append to one file as JSON Lines). Keys are documented in README "Reports" and
 * are stable. */
#define _GNU_SOURCE
#include "report.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
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
    ml__buf_flush(&b, STDERR_FILENO);
}

/* Expands "%p" to the pid and "%%" to "%". */
static void expand_path(const char *path, char *out, size_t cap)
{
    ml_buf b = {out, cap - 1, 0, 0};
    for (const char *s = path; *s != '\0'; s++) {
        if (s[0] == '%' && s[1] == 'p') {
            ml__buf_u64(&b, (uint64_t)getpid());
            s++;
        } else if (s[0] == '%' && s[1] == '%') {
            ml__buf_mem(&b, "%", 1);
            s++;
        } else {
            ml__buf_mem(&b, s, 1);
        }
    }
    out[b.len] = '\0';
}

static int open_report(const ml_report_spec *spec)
{
    char path[1024];
    if (spec->path[0] == '\0') return STDERR_FILENO;
    expand_path(spec->path, path, sizeof path);
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

int ml__report_setup(const ml_config *cfg, char *err, size_t errcap)
{
    config = cfg;
    start_ns = ml__now_ns();
    if (cfg->report.kind == ML_REPORT_OFF || cfg->report.path[0] == '\0') return 0;
    int fd = open_report(&cfg->report);
    if (fd >= 0) {
        close(fd);
        return 0;
    }
    ml_buf b = {err, errcap - 1, 0, 0};
    ml__buf_str(&b, "memlimits: MEMLIMITS_REPORT='");
    ml__buf_str(&b, cfg->report.path);
    ml__buf_str(&b, "': cannot open for appending: ");
    ml__buf_str(&b, strerror(errno));
    err[b.len] = '\0';
    return -1;
}

/* The command line from /proc/self/cmdline, arguments separated by spaces. */
static void read_command(char *out, size_t cap)
{
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, out, cap - 1) : -1;
    if (fd >= 0) close(fd);
    if (n <= 0) n = 0;
    while (n > 0 && out[n - 1] == '\0')
        n--;
    for (ssize_t i = 0; i < n; i++)
        if (out[i] == '\0') out[i] = ' ';
    out[n] = '\0';
}

typedef struct facts {
    const ml_config *cfg;
    char command[512];
    int pid, status, sig, active;
    const char *event;
    uint64_t heap_cap, budget, global, peak, live, allocated, allocations, samples, wall_ns;
} facts;

static void gather(facts *f, const char *event, int status, int sig)
{
    f->cfg = config;
    read_command(f->command, sizeof f->command);
    f->pid = getpid();
    f->status = status;
    f->sig = sig;
    f->event = event;
    f->active = ml__host_owns_malloc(&ml__self.allocations);
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
    ml__buf_str(b, f->command);
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
    ml__buf_str(b, "{\"memlimits_report\":1,\"event\":");
    ml__buf_json_str(b, f->event);
    ml__buf_str(b, ",\"pid\":");
    ml__buf_u64(b, (uint64_t)f->pid);
    ml__buf_str(b, ",\"command\":");
    ml__buf_json_str(b, f->command);
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

void ml__report_write(const char *event, int status, int sig)
{
    const ml_config *cfg = config;
    if (cfg == NULL || cfg->report.kind == ML_REPORT_OFF) return;
    static char storage[8192];
    static int writing;
    if (__atomic_exchange_n(&writing, 1, __ATOMIC_ACQUIRE)) return; /* one report at a time */
    facts f;
    gather(&f, event, status, sig);
    ml_buf b = ML_BUF_INIT(storage);
    if (cfg->report.kind == ML_REPORT_JSON)
        json_report(&b, &f);
    else
        text_report(&b, &f);
    int fd = open_report(&cfg->report);
    if (fd >= 0) {
        ml__buf_flush(&b, fd);
        if (fd != STDERR_FILENO) close(fd);
    }
    __atomic_store_n(&writing, 0, __ATOMIC_RELEASE);
}
