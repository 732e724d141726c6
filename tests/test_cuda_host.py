"""The `cuda` backend's host side on a GPU (csrc/persistent_host.cpp): its settings, its plan cache, and the paths
it must take by itself. The planner's decisions are tested on the CPU (test_cuda_plan.py); the kernels' values in
test_cuda_persistent.py and test_native_backend.py; hidden size 0 on cuda in test_dropin.py."""

from __future__ import annotations

import pytest
import torch
from devices import needs_cuda

import fusedrnn

TUNE_ENV = "FUSEDRNN_CUDA_TUNE"
BARRIER_TIMEOUT_ENV = "FUSEDRNN_CUDA_BARRIER_TIMEOUT_MS"


def lstm_step(dtype=torch.bfloat16, hidden=64):
    """One forward and backward of a small cuda-backed LSTM; returns y."""
    torch.manual_seed(0)
    lstm = fusedrnn.LSTM(16, hidden, backend="cuda").to("cuda", dtype)
    x = torch.randn(5, 3, 16, device="cuda", dtype=dtype, requires_grad=True)
    y = lstm(x)[0]
    y.sum().backward()
    torch.cuda.synchronize()
    return y.detach()


@needs_cuda
@pytest.mark.parametrize("value", ["0", "-5", "1.5", "soon"])
def test_a_bad_barrier_timeout_is_a_value_error(monkeypatch, value):
    monkeypatch.setenv(TUNE_ENV, "path=persistent,cluster=0")
    monkeypatch.setenv(BARRIER_TIMEOUT_ENV, value)
    with pytest.raises(ValueError, match=BARRIER_TIMEOUT_ENV):
        lstm_step()


@needs_cuda
def test_the_barrier_timeout_setting_survives_the_tests_tuning(monkeypatch):
    """gpu_check.sh shortens the grid barrier's wait with its own variable; a test that sets FUSEDRNN_CUDA_TUNE (as
    most do) keeps it, and a run that fits still passes under it."""
    monkeypatch.setenv(BARRIER_TIMEOUT_ENV, "300")
    monkeypatch.setenv(TUNE_ENV, "path=persistent,cluster=0")
    grid = lstm_step()
    monkeypatch.setenv(TUNE_ENV, "path=step")
    torch.testing.assert_close(grid, lstm_step(), rtol=0, atol=0)  # the same kernel, one launch per step


@needs_cuda
def test_plans_are_cached_per_tuning_text(monkeypatch):
    """The plan is cached per shape and FUSEDRNN_CUDA_TUNE text: changing the text between calls changes the path
    (a forced path that does not fit is an error at once, not a stale plan)."""
    monkeypatch.setenv(TUNE_ENV, "path=step")
    lstm_step()
    monkeypatch.setenv(TUNE_ENV, "path=persistent,ctas=100000")
    with pytest.raises(RuntimeError, match="persistent CUDA path"):
        lstm_step()
    monkeypatch.setenv(TUNE_ENV, "path=loop")
    lstm_step()



def test_deferred_barrier_checks_nest_and_refuse_an_unpaired_flush():
    """The deferral's bookkeeping runs on the CPU too (the flags only exist after a persistent CUDA launch): a flush
    without a deferral is a bug in the caller and says so; nested deferrals flush at the outermost."""
    from fusedrnn import _extension

    if not _extension.has_cuda_kernels():
        pytest.skip("the extension was built without CUDA: the deferral ops are no-ops")
    ops = torch.ops.fusedrnn
    ops.cuda_defer_barrier_checks()
    ops.cuda_defer_barrier_checks()
    ops.cuda_flush_barrier_checks(True)
    ops.cuda_flush_barrier_checks(True)
    with pytest.raises(RuntimeError, match="without defer_barrier_checks"):
        ops.cuda_flush_barrier_checks(True)


@needs_cuda
def test_a_module_call_defers_its_barrier_checks(monkeypatch):
    """A 2-layer bidirectional module call on the grid path gives the per-step path's results (the same kernels),
    with its four barrier flags read once at the end."""
    monkeypatch.setenv(TUNE_ENV, "path=persistent,cluster=0")
    torch.manual_seed(0)
    lstm = fusedrnn.LSTM(16, 64, num_layers=2, bidirectional=True, backend="cuda").to("cuda", torch.bfloat16)
    x = torch.randn(5, 3, 16, device="cuda", dtype=torch.bfloat16)
    grid = lstm(x)[0]
    monkeypatch.setenv(TUNE_ENV, "path=step")
    torch.testing.assert_close(grid, lstm(x)[0], rtol=0, atol=0)
