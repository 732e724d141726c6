#!/usr/bin/env bash
# The GPU round in one call of at most 5 minutes (issue 20): on a CUDA machine with torch and triton preinstalled and no
# network, install fusedrnn, then gather evidence cheapest first, each stage under its own time limit and writing its
# results to files as it goes, so a stage that hangs or crashes costs only itself:
#   (a) smoke     fusedrnn.bench.smoke: one small forward+backward per backend x path x cell x dtype against torch.nn
#                 in float64 on the CPU (the cuda paths in order of risk: per step, grid barrier, one CTA, cluster),
#                 and torch.compile of the Triton ops; three processes in parallel
#   (b) tests     pytest -m gpu (the tests that run on a GPU: tests/devices.py), SIGINT at the limit so pytest still
#                 prints its summary, with --junitxml
#   (c) bench     the issue's target rows, persistent kernels first; the tiled Triton kernels at short T only
#   (d) sanitize  compute-sanitizer racecheck and memcheck of the persistent kernels at a tiny shape
#   (e) evidence  in the background from the start, CPU only: the key Triton kernels compiled for sm_90 with ptxas'
#                 report, then the SASS summary of those and of the extension
# Everything lands in $OUT (default out/gpu_check), at most 8 files: report.md (everything), smoke.jsonl, junit.xml,
# bench.json, evidence.json, logs.tar.gz (+ sweep.json, sweep.md with --sweep). Standard output is only the summary,
# at most ~8,000 characters (the device tool returns the last 12,000): the stage table, the smoke results, the failed
# test ids, the benchmark rows, the sanitizer verdicts.
#
# Usage: bash scripts/gpu_check.sh [--dry-run] [--sweep]     exit status: non-zero if any stage failed or timed out
#   --dry-run  the whole script on CPU, so a typo cannot waste GPU time (CI runs it: tests/test_scripts.py): tiny
#              shapes, TRITON_INTERPRET=1, `pip install --dry-run`, the GPU tests collected, no CUDA tools; then
#              probes of the failure paths a real run can hit: a stage past its limit, a stage past the deadline,
#              pytest interrupted at its limit (its summary still printed), a benchmark killed mid-run (its partial
#              JSON still digested). The dry run fails when a probe does not end as expected.
#   --sweep    after the install, only the tuning sweep (fusedrnn.bench.sweep) instead of (b)-(d).
# Environment: PYTHON (default python3), OUT, GPU_CHECK_BUDGET_S (the deadline, default BUDGET_S).
#
# Stage limits in seconds (each cut to what is left before the deadline, BUDGET_S after the start, less RESERVE_S for
# the summary): install 70 (measured 44 s on 2 CPU cores for sm_90 alone; if it fails, 45 more without the CUDA
# extension, so the Triton stages still run), smoke 45, tests 85 (30 s a test), bench 60 in 3 runs, sanitize 2 x 12,
# evidence 200 (in the background), sweep 240 (--sweep): 284 s in all on a GPU, within the deadline.
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

BUDGET_S=${GPU_CHECK_BUDGET_S:-300} # the deadline no stage may pass: 5 minutes, leaving a 15-minute lease room to rerun
RESERVE_S=10                        # kept for the SASS summary, the archive and the summary
PER_TEST_TIMEOUT_S=30               # pytest-timeout, per test; the tests stage's limit is longer
KILL_AFTER_S=10                     # a stage that ignores its signal at the limit is killed this much later
#: The CUDA grid barrier's wait (csrc/persistent_plan.h: kBarrierTimeoutEnv): a stalled grid costs 0.3 s, not 5 s,
#: in every stage; the sanitizer's stage, which slows kernels by orders of magnitude, sets a longer one.
export FUSEDRNN_CUDA_BARRIER_TIMEOUT_MS=300
MAX_SUMMARY_CHARS=8000
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
#: Stage limits are multiplied by this: 1 on a GPU; in a dry run, where Triton's interpreter runs the kernels on 2
#: shared CPU cores, 3 (the probes of the failure paths keep their exact limits).
SLOWDOWN=1
if [ "$DRY_RUN" = 1 ]; then
    SLOWDOWN=3
    export TRITON_INTERPRET=1
    # Tiny shapes on CPU; given after each command's own flags, so they win (argparse keeps the last value).
    TINY=(--device cpu --dtype float32 --seq-len 3 --batch 2 --input-size 16 --hidden-size 16 --warmup 0 --repeat 1)
