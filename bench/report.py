#!/usr/bin/env python3
"""report.py: turns the raw data of bench/run_all.sh into REPORT.md and PNG plots (gnuplot).

usage: report.py RESULTS_DIR [--gnuplot GNUPLOT]

Reads RESULTS_DIR/raw/ (machine.txt, speedup.tsv, suite.tsv, study.tsv, perf.txt,
malloc_bench.txt, overshoot.txt, global.txt, sampler.jsonl, token.txt, fastpath.txt) and writes
RESULTS_DIR/REPORT.md and RESULTS_DIR/*.png. Standard library only.
"""
import json
import math
import os
import subprocess
import sys
from collections import OrderedDict, defaultdict

# ------------------------------------------------------------------------------- helpers


def median(xs):
    s = sorted(xs)
    n = len(s)
    if n == 0:
        return float("nan")
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def pct(xs, p):
    """Nearest-rank percentile (p in 0..100)."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = max(1, min(len(s), math.ceil(p / 100.0 * len(s))))
    return s[k - 1]


def geomean(xs):
    xs = [x for x in xs if x > 0 and not math.isnan(x)]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def sd(xs):
    if len(xs) < 2:
        return float("nan")
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def fmt_s(x):
    return "—" if x is None or math.isnan(x) else ("%.3f" % x)


def kib(b):
    return "%.1f KiB" % (b / 1024.0)


def table(header, rows, align=None):
    out = ["| " + " | ".join(header) + " |"]
    al = align or ["l"] + ["r"] * (len(header) - 1)
    out.append("| " + " | ".join("---:" if a == "r" else "---" for a in al) + " |")
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def passfail(ok):
    return "**PASS**" if ok else "**FAIL**"


# ---------------------------------------------------------------------------------- input


def read_kv(path):
    d = OrderedDict()
    if os.path.exists(path):
        for line in open(path):
            if ":" in line:
                k, v = line.split(":", 1)
                d[k.strip()] = v.strip()
    return d


def read_runs(path):
    """-> {(workload, config): [dict(elapsed, wall, rss_mib, user, sys)]}, failures list."""
    runs = defaultdict(list)
    fails = []
    if not os.path.exists(path):
        return runs, fails
    for line in open(path):
        f = line.rstrip("\n").split("\t")
        if len(f) >= 5 and f[4] == "FAIL":
            fails.append((f[1], f[2], f[3]))
            continue
        if len(f) < 9:
            continue
        runs[(f[1], f[2])].append(
            dict(elapsed=float(f[4]), wall=float(f[5]), rss=float(f[6]) / 1024.0,
                 user=float(f[7]), sys=float(f[8]), round=int(f[3])))
    return runs, fails


def summary_lines(path):
    out = []
    if os.path.exists(path):
        for line in open(path):
            if line.startswith("# summary"):
                out.append(dict(kv.split("=", 1) for kv in line.split()[2:]))
    return out


def data_lines(path):
    if not os.path.exists(path):
        return []
    return [l.split() for l in open(path) if l.strip() and not l.startswith("#")]


# ------------------------------------------------------------------------------- gnuplot


class Plots:
    def __init__(self, outdir, gnuplot):
        self.outdir = outdir
        self.gnuplot = gnuplot
        self.made = []
        self.errors = []

    def plot(self, name, script, data):
        # Paths relative to the results directory, where gnuplot runs: the scripts in raw/ can
        # be rerun there by hand (gnuplot raw/NAME.gp).
        dat = os.path.join("raw", name + ".dat")
        with open(os.path.join(self.outdir, dat), "w") as f:
            f.write(data)
        full = ("set terminal pngcairo size 1100,560 font 'DejaVu Sans,10'\n"
                "set output '%s.png'\n" % name) + script.replace("DATA", "'%s'" % dat)
        gp = os.path.join("raw", name + ".gp")
        with open(os.path.join(self.outdir, gp), "w") as f:
            f.write(full)
        r = subprocess.run([self.gnuplot, gp], capture_output=True, text=True, cwd=self.outdir)
        if r.returncode != 0:
            self.errors.append("%s: %s" % (name, r.stderr.strip()[:300]))
        else:
            self.made.append(name + ".png")


# ---------------------------------------------------------------------------------- report


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    outdir = sys.argv[1]
    gnuplot = "gnuplot"
    if "--gnuplot" in sys.argv:
        gnuplot = sys.argv[sys.argv.index("--gnuplot") + 1]
    raw = os.path.join(outdir, "raw")
    plots = Plots(outdir, gnuplot)
    machine = read_kv(os.path.join(raw, "machine.txt"))
    quick = machine.get("quick", "0") == "1"
    candidate = machine.get("candidate", "?")

    speed = OrderedDict()
    p = os.path.join(raw, "speedup.tsv")
    if os.path.exists(p):
        for line in open(p):
            label, rest = line.rstrip("\n").split("\t", 1)
            kv = dict(x.split("=", 1) for x in rest.split())
            speed[label] = float(kv.get("speedup", "nan"))
    speed_ok = all(v >= 1.8 for v in speed.values()) and len(speed) == 2

    suite, suite_fails = read_runs(os.path.join(raw, "suite.tsv"))
    study, study_fails = read_runs(os.path.join(raw, "study.tsv"))
    workloads = list(OrderedDict.fromkeys(w for (w, c) in suite))
    configs = ["glibc", "jemalloc", "memlimits", "memlimits+limits", "memlimits+task",
               "memlimits+conf"]

    def stat(runs, w, c, key="elapsed"):
        xs = [r[key] for r in runs.get((w, c), [])]
        if not xs:
            return None
        return median(xs), min(xs), max(xs), len(xs)

    def med(runs, w, c, key="elapsed"):
        s = stat(runs, w, c, key)
        return s[0] if s else float("nan")

    # ---- targets
    lim_ratios = {w: med(suite, w, "memlimits+limits") / med(suite, w, "jemalloc")
                  for w in workloads}
    gm_limits = geomean(list(lim_ratios.values()))
    worst_w = max(lim_ratios, key=lambda w: lim_ratios[w]) if lim_ratios else None

    def best_of_two(runs, w, key):
        return min(med(runs, w, "glibc", key), med(runs, w, "jemalloc", key))

    def target_rows(config):
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

    rows_lim, t_ok_lim, r_ok_lim = target_rows("memlimits+limits")
    rows_conf, t_ok_conf, r_ok_conf = target_rows("memlimits+conf")

    # ---- precision
    over_sum = summary_lines(os.path.join(raw, "overshoot.txt"))
    over = data_lines(os.path.join(raw, "overshoot.txt"))
    glob_sum = summary_lines(os.path.join(raw, "global.txt"))
    glob = data_lines(os.path.join(raw, "global.txt"))
    tok_sum = summary_lines(os.path.join(raw, "token.txt"))
    tok = data_lines(os.path.join(raw, "token.txt"))
    fp_sum = summary_lines(os.path.join(raw, "fastpath.txt"))

    # sampler
    samp = defaultdict(list)
    p = os.path.join(raw, "sampler.jsonl")
    if os.path.exists(p):
        for line in open(p):
            parts = line.split(" ", 2)
            if len(parts) < 3:
                continue
            try:
                j = json.loads(parts[2])
            except ValueError:
                continue
            samp[parts[0]].append(j)

    # global-limit groups
    ggroups = OrderedDict()
    for f in glob:
        key = (f[0], int(f[1]))
        ggroups.setdefault(key, []).append(f)

    # ===================================================================== write REPORT.md
    L = []
    title = "memlimits: benchmark and precision report"
    if quick:
        title += " (QUICK run: short workloads, few trials — not for conclusions)"
    L.append("# " + title)
    L.append("")
    L.append("Generated by `bench/run_all.sh BUILD_DIR` (then `bench/report.py`) on %s; the run took "
             "%s s. Raw data: `raw/`. Method: design.md \"Measuring on these machines\" — "
             "configurations interleaved round-robin (the starting configuration rotates every "
             "round), %s rounds, medians with min–max; a two-thread speedup check at the start "
             "and at the end." % (machine.get("date", "?"), machine.get("duration_s", "?"),
                                   machine.get("runs", "?")))
    L.append("")
    if not speed_ok:
        L.append("> **WARNING: the machine was loaded or throttled during this run** (two-thread "
                 "speedup %s; expected ≈ 2.0, discard threshold 1.8). Multi-threaded figures "
                 "(larson, xmalloc, cache-scratch, threads) are unreliable; single-thread ratios "
                 "less so, but other tenants were competing for the cores throughout. Load "
                 "average at start: %s; at end: %s." % (
                     " / ".join("%s %.2f" % (k, v) for k, v in speed.items()),
                     machine.get("load at start", "?"), machine.get("load at end", "?")))
        L.append("")

    # ---- targets
    L.append("## Targets")
    L.append("")
    trows = []
    trows.append(("geometric mean of memlimits+limits / bare jemalloc over the %d workloads ≤ 1.03"
                  % len(workloads), "%.3f" % gm_limits, passfail(gm_limits <= 1.03)))
    if worst_w:
        trows.append(("no workload above 1.05× bare jemalloc (memlimits+limits)",
                      "worst: %s %.3f" % (worst_w, lim_ratios[worst_w]),
                      passfail(lim_ratios[worst_w] <= 1.05)))
    for name, rows, t_ok, r_ok in (("memlimits+limits (as shipped)", rows_lim, t_ok_lim, r_ok_lim),
                                   ("memlimits+conf (MALLOC_CONF=%s)" % candidate, rows_conf,
                                    t_ok_conf, r_ok_conf)):
        if rows:
            wt = max(rows, key=lambda r: r[1])
            wr = max(rows, key=lambda r: r[2])
            trows.append(("%s: time ≤ 1.05 × min(glibc, jemalloc) on every workload" % name,
                          "worst: %s %.3f" % (wt[0], wt[1]), passfail(t_ok)))
            trows.append(("%s: peak RSS ≤ 1.10 × min(glibc, jemalloc) on every workload" % name,
                          "worst: %s %.3f" % (wr[0], wr[2]), passfail(r_ok)))
    ov_viol = sum(int(s.get("violations", 0)) for s in over_sum)
    ov_max = max([int(s.get("overshoot_max", 0)) for s in over_sum] or [0])
    trows.append(("allocation limits exact: overshoot 0, refused allocation = the crossing one, "
                  "count exact", "%d trials, %d violations, max overshoot %d B" % (
                      sum(int(s.get("measured", 0)) for s in over_sum), ov_viol, ov_max),
                  passfail(ov_viol == 0 and ov_max == 0 and bool(over_sum))))
    gmax = max([int(f[8]) for f in glob] or [0])
    g_notint = sum(int(s.get("not_interrupted", 0)) for s in glob_sum)
    trows.append(("global memory limit: interrupted before 256 KiB more allocation",
                  "max %s over %d task runs; not interrupted: %d" % (kib(gmax), len(glob), g_notint),
                  passfail(gmax < 256 * 1024 and g_notint == 0 and bool(glob))))
    L.append(table(["target", "measured", "result"], trows, ["l", "l", "l"]))
    L.append("")
    L.append("Time is each workload's own measured work time (`elapsed_s`, printed by the "
             "workload); peak RSS is GNU time's `%M`. \"min(glibc, jemalloc)\" is the better of the "
             "two medians, per workload. Explanations of every miss: section \"Why\" below.")
    L.append("")

    # ---- machine
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

    # ---- suite
    L.append("## Workloads and configurations")
    L.append("")
    L.append("Workloads (bench/wl_*.c, bench/wl_containers.py; each prints its own time):")
    L.append("")
    desc = OrderedDict([
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
        ("python", "/usr/bin/python3 building and dropping lists, dicts, sets, strings, bytes "
                   "(3 rounds of 200k rows)"),
    ])
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
    hdr = ["workload"] + configs
    rows = []
    for w in workloads:
        r = [w]
        for c in configs:
            s = stat(suite, w, c)
            r.append("—" if not s else "%.3f (%.3f–%.3f)" % (s[0], s[1], s[2]))
        rows.append(r)
    L.append("### Time (s): median (min–max)")
    L.append("")
    L.append(table(hdr, rows))
    L.append("")
    L.append("### Ratio to bare jemalloc (median time / jemalloc's median time)")
    L.append("")
    rows = []
    ratio_dat = []
    for w in workloads:
        base = med(suite, w, "jemalloc")
        r = [w]
        line = [w]
        for c in configs:
            x = med(suite, w, c) / base
            r.append("%.3f" % x)
            line.append("%.4f" % x)
        rows.append(r)
        ratio_dat.append(" ".join(line))
    gm = ["**geomean**"]
    for c in configs:
        gm.append("**%.3f**" % geomean([med(suite, w, c) / med(suite, w, "jemalloc")
                                        for w in workloads]))
    rows.append(gm)
    L.append(table(hdr, rows))
    L.append("")
    L.append("![ratio to bare jemalloc](ratio.png)")
    L.append("")
    L.append("### Peak RSS (MiB): median (min–max)")
    L.append("")
    rows = []
    rss_dat = []
    for w in workloads:
        r = [w]
        line = [w]
        for c in configs:
            s = stat(suite, w, c, "rss")
            r.append("—" if not s else "%.1f (%.1f–%.1f)" % (s[0], s[1], s[2]))
            line.append("%.4f" % (med(suite, w, c, "rss") / best_of_two(suite, w, "rss")))
        rows.append(r)
        rss_dat.append(" ".join(line))
    L.append(table(hdr, rows))
    L.append("")
    L.append("![peak RSS relative to min(glibc, jemalloc)](rss.png)")
    L.append("")
    L.append("### User + system time (s), medians — where the time goes")
    L.append("")
    rows = []
    for w in workloads:
        r = [w]
        for c in configs:
            u = med(suite, w, c, "user")
            s_ = med(suite, w, c, "sys")
            r.append("%.2f + %.2f" % (u, s_))
        rows.append(r)
    L.append(table(hdr, rows))
    L.append("")
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
    if suite_fails or study_fails:
        L.append("**FAILED RUNS** (excluded; stderr in raw/failures.txt): " + ", ".join(
            "%s/%s/round %s" % f for f in suite_fails + study_fails))
        L.append("")

    plots.plot("ratio", """
