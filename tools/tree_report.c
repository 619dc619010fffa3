/* The tree's report (see tree.h): one document for every process the command started, written
 * once by the launcher at the end. Text opens with the measuring summary line and gives sizes in
 * human units; JSON ("memlimits_tree_report": 1, README "Process trees") gives them in bytes.
 * A process that ended without running its exit handlers (_exit, a fatal signal, an exec into a
 * program memlimits does not reach) is "not accounted": its figures are the last it published,
 * lower bounds. One that never attached to the ledger ran without limits. */
#define _GNU_SOURCE
#include "tree.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fmt.h"
#include "host.h"

/* The margin of the suggested limits over what the measured run used. */
#define SUGGEST_MARGIN_PERCENT 25

static const char *const limit_keys[2] = {"heap", "alloc"};
static const char *const limit_names[2] = {"heap cap", "allocation budget"};

/* ---- Figures ----------------------------------------------------------------------------- */

typedef struct totals {
    uint64_t peak, allocated;
    const ml_tree_row *largest;
    size_t not_accounted, never_attached, escaped;
    uint64_t refused[2];
    size_t firing_processes[2];
} totals;

static void sum_up(const ml_tree *t, totals *s)
{
    memset(s, 0, sizeof *s);
    s->peak = t->tree_peak;
    for (size_t i = 0; i < t->nrows; i++) {
        const ml_tree_row *r = &t->rows[i];
        s->allocated += r->allocated;
        if (r->serial != 0 && (s->largest == NULL || r->heap_peak > s->largest->heap_peak))
            s->largest = r;
        if (r->serial == 0)
            s->never_attached++;
        else if (!(r->flags & ML_SLOT_ACCOUNTED))
            s->not_accounted++;
        s->escaped += r->escaped != 0;
        for (int k = 0; k < 2; k++) {
            s->refused[k] += r->fired[k].count;
            s->firing_processes[k] += r->fired[k].count != 0;
        }
    }
    /* The tree's sum moves in steps; a process's own peak is finer. */
    if (s->largest != NULL && s->largest->heap_peak > s->peak) s->peak = s->largest->heap_peak;
}

/* A limit to suggest: the figure plus the margin, rounded up to a whole MiB. */
static uint64_t suggestion(uint64_t used)
{
    uint64_t v = used + used / 100 * SUGGEST_MARGIN_PERCENT;
    uint64_t mib = (uint64_t)1 << 20;
    return (v / mib + 1) * mib;
}

/* "812 B", "81.2 KiB", "1.9 GiB": one decimal below 100 of a unit. */
static void human(ml_buf *b, uint64_t bytes)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    char text[32];
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024 && u < 6)
        v /= 1024, u++;
    if (u == 0)
        snprintf(text, sizeof text, "%llu B", (unsigned long long)bytes);
    else
        snprintf(text, sizeof text, v < 99.95 ? "%.1f %s" : "%.0f %s", v, units[u]);
    ml__buf_str(b, text);
}

/* The argv of a row as a shell would show it: words separated by spaces, quoted when needed. */
static void shown_argv(ml_buf *b, const ml_tree_row *r, size_t max)
{
    size_t start = b->len;
    for (uint32_t i = 0; i < r->argv_len;) {
        const char *word = r->argv + i;
        size_t len = strnlen(word, r->argv_len - i);
        char tmp[ML_LEDGER_ARGV + 1];
        memcpy(tmp, word, len);
        tmp[len] = '\0';
        if (i > 0) ml__buf_str(b, " ");
        int quote = len == 0 || strpbrk(tmp, " \t\n'\"\\$`*?;&|<>()[]{}") != NULL;
        if (quote) ml__buf_str(b, "'");
        ml__buf_escaped(b, tmp);
        if (quote) ml__buf_str(b, "'");
        i += (uint32_t)len + 1;
    }
    if (r->argv_cut) ml__buf_str(b, " ...");
    if (r->argv_len == 0) ml__buf_str(b, "?");
    if (b->len - start > max) {
        b->len = start + max - 3;
        ml__buf_str(b, "...");
    }
}

