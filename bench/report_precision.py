"""report_precision: the report's precision sections: the allocation limits' overshoot, the
global memory limit's detection distance, the sampler's error, and memlimits against the
published analysis of memprof-limits."""
import math
from collections import OrderedDict, defaultdict

from report_common import kib, median, passfail, pct, sd, table


def precision_section(res, plots):
    return (overshoot_section(res, plots) + detection_section(res, plots) + sampler_section(res) +
            comparison_section(res))


def overshoot_totals(over_sum):
    """-> (violations, largest overshoot in bytes) over the summaries of `precision overshoot`."""
    ov_viol = sum(int(s.get("violations", 0)) for s in over_sum)
    ov_max = max([int(s.get("overshoot_max", 0)) for s in over_sum] or [0])
    return ov_viol, ov_max


def overshoot_section(res, plots):
    """(a): `precision overshoot`, by allocation pattern, and its plot."""
    over, over_sum = res.over, res.over_sum
    L = []
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
    return L


def detection_section(res, plots):
    """(b): `precision global`, by block pattern and thread count, and its plot."""
    glob = res.glob
    ggroups = OrderedDict()
    for f in glob:
        key = (f[0], int(f[1]))
        ggroups.setdefault(key, []).append(f)
    L = []
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
    return L


def sampler_summary(js):
    """-> dict of the sampler's JSON reports `js` (one sampling): errs, the relative errors of
    the estimates; theo, their sd in theory; nbytes and nsamp, the exact bytes and the samples;
    emp, the measured sd of errs; th, the mean of theo."""
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
    return dict(errs=errs, theo=theo, nbytes=nbytes, nsamp=nsamp, emp=sd(errs),
                th=sum(theo) / len(theo))


def sampler_section(res):
    """(c): the sampler's estimate against the exact count, by mean gap."""
    samp = res.samp
    L = []
    L.append("### (c) Sampler: estimated vs exact bytes allocated")
    L.append("")
    L.append("`precision sampler 100000000 SEED` allocates 100 MB in random 1–65536 B blocks, "
             "run with `MEMLIMITS_REPORT=json:PATH MEMLIMITS_SEED=SEED`; from each JSON report: "
             "estimate = samples × sample_mean, exact = allocated_bytes. Theory: samples ~ "
             "Binomial(n, p), p = 1/mean gap, relative sd = sqrt((1 − p)/(n p)).")
    L.append("")
    rows = []
    for label, js in samp.items():
        s = sampler_summary(js)
        errs, theo, nbytes, nsamp, emp, th = (s["errs"], s["theo"], s["nbytes"], s["nsamp"],
                                              s["emp"], s["th"])
        within = sum(1 for e, t in zip(errs, theo) if abs(e) <= 2 * t)
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
    return L


def comparison_section(res):
    """(d): memlimits' measured figures against memprof-limits' published ones."""
    glob, over_sum, samp = res.glob, res.over_sum, res.samp
    ov_viol = overshoot_totals(over_sum)[0]
    L = []
    L.append("### (d) memlimits against memprof-limits' published analysis")
    L.append("")
    L.append("memprof-limits figures: its statistical analysis page (shared/reference/"
             "memprof-limits-spec.md, section 2), default rate 10⁻⁴ samples per word.")
    L.append("")
    g_all = [int(f[8]) for f in glob]
    g1 = [int(f[8]) for f in glob if f[1] == "1"]
    default = sampler_summary(samp["default"]) if samp.get("default") else None
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
             100 * default["emp"], 100 * default["th"],
             (sum(j["samples"] for j in samp.get("default", [])) /
              max(1, len(samp.get("default", []))))) if default else "—"),
        ("limits depend on the sampler",
         "yes: every limit is a count of samples",
         "no: limits count bytes exactly; the sampler only feeds the report"),
    ]
    L.append(table(["question", "memprof-limits (published)", "memlimits (measured here)"],
                   crows, ["l", "l", "l"]))
    L.append("")
    return L
