"""`replace_rnns` / `restore_rnns`: make the torch.nn recurrent layers of a model run on fusedrnn, in place, and back.

Two modes (README, "Type identity"):
  * keep_type=True (default): each layer keeps its torch.nn class; its `forward` (and `__prepare_scriptable__`) become
    instance attributes running fusedrnn's code on the layer's own state. Code that picks layers by class
    (`isinstance(m, nn.LSTM)`, `type(m) == nn.GRU`, torch's quantize_dynamic, init helpers) works as on torch.nn;
    torch.compile graph-breaks at each such layer, as it does at torch.nn's.
  * keep_type=False: each layer becomes its fusedrnn twin class, which torch.compile traces without graph breaks.
    A fusedrnn layer keeps exactly the state of its torch.nn namesake (both derive from `nn.RNNBase` or
    `nn.RNNCellBase`; fusedrnn adds only the `backend` attribute), so the swap changes the class of each layer object,
    as `torch.nn.utils.parametrize` does, and nothing else.
Either way the layer object stays the same and so does everything attached to it: its parameters (optimizers keep
working), forward, pre- and backward hooks and their handles, parametrizations (orthogonal, new-style weight_norm),
old-style `weight_norm`, weight-drop wrappers that delete a weight and assign a plain tensor in its place before every
forward (AWD-LSTM's `WeightDrop`, fastai's `WeightDropout`), and every other reference to it.
"""

from __future__ import annotations

import torch
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
    module.__class__ = _with_parametrizations(module, cls)


def _with_parametrizations(module: nn.Module, cls: type[nn.Module]) -> type[nn.Module]:
    """`cls`, or, if `module` is parametrized, a class deriving from `cls` with the same parametrized properties."""
    if not parametrize.is_parametrized(module):
        return cls
    # parametrize made a class of its own for this module, deriving from the original class and holding one property
    # per parametrized tensor: make the same on top of `cls` (once per pair of classes: one call per forward in
    # keep_type mode).
    key = (type(module), cls)
    if key not in _PARAMETRIZED_TWINS:
        namespace = {key: value for key, value in vars(type(module)).items() if key not in ("__dict__", "__weakref__")}
        namespace["_parametrized_source"] = type(module)
        namespace["__getattr__"] = _later_parametrization
        _PARAMETRIZED_TWINS[key] = type(f"Parametrized{cls.__name__}", (cls,), namespace)
    return _PARAMETRIZED_TWINS[key]


def _later_parametrization(self, name: str):
    """A twin class's attribute fallback: a tensor parametrized after the twin was made (parametrize adds its property
    to the layer's class, which the twin copied before), else nn.Module's lookup."""
    prop = vars(type(self)._parametrized_source).get(name)
    if isinstance(prop, property):
        return prop.__get__(self)
    return nn.Module.__getattr__(self, name)


_PARAMETRIZED_TWINS: dict[tuple[type, type], type] = {}


class _Routed:
    """An attribute of a torch.nn layer that `replace_rnns(keep_type=True)` routed to fusedrnn: it holds the layer
    and reaches fusedrnn's code through a *view*, an object of the fusedrnn twin class that shares the layer's
    `__dict__` (its parameters, buffers, hooks, training flag, `backend`: everything), so fusedrnn's methods run on the
    layer's own state while the layer keeps its class. Pickles, deep-copies and `torch.load`s (weights_only) as
    (class, (layer,)); the view is rebuilt on demand."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self._view: nn.Module | None = None
        self._view_for: type | None = None  # the layer's class when the view was built

    def view(self) -> nn.Module:
        module, view = self.module, self._view
        # Rebuilt when the layer's class changed (its first parametrization, a wrapper) or its __dict__ was replaced;
        # else reused as it is, once per call (a decoder's cell: hundreds per sequence). The view's class is a
        # function of the layer's class; what a later parametrization adds to that class, the twin's __getattr__
        # finds (_later_parametrization).
        if view is None or type(module) is not self._view_for or view.__dict__ is not module.__dict__:
            # The torch.nn class among the layer's bases: wrappers give it classes of their own (parametrize's
            # ParametrizedLSTM, FSDP2's FSDPLSTM), derived from it.
            torch_cls = next(base for base in type(module).__mro__ if base in TWINS)
            view = object.__new__(_with_parametrizations(module, TWINS[torch_cls]))
            object.__setattr__(view, "__dict__", module.__dict__)
            self._view, self._view_for = view, type(module)
        return view

    def __reduce__(self):
        return type(self), (self.module,)


class RoutedForward(_Routed):
    """The `forward` of a layer that kept its torch.nn class: fusedrnn's forward, run on the layer's state."""

    def __call__(self, *args, **kwargs):
        module, view = self.module, self._view
        # view()'s reuse test, inlined: a frame costs ~2 us per call at decoder sizes (fusedrnn.cells).
        if view is None or type(module) is not self._view_for or view.__dict__ is not module.__dict__:
            view = self.view()
        return type(view).forward(view, *args, **kwargs)


class RoutedScriptable(_Routed):
    """The `__prepare_scriptable__` of such a layer: torch.jit.script compiles torch.nn's code with the same
    parameters, as for fusedrnn's classes (the routed forward is not TorchScript)."""

    def __call__(self) -> nn.Module:
        view = self.view()
        return type(view).__prepare_scriptable__(view)


