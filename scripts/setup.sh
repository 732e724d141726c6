#!/usr/bin/env bash
# Set up a virtual environment in .venv with torch and fusedrnn (editable, with its test extras).
# Idempotent; used by the README's two commands and by CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CUDA build of torch: its CUDA headers and libraries let the extension compile without a GPU; triton comes with it.
python -m pip install -q "torch==2.14.1" ninja "setuptools>=77" wheel
python -m pip install -q --no-build-isolation -e ".[test,plot,triton,examples,export,xlstm]"
python -c "import fusedrnn; print('fusedrnn backends available here:', fusedrnn.available_backends())"
