#!/usr/bin/env bash
# GPU round in one call (issue 10): on a CUDA machine with torch and triton preinstalled and no network, install fusedrnn,
# benchmark it against torch.nn (cuDNN), run the test suite, record compile evidence (ptxas report, SASS summary) and
# compute-sanitizer runs of the persistent kernels, and leave everything under $OUT (default out/gpu_check) in at most
# 8 files: report.md (all of it), bench.json (every benchmark result), evidence.json (per-kernel resources and SASS
# counts), sweep.json + sweep.md (--sweep, --dry-run), logs.tar.gz (every log and raw JSON). The short summary table
# is printed last (the device tool returns only the tail of the output).
#
# Usage: bash scripts/gpu_check.sh [--dry-run] [--sweep]     exit status: non-zero if any step failed
#   --dry-run  the whole script on CPU, so a typo cannot waste GPU time (CI runs it: tests/test_scripts.py): tiny
#              shapes, TRITON_INTERPRET=1, `pip install --dry-run`, tests collected not run, no CUDA tools.
#   --sweep    after the install, only the tuning sweep (fusedrnn.bench.sweep): tile/warps configurations of the fused
#              kernels at the target shapes, each timed and checked; sweep.json + sweep.md.
#
# Step limits in seconds (every child timeout is shorter than its step's limit, and no step runs past the deadline,
# BUDGET_S after the start, whatever the limits add up to; so the whole run ends within 9 minutes on an H100):
#   install                150  sm_90 only, every core (measured 44 s on 2 CPU cores); if it fails, 60 more to install
#                               without the CUDA extension, so the Triton tests and benchmarks still run
#   compile evidence       240  in the background, CPU only: the key Triton configurations for sm_90, ptxas' report
#   benchmarks             205  7 runs, persistent kernels first; the tiled Triton kernel at T=1024 last, with
#                               1 warm-up + 3 repeats: predicted >20x slower than cuDNN there (one SM re-reads W_hh)
#   tests                  170  pytest-timeout 120 s per test where the plugin is installed
#   sanitizers          2 x 40  racecheck and memcheck of the persistent kernels at a small shape
#   SASS summary            30  cuobjdump over the benchmarked Triton cubins and the extension
#   sweep (--sweep)        400  instead of benchmarks, tests and sanitizers; each configuration in a child (100 s)
set -uo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
SWEEP=0
for arg in "$@"; do
    case $arg in
        --dry-run) DRY_RUN=1 ;;
        --sweep) SWEEP=1 ;;
        -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done

BUDGET_S=530           # 8 min 50 s: the deadline no step may pass
RESERVE_S=15           # kept for the SASS summary, the archive and the summary table
PER_TEST_TIMEOUT_S=120 # pytest-timeout, per test; the tests step's limit is longer
KILL_AFTER_S=5         # a step that ignores SIGTERM at its limit is killed this much later
START=$(date +%s)
DEADLINE=$((START + BUDGET_S))

OUT=${OUT:-$PWD/out/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
LOGS=$WORK/logs
mkdir -p "$LOGS" "$WORK/bench"
STEPS=$WORK/steps.tsv
: >"$STEPS"
export PYTHONUNBUFFERED=1
# Each kind of run compiles into its own Triton cache, so the SASS summary reads exactly the benchmarked kernels.
export TRITON_CACHE_DIR=$WORK/bench-cache
if [ "$DRY_RUN" = 1 ]; then
    export TRITON_INTERPRET=1
    # Tiny shapes on CPU; given after each command's own flags, so they win (argparse keeps the last value).
    TINY=(--device cpu --dtype float32 --seq-len 3 --batch 2 --input-size 16 --hidden-size 16 --warmup 0 --repeat 1)
else
    TINY=()
fi

record() {  # record NAME OUTCOME SECONDS LIMIT
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$STEPS"
}

step() {  # step NAME LIMIT COMMAND...: run with a time limit (cut to the deadline), log to $LOGS/NAME.log, record
    local name=$1 limit=$2 left rc t0 outcome
    shift 2
    left=$((DEADLINE - $(date +%s) - RESERVE_S))
    if [ "$left" -lt 5 ]; then
        record "$name" "skipped: out of time" 0 "$limit"
        return 1
    fi
    [ "$left" -lt "$limit" ] && limit=$left
    t0=$(date +%s)
    echo "\$ $*" >>"$LOGS/$name.log"
    timeout -k "$KILL_AFTER_S" "$limit" "$@" >>"$LOGS/$name.log" 2>&1
    rc=$?
    case $rc in
        0) outcome=ok ;;
        124 | 137) outcome="TIMED OUT" ;;
        *) outcome="FAILED (exit $rc)" ;;
    esac
    record "$name" "$outcome" "$(($(date +%s) - t0))" "$limit"
    return "$rc"
}

