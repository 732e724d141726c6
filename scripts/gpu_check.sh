#!/usr/bin/env bash
# GPU check: on a CUDA machine with torch and triton preinstalled and no network, build and install fusedrnn, run the
# whole test suite there (the CUDA and Triton tests run in fp32/fp16/bf16 when a GPU is present), run a short
# benchmark against cuDNN, and write everything under $OUT (default: out/gpu_check).
#
# Budget: under 8 minutes on one H100: the time limits of the steps below add up to 480 s. At most 8 files are written, so the
# device tool can bring all of them back: report.md (summary), install.log, tests.log, bench.log, 4 bench-*.json.
# Usage: bash scripts/gpu_check.sh            (exit status: non-zero if any step failed)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
# Build for the GPU at hand only (Hopper), with every core: the full arch list is for wheels, not for this check.
export MAX_JOBS=${MAX_JOBS:-$(nproc)} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
REPORT="$OUT/report.md"
failed=0

step() {  # step NAME SECONDS COMMAND...: run, log to $OUT/NAME.log (appending), record the outcome in the report
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    timeout "$limit" "$@" >>"$OUT/$name.log" 2>&1
    rc=$?
    printf -- '- `%s`: exit %s after %ss\n' "$*" "$rc" "$(($(date +%s) - start))" >>"$REPORT"
    [ "$rc" -eq 0 ] || failed=1
    return "$rc"
}

{
    echo "# fusedrnn GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo '```'
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    "$PY" -c "import sys, torch, triton; print('python', sys.version.split()[0], '| torch', torch.__version__,
'| cuda', torch.version.cuda, '| triton', triton.__version__, '|', torch.cuda.get_device_name())" 2>&1
    echo "git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo '```'
    echo
    echo "## Steps"
} >"$REPORT"

step install 120 "$PY" -m pip install --no-build-isolation --no-deps -e . || { echo "install failed" >>"$REPORT"; exit 1; }
"$PY" -c "import fusedrnn; from fusedrnn import registry; print(registry.availability())" >>"$OUT/install.log" 2>&1
step tests 240 "$PY" -m pytest tests -q -rfEs -p no:cacheprovider

# The fused backends against torch.nn (cuDNN, always run); the Python reference loop is an oracle, not a contender.
BENCH=("$PY" -m fusedrnn.bench --device cuda --mode both --backends fusedrnn:torch,fusedrnn:cuda,fusedrnn:triton)
step bench 30 "${BENCH[@]}" --preset fastrnns --cell lstm gru --dtype bfloat16 --json "$OUT/bench-fastrnns-bf16.json"
step bench 40 "${BENCH[@]}" --preset flashrnn --dtype bfloat16 --json "$OUT/bench-flashrnn-bf16.json"
step bench 30 "${BENCH[@]}" --preset latency --dtype float32 --json "$OUT/bench-latency-fp32.json"
# The opt-in persistent Triton kernels (W_hh on chip, a grid barrier per step), on the shape of the published table.
FUSEDRNN_TRITON_KERNEL=persistent step bench 20 "${BENCH[@]}" --preset flashrnn --dtype bfloat16 \
    --json "$OUT/bench-flashrnn-bf16-persistent.json"

{
    echo
    echo "## Test summary"
    echo '```'
    tail -n 30 "$OUT/tests.log"
    echo '```'
} >>"$REPORT"
exit "$failed"
