#!/usr/bin/env bash
# tree_build.sh: what tree mode costs a parallel build (issue 11's performance target: tree mode
# within 1.03x of --per-process in wall time).
#
#   bench/tree_build.sh BUILD_DIR
#
# Builds a real C project, memlimits' own sources (lib/*.c and tools/*.c: 24 files compiled with
# gcc -O2, archived, the launcher linked), with `make -j2` from clean, under three
# configurations: no launcher, `memlimit --per-process --heap 4G --alloc 400G`, and tree mode
# with the same limits (which do not fire). The configurations are interleaved round-robin, the
# first one rotating each round; RUNS rounds (default 7, at least 5). The two-core speedup
# check (malloc_bench --spin) runs at the start and the end: discard wall times taken while it
# is well below 2. CPU time (user + system of the whole tree, which the launcher and make wait
# for) is reported too: on a shared machine it moves far less than wall time with other load.
# Writes bench/results/tree_build.txt (medians, min-max, ratios) and the raw times to
# bench/results/raw/tree_build.tsv.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build=$(cd "${1:?usage: tree_build.sh BUILD_DIR}" && pwd)
runs=${RUNS:-7}
out=${OUT:-$here/results}
memlimit=$build/tools/memlimit
[ -x "$memlimit" ] || { echo "tree_build.sh: no $memlimit: build first" >&2; exit 1; }
mkdir -p "$out/raw"

work=$(mktemp -d /tmp/ml_tree_build.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src" "$work/include"
cp "$src"/lib/*.c "$src"/lib/*.h "$src"/tools/*.c "$src"/tools/*.h "$work/src/"
cp "$src"/include/memlimits.h "$work/include/"
# Configuration the sources expect from CMake.
cat >"$work/Makefile" <<'EOF'
CFLAGS = -O2 -std=gnu11 -fPIC -Isrc -Iinclude -DML_VERSION='"0.1.0"' -DML_LAUNCHER \
         -DML_BIN_TO_LIB='"../lib"' -DML_MULTIARCH='""' -DML_LIBRARY_SONAME='"libmemlimits.so.0"'
ENGINE = $(patsubst %.c,%.o,$(filter-out src/memlimit.c src/inspect.c src/tree.c \
         src/tree_report.c,$(wildcard src/*.c)))
TOOLS = src/memlimit.o src/inspect.o src/tree.o src/tree_report.o src/options.o src/fmt.o \
        src/host.o src/ledger.o
all: libengine.a memlimit
libengine.a: $(ENGINE)
	ar rcs $@ $^
memlimit: $(TOOLS)
	cc -o $@ $^ -lpthread
clean:
	rm -f src/*.o libengine.a memlimit
EOF

spin() {
    "$build/bench/malloc_bench" --spin "${SPIN_ITERS:-200000000}" 2>/dev/null || echo "spin: n/a"
}

configs=(none per-process tree)
# Prints "WALL CPU" in seconds.
run_one() {
    local config=$1 times=$work/times
    make -s -C "$work" clean
    local launch=()
    case $config in
    per-process) launch=("$memlimit" --per-process --heap 4G --alloc 400G --) ;;
    tree) launch=("$memlimit" --heap 4G --alloc 400G --) ;;
    esac
    /usr/bin/time -f '%e %U %S' -o "$times" "${launch[@]}" make -s -j2 -C "$work" all >/dev/null
    awk '{ printf "%s %.2f", $1, $2 + $3 }' "$times"
}

speed_start=$(spin)
echo "speedup check (start): $speed_start"
raw=$out/raw/tree_build.tsv
printf 'round\tconfig\tseconds\tcpu_seconds\n' >"$raw"
run_one none >/dev/null # warm the caches
for ((r = 0; r < runs; r++)); do
    for ((k = 0; k < 3; k++)); do
        c=${configs[$(((r + k) % 3))]}
        t=$(run_one "$c")
        printf '%d\t%s\t%s\t%s\n' "$r" "$c" "${t% *}" "${t#* }" >>"$raw"
        printf '%s %s  ' "$c" "$t"
    done
    echo
done
speed_end=$(spin)
echo "speedup check (end): $speed_end"

{
    echo "# make -j2 of memlimits' sources (24 C files), $runs interleaved rounds"
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) cores"
    echo "speedup check: start $speed_start; end $speed_end"
    awk -F'\t' 'NR > 1 { t[$2] = t[$2] " " $3; u[$2] = u[$2] " " $4 }
        function median(s, v, n, i, j, x) {
            n = split(s, v, " ")
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] + 0 < v[i] + 0) { x = v[i]; v[i] = v[j]; v[j] = x }
            lo = v[1]; hi = v[n]; count = n
            return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        }
        END {
            for (c in t) {
                med[c] = median(t[c]); l = lo; h = hi
                cpu[c] = median(u[c])
                printf "%-12s wall median %.3f s (min %.3f, max %.3f, n=%d); cpu median %.2f s (min %.2f, max %.2f)\n", c, med[c], l, h, count, cpu[c], lo, hi
            }
            printf "wall tree / per-process: %.3f (target <= 1.03)\n", med["tree"] / med["per-process"]
            printf "wall per-process / none: %.3f\n", med["per-process"] / med["none"]
            printf "cpu  tree / per-process: %.3f\n", cpu["tree"] / cpu["per-process"]
            printf "cpu  per-process / none: %.3f\n", cpu["per-process"] / cpu["none"]
        }' "$raw" | sort
} | tee "$out/tree_build.txt"