#: The instance attributes keep_type mode sets on a layer (and restore_rnns removes), with their classes.
ROUTING = {"forward": RoutedForward, "__prepare_scriptable__": RoutedScriptable}


def is_routed(module: nn.Module) -> bool:
    """Whether `module` is a torch.nn layer whose forward `replace_rnns(keep_type=True)` routed to fusedrnn."""
    return isinstance(module.__dict__.get("forward"), RoutedForward)


def _unroute(module: nn.Module) -> None:
    for name in ROUTING:
        module.__dict__.pop(name, None)


def _swap_all(model: nn.Module, table: dict[type[nn.Module], type[nn.Module]]) -> list[nn.Module]:
    """Retype every module of `model` (itself included) whose class, before parametrizations, is a key of `table`."""
    swapped = [module for module in model.modules() if parametrize.type_before_parametrizations(module) in table]
    for module in swapped:
        _retype(module, table[parametrize.type_before_parametrizations(module)])
    return swapped


def replace_rnns(model: nn.Module, backend: str = registry.AUTO, *, keep_type: bool = True) -> nn.Module:
    """Make every torch.nn RNN/LSTM/GRU and cell inside `model` (`model` itself included) run on fusedrnn's
    `backend`, in place. Returns `model`.

    keep_type=True (default): each layer keeps its torch.nn class (`isinstance(m, nn.LSTM)`, `type(m) == nn.GRU`,
    torch's quantize_dynamic, init and pruning helpers see it as before) and only its forward is fusedrnn's (an
    instance attribute, `RoutedForward`). torch.compile graph-breaks at such a layer, as at torch.nn's.
    keep_type=False: each layer becomes fusedrnn's class (`fusedrnn.LSTM`, derived from nn.RNNBase, not nn.LSTM), which
    torch.compile traces without graph breaks; code testing for torch.nn's classes no longer sees it (README)."""
    backend = check_backend_name(backend)
    layers = [module for module in model.modules() if parametrize.type_before_parametrizations(module) in TWINS]
    for module in layers:
        own_forward = module.__dict__.get("forward")
        if own_forward is not None and not isinstance(own_forward, RoutedForward):
            raise ValueError(f"cannot replace {type(module).__name__}: it has a forward of its own (an instance "
                             "attribute), which fusedrnn would silently bypass")  # fmt: skip
    for module in layers:
        _unroute(module)
        module.backend = backend
        if keep_type:
            for name, routed_cls in ROUTING.items():
                module.__dict__[name] = routed_cls(module)
        else:
            _retype(module, TWINS[parametrize.type_before_parametrizations(module)])
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
    """The inverse of `replace_rnns`, in either mode: turn every fusedrnn layer and cell inside `model` (`model` itself
    included) back into its torch.nn class, and every torch.nn layer routed to fusedrnn back to torch.nn's forward,
    in place. Returns `model`. ValueError (and nothing changed) if a layer uses zoneout or weight_dropout, which
    torch.nn's classes would silently drop, or heads (num_heads > 1), which they cannot hold."""
    refuse_regularised(model, "restore {} with zoneout or weight_dropout to torch.nn, which has neither")
    refuse_heads(model, "restore {} with num_heads > 1 to torch.nn, which has no heads")
    for module in model.modules():
        if is_routed(module):
            _unroute(module)
            module.__dict__.pop("backend", None)
    for module in _swap_all(model, ORIGINALS):
        del module.backend
        for option in ("zoneout", "weight_dropout", "num_heads"):  # set only when used; all unset or 1 here
            module.__dict__.pop(option, None)
    return model


# Whole-model torch.load (weights_only) of a model with routed layers rebuilds these objects from (class, (layer,)).
torch.serialization.add_safe_globals([RoutedForward, RoutedScriptable])