else
    TINY=()
fi

record() {  # record NAME OUTCOME SECONDS LIMIT
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$STEPS"
}

outcome_of() {  # outcome_of EXIT_STATUS: ok / TIMED OUT / FAILED (exit N)
    case $1 in
        0) echo ok ;;
        124 | 137) echo "TIMED OUT" ;;
        *) echo "FAILED (exit $1)" ;;
    esac
}

step() {  # step NAME LIMIT COMMAND...: run with a time limit (x SLOWDOWN, cut to the deadline), log to
    # $LOGS/NAME.log, record. STEP_SIGNAL: the signal at the limit (default TERM); STEP_SLOWDOWN overrides SLOWDOWN.
    local name=$1 limit=$(($2 * ${STEP_SLOWDOWN:-$SLOWDOWN})) left rc t0 signal=${STEP_SIGNAL:-TERM}
    shift 2
    left=$((DEADLINE - $(date +%s) - RESERVE_S))
    if [ "$left" -lt 5 ]; then
        record "$name" "skipped: out of time" 0 "$limit"
        return 1
    fi
    [ "$left" -lt "$limit" ] && limit=$left
    t0=$(date +%s)
    echo "\$ $*" >>"$LOGS/$name.log"
    timeout -s "$signal" -k "$KILL_AFTER_S" "$limit" "$@" >>"$LOGS/$name.log" 2>&1
    rc=$?
    # pytest answers SIGINT with its summary and exit 2: past the limit, that is a timeout too.
    [ "$signal" = INT ] && [ "$rc" = 2 ] && [ $(($(date +%s) - t0)) -ge "$limit" ] && rc=124
    record "$name" "$(outcome_of "$rc")" "$(($(date +%s) - t0))" "$limit"
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
    step install 70 env PYTHON="$PY" bash scripts/install_editable.sh --dry-run
else
    step install 70 env PYTHON="$PY" bash scripts/install_editable.sh ||
        step install-without-cuda 45 env PYTHON="$PY" FUSEDRNN_SKIP_CUDA_BUILD=1 bash scripts/install_editable.sh
fi
timeout 60 "$PY" -c "from fusedrnn import registry; print(registry.availability())" >>"$LOGS/install.log" 2>&1

# (e) Evidence on the CPU while the GPU works: the key configurations (the target shapes) built for sm_90, with
# ptxas' registers, spills and shared memory, then the SASS summary of those and of the extension. (The compiler
# refuses to run under the interpreter, hence `env -u`; a dry run compiles one kernel.) Its own deadline, so it
# never holds up the summary.
SO=(fusedrnn/_C*.so)
[ -e "${SO[0]}" ] || SO=()
SASS=("$PY" -m fusedrnn.bench.sass --arch sm_90)
evidence() {
    local only=(--key)
    [ "$DRY_RUN" = 1 ] && only=(--only 'tiled forward mode=0 bf16 minimal')
    step evidence-compile 200 env -u TRITON_INTERPRET TRITON_CACHE_DIR="$WORK/compile-cache" \
        "$PY" -m fusedrnn.kernels.compile_check --ptxas "${only[@]}"
    RESERVE_S=5 step evidence-sass 20 "${SASS[@]}" --json "$OUT/evidence.json" --markdown "$WORK/sass.md" \
        "$WORK/compile-cache" "${SO[@]}"
}
evidence &
EVIDENCE_PID=$!

# ---------------------------------------------------------------------------------------------------------------
# (a) Smoke: three processes at once (the GPU holds them all); each appends its JSON lines as it goes.
SMOKE=("$PY" -m fusedrnn.bench.smoke --out "$OUT/smoke.jsonl")
[ "$DRY_RUN" = 1 ] && SMOKE+=(--device cpu)
: >"$OUT/smoke.jsonl"
for group in triton cuda compile; do
    TRITON_CACHE_DIR=$WORK/smoke-cache-$group step "smoke-$group" 45 "${SMOKE[@]}" --group "$group" &
done
wait $(jobs -p | grep -v "^$EVIDENCE_PID\$")

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
    # (b) The GPU tests. A dry run collects them (CI runs the suite itself); pytest_timeout where installed. The files
    # that hold them are passed in order of how much their first result tells (pytest runs files in the order given;
    # with none given it goes alphabetically), so a run cut at the limit has the fundamentals.
    PRIORITY="tests/test_cuda_host.py tests/test_cuda_persistent.py tests/test_native_backend.py
        tests/test_triton_backend.py tests/test_variants_cuda.py tests/test_variants_triton.py"
    GPU_FILES=$(timeout 60 "$PY" -m pytest --collect-only -q -m gpu -p no:cacheprovider 2>/dev/null |
        grep -o '^tests/[^:]*\.py' | sort -u)
    ORDERED=$(for f in $PRIORITY; do grep -qx "$f" <<<"$GPU_FILES" && echo "$f"; done
        grep -vxF -f <(tr ' ' '\n' <<<"$PRIORITY" | grep .) <<<"$GPU_FILES")
    # shellcheck disable=SC2086 # one word per file; none (the collection failed): pytest's own discovery
    PYTEST=("$PY" -m pytest -m gpu -q -rfE -p no:cacheprovider --junitxml="$OUT/junit.xml" $ORDERED)
    "$PY" -c "import pytest_timeout" 2>/dev/null && PYTEST+=("--timeout=$PER_TEST_TIMEOUT_S")
    [ "$DRY_RUN" = 1 ] && PYTEST+=(--collect-only)
    TRITON_CACHE_DIR=$WORK/test-cache STEP_SIGNAL=INT step tests 85 "${PYTEST[@]}"

    # (c) The targets (issue 20): LSTM bf16 T=1024 N=16 H=768; LSTM and GRU T=100 N=64 H=512 training; N=1 H=256
    # T=1000 inference; the Triton persistent kernels forced, the cuda backend's planner. Then fp16 at the fastrnns
    # shape (cuDNN's persistent algorithm is fp16-only, REFERENCE.md §3), then the tiled Triton kernels at a short T
    # (they re-read W_hh every step: predicted >20x slower than cuDNN at T=1024).
    FUSED=fusedrnn:triton,fusedrnn:cuda
    bench targets-bf16-persistent 35 persistent --preset targets --cell lstm gru --dtype bfloat16 --backends "$FUSED"
    bench fastrnns-fp16-persistent 15 persistent --preset fastrnns --cell lstm gru --dtype float16 --backends "$FUSED"
    bench flashrnn-bf16-tiled-T64 10 tiled --preset flashrnn --seq-len 64 --dtype bfloat16 --backends fusedrnn:triton

    # (d) compute-sanitizer on the persistent kernels only (--kernel-name), run by a two-step forward+backward
    # benchmark at a small shape (which also checks the result against torch.nn). A dry run runs it bare on CPU.
    SMALL=("$PY" -m fusedrnn.bench --device cuda --dtype bfloat16 --cell lstm gru --seq-len 4 --batch 3
        --input-size 32 --hidden-size 32 --warmup 0 --repeat 1 --backends "$FUSED" "${TINY[@]}")
    SANITIZER=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
    for tool in racecheck memcheck; do
        if [ "$DRY_RUN" = 1 ]; then
            step "sanitize-$tool" 12 "${SMALL[@]}"
        else
            FUSEDRNN_TRITON_KERNEL=persistent FUSEDRNN_CUDA_TUNE=path=persistent \
                FUSEDRNN_CUDA_BARRIER_TIMEOUT_MS=30000 \
                step "sanitize-$tool" 12 "$SANITIZER" --tool "$tool" --kernel-name kns=persistent \
                --report-api-errors no --error-exitcode 3 --print-limit 20 "${SMALL[@]}"
        fi
    done
fi

if [ "$SWEEP" = 1 ] || [ "$DRY_RUN" = 1 ]; then
    if [ "$DRY_RUN" = 1 ]; then
        SWEEP_ARGS=(--dry-run --grid ";warps=4")
    else
        SWEEP_ARGS=(--budget-s 230)
    fi
    step sweep 240 "$PY" -m fusedrnn.bench.sweep --out "$WORK/sweep" "${SWEEP_ARGS[@]}"
    cp "$WORK/sweep/sweep.json" "$WORK/sweep/sweep.md" "$OUT/" 2>/dev/null
fi

# ---------------------------------------------------------------------------------------------------------------
# Dry run only: the failure paths, each with the outcome it must have (probes.tsv: name, expected, seen).
PROBES=$WORK/probes.tsv
: >"$PROBES"
probe() {  # probe NAME EXPECTED SEEN
    printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$PROBES"
}
last_outcome() {  # the recorded outcome of stage NAME
    awk -F'\t' -v n="$1" '$1 == n { o = $2 } END { print o }' "$STEPS"
}
if [ "$DRY_RUN" = 1 ]; then
    # A stage past its limit.
    STEP_SLOWDOWN=1 step probe-limit 2 sleep 30
    probe probe-limit "TIMED OUT" "$(last_outcome probe-limit)"
    # A stage that starts past the deadline.
    SAVED_DEADLINE=$DEADLINE
    DEADLINE=$(($(date +%s) - 1))
    step probe-deadline 30 true
    DEADLINE=$SAVED_DEADLINE
    probe probe-deadline "skipped: out of time" "$(last_outcome probe-deadline)"
    # pytest interrupted at its limit: SIGINT, then its summary and junit XML all the same.
    mkdir -p "$WORK/probe-tests"
    printf 'import time\n\ndef test_fast():\n    pass\n\ndef test_hangs():\n    time.sleep(60)\n' \
        >"$WORK/probe-tests/test_probe_hang.py"
    STEP_SLOWDOWN=1 STEP_SIGNAL=INT step probe-pytest 15 "$PY" -m pytest -q -p no:cacheprovider -c /dev/null \
        --rootdir "$WORK/probe-tests" --junitxml="$WORK/probe-junit.xml" "$WORK/probe-tests/test_probe_hang.py"
    probe probe-pytest "TIMED OUT" "$(last_outcome probe-pytest)"
    grep -qE '(Interrupted|KeyboardInterrupt|[0-9]+ passed)' "$LOGS/probe-pytest.log" && seen=printed || seen=missing
    probe probe-pytest-summary printed "$seen"
    [ -s "$WORK/probe-junit.xml" ] && seen=written || seen=missing
    probe probe-pytest-junit written "$seen"
    # A benchmark killed (SIGKILL, no cleanup) once its JSON holds a result: the digest still reads it, as stopped.
    KILLED_JSON=$WORK/bench/99-probe-killed.json
    FUSEDRNN_TRITON_KERNEL=tiled "${BENCH[@]}" --preset quick --cell lstm gru "${TINY[@]}" --json "$KILLED_JSON" \
        >"$LOGS/probe-bench-kill.log" 2>&1 &
    BENCH_PID=$!
    for _ in $(seq 600); do
        grep -q '"results": \[$' "$KILLED_JSON" 2>/dev/null && grep -q '"row":' "$KILLED_JSON" && break
        kill -0 "$BENCH_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$BENCH_PID" 2>/dev/null && seen=killed || seen="had already ended"
    wait "$BENCH_PID" 2>/dev/null
    probe probe-bench-kill killed "$seen"
    "$PY" -m fusedrnn.bench.digest --compact "$KILLED_JSON" 2>&1 | grep -q "stopped" && seen=digested || seen=unread
    probe probe-bench-partial digested "$seen"
fi

# ---------------------------------------------------------------------------------------------------------------
# Evidence: wait for it (it stops at its own limits), then bench.json, report.md, logs.tar.gz and the summary.
wait "$EVIDENCE_PID"
BENCH_JSON=$(ls "$WORK"/bench/*.json 2>/dev/null | grep -v probe)
"$PY" -m fusedrnn.bench.digest --json "$OUT/bench.json" --markdown "$WORK/bench.md" $BENCH_JSON >/dev/null 2>&1
"$PY" -m fusedrnn.bench.digest --compact $BENCH_JSON >"$WORK/bench-compact.md" 2>&1
"$PY" -m fusedrnn.bench.smoke --summarize "$OUT/smoke.jsonl" >"$WORK/smoke.md" 2>&1
sanitizer_line() {  # the verdict line of a compute-sanitizer log
    if [ "$DRY_RUN" = 1 ]; then echo "(dry run: the command ran without compute-sanitizer)"; return; fi
    grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$LOGS/sanitize-$1.log" 2>/dev/null | tail -n 1
}
{
    echo "## Summary (limit = the stage's time limit, cut to the deadline)"
    echo
    echo "| stage | outcome | seconds | limit |"
    echo "|---|---|---|---|"
    while IFS=$'\t' read -r name outcome seconds limit; do
        echo "| $name | $outcome | $seconds | $limit |"
    done <"$STEPS"
    if [ "$DRY_RUN" = 1 ]; then
        echo
        echo "| failure-path probe | expected | seen |"
        echo "|---|---|---|"
        while IFS=$'\t' read -r name expected seen; do
            echo "| $name | $expected | $seen$([ "$expected" = "$seen" ] || echo ' (PROBE FAILED)') |"
        done <"$PROBES"
    fi
    echo
    echo "### Smoke (fusedrnn.bench.smoke: against torch.nn in float64 on CPU, bound 2x torch.nn's error + floor)"
    echo
    cat "$WORK/smoke.md"
    echo
    echo "### Tests (pytest -m gpu): $(grep -E '[0-9]+ (passed|failed|errors?|skipped|deselected|tests? collected)' \
        "$LOGS/tests.log" 2>/dev/null | tail -n 1 | cut -c1-200)"
    grep -E '^(FAILED|ERROR) ' "$LOGS/tests.log" 2>/dev/null | cut -c1-160 | head -n 15
    echo
    echo "### Benchmarks (median ms; x torch = torch.nn / row)"
    echo
    head -c 3000 "$WORK/bench-compact.md"
    echo
    for tool in racecheck memcheck; do
        echo "$tool: $(sanitizer_line "$tool")"
    done
    echo "evidence: $(grep -c '"kernel"' "$OUT/evidence.json" 2>/dev/null || echo 0) kernels in evidence.json"
    echo
    echo "total $(($(date +%s) - START)) s of a $BUDGET_S s budget; report, JSON and logs in $OUT"
} >"$WORK/summary.md"
failed=0
awk -F'\t' '$1 !~ /^probe-/ && $2 != "ok" { bad = 1 } END { exit !bad }' "$STEPS" && failed=1
awk -F'\t' '$2 != $3 { bad = 1 } END { exit !bad }' "$PROBES" && failed=1
{
    cat "$WORK/header.md"
    echo
    echo "## The key Triton configurations compiled for sm_90 (compile_check --ptxas --key), then the SASS summary"
    echo
    grep -v '^\$ ' "$LOGS/evidence-compile.log" 2>/dev/null
    echo
    cat "$WORK/sass.md" 2>/dev/null
    echo
    echo "## Every benchmark row"
    echo
    cat "$WORK/bench.md" 2>/dev/null
    [ -f "$WORK/sweep/sweep.md" ] && { echo; echo "## Sweep"; echo; cat "$WORK/sweep/sweep.md"; }
    echo
    echo "## Test log tail"
    echo '```'
    tail -n 40 "$LOGS/tests.log" 2>/dev/null
    echo '```'
    echo
    cat "$WORK/summary.md"
} >"$OUT/report.md"
tar -czf "$OUT/logs.tar.gz" -C "$WORK" --exclude='*-cache*' . 2>/dev/null
rm -rf "$WORK"
sed -n '/^## Summary/,$p' "$OUT/report.md" | head -c "$MAX_SUMMARY_CHARS"
exit "$failed"
