"""Autograd for a compiled layer op: one pattern, shared by the native op (fusedrnn._extension) and the Triton op
(fusedrnn.triton_ops).

First order, the op's backward is its kernels' own (fast, itself not differentiable). Where autograd asks for a
graph of the backward (`create_graph=True`: double backward, gradgradcheck; torch.func, whose transforms always do),
the backward is fusedrnn.reference.layer_vjp instead, which recomputes the layer in plain PyTorch so that autograd
can differentiate it again.

`LayerAutograd.apply` picks, per call, the cheapest way into the op that the caller's context allows:
  - torch.compile tracing: the op itself, on which the same autograd is registered (`backward`, `setup_context`);
  - torch.func transforms: an autograd.Function with setup_context and a generated vmap rule (the Function that
    torch.library generates for a registered autograd has no setup_context, which the transforms require);
  - plain eager autograd: the same Function in the older forward(ctx, ...) form: `apply` of a Function with
    setup_context binds its arguments with inspect.signature on every call (measured ~4x the cost of this form's
    whole apply), which a one-step cell notices;
  - no autograd: the op below the autograd dispatch key, skipping the Python autograd kernel registered on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from . import reference


class Recompute(NamedTuple):
    """What fusedrnn.reference.layer_vjp (or another `vjp` of LayerAutograd) needs from a saved context to
    recompute the layer."""

    mode: str  # fusedrnn.reference.GATES's keys (sLSTM: its formulation)
    # reference.LAYER_INPUTS (reference.layer_inputs builds it), as the op received them: (x, hx, cx, w_ih, w_hh,
    # b_ih, b_hh, w_hr) and, for the variants, the layer-norm weights and zoneout masks after them.
    inputs: tuple[Tensor | None, ...]
    reverse: bool
    lengths: Tensor | None


class LayerAutograd:
    """The autograd of one layer op whose outputs begin with its `outputs` differentiable ones ((y, h_n, c_n) for
    the RNN layers) and whose other outputs are marked non-differentiable by `setup_context`.

    op(*args): the op; setup_context(ctx, args, outputs): saves what both backwards need;
    kernel_backward(ctx, *output_grads): one gradient (or None) per argument, from the compiled kernels;
    recompute(ctx) -> Recompute; input_positions: where in `args` the tensors of Recompute.inputs are;
    arity: the number of arguments; vjp: the differentiable backward (fusedrnn.reference.layer_vjp's signature;
    None: layer_vjp itself)."""

    def __init__(
        self,
        name: str,
        op: Callable,
        setup_context: Callable,
        kernel_backward: Callable,
        recompute: Callable,
        input_positions: Sequence[int],
        arity: int,
        *,
        vjp: Callable | None = None,
        outputs: int = 3,
    ) -> None:
        self.op, self.setup_context, self.recompute = op, setup_context, recompute
        self.vjp, self.outputs = vjp, outputs
        self.kernel_backward = kernel_backward
        self.input_positions, self.arity = tuple(input_positions), arity
        self.function = type(f"{name}Function", (torch.autograd.Function,), {
            "__doc__": "The op as an autograd.Function with setup_context, for torch.func (see the module docstring).",
            "generate_vmap_rule": True,  # torch.func.vmap, jacrev: the op once per batch entry
            "forward": staticmethod(self._forward_below_autograd),
            "setup_context": staticmethod(setup_context),
            "backward": staticmethod(self.backward),
        })  # fmt: skip
        self.eager_function = type(f"{name}EagerFunction", (torch.autograd.Function,), {
            "__doc__": "The op as an autograd.Function in the forward(ctx, ...) form, for cheap eager autograd.",
            "forward": staticmethod(self._eager_forward),
            "backward": staticmethod(self.backward),
        })  # fmt: skip

    def _forward_below_autograd(self, *args):
        with torch._C._AutoDispatchBelowAutograd():
            return self.op(*args)

    def _eager_forward(self, ctx, *args):
        output = self._forward_below_autograd(*args)
        self.setup_context(ctx, args, output)
        return output

    def backward(self, ctx, *output_grads):
        """The op's backward: the kernels' own, or the differentiable reference when autograd records it."""
        if not torch.is_grad_enabled():
            return self.kernel_backward(ctx, *output_grads)
        layer = self.recompute(ctx)
        needs_grad = tuple(ctx.needs_input_grad[p] for p in self.input_positions)
        # Upstream gradients of the differentiable outputs (layer_vjp ignores c_n's unless the mode is LSTM).
        vjp = self.vjp or reference.layer_vjp  # looked up per call, as the module attribute it is
        grads = vjp(layer.mode, layer.inputs, output_grads[: self.outputs], layer.reverse, layer.lengths, needs_grad)
        result: list[Tensor | None] = [None] * self.arity
        for position, grad in zip(self.input_positions, grads):
            result[position] = grad
        return tuple(result)

    def apply(self, *args, differentiable: bool):
        """op(*args) with autograd where `differentiable` (the caller saves for a backward) and grad mode is on."""
        if torch.compiler.is_compiling():
            return self.op(*args)
        if differentiable and torch.is_grad_enabled():
            if torch._C._are_functorch_transforms_active():
                return self.function.apply(*args)
            return self.eager_function.apply(*args)
        return self._forward_below_autograd(*args)
