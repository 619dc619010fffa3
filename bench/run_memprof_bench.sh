#!/usr/bin/env bash
# run_memprof_bench.sh: the profiler's performance figures (issue 10, README "Profiling").
#  1. No profile: callgrind instruction counts of malloc_bench's 1-thread churn preloaded with
#     BASE_LIB (memlimits before the profiler) and with this build's library, at OPS and 2*OPS;
#     the difference divided by OPS is the cost of one malloc + one free, startup excluded.
#     Then memprof_bench churn under callgrind, 8 and 70 calls deep (stacks of 12 and 74 frames):
#     none / gap / depth16 / depth64 with MEMLIMITS_UNWIND=auto (the frame-pointer walker:
#     memprof_bench is built with frame pointers) and depth16 / depth64 with libunwind; and
#     memprof_bench unwind D (every allocation sampled, 74 frames deep) for D = 0, 16, 64 under
#     both: instructions per captured stack = per sampled allocation at D minus at 0.
#  2. memprof_bench churn none / gap / depth16 / depth64 (auto) / depth64 (libunwind),
#     interleaved, RUNS rounds: medians, min-max, ratios to none, and ns per sample.
#  3. memprof_bench unwind 0 / 16 / 64 (every allocation sampled) under auto and libunwind,
#     interleaved: ns per captured stack = median(depth D) - median(depth 0).
#  Instruction counts do not depend on the machine's load; the timings do (read the speedup
#  checks: well below 2, another tenant held the second core).
# Usage: run_memprof_bench.sh BUILD_DIR [BASE_LIB] [RUNS=7]
set -euo pipefail
build=${1:?usage: run_memprof_bench.sh BUILD_DIR [BASE_LIB] [RUNS]}
base_lib=${2:-}
runs=${3:-7}
lib=$build/libmemlimits.so
mb=$build/bench/malloc_bench
pb=$build/bench/memprof_bench
ops=${OPS:-10000000}
export MEMLIMITS_SEED=${MEMLIMITS_SEED:-1} # the same samples in every run

median() { sort -g | awk '{v[NR]=$1} END {printf "%.3f (%.3f-%.3f)", (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2), v[1], v[NR]}'; }
med() { sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }

echo "== speedup check (start)"; "$mb" --spin 100000000 2>&1 | tail -1

if command -v valgrind >/dev/null; then
    cg_ops=200000
    # Instructions of a whole run (valgrind's "Collected"); the preload goes to the client.
    ir() { env ${1:+LD_PRELOAD="$1"} valgrind --tool=callgrind --callgrind-out-file=/dev/null \
               "${@:2}" 2>&1 | awk '/Collected/ {print $4}'; }
    echo "== 1. callgrind: instructions per malloc+free (run of 2x minus run of 1x, / ${cg_ops})"
    for which in base new; do
        l=$lib; [ $which = base ] && l=$base_lib
        [ -n "$l" ] || continue
        a=$(ir "$l" "$mb" 1 $cg_ops 1) b=$(ir "$l" "$mb" 1 $((2 * cg_ops)) 1)
        echo "malloc_bench, no profile, $which library: $(awk -v a="$a" -v b="$b" -v n=$cg_ops 'BEGIN {printf "%.2f", (b - a) / n}') instructions per op"
    done
    for frames in 8 70; do
        for m in none gap depth16 depth64 depth16:libunwind depth64:libunwind; do
            u=auto; [ "${m#*:}" = libunwind ] && u=libunwind
            a=$(MEMLIMITS_UNWIND=$u ir "" "$pb" churn ${m%:*} $((10 * cg_ops)) $frames)
            b=$(MEMLIMITS_UNWIND=$u ir "" "$pb" churn ${m%:*} $((20 * cg_ops)) $frames)
            v=$(awk -v a="$a" -v b="$b" -v n=$((10 * cg_ops)) 'BEGIN {printf "%.2f", (b - a) / n}')
            [ $m = none ] && none_ir=$v
            echo "memprof_bench churn ${m%:*} ($u), $frames calls deep ($((frames + 4)) frames): $v instructions per op, ratio $(awk -v a="$v" -v b="$none_ir" 'BEGIN {printf "%.3f", a / b}')"
        done
    done
    un=20000
    for u in auto libunwind; do
        for d in 0 16 64; do
            a=$(MEMLIMITS_UNWIND=$u ir "" "$pb" unwind $d $un)
            b=$(MEMLIMITS_UNWIND=$u ir "" "$pb" unwind $d $((2 * un)))
            v=$(awk -v a="$a" -v b="$b" -v n=$un 'BEGIN {printf "%.0f", (b - a) / n}')
            [ $d = 0 ] && zero_ir=$v
            echo "memprof_bench unwind $d ($u): $v instructions per sampled allocation; per captured stack $((v - zero_ir))"
        done
    done
fi

echo "== 2. churn, $runs interleaved rounds of $ops ops, 70 frames deep (ns per malloc+free)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
modes="none gap depth16 depth64 depth64:libunwind"
for r in $(seq "$runs"); do
    for m in $modes; do
        u=auto; [ "${m#*:}" = libunwind ] && u=libunwind
        MEMLIMITS_UNWIND=$u "$pb" churn ${m%:*} "$ops" | sed -n 's/.*ns_per_op=\([0-9.]*\) samples=\([0-9]*\).*/\1 \2/p' >> "$tmp/$m"
    done
done
none=$(cut -d' ' -f1 "$tmp/none" | med)
for m in $modes; do
    t=$(cut -d' ' -f1 "$tmp/$m" | med)
    s=$(cut -d' ' -f2 "$tmp/$m" | med)
    ratio=$(awk -v a="$t" -v b="$none" 'BEGIN {printf "%.3f", a / b}')
    per=$(awk -v a="$t" -v b="$none" -v s="$s" -v o="$ops" 'BEGIN {if (s > 0) printf "%.0f", (a - b) * o / s; else print "-"}')
    echo "$m: $(cut -d' ' -f1 "$tmp/$m" | median) ns/op, ratio $ratio, samples $s, ns per sample $per"
done

echo "== 3. callstacks: every allocation sampled, 70 calls deep (74 frames), $runs rounds"
for r in $(seq "$runs"); do
    for u in auto libunwind; do
        for d in 0 16 64; do
            MEMLIMITS_UNWIND=$u "$pb" unwind $d 200000 | sed -n 's/.*ns_per_sampled_alloc=\([0-9.]*\).*/\1/p' >> "$tmp/$u$d"
        done
    done
done
for u in auto libunwind; do
    u0=$(med < "$tmp/${u}0")
    for d in 0 16 64; do
        v=$(med < "$tmp/$u$d")
        echo "$u, depth $d: $(median < "$tmp/$u$d") ns per sampled allocation; per captured stack $(awk -v a="$v" -v b="$u0" 'BEGIN {printf "%.0f", a - b}') ns"
    done
done
echo "== speedup check (end)"; "$mb" --spin 100000000 2>&1 | tail -1
