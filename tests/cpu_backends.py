"""The backends a drop-in scenario runs on, on CPU: `auto` and every registered backend forced by name.

Each comes with the dtype it is compared in: float64 (the parity dtype) where the backend serves it, else float32
(`triton` under its interpreter); backends that cannot run CPU tensors here come with the reason, and their tests
are skipped with it.
"""

from __future__ import annotations

import pytest
import torch

from fusedrnn import registry


def _cpu_call(dtype: torch.dtype) -> registry.RNNCall:
    return registry.RNNCall(mode="GRU", device_type="cpu", dtype=dtype, input_size=1, hidden_size=1)


def _dtype_and_skip_reason(name: str) -> tuple[torch.dtype, str | None]:
    if name == registry.AUTO:
        return torch.float64, None
    reason = registry.availability()[name]
    if reason is not None:
        return torch.float64, reason
    backend = registry.get_backend(name)
    reasons = []
    for dtype in (torch.float64, torch.float32):
        reason = backend.unsupported_reason(_cpu_call(dtype))
        if reason is None:
            return dtype, None
        reasons.append(reason)
    return torch.float64, "; ".join(reasons)


def cpu_backends() -> list[tuple[str, torch.dtype, str | None]]:
    """(backend name, dtype to compare in, None or why it cannot run CPU tensors here), `auto` first."""
    return [(name, *_dtype_and_skip_reason(name)) for name in [registry.AUTO, *registry.backend_names()]]


def backend_params(float32_only: bool = False) -> list:
    """pytest params (backend, dtype) with ids, one per backend; `float32_only` for scenarios that need float32
    (ONNX Runtime, dynamic quantization)."""
    params = []
    for name, dtype, reason in cpu_backends():
        marks = [pytest.mark.skip(reason=f"backend {name!r} cannot run CPU tensors here: {reason}")] if reason else []
        params.append(pytest.param(name, torch.float32 if float32_only else dtype, id=name, marks=marks))
    return params
