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

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

#: (rtol, atol) per dtype for a kernel against the reference computed in the same dtype on short sequences.
#: float64 is the parity dtype: implementations agree to rounding, so 1e-10 is loose enough and 1e-4 would hide bugs.
TOLERANCES = {
    torch.float64: dict(rtol=1e-9, atol=1e-10),
    torch.float32: dict(rtol=3e-4, atol=1e-3),
    torch.float16: dict(rtol=3e-3, atol=5e-3),
    torch.bfloat16: dict(rtol=1e-2, atol=5e-2),
}

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
