"""report_suite: the report's sections on the workload suite: the machine it ran on, the
workloads under each configuration (tables and plots), the jemalloc configuration study, the
`perf stat` counts and malloc_bench."""
import os
from collections import OrderedDict

from report_common import geomean, table
from report_load import CONFIGS, best_of_two, med, stat


def target_rows(res, config):
    """-> ([(workload, time ratio, RSS ratio)], every time ratio within 1.05, every RSS ratio
    within 1.10): `config` against the better of glibc and bare jemalloc, per workload."""
    suite, workloads = res.suite, res.workloads
    rows, t_ok, r_ok = [], True, True
    for w in workloads:
        bt = best_of_two(suite, w, "elapsed")
        br = best_of_two(suite, w, "rss")
        mt = med(suite, w, config)
        mr = med(suite, w, config, "rss")
        tr, rr = mt / bt, mr / br
        t_ok &= tr <= 1.05
        r_ok &= rr <= 1.10
        rows.append((w, tr, rr))
    return rows, t_ok, r_ok


def malloc_bench_ratios(res, config="memlimits+limits"):
    """-> {threads: ratio to bare jemalloc} of `config` in malloc_bench's summary, or {}."""
    mb = os.path.join(res.raw, "malloc_bench.txt")
    ratios = {}
    if os.path.exists(mb):
        for line in open(mb):
            f = line.split()
            if len(f) >= 5 and f[0] == config and f[1].isdigit():
                ratios[int(f[1])] = float(f[4])
    return ratios


def issue_rows(res):
    """-> rows (target, measured, ok) of issue 12's targets that the workloads' table does not
    state as such: peak RSS on the large-block workload, thread churn against glibc's time, and
    malloc_bench at 1 and 2 threads; all for memlimits+limits."""
    suite, config, out = res.suite, "memlimits+limits", []
    if "bigblocks" in res.workloads:
        rss = med(suite, "bigblocks", config, "rss") / best_of_two(suite, "bigblocks", "rss")
        out.append(("large-block workload (bigblocks), memlimits+limits: peak RSS ≤ 1.10 × "
                    "min(glibc, jemalloc)", "%.3f" % rss, rss <= 1.10))
    churn = [w for w in ("mstress", "mleak") if w in res.workloads]
    if churn:
        ratios = {w: med(suite, w, config) / med(suite, w, "glibc") for w in churn}
        out.append(("thread-churn workloads (%s), memlimits+limits: time ≤ 1.05 × glibc's"
                    % ", ".join(churn), ", ".join("%s %.3f" % (w, r) for w, r in ratios.items()),
                    max(ratios.values()) <= 1.05))
    mb = malloc_bench_ratios(res)
    if mb:
        out.append(("16–528 B malloc/free (malloc_bench), memlimits+limits: ≤ 1.05 × bare "
                    "jemalloc at 1 and 2 threads",
                    ", ".join("%d thread%s %.3f" % (t, "" if t == 1 else "s", r)
                              for t, r in sorted(mb.items())), max(mb.values()) <= 1.05))
    return out


def machine_section(res):
    machine, speed = res.machine, res.speed
    L = []
    L.append("## Machine")
    L.append("")
    mrows = [(k, machine[k]) for k in ("nproc", "cpu", "kernel", "glibc", "jemalloc (bare)",
                                         "jemalloc (embedded)", "python", "compiler", "memory",
                                         "memlimits tree", "load at start", "load at end")
             if k in machine]
    for k, v in speed.items():
        mrows.append(("speedup check (%s)" % k, "%.2f %s" % (v, "" if v >= 1.8 else
                                                             "(BELOW 1.8: loaded/throttled)")))
    L.append(table(["", ""], mrows, ["l", "l"]))
    L.append("")
    return L