static const char *first_word(const ml_tree_row *r, char *out, size_t cap)
{
    size_t len = strnlen(r->argv, r->argv_len);
    const char *slash = memrchr(r->argv, '/', len);
    const char *w = slash != NULL ? slash + 1 : r->argv;
    snprintf(out, cap, "%.*s", (int)(r->argv + len - w), w);
    return out[0] != '\0' ? out : "?";
}

void ml_tree_summary(const ml_tree *t, char *out, size_t cap)
{
    totals s;
    char word[64];
    sum_up(t, &s);
    ml_buf b = {out, cap - 1, 0, 0};
    ml__buf_str(&b, "memlimit: tree peak heap ");
    human(&b, s.peak);
    ml__buf_str(&b, ", allocated ");
    human(&b, s.allocated);
    if (s.largest != NULL) {
        ml__buf_str(&b, ", largest process ");
        human(&b, s.largest->heap_peak);
        ml__buf_str(&b, " (pid ");
        ml__buf_u64(&b, (uint64_t)s.largest->pid);
        ml__buf_str(&b, " ");
        ml__buf_escaped(&b, first_word(s.largest, word, sizeof word));
        ml__buf_str(&b, ")");
    }
    ml__buf_str(&b, ", ");
    ml__buf_u64(&b, t->nrows);
    ml__buf_str(&b, t->nrows == 1 ? " process, " : " processes, ");
    ml__buf_fixed(&b, t->wall_ns / 10000000, 2);
    ml__buf_str(&b, " s wall; suggested with ");
    ml__buf_u64(&b, SUGGEST_MARGIN_PERCENT);
    ml__buf_str(&b, "% margin: --heap ");
    ml__buf_size(&b, suggestion(s.peak));
    ml__buf_str(&b, " --alloc ");
    ml__buf_size(&b, suggestion(s.allocated));
    out[b.len] = '\0';
}

/* ---- Text -------------------------------------------------------------------------------- */

static void action_text(ml_buf *b, const ml_action *a)
{
    char text[64];
    const ml_option *row = NULL;
    for (size_t i = 0; i < ml__option_count && row == NULL; i++)
        if (strcmp(ml__options[i].env, "MEMLIMITS_ON_HEAP") == 0) row = &ml__options[i];
    row->print(a, text, sizeof text);
    ml__buf_str(b, text);
}

static void end_text(ml_buf *b, const ml_tree_row *r)
{
    if (!r->ended_known) {
        ml__buf_str(b, r->serial == 0 ? "unknown" : "not accounted");
    } else if (r->signal != 0) {
        ml__buf_str(b, "signal ");
        ml__buf_signal(b, r->signal);
    } else {
        ml__buf_str(b, "exit ");
        ml__buf_i64(b, r->exit_status);
    }
}

static void pad_to(ml_buf *b, size_t line_start, size_t column)
{
    while (b->len - line_start < column && !b->truncated)
        ml__buf_str(b, " ");
}

static void text_limit(ml_buf *b, const ml_tree *t, const totals *s, int k)
{
    uint64_t bytes = k == 0 ? t->heap : t->alloc;
    ml__buf_str(b, k == 0 ? "  heap cap:          " : "  allocation budget: ");
    if (bytes == ML_NONE) {
        ml__buf_str(b, "none\n");
        return;
    }
    ml__buf_size(b, bytes);
    ml__buf_str(b, " for the tree (");
    action_text(b, k == 0 ? &t->on_heap : &t->on_alloc);
    ml__buf_str(b, ")");
    if (t->first_row[k] == SIZE_MAX) {
        ml__buf_str(b, ", not reached\n");
        return;
    }
    const ml_tree_row *r = &t->rows[t->first_row[k]];
    const ml_ledger_firing *f = &r->fired[k];
    ml__buf_str(b, ", FIRED first in pid ");
    ml__buf_u64(b, (uint64_t)r->pid);
    ml__buf_str(b, " (");
    shown_argv(b, r, 60);
    ml__buf_str(b, ") at allocation #");
    ml__buf_u64(b, f->allocation);
    ml__buf_str(b, " of thread ");
    ml__buf_u64(b, f->thread);
    ml__buf_str(b, " (");
    human(b, f->size);
    ml__buf_str(b, "); ");
    ml__buf_u64(b, s->refused[k]);
    ml__buf_str(b, s->refused[k] == 1 ? " allocation refused in " : " allocations refused in ");
    ml__buf_u64(b, s->firing_processes[k]);
    ml__buf_str(b, s->firing_processes[k] == 1 ? " process\n" : " processes\n");
}

