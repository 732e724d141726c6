"""Test session set-up shared by every test file."""

import os
import re

import pytest
import torch

# Without a GPU the Triton kernels run under Triton's interpreter on CPU tensors. The variable is read when triton
# is imported, so it must be set here, before any test module imports fusedrnn's Triton backend.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


#: A child process's timeout ends this long before its test's own (pytest-timeout), so the child's output is reported.
CHILD_MARGIN_S = 10


@pytest.fixture
def child_timeout(pytestconfig):
    """child_timeout(default_s) -> seconds for a child process a test starts: default_s, cut below the per-test
    timeout where pytest-timeout sets one (scripts/gpu_check.sh does), so a hung child fails its test cleanly."""
    per_test = getattr(pytestconfig.option, "timeout", None)

    def limit(default_s: float) -> float:
        return default_s if not per_test else max(1.0, min(default_s, float(per_test) - CHILD_MARGIN_S))

    return limit


@pytest.fixture(params=["float32", "storage"])
def cpu_half_compute(request, monkeypatch):
    """Both ways the `cpu` backend computes a bfloat16/float16 call (fusedrnn/backends/cpu_precision.py: upcast to
    float32, or GEMMs in the storage dtype), whichever this CPU would pick."""
    monkeypatch.setenv("FUSEDRNN_CPU_HALF_COMPUTE", request.param)
    return request.param


#: A skip reason that says a test needs a GPU ("needs a CUDA device", "needs compiled Triton on a GPU").
_NEEDS_GPU = re.compile(r"\bneeds\b(?!.*\bwithout\b).*\b(CUDA|GPU)\b")


def pytest_collection_modifyitems(config, items):
    """Every test that skips for want of a GPU must carry the `gpu` marker (tests/devices.py), or the GPU run's
    `pytest -m gpu` would leave it out: a collection error names the ones that do not."""
    unmarked = [
        item.nodeid
        for item in items
        if item.get_closest_marker("gpu") is None
        and any(_NEEDS_GPU.search(str(mark.kwargs.get("reason", ""))) for mark in item.iter_markers("skipif"))
    ]
    if unmarked:
        raise pytest.UsageError("tests that need a GPU without the `gpu` marker: " + ", ".join(unmarked[:10]))
