"""Loading haste_pytorch weights (lmnt-com/haste) into fusedrnn's layers.

haste's layers are one layer, one direction, and keep their weights transposed relative to torch.nn, in their own
gate order:
    kernel [I, G*H], recurrent_kernel [H, G*H], bias [G*H]  (LSTM gates i,g,f,o; GRU z,r,n)
    GRU / LayerNormGRU: also recurrent_bias [G*H] (inside the reset gate's product, as torch.nn's b_hn)
    LayerNormLSTM / LayerNormGRU: gamma [2, G*H] (input, recurrent gains); LayerNormLSTM: gamma_h, beta_h [H]
    IndRNN: kernel [I, H], recurrent_scale [H], bias [H] (tanh)
fusedrnn's take torch.nn's layout and gate order (i,f,g,o; r,z,n): a kernel is transposed and its gate blocks
reordered; haste's single bias becomes bias_ih and bias_hh is zero (only their sum enters the LSTM and IndRNN).

haste's hyperparameters are not in its state_dict; pass them to `from_haste` as fusedrnn's keywords:
    haste `zoneout=p`  -> LSTM / LayerNormLSTM: zoneout=(p, 0.0) (haste zones out h only); GRU, IndRNN: zoneout=p
    haste `dropout=p`  -> weight_dropout=p (DropConnect on the recurrent weights)
    haste `batch_first` -> batch_first; `forget_bias` only initialises, and is in the loaded bias already.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .modules import GRU, LSTM
from .variants import IndRNN, LayerNormGRU, LayerNormLSTM

#: haste class name -> the fusedrnn class that computes the same function.
CLASSES: dict[str, type[nn.Module]] = {
    "LSTM": LSTM,
    "GRU": GRU,
    "LayerNormLSTM": LayerNormLSTM,
    "LayerNormGRU": LayerNormGRU,
    "IndRNN": IndRNN,
}
#: haste's gate blocks in torch.nn's order: torch.nn block k is haste block ORDER[k] (each is its own inverse).
_LSTM_ORDER = (0, 2, 1, 3)  # haste i,g,f,o -> torch i,f,g,o
_GRU_ORDER = (1, 0, 2)  # haste z,r,n -> torch r,z,n
#: Per kind: (gate order, haste's state_dict keys).
_LAYOUT = {
    "LSTM": (_LSTM_ORDER, ("kernel", "recurrent_kernel", "bias")),
    "GRU": (_GRU_ORDER, ("kernel", "recurrent_kernel", "bias", "recurrent_bias")),
    "LayerNormLSTM": (_LSTM_ORDER, ("kernel", "recurrent_kernel", "bias", "gamma", "gamma_h", "beta_h")),
    "LayerNormGRU": (_GRU_ORDER, ("kernel", "recurrent_kernel", "bias", "recurrent_bias", "gamma")),
    "IndRNN": ((0,), ("kernel", "recurrent_scale", "bias")),
}


def _torch_gate_order(t: Tensor, order: tuple[int, ...]) -> Tensor:
    """Reorder the gate blocks of dim 0 from haste's order to torch.nn's."""
    blocks = t.chunk(len(order), dim=0)
    return torch.cat([blocks[k] for k in order], dim=0).contiguous()


def convert_haste_state_dict(state_dict: Mapping[str, Tensor], kind: str) -> dict[str, Tensor]:
    """A haste `kind` ("LSTM", "GRU", "LayerNormLSTM", "LayerNormGRU", "IndRNN") state_dict -> the state_dict of the
    matching one-layer fusedrnn module (CLASSES[kind], bias=True). KeyError for a missing or unexpected key."""
    if kind not in _LAYOUT:
        raise ValueError(f"unknown haste layer {kind!r}; expected one of {sorted(_LAYOUT)}")
    order, keys = _LAYOUT[kind]
    if set(state_dict) != set(keys):
        missing, unexpected = sorted(set(keys) - set(state_dict)), sorted(set(state_dict) - set(keys))
        raise KeyError(f"not a haste {kind} state_dict: missing {missing}, unexpected {unexpected}")
    sd = dict(state_dict)
    recurrent = sd["recurrent_scale"] if kind == "IndRNN" else _torch_gate_order(sd["recurrent_kernel"].T, order)
    result = {
        "weight_ih_l0": _torch_gate_order(sd["kernel"].T, order),
        "weight_hh_l0": recurrent,
        "bias_ih_l0": _torch_gate_order(sd["bias"], order),
        "bias_hh_l0": (_torch_gate_order(sd["recurrent_bias"], order) if "recurrent_bias" in sd
                       else torch.zeros_like(sd["bias"])),  # fmt: skip
    }
    if "gamma" in sd:
        result["ln_ih_weight_l0"] = _torch_gate_order(sd["gamma"][0], order)
        result["ln_hh_weight_l0"] = _torch_gate_order(sd["gamma"][1], order)
    if "gamma_h" in sd:
        result["ln_c_weight_l0"] = sd["gamma_h"]
        result["ln_c_bias_l0"] = sd["beta_h"]
    return result


def load_haste_state_dict(module: nn.Module, haste_state_dict: Mapping[str, Tensor]) -> nn.Module:
    """Load a haste layer's state_dict into `module`, a one-layer, unidirectional fusedrnn module with bias of the
    matching class (fusedrnn.LSTM for haste's LSTM, LayerNormLSTM for LayerNormLSTM, ...). Returns `module`."""
    kinds = {cls: kind for kind, cls in CLASSES.items()}
    kind = kinds.get(type(module))
    if kind is None:
        raise TypeError(f"haste weights load into {', '.join(c.__name__ for c in kinds)}, not {type(module).__name__}")
    if module.num_layers != 1 or module.bidirectional or not module.bias or getattr(module, "proj_size", 0):
        raise ValueError("haste layers have one layer, one direction, biases and no projection; build the module with "
                         "num_layers=1, bidirectional=False, bias=True")  # fmt: skip
    if kind == "IndRNN" and module.nonlinearity != "tanh":
        raise ValueError("haste's IndRNN uses tanh; build fusedrnn.IndRNN with nonlinearity='tanh'")
    module.load_state_dict(convert_haste_state_dict(haste_state_dict, kind))
    return module


def from_haste(state_dict: Mapping[str, Tensor], kind: str, **kwargs) -> nn.Module:
    """A new fusedrnn module computing haste's `kind` layer with these weights: sizes read from the kernel, device
    and dtype from it unless given; `kwargs` are the module's other keywords (batch_first, zoneout, weight_dropout,
    backend; see the module docstring for haste's hyperparameters)."""
    if kind not in CLASSES:
        raise ValueError(f"unknown haste layer {kind!r}; expected one of {sorted(CLASSES)}")
    kernel = state_dict["kernel"]
    gates = len(_LAYOUT[kind][0])
    kwargs.setdefault("device", kernel.device)
    kwargs.setdefault("dtype", kernel.dtype)
    module = CLASSES[kind](kernel.shape[0], kernel.shape[1] // gates, **kwargs)
    return load_haste_state_dict(module, state_dict)