set title 'Time relative to bare jemalloc (median of runs; 1.0 = jemalloc)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set ylabel 'median time / jemalloc median'
set logscale y 2
set yrange [0.015:*]
set grid ytics
set key outside right top
set xtics rotate by -20
set arrow from graph 0, first 1.05 to graph 1, first 1.05 nohead dt 2 lc rgb 'red'
plot for [i=2:%d] DATA using i:xtic(1) title columnhead(i)
""" % (len(configs) + 1), "workload " + " ".join(configs) + "\n" + "\n".join(ratio_dat) + "\n")
    plots.plot("rss", """
set title 'Peak RSS relative to min(glibc, jemalloc) (median of runs)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set ylabel 'peak RSS / min(glibc, jemalloc)'
set yrange [0:*]
set grid ytics
set key outside right top
set xtics rotate by -20
set arrow from graph 0, first 1.10 to graph 1, first 1.10 nohead dt 2 lc rgb 'red'
plot for [i=2:%d] DATA using i:xtic(1) title columnhead(i)
""" % (len(configs) + 1), "workload " + " ".join(configs) + "\n" + "\n".join(rss_dat) + "\n")

    # ---- study
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
            bt = min(med(study, w, "glibc"), med(study, w, "jemalloc"))
            br = min(med(study, w, "glibc", "rss"), med(study, w, "jemalloc", "rss"))
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
    perf = os.path.join(raw, "perf.tsv")
    pdat = {}
    if os.path.exists(perf):
        for line in open(perf):
            f = line.rstrip("\n").split("\t")
            if len(f) >= 7:
                try:
                    pdat[(f[0], f[1])] = dict(cpu=float(f[2]), pf=int(f[3]), cs=int(f[4]),
                                              cyc=float(f[5]), ins=float(f[6]))
                except ValueError:
                    pass
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

    # ---- malloc_bench
    mb = os.path.join(raw, "malloc_bench.txt")
    if os.path.exists(mb):
        L.append("## malloc_bench (the design's fast-path budget: 16–528 B random malloc/free, "
                 "1 and 2 threads)")
        L.append("")
        L.append("```")
        L.extend(l.rstrip("\n") for l in open(mb) if not l.startswith("round "))
        L.append("```")
        L.append("")

    # ---- precision: overshoot
    L.append("## Precision")
    L.append("")
    L.append("### (a) Allocation-limit overshoot")
    L.append("")
    L.append("`precision overshoot`: each trial runs a task under `ml_limit_allocations(L)` (L "
             "log-uniform in 1 B–16 MiB) allocating by a pattern until the first refusal, "
             "keeping every block, and counts for itself what memlimits should count. Checked: "
             "status ML_ALLOCATION_LIMIT; reported count = own count S of successful requests; "
             "S ≤ L (overshoot = reported − L); the refused request r is the crossing one "
             "(S + r > L); replaying the same S bytes under limit S returns ML_OK with count S, "
             "and under S − 1 is refused exactly at the last request.")
    L.append("")
    bypat = OrderedDict()
    for f in over:
        bypat.setdefault(f[0], []).append(f)
    rows = []
    for pname, fs in bypat.items():
        meas = [f for f in fs if f[10] != "-1"]
        viol = sum(1 for f in meas if f[10] != "0")
        ovs = [int(f[7]) for f in meas]
        rep = [int(f[8]) for f in meas]
        mi = [int(f[9]) for f in meas]
        rows.append((pname, len(meas), sum(1 for x in ovs if x == 0), max(ovs or [0]),
                     viol, "%d/%d" % (sum(1 for x in rep if x == 1), sum(1 for x in rep if x >= 0)),
                     "%d/%d" % (sum(1 for x in mi if x == 1), sum(1 for x in mi if x >= 0))))
    L.append(table(["pattern", "trials", "overshoot = 0", "max overshoot (B)", "violations",
                    "replay under S: ML_OK, count S", "replay under S−1: refused at last"], rows))
    L.append("")
    if over_sum:
        s = over_sum[0]
        L.append("Total: %s trials measured, **%s violations**, overshoot max %s B. A zero-byte "
                 "request is counted as %s byte(s) by the implementation (see \"Library problems\" "
                 "if the header disagrees)." % (s.get("measured"), s.get("violations"),
                                                s.get("overshoot_max"),
                                                s.get("zero_byte_counted_as")))
        L.append("")
    # distribution plot: overshoot histogram + slack (L - S) relative to refused size
    hist = defaultdict(int)
    for f in over:
        if f[10] != "-1":
            hist[int(f[7])] += 1
    slack = []
    for f in over:
        if f[10] != "-1" and int(f[5]) > 0:
            slack.append("%s %s" % (f[1], (int(f[1]) - int(f[4])) / float(int(f[5]))))
    plots.plot("overshoot", """
