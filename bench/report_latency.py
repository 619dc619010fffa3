"""report_latency: the report's section on interrupt latency (a token set to its task's return)
and on the cost of the fast path inside a task."""
from collections import OrderedDict

from report_common import table


def latency_section(res, plots):
    tok, tok_sum, fp_sum = res.tok, res.tok_sum, res.fp_sum
    L = []
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
    return L
