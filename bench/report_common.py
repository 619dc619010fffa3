"""report_common: the statistics and Markdown helpers of report.py's sections."""
import math


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