set multiplot layout 1,2
set title 'Allocation-limit overshoot (reported - limit), all trials'
set style fill solid 0.8
set boxwidth 0.6
set xlabel 'overshoot (bytes)'
set ylabel 'trials'
set xrange [-1:5]
set yrange [0:*]
plot DATA index 0 using 1:2 with boxes lc rgb '#3070b0' title 'trials'
set title 'Where the refusal falls: (limit - count) / refused request size'
set xlabel 'limit L (bytes)'
set ylabel '(L - S) / r   (must be in [0, 1))'
set logscale x
set xrange [*:*]
set yrange [-0.05:1.05]
plot DATA index 1 using 1:2 with points pt 7 ps 0.3 lc rgb '#b03030' title 'trial'
unset multiplot
""", "\n".join("%d %d" % kv for kv in sorted(hist.items())) + "\n\n\n" + "\n".join(slack) + "\n")
    L.append("![overshoot distribution](overshoot.png)")
    L.append("")

    # ---- precision: global
    L.append("### (b) Global-memory-limit detection distance")
    L.append("")
    L.append("`precision global`: each trial sets `ml_set_global_memory_limit(baseline + "
             "uniform 1–4 MiB)` and runs tasks under `ml_limit_global_memory` that keep "
             "allocating random-size blocks; each task tracks the live heap itself "
             "(baseline + `malloc_usable_size` of every block) and records the bytes it "
             "requested after the live heap went above the limit, up to its first refused "
             "allocation. Everything is freed after each trial. Promise: < 256 KiB; "
             "implementation: a check every 32 KiB of allocation.")
    L.append("")
    rows = []
    gdat = []
    for (pname, thr), fs in ggroups.items():
        d = [int(f[8]) for f in fs]
        nb = [int(f[9]) for f in fs]
        early = sum(int(f[7]) for f in fs)
        bad = sum(1 for f in fs if f[5] != "1")
        rows.append((pname, thr, len(fs), kib(median(d)), kib(pct(d, 99)), kib(pct(d, 99.9)),
                     kib(max(d)), max(nb), early, bad,
                     passfail(max(d) < 256 * 1024 and bad == 0)))
        h = defaultdict(int)
        for x in d:
            h[x // 1024] += 1
        gdat.append("\n".join("%d %d" % kv for kv in sorted(h.items())))
    L.append(table(["blocks", "threads", "task runs", "median", "p99", "p99.9", "max",
                    "max blocks after", "early", "status ≠ ML_MEMORY_LIMIT", "< 256 KiB"], rows))
    L.append("")
    L.append("\"early\": a task refused while its own tracking did not yet see the heap above the "
             "limit. With one thread that would be a bug; with two it is expected now and then, "
             "because memlimits reads the other thread's jemalloc counters the moment its malloc "
             "returns, before that thread adds the block to the shared tracking.")
    L.append("")
    titles = ["%s, %d thread(s)" % k for k in ggroups]
    if gdat:
        plots.plot("detection", """
