"""`replace_slstm` / `restore_slstm`: run the sLSTM cells of an xlstm model on fusedrnn's backends, and back.

xlstm's `sLSTMCell` builds an `sLSTMCell_vanilla` (a Python loop) or an `sLSTMCell_cuda` (a kernel JIT-built with
nvcc per configuration); TiRex has its own `sLSTMCell` (tirex.models.slstm.cell, a Python loop in bfloat16 or
xlstm's CUDA kernel). `replace_slstm` changes the class of each such cell object to `XLSTMsLSTMCell` or
`TiRexsLSTMCell`, as `replace_rnns` does for torch.nn's layers: the object, its parameters (`_recurrent_kernel_`,
`_bias_`, in the class's own layout, untouched), their names, its `config`, hooks and every reference to it stay;
forward keeps the cell's signature, input and output layouts and state format ([4, B, H]: h, c, n, m).
`restore_slstm` gives each cell its class back.

TiRex's cells compute formulation="tirex" (the f~ clamp) in the input's dtype (float32 for half storage), where
TiRex's own torch path rounds R and the states to bfloat16 at every step: close to it, not bit-identical.

Nothing here imports xlstm or tirex: cells are recognised by their class's module and name. Not converted (left as
they are): xlstm cells with config.function other than "slstm" (its "lstm"). Refused (ValueError, nothing changed):
xlstm CUDA-class cells with gradient_recurrent_cut or gradient_recurrent_clipval, which change what its kernel
computes (its vanilla class ignores both, and so does its replacement).
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
#: TiRex's cell class, by (module, class name).
TIREX_CELL = ("tirex.models.slstm.cell", "sLSTMCell")


def _is_xlstm_cell(module: nn.Module) -> bool:
    cls = type(module)
    return (cls.__module__, cls.__name__) in XLSTM_CELLS and module.config.function == "slstm"


def _is_tirex_cell(module: nn.Module) -> bool:
    cls = type(module)
    return (cls.__module__, cls.__name__) == TIREX_CELL


def run_cell(module: nn.Module, x: Tensor, state: Tensor | None, w_hh: Tensor, bias: Tensor, num_heads: int,
             formulation: str) -> tuple[Tensor, Tensor]:  # fmt: skip
    """One sLSTM layer on `module.fusedrnn_backend`: x [S, B, 4*H] gate pre-activations (gate-major), state [4, B, H] or
    None -> (y [S, B, H], final state [4, B, H])."""
    S, N, _ = x.shape
    H = w_hh.shape[0] * w_hh.shape[2]
    if state is not None and state.shape != (len(SLSTMState._fields), N, H):
        raise ValueError(f"state should have shape {[len(SLSTMState._fields), N, H]}, got {list(state.shape)}")
    call = RNNCall(mode=SLSTM, device_type=x.device.type, dtype=x.dtype, input_size=SLSTM_GATES * H, hidden_size=H,
                   batch_size=N, seq_len=S, needs_grad=torch.is_grad_enabled(), compiling=torch.compiler.is_compiling(),
                   num_heads=num_heads, formulation=formulation)  # fmt: skip
    backend = registry.select(module.fusedrnn_backend, call)
    weights = [LayerWeights(None, w_hh, None, bias, None)]
    # run_slstm's states are [layers * directions, N, H]: one layer, one direction here.
    initial = None if state is None else SLSTMState(*state.unsqueeze(1).unbind(0))
    y, final = backend.run_slstm(call, x, None, initial, weights, 0.0)
    return y, torch.cat(tuple(final))


class XLSTMsLSTMCell(nn.Module):
    """An xlstm sLSTM cell running on fusedrnn (made by `replace_slstm`, never built directly): forward(input,
    state=None) as xlstm's, input [B, S, 4*H] ("BSGNH") or [S, B, 4*H] ("SBGNH"), the already projected gate
    pre-activations (gate-major, then head, then unit), state [4, B, H] or None."""

    _xlstm_class: type  # the class it had, whose layout methods read the parameters
    fusedrnn_backend: str  # not `backend`: TiRex's cell has an attribute of that name

    def fused_weights(self) -> tuple[Tensor, Tensor]:
        """(w_hh [K, 4*d, d], b [4*H] gate-major), fusedrnn's layout, as differentiable views of the cell's
        parameters: through xlstm's own `external` layout (R [K, d_in, 4, d_out], bias [K, 4, d]), so both of its
        classes' internal layouts read right."""
        config = self.config
        K, d = config.num_heads, config.hidden_size // config.num_heads
        external = self._xlstm_class._recurrent_kernel_int2ext(self, self._recurrent_kernel_)
        external = external.reshape(K, d, SLSTM_GATES, d)
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
        w_hh, bias = self.fused_weights()
        y, final = run_cell(self, x, state, w_hh, bias, config.num_heads, "xlstm")
        output = self._xlstm_class._permute_output(self, y)
        return output.to(input.dtype), final.to(input.dtype)

    def step(self, input: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
        """One step, input [B, 1, 4*H] (config.input_shape); returns (output, the new state). (xlstm's own `step`
        returns the state it was given.)"""
        return self.forward(input, state)

    def __repr__(self) -> str:
        config = self.config
        return (f"{type(self).__name__}(function={config.function}, hidden_size={config.hidden_size}, "
                f"num_heads={config.num_heads}, was={self._xlstm_class.__name__}, "
                f"backend={self.fusedrnn_backend!r})")  # fmt: skip


class TiRexsLSTMCell(nn.Module):
    """TiRex's sLSTM cell running on fusedrnn with formulation="tirex" (made by `replace_slstm`, never built
    directly): forward(input [B, S, 4*H] gate-major, state [4, B, H] or None) -> (output [B, K, S, d], state), as
    TiRex's. Its parameters: `_recurrent_kernel_` [K, d, 4*d] (h_head @ R), `_bias_` [K*4*d] head-major."""

    _xlstm_class: type  # the class it had
    fusedrnn_backend: str  # not `backend`: TiRex's cell has an attribute of that name

    def fused_weights(self) -> tuple[Tensor, Tensor]:
        """(w_hh [K, 4*d, d], b [4*H] gate-major), fusedrnn's layout, as differentiable views of the parameters."""
        K, d = self.config.num_heads, self.config.head_dim
        w_hh = self._recurrent_kernel_.transpose(1, 2)
        return w_hh, self._bias_.reshape(K, SLSTM_GATES, d).permute(1, 0, 2).reshape(-1)

    def forward(self, input: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        config = self.config
        H = config.embedding_dim
        if input.dim() != 3 or input.size(-1) != SLSTM_GATES * H:
            raise ValueError(f"Input size mismatch: Expected input of shape [*, *, {SLSTM_GATES * H}], got "
                             f"{list(input.shape)}")  # fmt: skip
        w_hh, bias = self.fused_weights()
        y, final = run_cell(self, input.transpose(0, 1), state, w_hh, bias, config.num_heads, "tirex")
        S, N, _ = y.shape
        output = y.view(S, N, config.num_heads, config.head_dim).permute(1, 2, 0, 3)
        return output.to(input.dtype), final.to(input.dtype)

    def __repr__(self) -> str:
        config = self.config
        return (f"{type(self).__name__}(embedding_dim={config.embedding_dim}, num_heads={config.num_heads}, "
                f"was={self._xlstm_class.__name__}, backend={self.fusedrnn_backend!r})")  # fmt: skip


#: The classes `replace_slstm` gives, for `restore_slstm`.
REPLACEMENTS = (XLSTMsLSTMCell, TiRexsLSTMCell)


def _refuse_kernel_options(model: nn.Module) -> None:
    """ValueError for an xlstm CUDA-class cell whose kernel computes what fusedrnn does not (module docstring)."""
    for module in model.modules():
        if _is_xlstm_cell(module) and type(module).__name__ == "sLSTMCell_cuda":
            config = module.config
            if config.gradient_recurrent_cut or config.gradient_recurrent_clipval is not None:
                raise ValueError(
                    "cannot replace an xlstm sLSTMCell_cuda built with gradient_recurrent_cut="
                    f"{config.gradient_recurrent_cut} / gradient_recurrent_clipval={config.gradient_recurrent_clipval}"
                    ": its kernel cuts or clips what fusedrnn computes exactly (as xlstm's vanilla class does)"
                )


def replace_slstm(model: nn.Module, backend: str = registry.AUTO) -> nn.Module:
    """Make every xlstm or TiRex sLSTM cell inside `model` (`model` itself included) an `XLSTMsLSTMCell` or
    `TiRexsLSTMCell` running on `backend`, in place. Returns `model`. ValueError, and nothing changed, for an xlstm
    CUDA-class cell with gradient cutting or clipping."""
    backend = check_backend_name(backend)
    _refuse_kernel_options(model)
    for module in list(model.modules()):
        if _is_xlstm_cell(module):
            replacement = XLSTMsLSTMCell
        elif _is_tirex_cell(module):
            replacement = TiRexsLSTMCell
        else:
            continue
        original = type(module)
        module.__class__ = replacement
        module._xlstm_class = original
        module.fusedrnn_backend = backend
    return model


def restore_slstm(model: nn.Module) -> nn.Module:
    """The inverse of `replace_slstm`: every replaced cell inside `model` gets its class back, in place."""
    for module in [m for m in model.modules() if type(m) in REPLACEMENTS]:
        module.__class__ = module.__dict__.pop("_xlstm_class")
        del module.fusedrnn_backend
    return model
