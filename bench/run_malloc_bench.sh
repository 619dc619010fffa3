#!/usr/bin/env bash
# run_malloc_bench.sh: the design's fast-path budget check ("within 5% of bare jemalloc, 1 and 2
# threads, limits on or off"). Runs bench/malloc_bench under glibc, bare jemalloc, memlimits and
# memlimits with never-firing limits, interleaved round-robin, and prints medians, min-max and
# ratios to bare jemalloc, bracketed by the two-core throttling check. The method is the one in
# design.md, "Measuring on these machines". Needs bash, awk, sort, sed; no python.
set -euo pipefail

prog=${0##*/}

usage() {
    cat >&2 <<EOF
usage: $prog BUILD_DIR [RUNS=7] [OPS=20000000]

Environment:
  MALLOC_BENCH   the benchmark binary        (default: BUILD_DIR/bench/malloc_bench)
  MEMLIMITS_LIB  the library to preload      (default: BUILD_DIR/libmemlimits.so)
  JEMALLOC_LIB   bare jemalloc, the baseline (default: $default_jemalloc)
  SEED           the workload seed, the same in every run (default: 1)
  SPIN_ITERS     iterations of the throttling check's loop (default: 200000000)
  SPEEDUP_MIN    below this two-thread speedup, 2-thread rows are flagged (default: 1.8)
  BASELINE_LIB   another libmemlimits.so (say, an earlier build) run as "baseline+limits" in the
                 same interleaved rounds, for before/after figures (default: none)
EOF
    exit 2
}

die() {
    echo "$prog: error: $*" >&2
    exit 1
}

# Prints a banner that cannot be missed in a scrolling log.
shout() {
    local line='!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!'
    printf '%s\n' "$line" "!!! $*" "$line"
}

default_jemalloc=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2

[[ $# -ge 1 && $# -le 3 ]] || usage
build_dir=$1
runs=${2:-7}
ops=${3:-20000000}
seed=${SEED:-1}
spin_iters=${SPIN_ITERS:-200000000}
speedup_min=${SPEEDUP_MIN:-1.8}
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer, got '$runs'"
[[ $ops =~ ^[1-9][0-9]*$ ]] || die "OPS must be a positive integer, got '$ops'"
[[ $seed =~ ^[0-9]+$ ]] || die "SEED must be a non-negative integer, got '$seed'"
[[ $spin_iters =~ ^[1-9][0-9]*$ ]] || die "SPIN_ITERS must be a positive integer, got '$spin_iters'"
[[ $speedup_min =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "SPEEDUP_MIN must be a number, got '$speedup_min'"

bench=${MALLOC_BENCH:-$build_dir/bench/malloc_bench}
memlimits_lib=${MEMLIMITS_LIB:-$build_dir/libmemlimits.so}
jemalloc_lib=${JEMALLOC_LIB:-$default_jemalloc}

[[ -f $bench && -x $bench ]] ||
    die "benchmark binary not found or not executable: $bench (build it, or set MALLOC_BENCH)"
[[ -f $jemalloc_lib ]] ||
    die "bare jemalloc, the baseline, not found: $jemalloc_lib (install libjemalloc2, or set JEMALLOC_LIB)"
bench=$(realpath -- "$bench")
jemalloc_lib=$(realpath -- "$jemalloc_lib")

# A missing libmemlimits.so is the one tolerated gap (the library may not be written yet): its
# rows are skipped, loudly, here and again under the table. Anything else missing is an error.
memlimits_missing=0
if [[ -f $memlimits_lib ]]; then
    memlimits_lib=$(realpath -- "$memlimits_lib")
    configs=(glibc jemalloc memlimits memlimits+limits)
else
    memlimits_missing=1
    configs=(glibc jemalloc)
fi
all_configs=(glibc jemalloc memlimits memlimits+limits)
baseline_lib=${BASELINE_LIB:-}
if [[ -n $baseline_lib ]]; then
    [[ -f $baseline_lib ]] || die "BASELINE_LIB not found: $baseline_lib"
    baseline_lib=$(realpath -- "$baseline_lib")
    configs+=(baseline+limits)
    all_configs+=(baseline+limits)
fi
thread_counts=(1 2)

# Every run must see the same environment apart from what its configuration sets: no inherited
# preload and no MEMLIMITS_* setting (limits, sampling, reports) leaking into the bare rows or
# changing the memlimits ones.
unset LD_PRELOAD
for var in $(compgen -e | grep '^MEMLIMITS_' || true); do
    unset "$var"
done

work_dir=$(mktemp -d "${TMPDIR:-/tmp}/run_malloc_bench.XXXXXX")
trap 'rm -rf -- "$work_dir"' EXIT
results=$work_dir/results # lines: CONFIG THREADS NS_PER_OP
: >"$results"

# Runs the throttling check and prints its line; sets spin_speedup. LABEL is "start" or "end".
spin_check() {
    local label=$1 out
    out=$("$bench" --spin "$spin_iters") || die "throttling check failed: $bench --spin $spin_iters"
    spin_speedup=$(sed -n 's/.*speedup=\([0-9.]*\).*/\1/p' <<<"$out")
    [[ -n $spin_speedup ]] || die "cannot parse the throttling check's output: $out"
    printf 'speedup check (%s): %s\n' "$label" "$out"
}

# Runs malloc_bench once under CONFIG with THREADS threads and appends the result. Any stderr
# output fails the run: that is how a preload the dynamic linker ignored ("cannot be preloaded")
# or a memlimits start-up complaint shows up, and either would make the figure meaningless.
run_one() {
    local config=$1 threads=$2 out ns
    local -a env_args=()
    case $config in
    glibc) ;;
    jemalloc) env_args=(LD_PRELOAD="$jemalloc_lib") ;;
    memlimits) env_args=(LD_PRELOAD="$memlimits_lib") ;;
    # Limits on, set so high that they never fire: this measures their cost on the fast path.
    memlimits+limits)
        env_args=(LD_PRELOAD="$memlimits_lib" MEMLIMITS_HEAP=64G MEMLIMITS_ALLOC=1000T)
        ;;
    baseline+limits)
        env_args=(LD_PRELOAD="$baseline_lib" MEMLIMITS_HEAP=64G MEMLIMITS_ALLOC=1000T)
        ;;
    *) die "unknown configuration $config" ;;
    esac
    if ! out=$(env "${env_args[@]}" "$bench" "$threads" "$ops" "$seed" 2>"$work_dir/stderr"); then
        echo # ends the progress line
        cat "$work_dir/stderr" >&2
        die "run failed: config=$config threads=$threads (${env_args[*]} $bench $threads $ops $seed)"
    fi
    if [[ -s $work_dir/stderr ]]; then
        echo # ends the progress line
        cat "$work_dir/stderr" >&2
        die "run wrote to stderr, figure discarded: config=$config threads=$threads"
    fi
    ns=$(sed -n 's/.*ns_per_op=\([0-9.]*\).*/\1/p' <<<"$out")
    [[ -n $ns ]] || die "cannot parse the benchmark's output: $out"
    echo "$config $threads $ns" >>"$results"
    printf ' %s/%s=%s' "$config" "$threads" "$ns"
}

