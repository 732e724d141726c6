"""Shared test helpers: tolerances per dtype, and running a module forward and backward to collect every output and
every gradient, so two implementations can be compared in one call.

Usage:
    expected = forward_backward(torch_module, make_inputs)
    actual = forward_backward(fused_module, make_inputs)
    assert_all_close(actual, expected, dtype)
where `make_inputs()` returns fresh `(args, leaves)`: the module's call arguments and a dict of the leaf tensors
(input, h0, c0) whose gradients are compared. Upstream gradients are random (seeded), never `.sum()`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

#: (rtol, atol) per dtype for a kernel against the reference computed in the same dtype, or against a float64 truth,
#: on short sequences (a few steps, H <= ~100).
#: float64 is the parity dtype: implementations agree to rounding, so 1e-10 is loose enough and 1e-4 would hide bugs.
#: float32: measured triton and cpu against float64 truth, at most ~4e-6 * (1 + |truth|) (values up to ~20, gradients
#: included), so 1e-5 leaves ~2x; a layer-norm eps of 1e-4 instead of 1e-5 moves results by >= 1.4e-4 * (1 + |truth|).
#: (The former 3e-4 / 1e-3 was ~1000x the real error and let that bug pass.)
TOLERANCES = {
    torch.float64: dict(rtol=1e-9, atol=1e-10),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=3e-3, atol=5e-3),
    torch.bfloat16: dict(rtol=1e-2, atol=5e-2),
}

#: Against a float64 truth, a kernel's error (max norm) may be at most this many times the error of an independent
#: implementation in the same dtype (torch.nn, cuDNN, the reference), or within the dtype's tolerance (the floor: the
#: independent run may happen to round well): error grows with length and size, which a fixed tolerance would hide.
ERROR_RATIO = 2.0

Inputs = tuple[tuple, dict[str, Tensor]]


def output_tensors(output) -> list[Tensor]:
    """Every tensor in a module's output ((y, h_n), (y, (h_n, c_n)), PackedSequence, ...), in a fixed order."""
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, PackedSequence):
        return [output.data]
    return [t for item in output for t in output_tensors(item)]


def forward_backward(module: nn.Module, make_inputs: Callable[[], Inputs], seed: int = 0) -> dict[str, Tensor]:
    """Run `module(*args)`, backpropagate random upstream gradients through every output, and return the outputs,
    the gradients of the leaves and of every parameter (None where no gradient reached it)."""
    args, leaves = make_inputs()
    module.zero_grad(set_to_none=True)
    outputs = output_tensors(module(*args))
    generator = torch.Generator().manual_seed(seed)
    upstream = [torch.randn(o.shape, generator=generator, dtype=torch.float64).to(o) for o in outputs]
    differentiable = [(o, g) for o, g in zip(outputs, upstream) if o.requires_grad]
    if differentiable:
        torch.autograd.backward(*zip(*differentiable))
    result = {f"output[{i}]": o.detach() for i, o in enumerate(outputs)}
    result.update({f"grad {name}": leaf.grad for name, leaf in leaves.items()})
    result.update({f"grad {name}": p.grad for name, p in module.named_parameters()})
    return result


def assert_all_close(actual: dict[str, Tensor], expected: dict[str, Tensor], dtype: torch.dtype) -> None:
    """Compare every entry of two `forward_backward` results with the tolerance of `dtype`."""
    assert actual.keys() == expected.keys()
    for key in expected:
        a, e = actual[key], expected[key]
        assert (a is None) == (e is None), f"{key}: gradient present in only one of the two runs"
        if e is not None:
            torch.testing.assert_close(a, e, **TOLERANCES[dtype], msg=lambda m, key=key: f"{key}: {m}")


def leaf(tensor: Tensor) -> Tensor:
    """A fresh leaf copy that records its gradient."""
    return tensor.detach().clone().requires_grad_(True)


def twin(torch_module: nn.Module, fused_cls: type, backend: str, **kwargs) -> nn.Module:
    """A fusedrnn module with the same configuration and weights as `torch_module` (loaded via state_dict)."""
    fused = fused_cls(**kwargs, backend=backend)
    fused.load_state_dict(torch_module.state_dict())
    return fused.train(torch_module.training)


def max_error(value: Tensor, truth: Tensor) -> float:
    return (value.double() - truth.double()).abs().max().item() if truth.numel() else 0.0


def assert_as_close_to_float64(ours: dict, theirs: dict, truth: dict, dtype: torch.dtype,
                               relative_floor: bool = False, ratio: float = ERROR_RATIO) -> None:
    """Every entry (an output or a gradient) of `ours`, a run in `dtype`, at most `ratio` times as far from the float64
    `truth` as `theirs`, an independent implementation run in the same dtype, or within the dtype's atol.
    relative_floor: the floor is atol + rtol * max|truth| (a gradient of magnitude 20 has a float16 ulp of 0.016,
    above the atol, and the independent result may happen to round well)."""
    assert ours.keys() == truth.keys() == theirs.keys()
    for key, expected in truth.items():
        assert (ours[key] is None) == (expected is None), f"{key}: gradient present in only one of the two runs"
        if expected is None:
            continue
        assert ours[key].dtype == dtype, f"{key}: {ours[key].dtype}, not {dtype}"
        error, baseline = max_error(ours[key], expected), max_error(theirs[key], expected)
        floor = TOLERANCES[dtype]["atol"]
        if relative_floor and expected.numel():
            floor += TOLERANCES[dtype]["rtol"] * expected.abs().max().item()
        assert error <= max(ratio * baseline, floor), (
            f"{key}: error {error:.3g} vs the independent run's {baseline:.3g} in {dtype} (floor {floor:.3g})"
        )


@contextlib.contextmanager
def dropout_drawn_as_float32() -> Iterator[None]:
    """F.dropout drawing its mask as a float32 call does (torch's RNG draws float64 masks differently), so that a
    float64 run zeroes the same elements as the float32 run it is the truth of (weight_dropout, inter-layer dropout)."""
    dropout = F.dropout

    def same_draws(t, p=0.5, training=True, inplace=False):
        return t * dropout(torch.ones_like(t, dtype=torch.float32), p, training).to(t.dtype)

    F.dropout = same_draws
    try:
        yield
    finally:
        F.dropout = dropout


def assert_compiles_to_the_same(module: nn.Module, x: Tensor) -> None:
    """torch.compile(module, fullgraph=True) (aot_eager: what Dynamo and AOTAutograd make of it, without Inductor's
    compile time) gives module's first output and its gradient with respect to x, to float32's tolerance."""
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    expected, actual = module(x)[0], compiled(x)[0]
    torch.testing.assert_close(actual, expected, **TOLERANCES[torch.float32])
    grad = torch.randn_like(expected)
    torch.testing.assert_close(torch.autograd.grad(actual, x, grad)[0], torch.autograd.grad(expected, x, grad)[0],
                               **TOLERANCES[torch.float32])  # fmt: skip
