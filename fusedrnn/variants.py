"""The recurrent layers torch.nn lacks (issue #15): `LayerNormLSTM`, `LayerNormGRU`, `IndRNN` and their cells.

Their math is haste's formulation in torch.nn's gate order and weight layout (fusedrnn.reference's docstring has the
equations). Everything else is torch.nn's contract: constructor arguments and validation (they derive from
`nn.RNNBase` / `nn.RNNCellBase` through fusedrnn's own bases), inputs (packed, batch_first, unbatched), states and
their shape errors, inter-layer dropout, and the keyword-only `zoneout`, `weight_dropout` and `backend` of
fusedrnn.LSTM / GRU.

Parameters, per layer k and direction suffix ('' or '_reverse'), in registration order: torch.nn's weight_ih_l{k},
weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k} (IndRNN: weight_hh_l{k} is the recurrent scale u [H]), then the layer-norm
gains ln_ih_weight_l{k} [G*H], ln_hh_weight_l{k} [G*H] and, LSTM, ln_c_weight_l{k} [H], ln_c_bias_l{k} [H] (with
bias only). Cells: the same names without the _l{k} suffix. Initialisation: torch.nn's U(-1/sqrt(H), 1/sqrt(H)) for
weights and biases, LN gains 1 and LN bias 0, IndRNN's u U(-0.5, 0.5) as haste.

No torch.nn class computes these layers, so: torch.jit.script and torch.jit.trace refuse them (RuntimeError: a trace
would unroll the reference loop at the traced length); torch.export records their plain-PyTorch reference path
(fusedrnn.registry.EXPORT_VARIANT_BACKEND), which checks on each call that the shapes are those it was exported at;
torch.compile runs them like the other layers; `replace_rnns` never produces them and `restore_rnns` leaves them alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import registry
from .cells import _FusedCellBase
from .modules import _FusedRNNBase
from .reference import ELEMENTWISE_RECURRENCE, GATES
from .registry import LayerNormWeights, LayerWeights

#: IndRNN's recurrent scale u is drawn from U(-INDRNN_SCALE_INIT, INDRNN_SCALE_INIT), haste's initialisation
#: (|u| < 1 keeps the elementwise recurrence from exploding at the start).
INDRNN_SCALE_INIT = 0.5
#: Layer-norm parameter names of one layer direction (or cell, with an empty suffix), in LayerNormWeights order.
NORM_NAMES = ("ln_ih_weight", "ln_hh_weight", "ln_c_weight", "ln_c_bias")


def indrnn_mode(nonlinearity: str) -> str:
    if nonlinearity == "tanh":
        return "INDRNN_TANH"
    if nonlinearity == "relu":
        return "INDRNN_RELU"
    raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")


def add_variant_parameters(module: nn.Module, mode: str, layer_norm: bool, suffix: str, factory: dict) -> tuple:
    """Register one layer direction's (or a cell's) variant parameters on `module`, initialised: IndRNN's vector
    weight_hh{suffix} in place of torch.nn's matrix, or the layer-norm weights. Returns the LN names (None for
    absent ones) in LayerNormWeights order, or () without layer norm."""
    H = module.hidden_size
    if mode in ELEMENTWISE_RECURRENCE:
        u = torch.empty(H, **factory).uniform_(-INDRNN_SCALE_INIT, INDRNN_SCALE_INIT)
        setattr(module, f"weight_hh{suffix}", nn.Parameter(u))
    if not layer_norm:
        return ()
    G = GATES[mode]
    sizes = (G * H, G * H, H if mode == "LSTM" else 0, H if mode == "LSTM" and module.bias else 0)
    names = []
    for name, size, fill in zip(NORM_NAMES, sizes, (1.0, 1.0, 1.0, 0.0)):
        if size:
            module.register_parameter(f"{name}{suffix}", nn.Parameter(torch.full((size,), fill, **factory)))
        names.append(f"{name}{suffix}" if size else None)
    return tuple(names)


def reset_variant_parameters(module: nn.Module) -> None:
    """The variant parameters' own initialisation, after torch.nn's uniform one of everything."""
    with torch.no_grad():
        for name, parameter in module.named_parameters(recurse=False):
            if name.startswith("ln_"):
                parameter.fill_(0.0 if name.startswith("ln_c_bias") else 1.0)
            elif module.mode in ELEMENTWISE_RECURRENCE and name.startswith("weight_hh"):
                parameter.uniform_(-INDRNN_SCALE_INIT, INDRNN_SCALE_INIT)


def refuse_script(module: nn.Module) -> None:
    raise RuntimeError(
        f"torch.jit.script cannot compile fusedrnn.{type(module).__name__}: torch.nn has no such layer to script in "
        "its place; use torch.compile, or torch.jit.trace / torch.export, which record its plain-PyTorch reference"
    )


class _VariantRNNBase(_FusedRNNBase):
    """A multi-layer, possibly bidirectional variant: torch.nn's `base_mode` layer (constructor, parameters, checks)
    with the variant's parameters added and `mode` set to what the backends compute."""

    def __init__(self, mode: str, base_mode: str, layer_norm: bool, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None, *, zoneout=0.0,
                 weight_dropout=0.0, backend=registry.AUTO) -> None:  # fmt: skip
        super().__init__(base_mode, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         0, device, dtype, backend=backend, zoneout=zoneout, weight_dropout=weight_dropout)  # fmt: skip
        self.mode = mode
        self.layer_norm = layer_norm
        factory = {"device": device, "dtype": dtype}
        self._norm_names = [
            add_variant_parameters(self, mode, layer_norm, f"_l{layer}{'_reverse' if direction else ''}", factory)
            for layer in range(num_layers)
            for direction in range(2 if bidirectional else 1)
        ]
        self._init_flat_weights()  # IndRNN replaced weight_hh

    def flatten_parameters(self) -> None:
        """Nothing to do: no cuDNN weight buffer (torch's kernels never run these layers)."""

    def reset_parameters(self) -> None:
        super().reset_parameters()
        reset_variant_parameters(self)

    def layer_weights(self) -> list[LayerWeights]:
        weights = super().layer_weights()
        if not self.layer_norm:
            return weights
        return [
            w._replace(norm=LayerNormWeights(*(None if name is None else getattr(self, name) for name in names)))
            for w, names in zip(weights, self._norm_names)
        ]

    def __prepare_scriptable__(self) -> nn.Module:
        refuse_script(self)