# One line on each workload of bench/run_all.sh.
WORKLOAD_DESCRIPTIONS = OrderedDict([
    ("larson", "Larson-style server: 2 threads replace random 16–1024 B blocks in 1000 slots, "
               "hand their slots to a new thread each round (40 rounds × 100k ops): "
               "cross-thread frees and thread churn"),
    ("xmalloc", "producer/consumer: 3M blocks of 16–512 B allocated on one thread, freed on "
                "the other (batches of 256)"),
    ("cache-scratch", "passive false sharing: 2 threads free main's neighbouring 8-byte "
                      "objects, then 1M × (malloc 8, 100 writes, free)"),
    ("small-objects", "one thread: 20 binary trees of depth 16 (32-byte nodes + 8–120 B "
                      "strings) built, walked, dropped; 5.5M objects"),
    ("strbuild", "one thread: 64 strings grown by exact-size realloc (+1–64 B each), "
                 "3M reallocs, strings up to 256 KiB"),
    ("bigblocks", "one thread: 4 live blocks of 1–16 MiB replaced 600 times, every page "
                  "written"),
    ("threads", "many threads: 10 waves of 32 threads, each 400 × (200 blocks of "
                "16–256 B allocated then freed)"),
    ("mstress", "thread churn with live objects, after mimalloc-bench's mstress: 50 rounds of 4 "
                "threads, 20000 steps each (mostly 8 B–1 KiB, some to 64 KiB and 1 MiB), one "
                "block in eight exchanged through a shared array that survives the threads"),
    ("mleak", "many short-lived threads, after mimalloc-bench's mleak: 1000 rounds of 2 threads, "
              "each allocating 1000 blocks of 16 B–4 KiB and keeping 10 for the next round"),
    ("python", "/usr/bin/python3 building and dropping lists, dicts, sets, strings, bytes "
               "(3 rounds of 200k rows)"),
])


def workloads_section(res):
    """The workloads and the configurations they run under."""
    machine, workloads, candidate = res.machine, res.workloads, res.candidate
    desc = WORKLOAD_DESCRIPTIONS
    L = []
    L.append("## Workloads and configurations")
    L.append("")
    L.append("Workloads (bench/wl_*.c, bench/wl_containers.py; each prints its own time):")
    L.append("")
    for w in workloads:
        L.append("- **%s**: %s." % (w, desc.get(w, "")))
    L.append("")
    L.append("Configurations: **glibc** (no preload); **jemalloc** (`LD_PRELOAD=%s`); "
             "**memlimits** (`LD_PRELOAD=libmemlimits.so`); **memlimits+limits** (plus "
             "`MEMLIMITS_HEAP=64G MEMLIMITS_ALLOC=1000T`, never firing); **memlimits+task** "
             "(limits, and each thread's work runs inside `ml_limit_allocations(2^62, ...)`, "
             "through dlsym in C and ctypes in Python); **memlimits+conf** (limits, and "
             "`MALLOC_CONF=%s` for the embedded jemalloc: the candidate default)."
             % (machine.get("jemalloc (bare)", "libjemalloc.so.2").split()[-1], candidate))
    L.append("")
    return L


def suite_section(res, plots):
    """The suite's tables, per workload and configuration, and their plots."""
    return (time_table(res) + ratio_table(res, plots) + rss_table(res, plots) + cpu_table(res) +
            against_best_table(res))


def config_rows(res, cell):
    """-> the rows of a table of the suite: each workload, then cell(w, c) under each of
    CONFIGS."""
    return [[w] + [cell(w, c) for c in CONFIGS] for w in res.workloads]


def spread(s, fmt):
    """A "median (min–max)" cell of stat() `s`, each number in `fmt`; "—" without runs."""
    return "—" if not s else ("%s (%s–%s)" % (fmt, fmt, fmt)) % (s[0], s[1], s[2])


def time_table(res):
    L = []
    L.append("### Time (s): median (min–max)")
    L.append("")
    L.append(table(["workload"] + CONFIGS,
                   config_rows(res, lambda w, c: spread(stat(res.suite, w, c), "%.3f"))))
    L.append("")
    return L


def ratio_table(res, plots):
    """Median times relative to bare jemalloc's, with their geometric means; plotted."""
    suite, workloads = res.suite, res.workloads

    def ratio(w, c):
        return med(suite, w, c) / med(suite, w, "jemalloc")

    L = []
    L.append("### Ratio to bare jemalloc (median time / jemalloc's median time)")
    L.append("")
    rows = config_rows(res, lambda w, c: "%.3f" % ratio(w, c))
    rows.append(["**geomean**"] + ["**%.3f**" % geomean([ratio(w, c) for w in workloads])
                                   for c in CONFIGS])
    L.append(table(["workload"] + CONFIGS, rows))
    L.append("")
    L.append("![ratio to bare jemalloc](ratio.png)")
    L.append("")
    plot_ratios(plots, "ratio", "Time relative to bare jemalloc (median of runs; 1.0 = jemalloc)",
                "median time / jemalloc median", "set logscale y 2\nset yrange [0.015:*]", 1.05,
                res, ratio)
    return L