set title 'Global limit: bytes a task allocated after the heap crossed the limit, until interrupted'
set xlabel 'KiB allocated after crossing (1 KiB bins)'
set ylabel 'task runs'
set logscale y
set yrange [0.8:*]
set xrange [0:270]
set grid
set arrow from 256, graph 0 to 256, graph 1 nohead lc rgb 'red' dt 2
set label 'promise: 256 KiB' at 195, graph 0.6 tc rgb 'red'
set key at graph 0.95, graph 0.45
set arrow from 32, graph 0 to 32, graph 1 nohead lc rgb 'gray' dt 3
set label 'check interval 32 KiB' at 34, graph 0.85
plot """ + ", ".join("DATA index %d using 1:2 with steps lw 2 title '%s'" % (i, t)
                     for i, t in enumerate(titles)),
                   "\n\n\n".join(gdat) + "\n")
        L.append("![detection distance](detection.png)")
        L.append("")

    # ---- precision: sampler
    L.append("### (c) Sampler: estimated vs exact bytes allocated")
    L.append("")
    L.append("`precision sampler 100000000 SEED` allocates 100 MB in random 1–65536 B blocks, "
             "run with `MEMLIMITS_REPORT=json:PATH MEMLIMITS_SEED=SEED`; from each JSON report: "
             "estimate = samples × sample_mean, exact = allocated_bytes. Theory: samples ~ "
             "Binomial(n, p), p = 1/mean gap, relative sd = sqrt((1 − p)/(n p)).")
    L.append("")
    rows = []
    samp_stats = {}
    for label, js in samp.items():
        errs, theo, nbytes, nsamp = [], [], [], []
        for j in js:
            n = j["allocated_bytes"]
            mean = j["sample_mean"]
            est = j["samples"] * mean
            errs.append((est - n) / float(n))
            pp = 1.0 / mean
            theo.append(math.sqrt((1 - pp) / (n * pp)))
            nbytes.append(n)
            nsamp.append(j["samples"])
        emp = sd(errs)
        th = sum(theo) / len(theo)
        within = sum(1 for e, t in zip(errs, theo) if abs(e) <= 2 * t)
        samp_stats[label] = (emp, th)
        rows.append((label.replace("default", "mean gap %d (default)" % js[0]["sample_mean"])
                     .replace("gap8000", "mean gap 8000"),
                     len(js), "%.0f" % (sum(nbytes) / len(nbytes)),
                     "%.0f" % (sum(nsamp) / len(nsamp)),
                     "%+.3f%%" % (100 * sum(errs) / len(errs)), "%.3f%%" % (100 * emp),
                     "%.3f%%" % (100 * th), "%.3f%%" % (100 * max(abs(e) for e in errs)),
                     "%d/%d" % (within, len(errs))))
    L.append(table(["sampling", "seeds", "exact bytes (mean)", "samples (mean)",
                    "mean rel. error", "sd of rel. error (measured)",
                    "sd (theory, Binomial)", "max |error|", "within ±2 sd"], rows))
    L.append("")

    # ---- comparison with memprof-limits
    L.append("### (d) memlimits against memprof-limits' published analysis")
    L.append("")
    L.append("memprof-limits figures: its statistical analysis page (shared/reference/"
             "memprof-limits-spec.md, section 2), default rate 10⁻⁴ samples per word.")
    L.append("")
    g_all = [int(f[8]) for f in glob]
    g1 = [int(f[8]) for f in glob if f[1] == "1"]
    emp_def = samp_stats.get("default", (float("nan"), float("nan")))
    crows = [
        ("allocation limit: error at the limit",
         "statistical: (l−N)/N ≈ 6.2% at 10⁴ samples (l = 100 Mw), 0.6% at 10⁶, 1.6× at 10 "
         "samples (t = 10⁻⁹); a task that stays under l is interrupted with probability t",
         "exact: %s trials, overshoot 0 B in all, %d violations" % (
             over_sum[0].get("measured") if over_sum else "?", ov_viol)),
        ("allocation limit: smallest useful limit",
         "≈ 200 kw (1.6 MB) for l < 10× N; limits ≤ 60 kw \"too inaccurate to be useful\"",
         "any: limits from 1 B measured exact"),
        ("allocation limit: determinism",
         "interruption point random (l is its median)",
         "the same allocation on every run: the crossing one"),
        ("global limit: distance after crossing",
         "64% chance of an interrupt within 80 KiB; < 10⁻⁹ chance of none after 1.62 MiB; "
         "< 10⁻⁵⁰ after 8.8 MiB",
         "max %s, p99.9 %s over %d task runs (1 thread: max %s); promise 256 KiB" % (
             kib(max(g_all or [0])), kib(pct(g_all, 99.9) if g_all else 0), len(g_all),
             kib(max(g1 or [0])))),
        ("sampler: relative error of bytes estimated from samples",
         "Binomial, same model (1/√k at k samples: 1% at 10⁴ samples)",
         "measured sd %.2f%% vs theory %.2f%% at ~%d samples (100 MB, default gap)" % (
             100 * emp_def[0], 100 * emp_def[1],
             (sum(j["samples"] for j in samp.get("default", [])) /
              max(1, len(samp.get("default", []))))) if samp.get("default") else "—"),
        ("limits depend on the sampler",
         "yes: every limit is a count of samples",
         "no: limits count bytes exactly; the sampler only feeds the report"),
    ]
    L.append(table(["question", "memprof-limits (published)", "memlimits (measured here)"],
                   crows, ["l", "l", "l"]))
    L.append("")

    # ---- issue 3 latency
    L.append("## Interrupt latency and task cost (issue 3)")
    L.append("")
    L.append("`latency token MODE`: time from `ml_token_set` on the main thread to `ml_run` "
             "returning on the worker (CLOCK_MONOTONIC both sides), one worker thread, the token "
             "set 0.1–1 ms after the task is running (blocked in read for 2 ms more in `read`).")
    L.append("")
    rows = []
    tdat = []
    for s in tok_sum:
        rows.append((s["mode"], s["trials"], "%.1f µs" % (int(s["median_ns"]) / 1e3),
                     "%.1f µs" % (int(s["p99_ns"]) / 1e3), "%.1f µs" % (int(s["max_ns"]) / 1e3),
                     "%.1f µs" % (int(s["min_ns"]) / 1e3), s["not_token_status"]))
    for mode in OrderedDict.fromkeys(f[0] for f in tok):
        xs = sorted(int(f[2]) / 1e3 for f in tok if f[0] == mode)
        tdat.append("\n".join("%g %g" % (x, (i + 1) / float(len(xs))) for i, x in enumerate(xs)))
    L.append(table(["task", "trials", "median", "p99", "max", "min", "status ≠ ML_TOKEN"], rows))
    L.append("")
    L.append("Modes: **alloc** — allocating loop (64 B malloc/free), default ENOMEM delivery: it "
             "notices at its next event (≤ 32 KiB of allocation); **alloc-wake** — the same with "
             "ML_WAKE (the waker thread also signals it); **read** — blocked in `read()` on an "
             "empty pipe with ML_WAKE: the wake-up signal makes it return EINTR.")
    L.append("")
    if tdat:
        modes = list(OrderedDict.fromkeys(f[0] for f in tok))
        plots.plot("token_latency", """
