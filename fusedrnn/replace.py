"""`replace_rnns` / `restore_rnns`: turn the torch.nn recurrent layers of a model into fusedrnn's and back, in place.

A fusedrnn layer keeps exactly the state of its torch.nn namesake (both derive from `nn.RNNBase` or
`nn.RNNCellBase`; fusedrnn adds only the `backend` attribute), so the swap changes the class of each layer object,
as `torch.nn.utils.parametrize` does, and nothing else. The layer object stays the same and so does everything
attached to it: its parameters (optimizers keep working), forward, pre- and backward hooks and their handles,
parametrizations (orthogonal, new-style weight_norm), old-style `weight_norm`, weight-drop wrappers that delete a
weight and assign a plain tensor in its place before every forward (AWD-LSTM's `WeightDrop`, fastai's
`WeightDropout`), and every other reference to it.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils import parametrize

from . import registry
from .cells import GRUCell, LSTMCell, RNNCell
from .modules import GRU, LSTM, RNN, check_backend_name

#: torch.nn class -> its fusedrnn twin. Exact types only: a user's subclass may override forward, and swapping its
#: class would silently drop that code.
TWINS: dict[type[nn.Module], type[nn.Module]] = {
    nn.LSTM: LSTM,
    nn.GRU: GRU,
    nn.RNN: RNN,
    nn.LSTMCell: LSTMCell,
    nn.GRUCell: GRUCell,
    nn.RNNCell: RNNCell,
}
#: fusedrnn class -> its torch.nn original.
ORIGINALS: dict[type[nn.Module], type[nn.Module]] = {fused: original for original, fused in TWINS.items()}


def _retype(module: nn.Module, cls: type[nn.Module]) -> None:
    """Give `module` the class `cls` (same state layout), keeping its parametrizations."""
    if parametrize.is_parametrized(module):
        # parametrize made a class of its own for this module, deriving from the original class and holding one
        # property per parametrized tensor: make the same on top of `cls`.
        namespace = {key: value for key, value in vars(type(module)).items() if key not in ("__dict__", "__weakref__")}
        cls = type(f"Parametrized{cls.__name__}", (cls,), namespace)
    module.__class__ = cls


def _swap_all(model: nn.Module, table: dict[type[nn.Module], type[nn.Module]]) -> list[nn.Module]:
    """Retype every module of `model` (itself included) whose class, before parametrizations, is a key of `table`."""
    swapped = [module for module in model.modules() if parametrize.type_before_parametrizations(module) in table]
    for module in swapped:
        _retype(module, table[parametrize.type_before_parametrizations(module)])
    return swapped


def replace_rnns(model: nn.Module, backend: str = registry.AUTO) -> nn.Module:
    """Turn every torch.nn RNN/LSTM/GRU and cell inside `model` (`model` itself included) into its fusedrnn twin,
    in place, running on `backend`. Returns `model`."""
    backend = check_backend_name(backend)
    for module in _swap_all(model, TWINS):
        module.backend = backend
    return model


def refuse_regularised(model: nn.Module, what: str) -> None:
    """ValueError "cannot " + `what` (formatted with the layer's class name) if a fusedrnn layer inside `model` uses
    zoneout or weight_dropout, which torch.nn's classes would silently drop."""
    for module in model.modules():
        if parametrize.type_before_parametrizations(module) in ORIGINALS and getattr(module, "regularised", False):
            raise ValueError("cannot " + what.format(type(module).__name__))


def refuse_heads(model: nn.Module, what: str) -> None:
    """ValueError "cannot " + `what` (formatted with the layer's class name) if a fusedrnn layer inside `model` has
    num_heads > 1, which torch.nn's classes cannot hold (block-diagonal weight_hh [K, G*d, d])."""
    for module in model.modules():
        if parametrize.type_before_parametrizations(module) in ORIGINALS and getattr(module, "num_heads", 1) != 1:
            raise ValueError("cannot " + what.format(type(module).__name__))


def restore_rnns(model: nn.Module) -> nn.Module:
    """The inverse of `replace_rnns`: turn every fusedrnn layer and cell inside `model` (`model` itself included)
    back into its torch.nn class, in place. Returns `model`. ValueError (and nothing changed) if a layer uses zoneout
    or weight_dropout, which torch.nn's classes would silently drop, or heads (num_heads > 1), which they cannot
    hold."""
    refuse_regularised(model, "restore {} with zoneout or weight_dropout to torch.nn, which has neither")
    refuse_heads(model, "restore {} with num_heads > 1 to torch.nn, which has no heads")
    for module in _swap_all(model, ORIGINALS):
        del module.backend
        for option in ("zoneout", "weight_dropout", "num_heads"):  # set only when used; all unset or 1 here
            module.__dict__.pop(option, None)
    return model
