#!/usr/bin/env bash
# run_icount.sh: instructions per operation of every allocation entry point, C and C++, under
# glibc, bare jemalloc (Debian's libjemalloc.so.2 preloaded) and libmemlimits.so (with and
# without limits), counted by callgrind. The figure does not depend on what else runs on the
# machine, which the timings do.
#
#   bench/run_icount.sh BUILD_DIR [OUT_TSV]
#
# Each operation (bench/icount.c, bench/icount_cxx.cc; `--list` names them) runs N and 2N times
# under `valgrind --tool=callgrind`; instructions per operation = (I(2N) - I(N)) / N, so that
# start-up, the first calls' set-up and the exit cancel out. memlimits runs with a fixed
# MEMLIMITS_SEED, so its sampler events fall at the same allocations in every run.
#
# Environment:
#   N              operations of the short run (default 200000; the 4 MiB operation: N / 100)
#   MEMLIMITS_LIB  the library under test       (default: BUILD_DIR/libmemlimits.so)
#   JEMALLOC_LIB   bare jemalloc, the baseline  (default: /usr/lib/x86_64-linux-gnu/libjemalloc.so.2)
#   CONFIGS        configurations to run (default: "glibc jemalloc memlimits memlimits+limits")
#   OPS            operations to run (default: all of both programs)
#   VALGRIND       (default: valgrind)
# Output: one TSV line per operation and configuration on OUT_TSV (default: stdout):
#   program op config n instructions_n instructions_2n per_op description
# per_op is "-" when the entry point does not exist under that configuration (jemalloc's API
# under glibc). Then a table of ratios to bare jemalloc on stderr.
set -euo pipefail

prog=${0##*/}
die() {
    echo "$prog: error: $*" >&2
    exit 1
}
[[ $# -ge 1 && $# -le 2 ]] || {
    echo "usage: $prog BUILD_DIR [OUT_TSV]   (see the comment at the top of this script)" >&2
    exit 2
}
build_dir=$(cd "$1" && pwd) || die "no such build directory: $1"
out=${2:-/dev/stdout}
n=${N:-200000}
[[ $n =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, got '$n'"
memlimits_lib=$(realpath -- "${MEMLIMITS_LIB:-$build_dir/libmemlimits.so}")
jemalloc_lib=$(realpath -- "${JEMALLOC_LIB:-/usr/lib/x86_64-linux-gnu/libjemalloc.so.2}")
valgrind=${VALGRIND:-valgrind}
read -r -a configs <<<"${CONFIGS:-glibc jemalloc memlimits memlimits+limits}"
command -v "$valgrind" >/dev/null || die "valgrind not found (apt-get install valgrind)"
for b in icount icount_cxx; do
    [[ -x $build_dir/bench/$b ]] || die "missing $build_dir/bench/$b: build with -DMEMLIMITS_BUILD_BENCH=ON"
done
[[ -f $memlimits_lib ]] || die "libmemlimits.so not found: $memlimits_lib"
[[ -f $jemalloc_lib ]] || die "bare jemalloc not found: $jemalloc_lib (apt-get install libjemalloc2)"

unset LD_PRELOAD MALLOC_CONF
for var in $(compgen -e | grep -E '^(MEMLIMITS_|MALLOC_)' || true); do unset "$var"; done

config_env() {
    case $1 in
    glibc) ;;
    jemalloc) echo "LD_PRELOAD=$jemalloc_lib" ;;
    memlimits) printf '%s\n' "LD_PRELOAD=$memlimits_lib" MEMLIMITS_SEED=1 ;;
    memlimits+limits)
        printf '%s\n' "LD_PRELOAD=$memlimits_lib" MEMLIMITS_SEED=1 MEMLIMITS_HEAP=64G \
            MEMLIMITS_ALLOC=1000T
        ;;
    *) die "unknown configuration $1" ;;
    esac
}

work=$(mktemp -d "${TMPDIR:-/tmp}/run_icount.XXXXXX")
trap 'rm -rf -- "$work"' EXIT

# Prints the instructions of one run, "-" if the operation is missing (exit 127), or fails.
count() {
    local config=$1 bin=$2 op=$3 runs=$4 rc=0
    local -a envs
    mapfile -t envs < <(config_env "$config")
    env "${envs[@]}" "$valgrind" --tool=callgrind --callgrind-out-file=/dev/null \
        "$bin" "$op" "$runs" >"$work/out" 2>"$work/err" || rc=$?
    if ((rc == 127)); then
        echo -
        return
    fi
    ((rc == 0)) || {
        cat "$work/err" >&2
        die "$config $op $runs failed (exit $rc)"
    }
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$work/err"
}

declare -A per_op
ops_run=()
{
    for bin in icount icount_cxx; do
        while IFS=$'\t' read -r op what; do
            [[ -n ${OPS:-} && " $OPS " != *" $op "* ]] && continue
            ops_run+=("$op")
            runs=$n
            [[ $op == malloc_4m ]] && runs=$((n / 100 > 0 ? n / 100 : 1))
            for config in "${configs[@]}"; do
                a=$(count "$config" "$build_dir/bench/$bin" "$op" "$runs")
                b=$(count "$config" "$build_dir/bench/$bin" "$op" $((2 * runs)))
                if [[ $a == - || $b == - ]]; then
                    v=-
                else
                    v=$(awk -v a="$a" -v b="$b" -v n="$runs" 'BEGIN { printf "%.1f", (b - a) / n }')
                fi
                per_op[$op,$config]=$v
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$bin" "$op" "$config" "$runs" "$a" "$b" "$v" \
                    "$what"
            done
        done < <("$build_dir/bench/$bin" --list)
    done
} >"$out"

{
    printf '%-22s' op
    for config in "${configs[@]}"; do printf ' %16s' "$config"; done
    echo "   (instructions per operation; ratio to jemalloc)"
    for op in "${ops_run[@]}"; do
        printf '%-22s' "$op"
        base=${per_op[$op,jemalloc]:--}
        for config in "${configs[@]}"; do
            v=${per_op[$op,$config]}
            if [[ $v != - && $base != - && $config != jemalloc ]]; then
                printf ' %8s (%5s)' "$v" "$(awk -v v="$v" -v b="$base" 'BEGIN { printf "%.3f", v / b }')"
            else
                printf ' %16s' "$v"
            fi
        done
        echo
    done
} >&2