static void text_report(ml_buf *b, const ml_tree *t)
{
    totals s;
    char line[1024];
    sum_up(t, &s);
    ml_tree_summary(t, line, sizeof line);
    ml__buf_str(b, line);
    ml__buf_str(b, "\nmemlimits tree report: memlimit pid ");
    ml__buf_u64(b, (uint64_t)getpid());
    ml__buf_str(b, "\n");
    text_limit(b, t, &s, 0);
    text_limit(b, t, &s, 1);
    ml__buf_str(b, "  PYTHONMALLOC:      ");
    ml__buf_escaped(b, t->pythonmalloc != NULL ? t->pythonmalloc : "(unset)");
    ml__buf_str(b, t->pythonmalloc_ours ? " (set by memlimit)\n" : " (yours)\n");
    ml__buf_str(b, "  processes:         ");
    ml__buf_u64(b, t->nrows);
    ml__buf_str(b, "; not accounted: ");
    ml__buf_u64(b, s.not_accounted);
    ml__buf_str(b, " (ended without exit handlers: figures are lower bounds); never attached: ");
    ml__buf_u64(b, s.never_attached);
    ml__buf_str(b, " (ran without limits); exec'd out of reach: ");
    ml__buf_u64(b, s.escaped);
    ml__buf_str(b, "\n");
    ml__buf_str(b, "  exit status:       ");
    if (t->status < 0) {
        ml__buf_str(b, "signal ");
        ml__buf_signal(b, -t->status);
    } else {
        ml__buf_i64(b, t->status);
    }
    if (t->status_by_limit) {
        ml__buf_str(b, ", the ");
        ml__buf_str(b, limit_names[t->first_kind]);
        ml__buf_str(b, "'s action (the command's: ");
        if (t->command_signal != 0) {
            ml__buf_str(b, "signal ");
            ml__buf_signal(b, t->command_signal);
        } else {
            ml__buf_i64(b, t->command_status);
        }
        ml__buf_str(b, ")");
    } else {
        ml__buf_str(b, ", the command's");
    }
    ml__buf_str(b,
                "\n  PID      PARENT   PEAK HEAP    ALLOCATED    END             FIRED  COMMAND\n");
    for (size_t i = 0; i < t->nrows; i++) {
        const ml_tree_row *r = &t->rows[i];
        size_t start = b->len;
        ml__buf_str(b, "  ");
        ml__buf_u64(b, (uint64_t)r->pid);
        pad_to(b, start, 11);
        if (r->ppid >= 0)
            ml__buf_u64(b, (uint64_t)r->ppid);
        else
            ml__buf_str(b, "?");
        pad_to(b, start, 20);
        if (r->serial == 0) {
            ml__buf_str(b, "never attached: no limits");
        } else {
            const char *lower = r->flags & ML_SLOT_ACCOUNTED ? "" : ">=";
            ml__buf_str(b, lower);
            human(b, r->heap_peak);
            pad_to(b, start, 33);
            ml__buf_str(b, lower);
            human(b, r->allocated);
        }
        pad_to(b, start, 46);
        if (b->len - start > 46) ml__buf_str(b, " ");
        end_text(b, r);
        pad_to(b, start, 62);
        const char *fired = r->fired[0].count && r->fired[1].count ? "both"
                            : r->fired[0].count                    ? "heap"
                            : r->fired[1].count                    ? "alloc"
                                                                   : "";
        ml__buf_str(b, fired);
        pad_to(b, start, 69);
        shown_argv(b, r, 200);
        ml__buf_str(b, "\n");
        if (r->escaped) {
            ml_tree_row image = *r;
            memcpy(image.argv, r->escaped_argv, r->escaped_len);
            image.argv_len = r->escaped_len;
            image.argv_cut = 0;
            ml__buf_str(b, "           then exec'd out of memlimits' reach (no limits): ");
            shown_argv(b, &image, 200);
            ml__buf_str(b, "\n");
        }
    }
}

