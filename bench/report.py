#!/usr/bin/env python3
"""report.py: turns the raw data of bench/run_all.sh into REPORT.md and PNG plots (gnuplot).

usage: report.py RESULTS_DIR [--gnuplot GNUPLOT]

Reads RESULTS_DIR/raw/ (machine.txt, speedup.tsv, suite.tsv, study.tsv, perf.txt, icount.tsv,
malloc_bench.txt, overshoot.txt, global.txt, sampler.jsonl, token.txt, fastpath.txt) and writes
RESULTS_DIR/REPORT.md and RESULTS_DIR/*.png. Standard library only.
"""
# The work is split by concern into the report_*.py modules beside this script: report_load
# (reading raw/), report_common (statistics and Markdown tables), report_plots (gnuplot),
# report_targets (title, warning and targets), report_icount (instruction counts), report_suite
# (machine, workloads, configuration study, perf, malloc_bench), report_precision and
# report_latency. Each section is a function
# returning its lines of Markdown; main() puts them in the order of the report.
import os
import sys

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree

from report_icount import Icount, icount_section  # noqa: E402
from report_latency import latency_section  # noqa: E402
from report_load import Results  # noqa: E402
from report_plots import Plots  # noqa: E402
from report_precision import precision_section  # noqa: E402
from report_suite import (machine_section, malloc_bench_section, perf_section,  # noqa: E402
                          study_section, suite_section, workloads_section)
from report_targets import header_section, targets_section  # noqa: E402


def why_section():
    """The hand-written analysis of the misses, bench/WHY.md, as it is."""
    L = []
    L.append("## Why: the misses explained")
    L.append("")
    why_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "WHY.md")
    if os.path.exists(why_path):
        L.append(open(why_path).read().strip())
        L.append("")
    return L


def plot_errors_section(plots):
    L = []
    if plots.errors:
        L.append("## Plot errors")
        L.append("")
        for e in plots.errors:
            L.append("- " + e)
        L.append("")
    return L


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    outdir = sys.argv[1]
    gnuplot = "gnuplot"
    if "--gnuplot" in sys.argv:
        gnuplot = sys.argv[sys.argv.index("--gnuplot") + 1]
    res = Results(outdir)
    res.icount = Icount(outdir)
    plots = Plots(outdir, gnuplot)
    L = (header_section(res) + targets_section(res) + machine_section(res) +
         workloads_section(res) + suite_section(res, plots) + study_section(res) +
         perf_section(res) + icount_section(res.icount) + malloc_bench_section(res) +
         precision_section(res, plots) +
         latency_section(res, plots) + why_section())
    L += plot_errors_section(plots)  # after every plot was drawn
    with open(os.path.join(outdir, "REPORT.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    print("report: %s (%d plots%s)" % (os.path.join(outdir, "REPORT.md"), len(plots.made),
                                       ", %d plot errors" % len(plots.errors)
                                       if plots.errors else ""))


if __name__ == "__main__":
    main()
