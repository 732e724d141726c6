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

#: In float16/bfloat16 two correct implementations round differently, and the gap grows with T. A tensor outside
#: the fixed tolerance still passes if its error against the float64 truth (torch.nn in float64 on the same rounded
#: weights and inputs) is at most this multiple of torch.nn's own error against that truth (REFERENCE.md §4).
LOW_PRECISION = (torch.float16, torch.bfloat16)
TRUTH_ERROR_FACTOR = 2.0


def uses_float64_truth(dtype: torch.dtype, variant: bool) -> bool:
    """Whether a config's rows may also be judged against the float64 truth (as above): in 16-bit always, and in
    float32 for issue 15's variants. Their LayerNorm cells amplify rounding over time: at T=100 N=16 H=256 the
    LayerNorm-LSTM's float32 loop and float32 reference each end ~1e-3 from float64 and 2e-3 from each other (1e-6
    after 10 steps, 2e-5 after 30), which no fixed float32 tolerance separates from a bug."""
    return dtype in LOW_PRECISION or (variant and dtype == torch.float32)


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
    #: tensor -> (this row's, torch.nn's) max abs error against float64: outside the fixed tolerance, but passed
    #: because the row is no further from the truth than TRUTH_ERROR_FACTOR x torch.nn (low precision only).
    judged_by_truth: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        if self.passed:
            vs_truth = f", {len(self.judged_by_truth)} within {TRUTH_ERROR_FACTOR:g}x the baseline's fp64 error" * bool(
                self.judged_by_truth
            )
            return f"ok ({self.max_abs_err:.1e}{vs_truth})"
        shown = ", ".join(self.failed[:2]) + (", ..." if len(self.failed) > 2 else "")
        return f"MISMATCH {shown} (max err {self.max_abs_err:.1e} in {self.worst})"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _max_abs(a: Tensor, b: Tensor) -> float:
    diff = (a.detach().double().cpu() - b.detach().double().cpu()).abs()
    return float(diff.max()) if diff.numel() else 0.0  # NaN if any element is NaN


def compare(
    actual: dict[str, Tensor | None],
    expected: dict[str, Tensor | None],
    dtype: torch.dtype,
    truth: dict[str, Tensor | None] | None = None,
) -> Check:
    """Compare every tensor of `expected` that `actual` also computes (peers may not expose torch's parameters).

    A tensor present in one and None (no gradient) in the other, a shape difference or any NaN counts as a failure.
    `truth` (the float64 result, for float16/bfloat16 runs) rescues tensors as described at TRUTH_ERROR_FACTOR.
    """
    tolerance = TOLERANCES[dtype]
    failed: list[str] = []
    worst, max_err, compared = "", 0.0, 0
    judged: dict[str, tuple[float, float]] = {}
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
        err = _max_abs(a, e)
        if err > max_err or (math.isnan(err) and not math.isnan(max_err)):  # a NaN is always the worst
            max_err, worst = err, key
        if torch.allclose(a.detach().double().cpu(), e.detach().double().cpu(), **tolerance):
            continue
        t = None if truth is None else truth.get(key)
        if t is not None:
            row_err, torch_err = _max_abs(a, t), _max_abs(e, t)
            if row_err <= TRUTH_ERROR_FACTOR * torch_err:  # False for NaN
                judged[key] = (row_err, torch_err)
                continue
        failed.append(key)
    return Check(not failed, max_err, worst, failed, compared, tolerance, judged)