# ---------------------------------------------------------------------------------------------------------------
# The machine and the versions, first in the report.
{
    echo "# fusedrnn GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')$([ "$DRY_RUN" = 1 ] && echo ' (dry run on CPU)')"
    echo
    echo '```'
    echo "git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(
        [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && echo ' (tracked files modified)')"
    [ "$DRY_RUN" = 1 ] || timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    timeout 60 "$PY" -c "import sys, torch, triton; print('python', sys.version.split()[0], '| torch', torch.__version__,
'| cuda', torch.version.cuda, '| cudnn', torch.backends.cudnn.version(), '| triton', triton.__version__,
'|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')" 2>&1
    for tool in nvcc cuobjdump nvdisasm compute-sanitizer ncu; do
        printf '%s: %s\n' "$tool" "$(command -v "$tool" || echo missing)"
    done
    "$PY" -c "import pytest_timeout" 2>/dev/null && echo "pytest-timeout: yes" || echo "pytest-timeout: missing"
    echo "cores: $(nproc)"
    echo '```'
} >"$WORK/header.md" 2>&1

# ---------------------------------------------------------------------------------------------------------------
# Install. A failed CUDA build is recorded, then the package is installed without it: Triton needs none of it.
if [ "$DRY_RUN" = 1 ]; then
    step install 150 env PYTHON="$PY" bash scripts/install_editable.sh --dry-run
else
    step install 150 env PYTHON="$PY" bash scripts/install_editable.sh ||
        step install-without-cuda 60 env PYTHON="$PY" FUSEDRNN_SKIP_CUDA_BUILD=1 bash scripts/install_editable.sh
fi
timeout 60 "$PY" -c "from fusedrnn import registry; print(registry.availability())" >>"$LOGS/install.log" 2>&1

# Compile evidence on the CPU while the GPU works: the key configurations (the target shapes) built for sm_90, with
# ptxas' registers, spills and shared memory. (The compiler refuses to run under the interpreter, hence `env -u`; a
# dry run compiles one kernel.)
COMPILE_CHECK=(env -u TRITON_INTERPRET TRITON_CACHE_DIR="$WORK/compile-cache" "$PY" -m fusedrnn.kernels.compile_check
    --ptxas)
if [ "$DRY_RUN" = 1 ]; then
    COMPILE_CHECK+=(--only 'tiled forward mode=0 bf16 minimal')
else
    COMPILE_CHECK+=(--key)
fi
if [ "$DRY_RUN" = 1 ]; then
    step compile-evidence 240 "${COMPILE_CHECK[@]}"
else
    step compile-evidence 240 "${COMPILE_CHECK[@]}" &
    EVIDENCE_PID=$!
fi

# ---------------------------------------------------------------------------------------------------------------
BENCH=("$PY" -m fusedrnn.bench --device cuda --mode both)
BENCH_RUNS=0
bench() {  # bench LABEL LIMIT TRITON_KERNEL BENCH_ARGS...: one fusedrnn-bench run; its JSON grows config by config
    local label=$1 limit=$2 kernel=$3
    shift 3
    BENCH_RUNS=$((BENCH_RUNS + 1))  # numbered JSON files: the digest lists the runs in the order they ran
    FUSEDRNN_TRITON_KERNEL=$kernel step "bench-$label" "$limit" "${BENCH[@]}" "$@" "${TINY[@]}" \
        --json "$WORK/bench/$(printf %02d "$BENCH_RUNS")-$label.json"
}

