"""The correctness gate: a row's outputs (and gradients) against torch.nn's on the same weights and inputs."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

#: (rtol, atol) per dtype, the same table as tests/parity.py: a kernel against torch in the same dtype. Long
#: sequences accumulate more rounding than the short ones of the tests; a row that exceeds these is shown as a
#: mismatch with its error, so the reader can judge (never silently widened here).
TOLERANCES = {
    torch.float64: {"rtol": 1e-9, "atol": 1e-10},
    torch.float32: {"rtol": 3e-4, "atol": 1e-3},
    torch.float16: {"rtol": 3e-3, "atol": 5e-3},
    torch.bfloat16: {"rtol": 1e-2, "atol": 5e-2},
}


@dataclasses.dataclass
class Check:
    """Outcome of comparing one row with the baseline: `passed`, the largest absolute error over every compared
    tensor, the tensor it occurred in, and the names of tensors that failed the tolerance (or were missing)."""

    passed: bool
    max_abs_err: float
    worst: str
    failed: list[str]
    compared: int
    tolerance: dict[str, float]

    def summary(self) -> str:
        if self.passed:
            return f"ok ({self.max_abs_err:.1e})"
        shown = ", ".join(self.failed[:2]) + (", ..." if len(self.failed) > 2 else "")
        return f"MISMATCH {shown} (max err {self.max_abs_err:.1e} in {self.worst})"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def compare(actual: dict[str, Tensor | None], expected: dict[str, Tensor | None], dtype: torch.dtype) -> Check:
    """Compare every tensor of `expected` that `actual` also computes (peers may not expose torch's parameters).

    A tensor present in one and None (no gradient) in the other, a shape difference or any NaN counts as a failure.
    """
    tolerance = TOLERANCES[dtype]
    failed: list[str] = []
    worst, max_err, compared = "", 0.0, 0
    for key, e in expected.items():
        if key not in actual:
            continue
        a = actual[key]
        compared += 1
        if (a is None) != (e is None):
            failed.append(f"{key} (gradient missing in one)")
            continue
        if e is None:
            continue
        if a.shape != e.shape:
            failed.append(f"{key} (shape {tuple(a.shape)} != {tuple(e.shape)})")
            continue
        a64, e64 = a.detach().double().cpu(), e.detach().double().cpu()
        diff = (a64 - e64).abs()
        err = float(diff.max()) if diff.numel() else 0.0
        if diff.isnan().any():
            err = float("nan")
        if err > max_err or (math.isnan(err) and not math.isnan(max_err)):  # a NaN is always the worst
            max_err, worst = err, key
        if not torch.allclose(a64, e64, **tolerance):
            failed.append(key)
    return Check(not failed, max_err, worst, failed, compared, tolerance)
