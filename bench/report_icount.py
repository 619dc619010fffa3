"""report_icount: the instruction counts of bench/run_icount.sh (callgrind, differenced N/2N runs)
for report.py: instructions per operation of every entry point under glibc, bare jemalloc and
memlimits, the issue-12 targets on them, and the figures of the library before issue 12
(results/baseline/icount-*.tsv, measured with the same harness) beside today's.
"""
import glob
import os
from collections import OrderedDict

from report_common import passfail, table

ICOUNT_CONFIGS = ["glibc", "jemalloc", "memlimits", "memlimits+limits"]

# Issue 12's targets: memlimits with limits set / bare jemalloc, per operation.
ICOUNT_TARGETS = [
    ("malloc + free, calloc + free, C++ new/delete", ["malloc", "calloc", "new", "new_array"],
     1.07),
    ("realloc", ["realloc"], 1.06),
    ("aligned entry points", ["posix_memalign", "aligned_alloc", "memalign", "new_aligned"], 1.08),
    ("4 MiB malloc + free", ["malloc_4m"], 1.10),
]


def read_icount(path):
    """-> (OrderedDict {op: description}, {(op, config): instructions per op or None})."""
    ops, vals = OrderedDict(), {}
    if not os.path.exists(path):
        return ops, vals
    for line in open(path):
        f = line.rstrip("\n").split("\t")
        if len(f) < 7:
            continue
        ops.setdefault(f[1], f[7] if len(f) > 7 else "")
        try:
            vals[(f[1], f[2])] = float(f[6])
        except ValueError:
            vals[(f[1], f[2])] = None
    return ops, vals


def baseline(outdir):
    """-> (name, ops, vals) of the newest baseline file, or None."""
    files = sorted(glob.glob(os.path.join(outdir, "baseline", "icount-*.tsv")))
    if not files:
        return None
    name = os.path.basename(files[-1])[len("icount-"):-len(".tsv")]
    ops, vals = read_icount(files[-1])
    return name, ops, vals


def ratio(vals, op, config="memlimits+limits"):
    v, b = vals.get((op, config)), vals.get((op, "jemalloc"))
    if v is None or not b:
        return None
    return v / b


class Icount:
    def __init__(self, outdir):
        self.ops, self.vals = read_icount(os.path.join(outdir, "raw", "icount.tsv"))
        self.base = baseline(outdir)


def icount_target_rows(ic):
    """Rows (target, measured, result) for the targets table."""
    rows = []
    if not ic.ops:
        return rows
    for name, ops, limit in ICOUNT_TARGETS:
        got = [(op, ratio(ic.vals, op)) for op in ops if ratio(ic.vals, op) is not None]
        if not got:
            continue
        worst = max(got, key=lambda x: x[1])
        rows.append(("instructions per operation, memlimits+limits / bare jemalloc: %s ≤ %.2f"
                     % (name, limit), "worst: %s %.3f" % worst, passfail(worst[1] <= limit)))
    return rows


def fmt(v):
    return "—" if v is None else "%.1f" % v


def icount_section(ic):
    L = ["## Instructions per operation (callgrind): the stable figure", ""]
    if not ic.ops:
        L += ["Not measured (valgrind missing, or `ICOUNT=0`).", ""]
        return L
    L.append("`bench/run_icount.sh BUILD_DIR` (run by `run_all.sh`): each operation of "
             "`bench/icount` (C) and `bench/icount_cxx` (C++) runs N and 2N times under "
             "`valgrind --tool=callgrind`, and instructions per operation = (I(2N) − I(N)) / N, "
             "so start-up and exit cancel out; memlimits runs with `MEMLIMITS_SEED=1` so that its "
             "events fall on the same allocations in every run. The counts include a few "
             "instructions of the loop itself (a xorshift step, a slot), the same under every "
             "allocator. They do not depend on the machine's load, which the timings above do. "
             "memlimits+limits has `MEMLIMITS_HEAP=64G MEMLIMITS_ALLOC=1000T` set (never firing). "
             "— : the entry point does not exist there (jemalloc's API under glibc).")
    L.append("")
    hdr = ["operation"] + ICOUNT_CONFIGS + ["memlimits+limits / jemalloc"]
    if ic.base:
        hdr.append("before (%s) / jemalloc" % ic.base[0])
    rows = []
    for op, what in ic.ops.items():
        r = ratio(ic.vals, op)
        row = ["`%s`: %s" % (op, what)] + [fmt(ic.vals.get((op, c))) for c in ICOUNT_CONFIGS]
        row.append("—" if r is None else "**%.3f**" % r)
        if ic.base:
            rb = ratio(ic.base[2], op)
            row.append("—" if rb is None else "%.3f" % rb)
        rows.append(row)
    L.append(table(hdr, rows, ["l"] + ["r"] * (len(hdr) - 1)))
    L.append("")
    if ic.base:
        L.append("\"before\": the library at commit %s (before issue 12), measured with the same "
                 "harness: `MEMLIMITS_LIB=<that build>/libmemlimits.so bench/run_icount.sh BUILD_DIR "
                 "bench/results/baseline/icount-%s.tsv`. Its jemalloc-API and C++ rows measure "
                 "what a program got then: jemalloc's API was not exported, and C++ went through "
                 "libstdc++'s operators into memlimits' malloc." % (ic.base[0], ic.base[0]))
        L.append("")
    return L