if [ "$SWEEP" = 0 ] || [ "$DRY_RUN" = 1 ]; then
    # The fused kernels most likely to be fast first: the persistent ones (W_hh on chip, one launch per sequence):
    # Triton's forced, the CUDA backend's where its planner picks them. flashrnn in fp16 too: cuDNN picks its
    # persistent algorithm only for fp16 (REFERENCE.md §3).
    FUSED=fusedrnn:triton,fusedrnn:cuda
    bench flashrnn-bf16-persistent 40 persistent --preset flashrnn --dtype bfloat16 --backends "$FUSED"
    bench flashrnn-fp16-persistent 30 persistent --preset flashrnn --dtype float16 --backends "$FUSED"
    bench fastrnns-bf16-persistent 30 persistent --preset fastrnns --cell lstm gru --dtype bfloat16 --backends "$FUSED"
    bench latency-bf16-persistent 30 persistent --preset latency --dtype bfloat16 --backends "$FUSED"
    # Then the tiled Triton kernels (one program per 16 batch rows), and fp32 (TF32 settings in the JSON).
    bench fastrnns-bf16-tiled 25 tiled --preset fastrnns --cell lstm gru --dtype bfloat16 --backends fusedrnn:triton
    bench latency-fp32 25 tiled --preset latency --dtype float32 --backends "$FUSED"
    # Predicted >20x slower than cuDNN (~0.2-0.4 ms per step, REFERENCE.md §5b): last, 1 warm-up and 3 repeats.
    bench flashrnn-bf16-tiled-reduced 25 tiled --preset flashrnn --dtype bfloat16 --backends fusedrnn:triton \
        --warmup 1 --repeat 3
fi

if [ "$SWEEP" = 0 ] || [ "$DRY_RUN" = 1 ]; then
    # The suite, the GPU backends' files first (pytest runs each file once): on a GPU the triton and cuda tests run in
    # fp32/fp16/bf16. Not the examples (CPU training runs), nor this script's own dry run. A dry run only collects (CI
    # runs the suite itself).
    PYTEST=("$PY" -m pytest tests/test_triton_backend.py tests/test_native_backend.py tests/test_variants_triton.py
        tests/test_triton_registration.py
        tests -q -rfEs -p no:cacheprovider --ignore=tests/test_examples.py -k "not dry_run")
    "$PY" -c "import pytest_timeout" 2>/dev/null && PYTEST+=("--timeout=$PER_TEST_TIMEOUT_S")
    [ "$DRY_RUN" = 1 ] && PYTEST+=(--collect-only)
    TRITON_CACHE_DIR=$WORK/test-cache step tests 170 "${PYTEST[@]}"

    # compute-sanitizer on the persistent kernels only (--kernel-name), run by a two-step forward+backward benchmark
    # at a small shape (which also checks the result against torch.nn). A dry run runs the same command bare on CPU.
    # Both families forced persistent; the CUDA barrier's wait lengthened, since the sanitizer slows kernels a lot.
    SMALL=("$PY" -m fusedrnn.bench --device cuda --dtype bfloat16 --cell lstm gru --seq-len 4 --batch 3
        --input-size 32 --hidden-size 32 --warmup 0 --repeat 1 --backends fusedrnn:triton,fusedrnn:cuda "${TINY[@]}")
    export FUSEDRNN_TRITON_KERNEL=persistent FUSEDRNN_CUDA_TUNE=path=persistent,timeout_ms=30000
    for tool in racecheck memcheck; do
        if [ "$DRY_RUN" = 1 ]; then
            step "sanitize-$tool" 40 "${SMALL[@]}"
        else
            step "sanitize-$tool" 40 compute-sanitizer --tool "$tool" --kernel-name kns=persistent \
                --error-exitcode 3 --print-limit 20 "${SMALL[@]}"
        fi
    done
    unset FUSEDRNN_TRITON_KERNEL FUSEDRNN_CUDA_TUNE
fi

if [ "$SWEEP" = 1 ] || [ "$DRY_RUN" = 1 ]; then
    if [ "$DRY_RUN" = 1 ]; then
        SWEEP_ARGS=(--dry-run --grid ";warps=4")
    else
        SWEEP_ARGS=(--budget-s 390)
    fi
    step sweep 400 "$PY" -m fusedrnn.bench.sweep --out "$WORK/sweep" "${SWEEP_ARGS[@]}"
    cp "$WORK/sweep/sweep.json" "$WORK/sweep/sweep.md" "$OUT/" 2>/dev/null
