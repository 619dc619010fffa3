#!/usr/bin/env bash
# tree_pythonmalloc.sh: what PYTHONMALLOC=malloc, which memlimit sets for the tree, costs CPython.
#
#   bench/tree_pythonmalloc.sh BUILD_DIR
#
# Runs bench/wl_containers.py (lists of tuples, dicts of strings, sets, nested lists, a sort)
# under /usr/bin/python3 in four configurations, interleaved round-robin for RUNS rounds (default
# 5): without memlimit with CPython's own small-object allocator (pymalloc) and with
# PYTHONMALLOC=malloc (glibc), and under memlimit (tree mode, a budget that does not fire) with
# its default PYTHONMALLOC=malloc and with PYTHONMALLOC=pymalloc kept from the user. Reports each
# one's median elapsed time (the workload's own clock) and peak RSS, and the ratios. Writes
# bench/results/tree_pythonmalloc.txt and raw/tree_pythonmalloc.tsv.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:?usage: tree_pythonmalloc.sh BUILD_DIR}" && pwd)
runs=${RUNS:-5}
out=${OUT:-$here/results}
python=${PYTHON:-/usr/bin/python3}
memlimit=$build/tools/memlimit
mkdir -p "$out/raw"
raw=$out/raw/tree_pythonmalloc.tsv
printf 'round\tconfig\telapsed_s\tmaxrss_kb\n' >"$raw"

configs=(plain-pymalloc plain-malloc memlimit-malloc memlimit-pymalloc)
run_one() {
    local config=$1 line
    local cmd=("$python" "$here/wl_containers.py" 6 200000 1)
    case $config in
    plain-pymalloc) line=$(env -u PYTHONMALLOC /usr/bin/time -f 'rss=%M' "${cmd[@]}" 2>&1) ;;
    plain-malloc) line=$(PYTHONMALLOC=malloc /usr/bin/time -f 'rss=%M' "${cmd[@]}" 2>&1) ;;
    memlimit-malloc) line=$(env -u PYTHONMALLOC /usr/bin/time -f 'rss=%M' "$memlimit" --alloc 400G -- "${cmd[@]}" 2>&1) ;;
    memlimit-pymalloc) line=$(PYTHONMALLOC=pymalloc /usr/bin/time -f 'rss=%M' "$memlimit" --alloc 400G -- "${cmd[@]}" 2>&1) ;;
    esac
    local e r
    e=$(sed -n 's/.*elapsed_s=\([0-9.]*\).*/\1/p' <<<"$line" | head -1)
    r=$(sed -n 's/.*rss=\([0-9]*\).*/\1/p' <<<"$line" | tail -1)
    printf '%s\t%s' "$e" "$r"
}

for ((r = 0; r < runs; r++)); do
    for ((k = 0; k < 4; k++)); do
        c=${configs[$(((r + k) % 4))]}
        v=$(run_one "$c")
        printf '%d\t%s\t%s\n' "$r" "$c" "$v" >>"$raw"
        printf '%s %s  ' "$c" "${v%%$'\t'*}"
    done
    echo
done

{
    echo "# /usr/bin/python3 bench/wl_containers.py 6 200000 1, $runs interleaved rounds"
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) cores"
    awk -F'\t' 'NR > 1 { t[$2] = t[$2] " " $3; m[$2] = m[$2] " " $4 }
        function median(s, v, n, i, j, x) {
            n = split(s, v, " ")
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] + 0 < v[i] + 0) { x = v[i]; v[i] = v[j]; v[j] = x }
            lo = v[1]; hi = v[n]
            return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        }
        END {
            for (c in t) {
                med[c] = median(t[c]); l = lo; h = hi
                rss[c] = median(m[c])
                printf "%-18s median %.3f s  min %.3f  max %.3f  peak RSS %d KiB\n", c, med[c], l, h, rss[c]
            }
            printf "PYTHONMALLOC=malloc under memlimit / pymalloc under memlimit: %.3f\n", med["memlimit-malloc"] / med["memlimit-pymalloc"]
            printf "PYTHONMALLOC=malloc under memlimit / plain python (pymalloc):  %.3f\n", med["memlimit-malloc"] / med["plain-pymalloc"]
            printf "PYTHONMALLOC=malloc without memlimit / plain python (pymalloc): %.3f\n", med["plain-malloc"] / med["plain-pymalloc"]
        }' "$raw" | sort
} | tee "$out/tree_pythonmalloc.txt"
