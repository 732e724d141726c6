"""Running one config: the baseline, then every row checked against it, timed, and its memory probed."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from ..registry import BackendError
from . import timing
from .check import Check, compare, uses_float64_truth
from .configs import BenchConfig
from .runnable import Unsupported
from .rows import baseline_module
from .runnable import RowSpec, Runnable

#: Row outcomes. A mismatching row is still timed: the table shows its speed next to the failed check.
OK, MISMATCH, UNCHECKED, UNSUPPORTED, FAILED = "ok", "mismatch", "unchecked", "unsupported", "failed"


@dataclasses.dataclass
class Result:
    config: BenchConfig
    row: str
    status: str
    note: str = ""
    check: Check | None = None
    timing: timing.Timing | None = None
    peak_bytes: int | None = None
    rss_growth_bytes: int | None = None  # CPU only: process peak RSS growth during one step (a lower bound)
    speedup: float | None = None  # baseline median / this median, same config
    baseline: str = ""  # the row every row of this config is checked against and compared with (the first)

    @property
    def throughput(self) -> float | None:
        """Sequence elements processed per second: seq_len * batch / median step time."""
        if self.timing is None:
            return None
        return self.config.shape.seq_len * self.config.shape.batch / (self.timing.median * 1e-3)


@dataclasses.dataclass
class Inputs:
    """x [T, N, I], h0 [L*D, N, P], c0 [L*D, N, H] (LSTM) and random upstream gradients for y, h_n, c_n."""

    x: Tensor
    h0: Tensor
    c0: Tensor | None
    upstream: list[Tensor]

    @property
    def leaves(self) -> dict[str, Tensor]:
        leaves = {"x": self.x, "h0": self.h0}
        if self.c0 is not None:
            leaves["c0"] = self.c0
        return leaves


def make_inputs(config: BenchConfig, device: torch.device, seed: int) -> Inputs:
    s = config.shape
    directions = 2 if s.bidirectional else 1
    out = s.proj_size or s.hidden_size
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> Tensor:
        # Drawn on CPU in float64 then cast, so every device and dtype sees the same numbers.
        value = torch.randn(shape, generator=generator, dtype=torch.float64)
        return value.to(device=device, dtype=config.torch_dtype).requires_grad_(config.training)

    x = randn(s.seq_len, s.batch, s.input_size)
    h0 = randn(s.layers * directions, s.batch, out)
    c0 = randn(s.layers * directions, s.batch, s.hidden_size) if config.torch_mode == "LSTM" else None
    upstream = [randn(s.seq_len, s.batch, directions * out).detach(), randn(*h0.shape).detach()]
    if c0 is not None:
        upstream.append(randn(*c0.shape).detach())
    return Inputs(x, h0, c0, upstream)


def step(runnable: Runnable, inputs: Inputs, training: bool) -> dict[str, Tensor | None]:
    """One inference forward (no grad) or one training step (forward + backward of every output).

    Returns the outputs ("y", "h_n", "c_n") and, when training, the gradients ("grad x", "grad <parameter>", ...).
    The backward uses autograd.grad, so nothing accumulates in .grad between repetitions.
    """
    names = ["y", "h_n", "c_n"]
    if not training:
        with torch.no_grad():
            outputs = runnable.forward(inputs.x, inputs.h0, inputs.c0)
        return dict(zip(names, outputs))
    outputs = runnable.forward(inputs.x, inputs.h0, inputs.c0)
    targets = {
        **{f"grad {k}": v for k, v in inputs.leaves.items()},
        **{f"grad {k}": v for k, v in runnable.params.items()},
    }
    grads = torch.autograd.grad(outputs, list(targets.values()), inputs.upstream, allow_unused=True)
    return {**dict(zip(names, (o.detach() for o in outputs))), **dict(zip(targets, grads))}


def float64_truth(
    spec: RowSpec, baseline: torch.nn.Module, inputs: Inputs, config: BenchConfig
) -> dict[str, Tensor | None]:
    """The baseline row (`spec` on the module `baseline`) in float64 on the very same (already rounded) weights,
    inputs and upstream gradients."""
    exact = copy.deepcopy(baseline).double()

    def widen(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.detach().double().requires_grad_(config.training)

    wide = Inputs(widen(inputs.x), widen(inputs.h0), widen(inputs.c0), [u.double() for u in inputs.upstream])
    return step(spec.build(config, exact), wide, config.training)


def run_config(
    config: BenchConfig,
    rows: list[RowSpec],
    device: torch.device,
    warmup: int,
    repeat: int,
    seed: int,
    advance: Callable[[str], None] = lambda row: None,
) -> list[Result]:
    """Benchmark every row on `config`; `advance(row)` is called as each row is built and checked (progress).

    The first row is the baseline (torch.nn, or a variant's plain loop): every other row is checked against its
    outputs and gradients, and its median time is the speedup's numerator.
    Rows are checked one by one, then timed interleaved (repetition r of every row before repetition r+1 of any),
    so a burst of load from elsewhere on a shared machine slows all rows alike instead of one row's whole block.
    """
    baseline_spec = rows[0]
    baseline = baseline_module(config, device, seed).train(config.training)
    inputs = make_inputs(config, device, seed)
    truth = None
    if uses_float64_truth(config.torch_dtype, config.variant):
        truth = float64_truth(baseline_spec, baseline, inputs, config)
    if any(spec.compiles for spec in rows):
        torch.compiler.reset()  # fresh Dynamo caches for this config's compiled rows (RowSpec.compiles)
    expected: dict[str, Tensor | None] | None = None
    results: list[Result] = []
    steps: dict[str, Callable[[], object]] = {}
    for spec in rows:
        advance(spec.name)
        result = Result(config, spec.name, OK, baseline=baseline_spec.name)
        results.append(result)
        try:
            runnable = spec.build(config, baseline)

            def run(runnable=runnable):
                return step(runnable, inputs, config.training)

            with timing.time_limit(spec.first_call_limit_s):
                actual = run()  # the first call also compiles / autotunes where a row does that
            if spec is baseline_spec:
                expected = actual
            if expected is None:
                result.status = UNCHECKED
                result.note = f"{baseline_spec.name} baseline failed: nothing to check against"
            else:
                result.check = compare(actual, expected, config.torch_dtype, truth)
                if not result.check.passed:
                    result.status = MISMATCH
            steps[spec.name] = run
        except Exception as error:  # noqa: BLE001 - one broken row must not hide the others' results
            _record_failure(result, error)
    by_name = {result.row: result for result in results}
    timings = timing.measure_interleaved(steps, device, warmup, repeat)
    for name, outcome in timings.items():
        if isinstance(outcome, Exception):
            _record_failure(by_name[name], outcome)
            continue
        result = by_name[name]
        result.timing = outcome
        try:
            result.peak_bytes, result.rss_growth_bytes = timing.peak_memory(steps[name], device)
        except Exception as error:  # noqa: BLE001 - a failed probe leaves the memory unknown, the timing stands
            result.note = f"memory probe failed: {type(error).__name__}: {error}"
    base = by_name.get(baseline_spec.name)
    for result in results:
        if base is not None and base.timing is not None and result.timing is not None:
            result.speedup = base.timing.median / result.timing.median
    return results


def _record_failure(result: Result, error: Exception) -> None:
    if isinstance(error, (BackendError, Unsupported, timing.TimeLimitExceeded)):
        result.status, result.note = UNSUPPORTED, str(error)
    else:
        result.status, result.note = FAILED, f"{type(error).__name__}: {error}".strip()