class LayerNormLSTM(_VariantRNNBase):
    """LSTM with layer norm on the input and recurrent pre-activations and on the cell state before the output tanh
    (haste's LayerNormLSTM, Ba et al. 2016). torch.nn.LSTM's arguments (proj_size must be 0); keyword-only zoneout
    (p or (p_h, p_c)), weight_dropout and backend as fusedrnn.LSTM. forward(input, (h_0, c_0)) as torch.nn.LSTM."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None, *, zoneout=0.0, weight_dropout=0.0,
                 backend=registry.AUTO) -> None:  # fmt: skip
        if proj_size != 0:  # taken at torch.nn.LSTM's position, so that the arguments after it keep theirs
            raise ValueError(f"LayerNormLSTM has no projection (layer norm with proj_size is not defined), got "
                             f"proj_size={proj_size!r}")  # fmt: skip
        super().__init__("LSTM", "LSTM", True, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device, dtype, zoneout=zoneout, weight_dropout=weight_dropout,
                         backend=backend)  # fmt: skip

    get_expected_cell_size = nn.LSTM.get_expected_cell_size
    check_forward_args = nn.LSTM.check_forward_args
    permute_hidden = nn.LSTM.permute_hidden


class LayerNormGRU(_VariantRNNBase):
    """GRU (torch.nn's, reset gate on W_hn h + b_hn) with layer norm on the input and recurrent pre-activations
    (haste's LayerNormGRU). torch.nn.GRU's arguments; keyword-only zoneout, weight_dropout and backend."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, device=None, dtype=None, *, zoneout=0.0, weight_dropout=0.0,
                 backend=registry.AUTO) -> None:  # fmt: skip
        super().__init__("GRU", "GRU", True, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device, dtype, zoneout=zoneout, weight_dropout=weight_dropout,
                         backend=backend)  # fmt: skip


class IndRNN(_VariantRNNBase):
    """Independently recurrent network (Li et al. 2018, haste's IndRNN): h_t = act(W_ih x_t + b_ih + u * h_{t-1} +
    b_hh) with a vector u (weight_hh_l{k} [H]). torch.nn.RNN's arguments (`nonlinearity` 'tanh' or 'relu', 4th
    positional); keyword-only zoneout, weight_dropout (on u) and backend."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None, *, zoneout=0.0, weight_dropout=0.0,
                 backend=registry.AUTO) -> None:  # fmt: skip
        mode = indrnn_mode(nonlinearity)
        self.nonlinearity = nonlinearity
        super().__init__(mode, "RNN_TANH", False, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device, dtype, zoneout=zoneout, weight_dropout=weight_dropout,
                         backend=backend)  # fmt: skip

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.nonlinearity == "tanh" else f"{s}, nonlinearity={self.nonlinearity!r}"


# ----------------------------------------------------------------------------------------------------------------
# Cells: one step, through the same backends (Backend.cell).


class _VariantCellBase(_FusedCellBase):
    def __init__(self, mode, layer_norm, input_size, hidden_size, bias, device, dtype, backend) -> None:
        super().__init__(input_size, hidden_size, bias, GATES[mode], device=device, dtype=dtype, backend=backend)
        self.layer_norm = layer_norm
        self._norm_names = add_variant_parameters(self, mode, layer_norm, "", {"device": device, "dtype": dtype})

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "_norm_names"):  # not while nn.RNNCellBase.__init__ runs, before the variant's parameters
            reset_variant_parameters(self)

    def layer_weights(self) -> LayerWeights:
        norm = None
        if self.layer_norm:
            norm = LayerNormWeights(*(None if name is None else getattr(self, name) for name in self._norm_names))
        return LayerWeights(self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, None, norm)

    def __prepare_scriptable__(self) -> nn.Module:
        refuse_script(self)


class LayerNormLSTMCell(_VariantCellBase):
    """One step of LayerNormLSTM; torch.nn.LSTMCell's arguments and forward(input, (h, c))."""

    mode = "LSTM"

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *,
                 backend: str = registry.AUTO) -> None:  # fmt: skip
        super().__init__("LSTM", True, input_size, hidden_size, bias, device, dtype, backend)

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        return self._two_state_forward(input, hx)


class LayerNormGRUCell(_VariantCellBase):
    """One step of LayerNormGRU; torch.nn.GRUCell's arguments and forward(input, h)."""

    mode = "GRU"

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *,
                 backend: str = registry.AUTO) -> None:  # fmt: skip
        super().__init__("GRU", True, input_size, hidden_size, bias, device, dtype, backend)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        return self._one_state_forward(input, hx)


class IndRNNCell(_VariantCellBase):
    """One step of IndRNN; torch.nn.RNNCell's arguments (nonlinearity 4th positional) and forward(input, h)."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None, *,
                 backend: str = registry.AUTO) -> None:  # fmt: skip
        self.mode = indrnn_mode(nonlinearity)
        self.nonlinearity = nonlinearity
        super().__init__(self.mode, False, input_size, hidden_size, bias, device, dtype, backend)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        return self._one_state_forward(input, hx)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.nonlinearity == "tanh" else f"{s}, nonlinearity={self.nonlinearity!r}"


# As fusedrnn.modules: whole-model torch.load with weights_only=True accepts these classes.
torch.serialization.add_safe_globals(
    [LayerNormLSTM, LayerNormGRU, IndRNN, LayerNormLSTMCell, LayerNormGRUCell, IndRNNCell]
)
