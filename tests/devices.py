"""Which device the tests run on, and the `gpu` marker's one rule.

`@pytest.mark.gpu` (registered in pyproject.toml) marks every test that runs on a CUDA device when one is present:
scripts/gpu_check.sh runs `pytest -m gpu` on the GPU machine, so that run selects exactly these (CI has already run
the whole suite on CPU). A test that cannot run at all without a GPU uses `needs_cuda`, which adds the marker and the
skip together; conftest.py refuses a test that skips for want of CUDA without the marker, so none is left out of the
GPU run by accident.
"""

from __future__ import annotations

import pytest
import torch

CUDA = torch.cuda.is_available()
#: Where the device-following tests (the triton backend's grid, the triton variants) put their tensors.
DEVICE = "cuda" if CUDA else "cpu"
#: The skip reason of `needs_cuda`; conftest.py looks for "CUDA" in skip reasons.
NEEDS_CUDA_REASON = "needs a CUDA device"


def needs_cuda(test):
    """A test that needs a CUDA device: selected by `pytest -m gpu`, skipped where there is none."""
    return pytest.mark.gpu(pytest.mark.skipif(not CUDA, reason=NEEDS_CUDA_REASON)(test))