/* ---- JSON -------------------------------------------------------------------------------- */

/* A JSON string of n bytes; bytes that are not valid UTF-8 are given as \u00XX. */
static void json_mem(ml_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    ml__buf_str(b, "\"");
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        int valid = len > 0 && i + len <= n;
        for (size_t k = 1; valid && k < len; k++)
            valid = ((unsigned char)s[i + k] >> 6) == 2;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            ml__buf_mem(b, esc, 2);
        } else if (c < 0x20 || c == 0x7f || !valid) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            ml__buf_mem(b, esc, 6);
            len = 1;
        } else {
            ml__buf_mem(b, s + i, len);
        }
        i += len ? len : 1;
    }
    ml__buf_str(b, "\"");
}

static void json_argv(ml_buf *b, const char *argv, size_t n)
{
    ml__buf_str(b, "[");
    for (size_t i = 0; i < n;) {
        size_t len = strnlen(argv + i, n - i);
        if (i > 0) ml__buf_str(b, ",");
        json_mem(b, argv + i, len);
        i += len + 1;
    }
    ml__buf_str(b, "]");
}

static void json_u64_or_null(ml_buf *b, uint64_t v)
{
    if (v == ML_NONE)
        ml__buf_str(b, "null");
    else
        ml__buf_u64(b, v);
}

static void json_signal(ml_buf *b, int sig)
{
    if (sig == 0) {
        ml__buf_str(b, "null");
        return;
    }
    char name[32];
    ml_buf n = ML_BUF_INIT(name);
    ml__buf_signal(&n, sig);
    json_mem(b, name, n.len);
}

static void json_action(ml_buf *b, const ml_action *a)
{
    char text[64];
    ml_buf tb = ML_BUF_INIT(text);
    action_text(&tb, a);
    json_mem(b, text, tb.len);
}

static void json_limit(ml_buf *b, const ml_tree *t, const totals *s, int k)
{
    ml__buf_str(b, "\"");
    ml__buf_str(b, limit_keys[k]);
    ml__buf_str(b, "\":{\"bytes\":");
    json_u64_or_null(b, k == 0 ? t->heap : t->alloc);
    ml__buf_str(b, ",\"action\":");
    json_action(b, k == 0 ? &t->on_heap : &t->on_alloc);
    ml__buf_str(b, ",\"fired\":");
    ml__buf_str(b, t->first_row[k] != SIZE_MAX ? "true" : "false");
    if (t->first_row[k] != SIZE_MAX) {
        const ml_tree_row *r = &t->rows[t->first_row[k]];
        const ml_ledger_firing *f = &r->fired[k];
        ml__buf_str(b, ",\"first\":{\"pid\":");
        ml__buf_u64(b, (uint64_t)r->pid);
        ml__buf_str(b, ",\"argv\":");
        json_argv(b, r->argv, r->argv_len);
        ml__buf_str(b, ",\"thread\":");
        ml__buf_u64(b, f->thread);
        ml__buf_str(b, ",\"allocation\":");
        ml__buf_u64(b, f->allocation);
        ml__buf_str(b, ",\"size\":");
        ml__buf_u64(b, f->size);
        ml__buf_str(b, "}");
    }
    ml__buf_str(b, ",\"refused\":");
    ml__buf_u64(b, s->refused[k]);
    ml__buf_str(b, ",\"processes\":");
    ml__buf_u64(b, s->firing_processes[k]);
    ml__buf_str(b, "}");
}

