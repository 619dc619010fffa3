"""report_load: reads what bench/run_all.sh left in RESULTS_DIR/raw/ for report.py.

A missing file reads as empty: the report then says what it could not measure instead of
failing. load() gathers everything into one Results; stat(), med() and best_of_two() summarise
the runs of a workload under a configuration.
"""
import json
import os
from collections import OrderedDict, defaultdict

from report_common import median

# The configurations of the workload suite, in the order of the report's columns.
CONFIGS = ["glibc", "jemalloc", "memlimits", "memlimits+limits", "memlimits+task",
           "memlimits+conf"]


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


def read_speedup(path):
    """-> {label: two-thread speedup} of the checks at the start and at the end."""
    speed = OrderedDict()
    if os.path.exists(path):
        for line in open(path):
            label, rest = line.rstrip("\n").split("\t", 1)
            kv = dict(x.split("=", 1) for x in rest.split())
            speed[label] = float(kv.get("speedup", "nan"))
    return speed


def read_sampler(path):
    """-> {label: [JSON report]} of the sampler runs ("LABEL SEED JSON" lines)."""
    samp = defaultdict(list)
    if os.path.exists(path):
        for line in open(path):
            parts = line.split(" ", 2)
            if len(parts) < 3:
                continue
            try:
                j = json.loads(parts[2])
            except ValueError:
                continue
            samp[parts[0]].append(j)
    return samp


def read_perf(path):
    """-> {(workload, config): dict(cpu, pf, cs, cyc, ins)} from `perf stat`."""
    pdat = {}
    if os.path.exists(path):
        for line in open(path):
            f = line.rstrip("\n").split("\t")
            if len(f) >= 7:
                try:
                    pdat[(f[0], f[1])] = dict(cpu=float(f[2]), pf=int(f[3]), cs=int(f[4]),
                                              cyc=float(f[5]), ins=float(f[6]))
                except ValueError:
                    pass
    return pdat


class Results:
    """Everything in RESULTS_DIR/raw/, parsed. Attributes: raw (the directory), machine, quick,
    candidate, speed and speed_ok (the speedup checks), suite and study (runs by workload and
    configuration) with their failures, workloads (the suite's, in order), over/over_sum,
    glob/glob_sum, tok/tok_sum (data and summary lines of the precision and latency programs),
    fp_sum (the fast-path summary), samp (sampler reports) and perf (perf stat counts)."""

    def __init__(self, outdir):
        raw = self.raw = os.path.join(outdir, "raw")
        self.machine = read_kv(os.path.join(raw, "machine.txt"))
        self.quick = self.machine.get("quick", "0") == "1"
        self.candidate = self.machine.get("candidate", "?")
        self.speed = read_speedup(os.path.join(raw, "speedup.tsv"))
        self.speed_ok = all(v >= 1.8 for v in self.speed.values()) and len(self.speed) == 2
        self.suite, self.suite_fails = read_runs(os.path.join(raw, "suite.tsv"))
        self.study, self.study_fails = read_runs(os.path.join(raw, "study.tsv"))
        self.workloads = list(OrderedDict.fromkeys(w for (w, c) in self.suite))
        self.over_sum = summary_lines(os.path.join(raw, "overshoot.txt"))
        self.over = data_lines(os.path.join(raw, "overshoot.txt"))
        self.glob_sum = summary_lines(os.path.join(raw, "global.txt"))
        self.glob = data_lines(os.path.join(raw, "global.txt"))
        self.tok_sum = summary_lines(os.path.join(raw, "token.txt"))
        self.tok = data_lines(os.path.join(raw, "token.txt"))
        self.fp_sum = summary_lines(os.path.join(raw, "fastpath.txt"))
        self.samp = read_sampler(os.path.join(raw, "sampler.jsonl"))
        self.perf = read_perf(os.path.join(raw, "perf.tsv"))


def stat(runs, w, c, key="elapsed"):
    """-> (median, min, max, count) of `key` over the runs of workload w under config c."""
    xs = [r[key] for r in runs.get((w, c), [])]
    if not xs:
        return None
    return median(xs), min(xs), max(xs), len(xs)


def med(runs, w, c, key="elapsed"):
    s = stat(runs, w, c, key)
    return s[0] if s else float("nan")


def best_of_two(runs, w, key):
    """The better of the glibc and bare jemalloc medians: what memlimits is held to."""
    return min(med(runs, w, "glibc", key), med(runs, w, "jemalloc", key))
