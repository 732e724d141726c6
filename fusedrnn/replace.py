"""`replace_rnns`: swap the torch.nn recurrent layers of a model for fusedrnn's, in place, keeping the weights."""

from __future__ import annotations

from torch import nn

from . import registry
from .cells import GRUCell, LSTMCell, RNNCell
from .modules import GRU, LSTM, RNN

#: Exact torch.nn class -> (fusedrnn class, constructor arguments read off the old module). Exact types only: a
#: user's subclass may override forward, and replacing it would silently drop that code.
_LAYER_ARGS = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional")
_CELL_ARGS = ("input_size", "hidden_size", "bias")
_REPLACEMENTS = {
    nn.LSTM: (LSTM, (*_LAYER_ARGS, "proj_size")),
    nn.GRU: (GRU, _LAYER_ARGS),
    nn.RNN: (RNN, (*_LAYER_ARGS, "nonlinearity")),
    nn.LSTMCell: (LSTMCell, _CELL_ARGS),
    nn.GRUCell: (GRUCell, _CELL_ARGS),
    nn.RNNCell: (RNNCell, (*_CELL_ARGS, "nonlinearity")),
}


def _fused_twin(module: nn.Module, backend: str) -> nn.Module:
    cls, arg_names = _REPLACEMENTS[type(module)]
    first = next(module.parameters())
    twin = cls(**{name: getattr(module, name) for name in arg_names}, device="meta", dtype=first.dtype,
               backend=backend)  # fmt: skip
    # Share the very Parameter objects, so optimizers and hooks holding them keep working after the swap.
    for name, parameter in module.named_parameters(recurse=False):
        setattr(twin, name, parameter)
    return twin.train(module.training)


def replace_rnns(model: nn.Module, backend: str = registry.AUTO) -> nn.Module:
    """Replace every torch.nn RNN/LSTM/GRU and cell inside `model` (or `model` itself's children) in place.

    Parameters are shared, not copied. Returns `model`; when `model` itself is a torch.nn RNN, returns its twin.
    """
    if type(model) in _REPLACEMENTS:
        return _fused_twin(model, backend)
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) in _REPLACEMENTS:
                setattr(parent, child_name, _fused_twin(child, backend))
    return model
