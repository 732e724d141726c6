#!/usr/bin/env bash
# Install fusedrnn (editable) into a Python that already holds torch and triton, the way the GPU machine needs it: no
# network, so no build isolation (the extension builds against the installed torch) and no dependency resolution.
# Builds the CUDA code for sm_90 (H100/H200) only, with every core. Used by scripts/gpu_check.sh and by CI's torch-2.11
# leg (.ci/run), so that CI installs exactly as the GPU round does.
# Usage: PYTHON=/path/to/python bash scripts/install_editable.sh [extra pip arguments, e.g. --dry-run]
set -euo pipefail
cd "$(dirname "$0")/.."
export MAX_JOBS=${MAX_JOBS:-$(nproc)} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
# --no-index: the GPU machine is offline (nothing to resolve anyway, with --no-deps); --disable-pip-version-check: pip's
# version check would wait on the network there.
exec "${PYTHON:-python3}" -m pip install --no-index --disable-pip-version-check --no-build-isolation --no-deps -e . "$@"