# Prints one table row, without trailing blanks when the note is empty.
row() {
    local line
    line=$(printf "%-18s %7s %10s %15s %9s  %s" "$@")
    printf "%s\n" "${line%"${line##*[! ]}"}"
}

# Prints "MEDIAN MIN MAX" of the results of CONFIG at THREADS, or nothing if there are none.
stats() {
    awk -v c="$1" -v t="$2" '$1 == c && $2 == t { print $3 }' "$results" | sort -g |
        awk '{ v[NR] = $1 }
             END {
                 if (NR == 0) exit
                 m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
                 printf "%.2f %.2f %.2f\n", m, v[1], v[NR]
             }'
}

echo "malloc_bench: $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(uname -n), $(uname -r), $(nproc) CPUs"
echo "binary:    $bench"
echo "jemalloc:  $jemalloc_lib"
if ((memlimits_missing)); then
    echo "memlimits: MISSING ($memlimits_lib)"
    shout "libmemlimits.so not found at $memlimits_lib: the memlimits rows are SKIPPED"
else
    echo "memlimits: $memlimits_lib"
fi
[[ -n $baseline_lib ]] && echo "baseline:  $baseline_lib"
echo "runs=$runs ops=$ops seed=$seed threads=${thread_counts[*]} (ns_per_op: wall time / ops of one thread)"
echo

spin_check start
spin_start=$spin_speedup

# Interleaved: every round runs each configuration once per thread count, and the starting
# configuration rotates from round to round, so slow drifts of the machine (throttling, other
# tenants) spread over all configurations instead of landing on one.
n=${#configs[@]}
for ((round = 0; round < runs; round++)); do
    printf 'round %d/%d:' $((round + 1)) "$runs"
    for threads in "${thread_counts[@]}"; do
        for ((k = 0; k < n; k++)); do
            run_one "${configs[(round + k) % n]}" "$threads"
        done
    done
    echo
done

spin_check end
spin_end=$spin_speedup
echo

row config threads median min-max ratio note
for threads in "${thread_counts[@]}"; do
    read -r base_median _ < <(stats jemalloc "$threads")
    for config in "${all_configs[@]}"; do
        if [[ $config == memlimits* ]] && ((memlimits_missing)); then
            row "$config" "$threads" - - - \
                "MISSING: no $memlimits_lib"
            continue
        fi
        read -r median min max < <(stats "$config" "$threads")
        ratio=$(awk -v m="$median" -v b="$base_median" 'BEGIN { printf "%.3f", m / b }')
        note=
        if [[ $config == memlimits* || $config == baseline* ]]; then
            # The design's budget: within 5% of bare jemalloc.
            note=$(awk -v r="$ratio" 'BEGIN { print (r <= 1.05) ? "within 5% budget" : "OVER 5% budget" }')
        fi
        row "$config" "$threads" "$median" "$min-$max" \
            "$ratio" "$note"
    done
done
echo "(ns per operation per thread; median of $runs runs; ratio = median / jemalloc median at the same thread count)"

if awk -v a="$spin_start" -v b="$spin_end" -v m="$speedup_min" 'BEGIN { exit !(a < m || b < m) }'; then
    shout "two-thread speedup $spin_start (start) / $spin_end (end) is below $speedup_min:" \
        "the second core was throttled; DISCARD the threads=2 rows"
fi
if ((memlimits_missing)); then
    shout "libmemlimits.so not found at $memlimits_lib: the memlimits rows were SKIPPED"
fi
