#!/usr/bin/env bash
# run_all.sh: the whole benchmark and precision suite, in one command, and its report.
#
#   bench/run_all.sh BUILD_DIR
#
# writes bench/results/REPORT.md, the PNG plots beside it, and the raw data under
# bench/results/raw/. It takes about 3 minutes on the idle 2-core machine (185 s measured),
# 7-10 minutes when other work shares the cores (436 s and 589 s measured). QUICK=1 takes about 1 minute, for checking that everything works end to end; its
# report says QUICK in its title.
#
# Steps, each written to raw/:
#   1. machine description; the two-core speedup check (malloc_bench --spin) at the start;
#   2. the workload suite (bench/wl_*): every workload under every configuration, interleaved
#      round-robin (the starting configuration rotates each round), RUNS rounds;
#   3. the jemalloc configuration study: MALLOC_CONF candidates for the embedded jemalloc on the
#      workloads where stock jemalloc loses to glibc, interleaved with glibc and bare jemalloc;
#   4. malloc_bench through run_malloc_bench.sh (the design's fast-path budget);
#   5. precision: allocation-limit overshoot, global-limit detection distance, sampler error;
#   6. latency: token to task return (allocating, allocating with ML_WAKE, blocked in read with
#      ML_WAKE), and the fast path inside a task against none;
#   (and, after the perf profile, instructions per operation of every entry point under
#      callgrind: run_icount.sh, raw/icount.tsv; ICOUNT=0 skips it);
#   7. the speedup check at the end; bench/report.py turns raw/ into REPORT.md and plots.
#
# Environment:
#   RUNS          rounds of the suite and of the study (default 5; QUICK: 2)
#   QUICK=1       short runs and fewer trials, to develop and check the pipeline
#   CANDIDATE     the MALLOC_CONF measured as memlimits+conf in the suite
#                 (default: the recommended one, below)
#   MEMLIMITS_LIB, JEMALLOC_LIB, PYTHON (default /usr/bin/python3), GNUPLOT (default gnuplot)
#   OUT           results directory (default: bench/results next to this script)
# Needs bash, awk, GNU time (/usr/bin/time), python3 (the workload and the report), gnuplot;
# valgrind for the instruction counts.
set -euo pipefail

