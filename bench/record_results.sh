#!/usr/bin/env bash
# Record this machine's benchmark results under bench/results/<device>/: JSON (everything), markdown table, plot.
# Usage: [THREADS=n] bench/record_results.sh [preset ...]
#   presets default to: quick fastrnns latency (and flashrnn in bf16 on a GPU)
#   `variants`: issue 15's variants against a plain PyTorch step loop (~1.5 min on the 2-core CPU)
#   THREADS=n runs torch with n CPU threads and adds -t<n> to the file names (steadier on a shared, busy machine)
# Each preset is a separate fusedrnn-bench run; a run whose table shows a mismatch is recorded and reported, not
# hidden (fusedrnn-bench exits 1 then; this script goes on and exits 1 at the end).
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
threads=()
suffix=""
if [ -n "${THREADS:-}" ]; then
    threads=(--threads "$THREADS")
    suffix="-t$THREADS"
fi
status=0
for preset in "$@"; do
    extra=()
    case $preset in
        fastrnns) extra=(--cell lstm gru rnn_tanh) ;;  # PyTorch's benchmark shape, every cell family
        flashrnn) extra=(--dtype bfloat16) ;;  # FlashRNN's published comparison is in 16-bit
    esac
    name="$out/$preset$suffix"
    fusedrnn-bench --preset "$preset" "${extra[@]}" "${threads[@]}" \
        --json "$name.json" --markdown "$name.md" --plot "$name.png" || status=$?
done
exit $status