def rss_table(res, plots):
    """Peak RSS; plotted relative to the better of glibc and jemalloc."""
    suite = res.suite

    def ratio(w, c):
        return med(suite, w, c, "rss") / best_of_two(suite, w, "rss")

    L = []
    L.append("### Peak RSS (MiB): median (min–max)")
    L.append("")
    L.append(table(["workload"] + CONFIGS,
                   config_rows(res, lambda w, c: spread(stat(suite, w, c, "rss"), "%.1f"))))
    L.append("")
    L.append("![peak RSS relative to min(glibc, jemalloc)](rss.png)")
    L.append("")
    plot_ratios(plots, "rss", "Peak RSS relative to min(glibc, jemalloc) (median of runs)",
                "peak RSS / min(glibc, jemalloc)", "set yrange [0:*]", 1.10, res, ratio)
    return L


def cpu_table(res):
    suite = res.suite
    L = []
    L.append("### User + system time (s), medians — where the time goes")
    L.append("")
    L.append(table(["workload"] + CONFIGS, config_rows(
        res, lambda w, c: "%.2f + %.2f" % (med(suite, w, c, "user"), med(suite, w, c, "sys")))))
    L.append("")
    return L


def against_best_table(res):
    """memlimits+limits and memlimits+conf against the better of glibc and jemalloc, and the
    runs that failed."""
    rows_lim = target_rows(res, "memlimits+limits")[0]
    rows_conf = target_rows(res, "memlimits+conf")[0]
    L = []
    L.append("### Against the better of glibc and jemalloc, per workload")
    L.append("")
    rows = []
    for (w, tr, rr), (_, tr2, rr2) in zip(rows_lim, rows_conf):
        rows.append((w, "%.3f" % tr, "%.3f" % rr, "%.3f" % tr2, "%.3f" % rr2))
    L.append(table(["workload", "memlimits+limits time", "memlimits+limits RSS",
                    "memlimits+conf time", "memlimits+conf RSS"], rows))
    L.append("")
    L.append("(ratios to min(glibc, jemalloc); targets: time ≤ 1.05, RSS ≤ 1.10)")
    L.append("")
    if res.suite_fails or res.study_fails:
        L.append("**FAILED RUNS** (excluded; stderr in raw/failures.txt): " + ", ".join(
            "%s/%s/round %s" % f for f in res.suite_fails + res.study_fails))
        L.append("")
    return L


def plot_ratios(plots, name, title, ylabel, yaxis, target, res, ratio):
    """A histogram of ratio(w, c) for each workload w of the suite and each c of CONFIGS,
    clustered by workload, `yaxis` setting the y axis, with `target` as a red line."""
    lines = [" ".join([w] + ["%.4f" % ratio(w, c) for c in CONFIGS]) for w in res.workloads]
    plots.plot(name, """
set title '%s'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set ylabel '%s'
%s
set grid ytics
set key outside right top
set xtics rotate by -20
set arrow from graph 0, first %.2f to graph 1, first %.2f nohead dt 2 lc rgb 'red'
plot for [i=2:%d] DATA using i:xtic(1) title columnhead(i)
""" % (title, ylabel, yaxis, target, target, len(CONFIGS) + 1),
               "workload " + " ".join(CONFIGS) + "\n" + "\n".join(lines) + "\n")