fi

# ---------------------------------------------------------------------------------------------------------------
# Evidence: wait for the compile step (it stops at its own limit), then SASS summaries: of the kernels the benchmarks ran
# and the extension's (evidence.json, in the summary), and of every compiled Triton specialisation (report only).
[ -n "${EVIDENCE_PID:-}" ] && wait "$EVIDENCE_PID"
SO=(fusedrnn/_C*.so)
[ -e "${SO[0]}" ] || SO=()
SASS=("$PY" -m fusedrnn.bench.sass --arch sm_90)
[ "$DRY_RUN" = 1 ] && HOT=("$WORK/compile-cache") || HOT=("$WORK/bench-cache")  # the interpreter compiles nothing
RESERVE_S=8 step sass 30 "${SASS[@]}" --json "$OUT/evidence.json" --markdown "$WORK/sass-hot.md" "${HOT[@]}" "${SO[@]}"
[ "$DRY_RUN" = 1 ] ||
    RESERVE_S=5 step sass-compile-check 20 "${SASS[@]}" --json "$WORK/sass-compile.json" \
        --markdown "$WORK/sass-compile.md" "$WORK/compile-cache"

# ---------------------------------------------------------------------------------------------------------------
# bench.json (every run merged), report.md, logs.tar.gz, and the summary printed last.
"$PY" -m fusedrnn.bench.digest --json "$OUT/bench.json" "$WORK"/bench/*.json >"$WORK/bench.md" 2>&1
sanitizer_line() {  # the verdict line of a compute-sanitizer log
    if [ "$DRY_RUN" = 1 ]; then echo "(dry run: the command ran without compute-sanitizer)"; return; fi
    grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$LOGS/sanitize-$1.log" 2>/dev/null | tail -n 1
}
{
    echo "## Summary (limit = the step's time limit, cut to the deadline)"
    echo
    echo "| step | outcome | seconds | limit |"
    echo "|---|---|---|---|"
    while IFS=$'\t' read -r name outcome seconds limit; do
        echo "| $name | $outcome | $seconds | $limit |"
    done <"$STEPS"
    echo
    echo "tests: $(grep -E '[0-9]+ (passed|failed|errors?|skipped|tests? collected)' "$LOGS/tests.log" 2>/dev/null | tail -n 1)"
    for tool in racecheck memcheck; do
        echo "$tool: $(sanitizer_line "$tool")"
    done
    echo
    echo "### Benchmarks (median ms; speedup = torch.nn / row; flashrnn-bf16-tiled-reduced: 1 warm-up + 3 repeats)"
    echo
    cat "$WORK/bench.md"
    echo
    echo "### Kernels the benchmarks ran, and the extension's (sm_90 SASS; LDL/STL = local memory, i.e. spills)"
    echo
    cat "$WORK/sass-hot.md" 2>/dev/null
    [ -f "$WORK/sweep/sweep.md" ] && { echo; echo "### Sweep"; echo; cat "$WORK/sweep/sweep.md"; }
    echo
    echo "total $(($(date +%s) - START)) s of a $BUDGET_S s budget; report, JSON and logs in $OUT"
} >"$WORK/summary.md"
failed=0
grep -q -v -P '\tok\t' "$STEPS" && failed=1
{
    cat "$WORK/header.md"
    echo
    echo "## The key Triton configurations compiled for sm_90 (compile_check --ptxas --key; then their SASS)"
    echo
    grep -v '^\$ ' "$LOGS/compile-evidence.log" 2>/dev/null
    echo
    cat "$WORK/sass-compile.md" 2>/dev/null
    echo
    echo "## Test log tail"
    echo '```'
    tail -n 40 "$LOGS/tests.log" 2>/dev/null
    echo '```'
    echo
    cat "$WORK/summary.md"
} >"$OUT/report.md"
tar -czf "$OUT/logs.tar.gz" -C "$WORK" --exclude=bench-cache --exclude=test-cache --exclude=compile-cache . 2>/dev/null
rm -rf "$WORK"
cat "$OUT/report.md" | sed -n '/^## Summary/,$p'
exit "$failed"