set title 'Token set -> task returned (CDF)'
set xlabel 'microseconds'
set ylabel 'fraction of trials'
set logscale x
set grid
set key bottom right
plot """ + ", ".join("DATA index %d using 1:2 with steps lw 2 title '%s'" % (i, m)
                     for i, m in enumerate(modes)), "\n\n\n".join(tdat) + "\n")
        L.append("![token latency](token_latency.png)")
        L.append("")
    if fp_sum:
        L.append("Fast path with a task active vs none (`latency fastpath`: malloc_bench's loop "
                 "in one process, the three variants interleaved round-robin):")
        L.append("")
        rows = [(s["variant"], s["rounds"], "%s ns" % s["median_ns"],
                 "%s–%s" % (s["min_ns"], s["max_ns"]), s["ratio"]) for s in fp_sum]
        L.append(table(["variant", "rounds", "median per op (free+malloc)", "min–max",
                        "ratio to none"], rows))
        L.append("")

    # ---- why (static analysis, numbers filled from this run)
    L.append("## Why: the misses explained")
    L.append("")
    why_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "WHY.md")
    if os.path.exists(why_path):
        L.append(open(why_path).read().strip())
        L.append("")

    if plots.errors:
        L.append("## Plot errors")
        L.append("")
        for e in plots.errors:
            L.append("- " + e)
        L.append("")
    with open(os.path.join(outdir, "REPORT.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    print("report: %s (%d plots%s)" % (os.path.join(outdir, "REPORT.md"), len(plots.made),
                                       ", %d plot errors" % len(plots.errors)
                                       if plots.errors else ""))


if __name__ == "__main__":
    main()
