"""`replace_slstm` / `restore_slstm`: run the sLSTM cells of an xlstm model on fusedrnn's backends, and back.

xlstm's `sLSTMCell` builds an `sLSTMCell_vanilla` (a Python loop) or an `sLSTMCell_cuda` (a kernel JIT-built with
nvcc per configuration). `replace_slstm` changes the class of each such cell object to `XLSTMsLSTMCell`, as
`replace_rnns` does for torch.nn's layers: the object, its parameters (`_recurrent_kernel_`, `_bias_`, in the
class's own internal layout, untouched), their names, its `config`, hooks and every reference to it stay; forward
keeps xlstm's signature, input and output layouts (config.input_shape / output_shape) and state format ([4, B, H]:
h, c, n, m). `restore_slstm` gives each cell its xlstm class back.

Nothing here imports xlstm: cells are recognised by their class's module and name.

Not converted (left as they are): cells with config.function other than "slstm" (xlstm's "lstm"), and TiRex's own
sLSTM cell (tirex.models.slstm.cell; fusedrnn computes its math with formulation="tirex", but the swap is not written
yet).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import registry
from .modules import check_backend_name
from .reference_slstm import SLSTM_GATES, SLSTMState
from .registry import SLSTM, LayerWeights, RNNCall

#: xlstm's cell classes that `replace_slstm` converts, by (module, class name).
XLSTM_CELLS = {("xlstm.blocks.slstm.cell", "sLSTMCell_vanilla"), ("xlstm.blocks.slstm.cell", "sLSTMCell_cuda")}


def _is_xlstm_cell(module: nn.Module) -> bool:
    cls = type(module)
    return (cls.__module__, cls.__name__) in XLSTM_CELLS and module.config.function == "slstm"


class XLSTMsLSTMCell(nn.Module):
    """An xlstm sLSTM cell running on fusedrnn (made by `replace_slstm`, never built directly): forward(input,
    state=None) as xlstm's, input [B, S, 4*H] ("BSGNH") or [S, B, 4*H] ("SBGNH"), the already projected gate
    pre-activations (gate-major, then head, then unit), state [4, B, H] or None."""

    _xlstm_class: type  # the class it had, whose layout methods read the parameters
    backend: str

    def fused_weights(self) -> tuple[Tensor, Tensor]:
        """(w_hh [K, 4*d, d], b [4*H] gate-major), fusedrnn's layout, as differentiable views of the cell's
        parameters: through xlstm's own `external` layout (R [K, d_in, 4, d_out], bias [K, 4, d]), so both of its
        classes' internal layouts read right."""
        config = self.config
        K, d = config.num_heads, config.hidden_size // config.num_heads
        external = self._xlstm_class._recurrent_kernel_int2ext(self, self._recurrent_kernel_).reshape(K, d, SLSTM_GATES, d)
        w_hh = external.permute(0, 2, 3, 1).reshape(K, SLSTM_GATES * d, d)
        bias = self._xlstm_class._bias_int2ext(self, self._bias_).reshape(K, SLSTM_GATES, d)
        return w_hh, bias.permute(1, 0, 2).reshape(-1)

    def forward(self, input: Tensor, state: Tensor | None = None, lengths=None) -> tuple[Tensor, Tensor]:
        if lengths is not None:  # xlstm's cell ignores it; refused here rather than silently ignored as well
            raise ValueError(f"{type(self).__name__}: lengths is not supported (xlstm's cell ignores it too)")
        config = self.config
        H = config.hidden_size
        if input.dim() != 3 or input.size(-1) != SLSTM_GATES * H:
            raise ValueError(f"Input size mismatch: Expected input of shape [*, *, {SLSTM_GATES * H}], got "
                             f"{list(input.shape)}")  # fmt: skip
        if config.input_shape == "BSGNH":
            x = input.transpose(0, 1)
        elif config.input_shape == "SBGNH":
            x = input
        else:
            raise ValueError(f"Bad input_shape value {config.input_shape!r}")
        N = x.shape[1]
        if state is not None and state.shape != (len(SLSTMState._fields), N, H):
            raise ValueError(f"state should have shape {[len(SLSTMState._fields), N, H]}, got {list(state.shape)}")
        w_hh, bias = self.fused_weights()
        call = RNNCall(mode=SLSTM, device_type=x.device.type, dtype=x.dtype, input_size=SLSTM_GATES * H,
                       hidden_size=H, batch_size=N, seq_len=x.shape[0], needs_grad=torch.is_grad_enabled(),
                       compiling=torch.compiler.is_compiling(), num_heads=config.num_heads,
                       formulation="xlstm")  # fmt: skip
        backend = registry.select(self.backend, call)
        weights = [LayerWeights(None, w_hh, None, bias, None)]
        # run_slstm's states are [layers * directions, N, H]: one layer, one direction here.
        initial = None if state is None else SLSTMState(*state.unsqueeze(1).unbind(0))
        y, final = backend.run_slstm(call, x, None, initial, weights, 0.0)
        output = self._xlstm_class._permute_output(self, y)
        return output.to(input.dtype), torch.cat(tuple(final)).to(input.dtype)

    def step(self, input: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
        """One step, input [B, 1, 4*H] (config.input_shape); returns (output, the new state). (xlstm's own `step`
        returns the state it was given.)"""
        return self.forward(input, state)

    def __repr__(self) -> str:
        config = self.config
        return (f"{type(self).__name__}(function={config.function}, hidden_size={config.hidden_size}, num_heads="
                f"{config.num_heads}, was={self._xlstm_class.__name__}, backend={self.backend!r})")  # fmt: skip


def replace_slstm(model: nn.Module, backend: str = registry.AUTO) -> nn.Module:
    """Make every xlstm sLSTM cell inside `model` (`model` itself included) an `XLSTMsLSTMCell` running on
    `backend`, in place. Returns `model`."""
    backend = check_backend_name(backend)
    for module in [m for m in model.modules() if _is_xlstm_cell(m)]:
        original = type(module)
        module.__class__ = XLSTMsLSTMCell
        module._xlstm_class = original
        module.backend = backend
    return model


def restore_slstm(model: nn.Module) -> nn.Module:
    """The inverse of `replace_slstm`: every `XLSTMsLSTMCell` inside `model` gets its xlstm class back, in place."""
    for module in [m for m in model.modules() if type(m) is XLSTMsLSTMCell]:
        module.__class__ = module.__dict__.pop("_xlstm_class")
        del module.backend
    return model
