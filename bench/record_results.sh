#!/usr/bin/env bash
# Record this machine's benchmark results under bench/results/<device>/: JSON (everything), markdown table, plot.
# Usage: bench/record_results.sh [preset ...]   (default: quick fastrnns latency; on a GPU also flashrnn in bf16)
# Each preset is a separate fusedrnn-bench run; a run whose table shows a mismatch is recorded and reported, not
# hidden (fusedrnn-bench exits 1 then, and this script goes on and exits 1 at the end).
set -uo pipefail
cd "$(dirname "$0")/.."
device=$(python -c "import torch; from fusedrnn.bench.environment import device_slug as s
print(s(torch.device('cuda' if torch.cuda.is_available() else 'cpu')))")
out="bench/results/$device"
mkdir -p "$out"
if [ $# -eq 0 ]; then
    set -- quick fastrnns latency
    python -c "import torch, sys; sys.exit(not torch.cuda.is_available())" && set -- "$@" flashrnn
fi
status=0
for preset in "$@"; do
    extra=()
    case $preset in
        fastrnns) extra=(--cell lstm gru) ;;  # PyTorch's benchmark shape; the two cells users run most
        flashrnn) extra=(--dtype bfloat16) ;;  # FlashRNN's published comparison is in 16-bit
    esac
    fusedrnn-bench --preset "$preset" "${extra[@]}" \
        --json "$out/$preset.json" --markdown "$out/$preset.md" --plot "$out/$preset.png" || status=$?
done
exit $status