static void json_row(ml_buf *b, const ml_tree_row *r, const ml_tree *t)
{
    ml__buf_str(b, "{\"pid\":");
    ml__buf_u64(b, (uint64_t)r->pid);
    ml__buf_str(b, ",\"parent\":");
    if (r->ppid >= 0)
        ml__buf_u64(b, (uint64_t)r->ppid);
    else
        ml__buf_str(b, "null");
    ml__buf_str(b, ",\"argv\":");
    json_argv(b, r->argv, r->argv_len);
    ml__buf_str(b, ",\"argv_truncated\":");
    ml__buf_str(b, r->argv_cut ? "true" : "false");
    ml__buf_str(b, ",\"attached\":");
    ml__buf_str(b, r->serial != 0 ? "true" : "false");
    ml__buf_str(b, ",\"accounted\":");
    ml__buf_str(b, r->flags & ML_SLOT_ACCOUNTED ? "true" : "false");
    ml__buf_str(b, ",\"images\":");
    ml__buf_u64(b, r->images);
    ml__buf_str(b, ",\"heap_peak\":");
    ml__buf_u64(b, r->heap_peak);
    ml__buf_str(b, ",\"allocated_bytes\":");
    ml__buf_u64(b, r->allocated);
    ml__buf_str(b, ",\"exit_status\":");
    if (r->ended_known && r->signal == 0)
        ml__buf_i64(b, r->exit_status);
    else
        ml__buf_str(b, "null");
    ml__buf_str(b, ",\"signal\":");
    json_signal(b, r->ended_known ? r->signal : 0);
    ml__buf_str(b, ",\"escaped_exec\":");
    if (r->escaped) {
        ml__buf_str(b, "{\"argv\":");
        json_argv(b, r->escaped_argv, r->escaped_len);
        ml__buf_str(b, "}");
    } else {
        ml__buf_str(b, "null");
    }
    ml__buf_str(b, ",\"limits_fired\":[");
    int any = 0;
    for (int k = 0; k < 2; k++) {
        const ml_ledger_firing *f = &r->fired[k];
        if (f->count == 0) continue;
        ml__buf_str(b, any++ ? ",{\"limit\":\"" : "{\"limit\":\"");
        ml__buf_str(b, limit_keys[k]);
        ml__buf_str(b, "\",\"refused\":");
        ml__buf_u64(b, f->count);
        ml__buf_str(b, ",\"thread\":");
        ml__buf_u64(b, f->thread);
        ml__buf_str(b, ",\"allocation\":");
        ml__buf_u64(b, f->allocation);
        ml__buf_str(b, ",\"size\":");
        ml__buf_u64(b, f->size);
        ml__buf_str(b, ",\"first_in_tree\":");
        ml__buf_str(b, t->first_row[k] != SIZE_MAX && &t->rows[t->first_row[k]] == r ? "true"
                                                                                     : "false");
        ml__buf_str(b, "}");
    }
    ml__buf_str(b, "]}");
}