prog=${0##*/}
here=$(cd "$(dirname "$0")" && pwd)

die() {
    echo "$prog: error: $*" >&2
    exit 1
}
shout() {
    local line='!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!'
    printf '%s\n' "$line" "!!! $*" "$line" >&2
}

[[ $# -eq 1 ]] || {
    echo "usage: $prog BUILD_DIR   (see the comment at the top of this script)" >&2
    exit 2
}
build_dir=$(cd "$1" && pwd) || die "no such build directory: $1"
quick=${QUICK:-0}
runs=${RUNS:-$([[ $quick == 1 ]] && echo 2 || echo 5)}
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer, got '$runs'"

# The recommended configuration of the embedded jemalloc (see REPORT.md, "jemalloc
# configuration"): large blocks stay in the ordinary arenas (no dedicated arena for blocks of
# 8 MiB and more, whose pages jemalloc purges at every free), and purged pages are only ever
# purged lazily (MADV_FREE: the kernel takes them back under pressure), which also turns off
# jemalloc's eager purge of coalesced extents above the threshold.
recommended_conf='oversize_threshold:1073741824,muzzy_decay_ms:-1'
candidate=${CANDIDATE:-$recommended_conf}

bench=$build_dir/bench
memlimits_lib=${MEMLIMITS_LIB:-$build_dir/libmemlimits.so}
jemalloc_lib=${JEMALLOC_LIB:-/usr/lib/x86_64-linux-gnu/libjemalloc.so.2}
python=${PYTHON:-/usr/bin/python3}
gnuplot=${GNUPLOT:-gnuplot}
out=${OUT:-$here/results}
raw=$out/raw

for b in malloc_bench wl_larson wl_xmalloc wl_cache_scratch wl_small_objects wl_strbuild \
    wl_bigblocks wl_threads wl_mstress wl_mleak precision latency; do
    [[ -x $bench/$b ]] || die "missing $bench/$b: build with -DMEMLIMITS_BUILD_BENCH=ON"
done
[[ -f $memlimits_lib ]] || die "libmemlimits.so not found: $memlimits_lib"
[[ -f $jemalloc_lib ]] || die "bare jemalloc not found: $jemalloc_lib (apt-get install libjemalloc2)"
[[ -x /usr/bin/time ]] || die "GNU time not found at /usr/bin/time (apt-get install time)"
[[ -x $python ]] || die "python3 not found: $python"
command -v "$gnuplot" >/dev/null || die "gnuplot not found (apt-get install gnuplot-nox)"
memlimits_lib=$(realpath -- "$memlimits_lib")
jemalloc_lib=$(realpath -- "$jemalloc_lib")

# Nothing inherited may change a configuration: no preload, no memlimits or jemalloc settings.
unset LD_PRELOAD MALLOC_CONF BENCH_TASK
for var in $(compgen -e | grep -E '^(MEMLIMITS_|MALLOC_)' || true); do unset "$var"; done

mkdir -p "$raw"
rm -f "$raw"/*.tsv "$raw"/*.txt "$raw"/*.jsonl
work=$(mktemp -d "${TMPDIR:-/tmp}/run_all.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
t_start=$(date +%s)

# ---------------------------------------------------------------- workloads and configs
# name|command (QUICK shortens them)
if [[ $quick == 1 ]]; then
    workloads=(
        "larson|$bench/wl_larson 2 10 50000"
        "xmalloc|$bench/wl_xmalloc 1 500000"
        "cache-scratch|$bench/wl_cache_scratch 2 200000 100"
        "small-objects|$bench/wl_small_objects 4 16"
        "strbuild|$bench/wl_strbuild 500000"
        "bigblocks|$bench/wl_bigblocks 40"
        "threads|$bench/wl_threads 32 2 200"
        "mstress|$bench/wl_mstress 2 10"
        "mleak|$bench/wl_mleak 2 200"
        "python|$python $here/wl_containers.py 1 100000"
    )
else
    workloads=(
        "larson|$bench/wl_larson 2 40 100000"
        "xmalloc|$bench/wl_xmalloc 1 3000000"
        "cache-scratch|$bench/wl_cache_scratch 2 1000000 100"
        "small-objects|$bench/wl_small_objects 20 16"
        "strbuild|$bench/wl_strbuild 3000000"
        "bigblocks|$bench/wl_bigblocks 600"
        "threads|$bench/wl_threads 32 10 400"
        "mstress|$bench/wl_mstress 4 50"
        "mleak|$bench/wl_mleak 2 1000"
        "python|$python $here/wl_containers.py 3 200000"
    )
fi
suite_configs=(glibc jemalloc memlimits memlimits+limits memlimits+task memlimits+conf)

# The study: candidates for the embedded jemalloc's malloc_conf, each measured as memlimits with
# limits set and MALLOC_CONF=candidate, against glibc, bare jemalloc and memlimits as it is.
# Each is read over the embedded defaults (oversize_threshold:1073741824,muzzy_decay_ms:-1),
# which MALLOC_CONF overrides key by key: the first is the shipped configuration itself.
study_candidates=(
    'oversize_threshold:1073741824,muzzy_decay_ms:-1'
    'muzzy_decay_ms:0'
    'dirty_decay_ms:1000,muzzy_decay_ms:0'
    'narenas:1'
    'percpu_arena:percpu'
    'background_thread:true,max_background_threads:1'
    'background_thread:true,max_background_threads:1,muzzy_decay_ms:0'
    'retain:false'
)
study_workloads=(bigblocks mstress mleak threads xmalloc larson strbuild)

# Prints the env assignments of CONFIG, one per line.
config_env() {
    local limits=(MEMLIMITS_HEAP=64G MEMLIMITS_ALLOC=1000T)
    case $1 in
    glibc) ;;
    jemalloc) echo "LD_PRELOAD=$jemalloc_lib" ;;
    memlimits) echo "LD_PRELOAD=$memlimits_lib" ;;
    memlimits+limits) printf '%s\n' "LD_PRELOAD=$memlimits_lib" "${limits[@]}" ;;
    memlimits+task) printf '%s\n' "LD_PRELOAD=$memlimits_lib" "${limits[@]}" BENCH_TASK=1 ;;
    memlimits+conf) printf '%s\n' "LD_PRELOAD=$memlimits_lib" "${limits[@]}" "MALLOC_CONF=$candidate" ;;
    conf:*) printf '%s\n' "LD_PRELOAD=$memlimits_lib" "${limits[@]}" "MALLOC_CONF=${1#conf:}" ;;
    *) die "unknown configuration $1" ;;
    esac
}

workload_cmd() {
    local w
    for w in "${workloads[@]}" "malloc-bench|$bench/malloc_bench 1 ${mb_ops:-20000000}"; do
        [[ ${w%%|*} == "$1" ]] && {
            echo "${w#*|}"
            return
        }
    done
    die "unknown workload $1"
}

# Runs WORKLOAD under CONFIG once; appends "phase workload config round elapsed wall rss user sys"
# to FILE, or a FAIL line (the run's stderr is kept in raw/failures.txt).
run_one() {
    local phase=$1 wl=$2 config=$3 round=$4 file=$5 cmd out elapsed
    local -a envs
    mapfile -t envs < <(config_env "$config")
    cmd=$(workload_cmd "$wl")
    # shellcheck disable=SC2086 # the command line is words by design
    if out=$(env "${envs[@]}" /usr/bin/time -f '%e %M %U %S' -o "$work/time" $cmd 2>"$work/err") &&
        [[ ! -s $work/err ]] && elapsed=$(sed -n 's/.*elapsed_s=\([0-9.]*\).*/\1/p' <<<"$out") &&
        [[ -n $elapsed ]]; then
        read -r wall rss user sys <"$work/time"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$wl" "$config" "$round" \
            "$elapsed" "$wall" "$rss" "$user" "$sys" >>"$file"
        printf '.'
    else
        printf '%s\t%s\t%s\t%s\tFAIL\n' "$phase" "$wl" "$config" "$round" >>"$file"
        {
            echo "== $phase $wl $config round $round: ${envs[*]} $cmd"
            cat "$work/err"
            echo "$out"
        } >>"$raw/failures.txt"
        printf 'F'
    fi
}

spin_check() {
    local label=$1 out
    out=$("$bench/malloc_bench" --spin "${SPIN_ITERS:-200000000}") || die "speedup check failed"
    printf '%s\t%s\n' "$label" "$out" >>"$raw/speedup.tsv"
    echo "speedup check ($label): $out"
}

# ---------------------------------------------------------------------------- machine
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host: $(uname -n)"
    echo "nproc: $(nproc)"
    echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | sort | uniq -c | sed 's/^ *//')"
    echo "kernel: $(uname -srm)"
    echo "glibc: $(ldd --version 2>&1 | head -1)"
    echo "jemalloc (bare): $(dpkg-query -W -f '${Package} ${Version}' libjemalloc2 2>/dev/null || echo unknown) $jemalloc_lib"
    echo "jemalloc (embedded): $(dpkg-query -W -f '${Package} ${Version}' libjemalloc-dev 2>/dev/null || echo unknown)"
    echo "python: $($python --version 2>&1)"
    echo "memlimits: $memlimits_lib (built $(date -u -r "$memlimits_lib" '+%Y-%m-%d %H:%M:%S UTC'))"
    echo "memlimits tree: $(git -C "$here/.." rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$here/.." diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "compiler: $(cc --version | head -1)"
    echo "load at start: $(cat /proc/loadavg)"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "quick: $quick"
    echo "runs: $runs"
    echo "candidate: $candidate"
} >"$raw/machine.txt"
cat "$raw/machine.txt"
spin_check start