def study_section(res):
    """The jemalloc configuration study: MALLOC_CONF candidates against glibc and jemalloc."""
    study = res.study
    L = []
    L.append("## jemalloc configuration (MALLOC_CONF for the embedded jemalloc)")
    L.append("")
    L.append("Each candidate is memlimits with limits set and `MALLOC_CONF=candidate` (the "
             "embedded jemalloc reads MALLOC_CONF like a stock one; the library could bake the "
             "winner into `mlje_malloc_conf`). Interleaved with glibc, bare jemalloc and "
             "memlimits as it is, on the workloads where stock jemalloc loses to glibc or uses "
             "threads. Cells: median time / min(glibc, jemalloc) medians; RSS likewise. "
             "Target: time ≤ 1.05 and RSS ≤ 1.10.")
    L.append("")
    study_w = list(OrderedDict.fromkeys(w for (w, c) in study))
    study_c = list(OrderedDict.fromkeys(c for (w, c) in study))
    rows = []
    for c in study_c:
        r = ["`%s`" % c.replace("conf:", "")]
        for w in study_w:
            bt = best_of_two(study, w, "elapsed")
            br = best_of_two(study, w, "rss")
            t = med(study, w, c) / bt
            rr = med(study, w, c, "rss") / br
            mark = "" if (t <= 1.05 and rr <= 1.10) else " ✗"
            r.append("%.2f / %.2f%s" % (t, rr, mark))
        rows.append(r)
    if rows:
        L.append(table(["configuration"] + ["%s time / RSS" % w for w in study_w], rows))
        L.append("")
        rows = []
        for w in study_w:
            rows.append([w] + ["%.3f" % med(study, w, c) for c in study_c])
        L.append("Median times (s):")
        L.append("")
        L.append(table(["workload"] + [c.replace("conf:", "") for c in study_c], rows))
        L.append("")
    return L


def perf_section(res):
    """`perf stat` counts: instructions and cycles relative to bare jemalloc, page faults and
    CPU time."""
    pdat, workloads = res.perf, res.workloads
    L = []
    if pdat:
        L.append("## Load-independent counts (`perf stat`, one run each)")
        L.append("")
        L.append("User-space instructions do not depend on other tenants, so they show memlimits' "
                 "own overhead even when wall-clock times are noisy; cycles and CPU time still do. "
                 "Ratios to bare jemalloc:")
        L.append("")
        pconf = ["glibc", "memlimits+limits", "memlimits+task", "memlimits+conf"]
        rows = []
        pw = workloads + (["malloc-bench"] if ("malloc-bench", "jemalloc") in pdat else [])
        for w in pw:
            b = pdat.get((w, "jemalloc"))
            if not b:
                continue
            r = [w]
            for c in pconf:
                x = pdat.get((w, c))
                r.append("—" if not x else "%.3f / %.3f" % (x["ins"] / b["ins"], x["cyc"] / b["cyc"]))
            rows.append(r)
        gm = ["**geomean (suite)**"]
        for c in pconf:
            ins = [pdat[(w, c)]["ins"] / pdat[(w, "jemalloc")]["ins"] for w in workloads
                   if (w, c) in pdat and (w, "jemalloc") in pdat]
            cyc = [pdat[(w, c)]["cyc"] / pdat[(w, "jemalloc")]["cyc"] for w in workloads
                   if (w, c) in pdat and (w, "jemalloc") in pdat]
            # (the geometric mean is over the suite's workloads; malloc-bench is shown apart)
            gm.append("**%.3f / %.3f**" % (geomean(ins), geomean(cyc)))
        rows.append(gm)
        L.append(table(["workload"] + ["%s instr / cycles" % c for c in pconf], rows))
        L.append("")
        rows = []
        for w in pw:
            r = [w]
            for c in ["glibc", "jemalloc", "memlimits+limits", "memlimits+conf"]:
                x = pdat.get((w, c))
                r.append("—" if not x else "%d / %.0f ms" % (x["pf"], x["cpu"]))
            rows.append(r)
        L.append("Page faults / CPU time (task-clock):")
        L.append("")
        L.append(table(["workload", "glibc", "jemalloc", "memlimits+limits", "memlimits+conf"],
                       rows))
        L.append("")
    return L


def malloc_bench_section(res):
    L = []
    mb = os.path.join(res.raw, "malloc_bench.txt")
    if os.path.exists(mb):
        L.append("## malloc_bench (the design's fast-path budget: 16–528 B random malloc/free, "
                 "1 and 2 threads)")
        L.append("")
        L.append("```")
        L.extend(l.rstrip("\n") for l in open(mb) if not l.startswith("round "))
        L.append("```")
        L.append("")
    return L