static void json_report(ml_buf *b, const ml_tree *t)
{
    totals s;
    sum_up(t, &s);
    ml__buf_str(b, "{\"memlimits_tree_report\":1,\"launcher_pid\":");
    ml__buf_u64(b, (uint64_t)getpid());
    ml__buf_str(b, ",\"command\":[");
    for (char **a = t->command; *a != NULL; a++) {
        if (a != t->command) ml__buf_str(b, ",");
        json_mem(b, *a, strlen(*a));
    }
    ml__buf_str(b, "],\"limits\":{");
    json_limit(b, t, &s, 0);
    ml__buf_str(b, ",");
    json_limit(b, t, &s, 1);
    ml__buf_str(b, "},\"pythonmalloc\":{\"value\":");
    if (t->pythonmalloc != NULL)
        json_mem(b, t->pythonmalloc, strlen(t->pythonmalloc));
    else
        ml__buf_str(b, "null");
    ml__buf_str(b, ",\"set_by_memlimit\":");
    ml__buf_str(b, t->pythonmalloc_ours ? "true" : "false");
    ml__buf_str(b, "},\"heap_peak\":");
    ml__buf_u64(b, s.peak);
    ml__buf_str(b, ",\"allocated_bytes\":");
    ml__buf_u64(b, s.allocated);
    ml__buf_str(b, ",\"largest_process\":");
    if (s.largest != NULL) {
        ml__buf_str(b, "{\"pid\":");
        ml__buf_u64(b, (uint64_t)s.largest->pid);
        ml__buf_str(b, ",\"heap_peak\":");
        ml__buf_u64(b, s.largest->heap_peak);
        ml__buf_str(b, "}");
    } else {
        ml__buf_str(b, "null");
    }
    ml__buf_str(b, ",\"process_count\":");
    ml__buf_u64(b, t->nrows);
    ml__buf_str(b, ",\"not_accounted\":");
    ml__buf_u64(b, s.not_accounted);
    ml__buf_str(b, ",\"never_attached\":");
    ml__buf_u64(b, s.never_attached);
    ml__buf_str(b, ",\"escaped_exec\":");
    ml__buf_u64(b, s.escaped);
    ml__buf_str(b, ",\"wall_seconds\":");
    ml__buf_fixed(b, t->wall_ns / 1000000, 3);
    ml__buf_str(b, ",\"suggested\":{\"heap\":");
    ml__buf_u64(b, suggestion(s.peak));
    ml__buf_str(b, ",\"alloc\":");
    ml__buf_u64(b, suggestion(s.allocated));
    ml__buf_str(b, ",\"margin_percent\":");
    ml__buf_u64(b, SUGGEST_MARGIN_PERCENT);
    ml__buf_str(b, "},\"command_exit_status\":");
    if (t->command_signal == 0 && t->command_status >= 0)
        ml__buf_u64(b, (uint64_t)t->command_status);
    else
        ml__buf_str(b, "null");
    ml__buf_str(b, ",\"command_signal\":");
    json_signal(b, t->command_signal);
    ml__buf_str(b, ",\"exit_status\":");
    if (t->status >= 0)
        ml__buf_u64(b, (uint64_t)t->status);
    else
        ml__buf_str(b, "null");
    ml__buf_str(b, ",\"signal\":");
    json_signal(b, t->status < 0 ? -t->status : 0);
    ml__buf_str(b, ",\"exit_status_from\":\"");
    ml__buf_str(b, t->status_by_limit ? limit_keys[t->first_kind] : "command");
    ml__buf_str(b, "\",\"slots_high_water\":");
    ml__buf_u64(b, t->slots_high_water);
    ml__buf_str(b, ",\"attach_failures\":");
    ml__buf_u64(b, t->attach_failures);
    ml__buf_str(b, ",\"processes\":[");
    for (size_t i = 0; i < t->nrows; i++) {
        if (i > 0) ml__buf_str(b, ",");
        json_row(b, &t->rows[i], t);
    }
    ml__buf_str(b, "]}\n");
}

int ml_tree_report(const ml_tree *t, ml_report_kind kind, int fd)
{
    /* One buffer, one write (reports are appended to files that others may append to). */
    size_t cap = 16384 + (t->nrows + 2) * (7 * ML_LEDGER_ARGV + 512);
    char *storage = malloc(cap);
    if (storage == NULL) return -1;
    ml_buf b = {storage, cap, 0, 0};
    if (kind == ML_REPORT_JSON)
        json_report(&b, t);
    else
        text_report(&b, t);
    ml__buf_flush(&b, fd);
    free(storage);
    return 0;
}