# ------------------------------------------------------------------------------ suite
echo "suite: ${#workloads[@]} workloads x ${#suite_configs[@]} configurations x $runs rounds"
n=${#suite_configs[@]}
for ((round = 0; round < runs; round++)); do
    printf 'round %d/%d ' $((round + 1)) "$runs"
    for w in "${workloads[@]}"; do
        for ((k = 0; k < n; k++)); do
            run_one suite "${w%%|*}" "${suite_configs[(round + k) % n]}" "$round" "$raw/suite.tsv"
        done
    done
    echo
done

# ------------------------------------------------------------------------------ study
study_configs=(glibc jemalloc memlimits+limits)
for c in "${study_candidates[@]}"; do study_configs+=("conf:$c"); done
echo "jemalloc configuration study: ${#study_workloads[@]} workloads x ${#study_configs[@]} configurations x $runs rounds"
n=${#study_configs[@]}
for ((round = 0; round < runs; round++)); do
    printf 'round %d/%d ' $((round + 1)) "$runs"
    for wl in "${study_workloads[@]}"; do
        for ((k = 0; k < n; k++)); do
            run_one study "$wl" "${study_configs[(round + k) % n]}" "$round" "$raw/study.tsv"
        done
    done
    echo
done

# ---------------------------------------------------------------------- perf profile
# Load-independent counts: user-space instructions and cycles, page faults, CPU time, one run
# per workload and configuration (perf stat; skipped when perf or its counters are unavailable).
# Instructions do not depend on what else runs on the machine, so they measure memlimits'
# overhead even when the wall-clock figures are noisy.
: >"$raw/perf.tsv"
if command -v perf >/dev/null && perf stat -e instructions:u true >/dev/null 2>&1; then
    echo "perf stat: every workload under glibc, jemalloc, memlimits+limits, memlimits+task, memlimits+conf"
    # malloc_bench (1 thread) joins the workloads here: the design's fast-path microbenchmark.
    if [[ $quick == 1 ]]; then mb_ops=2000000; else mb_ops=20000000; fi
    for w in "${workloads[@]}" "malloc-bench|$bench/malloc_bench 1 $mb_ops"; do
        wl=${w%%|*}
        for config in glibc jemalloc memlimits+limits memlimits+task memlimits+conf; do
            [[ $wl == malloc-bench && $config == memlimits+task ]] && continue
            mapfile -t envs < <(config_env "$config")
            # shellcheck disable=SC2046
            res=$(env "${envs[@]}" perf stat -x, \
                -e task-clock,page-faults,context-switches,cycles:u,instructions:u \
                $(workload_cmd "$wl") 2>&1 >/dev/null | awk -F, '
                    $3 == "task-clock" { cpu = $1 }
                    $3 == "page-faults" { pf = $1 }
                    $3 == "context-switches" { cs = $1 }
                    $3 ~ /^cycles/ { cyc = $1 }
                    $3 ~ /^instructions/ { ins = $1 }
                    END { printf "%.0f\t%s\t%s\t%s\t%s", cpu, pf, cs, cyc, ins }')
            printf '%s\t%s\t%s\n' "$wl" "$config" "$res" >>"$raw/perf.tsv"
            printf '.'
        done
    done
    echo
else
    echo "perf unavailable: profile skipped"
fi

# ------------------------------------------------------------------ instruction counts
# Instructions per operation of every entry point, C and C++, under callgrind (run_icount.sh):
# the figure that does not move with the machine's load. ICOUNT=0 skips it.
: >"$raw/icount.tsv"
if [[ ${ICOUNT:-1} != 0 ]] && command -v valgrind >/dev/null && [[ -x $bench/icount_cxx ]]; then
    echo "instruction counts (run_icount.sh, callgrind)"
    N=$([[ $quick == 1 ]] && echo 20000 || echo 200000) MEMLIMITS_LIB=$memlimits_lib \
        JEMALLOC_LIB=$jemalloc_lib "$here/run_icount.sh" "$build_dir" "$raw/icount.tsv" ||
        shout "run_icount.sh failed: the report has no instruction counts"
else
    echo "instruction counts skipped (ICOUNT=0, or valgrind or icount_cxx missing)"
fi

# ----------------------------------------------------------------------- malloc_bench
echo "malloc_bench (run_malloc_bench.sh)"
if [[ $quick == 1 ]]; then mb_args=(2 2000000); else mb_args=("$runs" 20000000); fi
MEMLIMITS_LIB=$memlimits_lib JEMALLOC_LIB=$jemalloc_lib \
    "$here/run_malloc_bench.sh" "$build_dir" "${mb_args[@]}" >"$raw/malloc_bench.txt" 2>&1 ||
    shout "run_malloc_bench.sh failed: see raw/malloc_bench.txt"
tail -12 "$raw/malloc_bench.txt"

# -------------------------------------------------------------------------- precision
if [[ $quick == 1 ]]; then
    os_trials=300 g_trials=1000 g_other=200 g2_trials=200 s_seeds=10 s2_seeds=5
else
    os_trials=3000 g_trials=10000 g_other=2000 g2_trials=2000 s_seeds=100 s2_seeds=50
fi
echo "precision: overshoot ($os_trials trials)"
"$bench/precision" overshoot "$os_trials" 1 >"$raw/overshoot.txt" ||
    shout "precision overshoot reported violations"
tail -1 "$raw/overshoot.txt"
echo "precision: global-limit detection distance"
: >"$raw/global.txt"
"$bench/precision" global "$g_trials" 1 1 1 >>"$raw/global.txt"
"$bench/precision" global "$g_other" 2 0 1 >>"$raw/global.txt"
"$bench/precision" global "$g_other" 3 2 1 >>"$raw/global.txt"
"$bench/precision" global "$g2_trials" 4 1 2 >>"$raw/global.txt"
grep '^# summary' "$raw/global.txt"
echo "precision: sampler ($s_seeds seeds x 100 MB at the default rate, $s2_seeds x 100 MB at 1/8000)"
: >"$raw/sampler.jsonl"
for ((s = 1; s <= s_seeds; s++)); do
    MEMLIMITS_REPORT="json:$work/report.json" MEMLIMITS_SEED=$s "$bench/precision" sampler 100000000 "$s" >/dev/null
    printf 'default %s ' "$s" >>"$raw/sampler.jsonl"
    cat "$work/report.json" >>"$raw/sampler.jsonl"
    rm -f "$work/report.json"
done
for ((s = 1; s <= s2_seeds; s++)); do
    MEMLIMITS_REPORT="json:$work/report.json" MEMLIMITS_SEED=$s MEMLIMITS_SAMPLE=8000 \
        "$bench/precision" sampler 100000000 "$s" >/dev/null
    printf 'gap8000 %s ' "$s" >>"$raw/sampler.jsonl"
    cat "$work/report.json" >>"$raw/sampler.jsonl"
    rm -f "$work/report.json"
done

# ---------------------------------------------------------------------------- latency
if [[ $quick == 1 ]]; then tok_trials=50 fp_rounds=5 fp_ops=1000000; else tok_trials=300 fp_rounds=21 fp_ops=2000000; fi
echo "latency: token to return ($tok_trials trials per mode), fast path ($fp_rounds rounds)"
: >"$raw/token.txt"
for mode in alloc alloc-wake read; do
    "$bench/latency" token "$mode" "$tok_trials" 1 >>"$raw/token.txt" ||
        shout "latency token $mode: a task did not end with ML_TOKEN"
done
grep '^# summary' "$raw/token.txt"
"$bench/latency" fastpath "$fp_rounds" "$fp_ops" 1 >"$raw/fastpath.txt"
grep '^# summary' "$raw/fastpath.txt"

spin_check end
t_end=$(date +%s)
echo "duration_s: $((t_end - t_start))" >>"$raw/machine.txt"
echo "load at end: $(cat /proc/loadavg)" >>"$raw/machine.txt"

# ----------------------------------------------------------------------------- report
"$python" "$here/report.py" "$out" --gnuplot "$gnuplot"
echo "$prog: done in $((t_end - t_start)) s; report: $out/REPORT.md"
if [[ -s $raw/failures.txt ]]; then
    shout "some runs FAILED: see $raw/failures.txt (they are listed in the report)"
fi
