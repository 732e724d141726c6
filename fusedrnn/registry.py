"""Backend registry: which implementation runs a recurrent call, and why the others cannot.

A backend is an object with a name that can tell
  * whether it works on this machine at all (`unavailable_reason`),
  * whether it serves one particular call (`unsupported_reason(call)`),
  * how strongly `auto` should prefer it for a call (`preference`),
and that runs the whole stacked, possibly bidirectional recurrence (`run`). Most backends only implement one layer
in one direction and inherit the stacking, bidirectional concatenation and inter-layer dropout from `LayerBackend`.

Backends are registered by import path (`register`), so importing fusedrnn imports neither triton nor the compiled
extension; a backend whose module fails to import is reported unavailable with the import error as its reason.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

# LayerNormWeights and ZoneoutMasks are part of this module's interface; they are defined with the oracle, which
# takes them too, because imports point downward.
from .reference import ELEMENTWISE_RECURRENCE, GATES, LayerNormWeights, ZoneoutMasks, check_variant  # noqa: F401
from .reference_slstm import SLSTM_GATES, SLSTMState  # noqa: F401

#: Environment variable that replaces the default backend ("auto") of every module.
BACKEND_ENV = "FUSEDRNN_BACKEND"
AUTO = "auto"


class BackendError(RuntimeError):
    """A backend was requested by name but cannot serve the call; the message says why."""


@dataclasses.dataclass(frozen=True)
class RNNCall:
    """Everything a backend may need to decide whether it supports a call (hashable, so selection is cached)."""

    mode: str  # "LSTM" | "GRU" | "RNN_TANH" | "RNN_RELU" | "INDRNN_TANH" | "INDRNN_RELU" | "SLSTM"
    device_type: str  # "cpu" | "cuda" | ...
    dtype: torch.dtype
    input_size: int
    hidden_size: int
    proj_size: int = 0
    num_layers: int = 1
    bidirectional: bool = False
    bias: bool = True
    # None: unknown, as torch.compile selects (`_compiled_fields`).
    batch_size: int | None = 1
    seq_len: int | None = 1
    variable_lengths: bool = False  # a PackedSequence: per-row lengths
    dropout: float | None = 0.0  # applied between layers (only passed when training); None: as batch_size
    needs_grad: bool = False
    compiling: bool = False  # traced by torch.compile
    # The variants (fusedrnn.reference's docstring). New fields go last: select_cell passes the fields by position.
    layer_norm: bool = False  # LayerNormLSTM / LayerNormGRU: every LayerWeights carries `norm`
    zoneout: bool = False  # zoneout masks are given (training draws, or the rate in eval)
    weight_dropout: bool = False  # W_hh is a per-call DropConnect copy, not the module's parameter
    # Issue #21. SLSTM: xLSTM's sLSTM (fusedrnn.reference_slstm), run by `Backend.run_slstm`, not `run`.
    num_heads: int = 1  # > 1: W_hh is block-diagonal over heads, [num_heads, G*d, d] (reference.headwise_linear)
    formulation: str | None = None  # SLSTM only: reference_slstm.SLSTM_FORMULATIONS

    @property
    def gates(self) -> int:
        return SLSTM_GATES if self.mode == SLSTM else GATES[self.mode]

    @property
    def variant(self) -> str | None:
        """What torch.nn's RNN kernels cannot compute about this call (None: plain torch.nn math)."""
        if not (self.layer_norm or self.zoneout or self.mode in ELEMENTWISE_RECURRENCE or self.mode == SLSTM
                or self.num_heads > 1):
            return None  # the common answer, asked several times per call: without building a list
        names = [name for name, used in (("layer norm", self.layer_norm), ("zoneout", self.zoneout),
                                         ("IndRNN", self.mode in ELEMENTWISE_RECURRENCE), ("sLSTM", self.mode == SLSTM),
                                         ("multi-head", self.num_heads > 1)) if used]  # fmt: skip
        return " and ".join(names) or None

    @property
    def output_size(self) -> int:
        return self.proj_size or self.hidden_size


#: The mode of xLSTM's sLSTM calls.
SLSTM = "SLSTM"


def reference_only_reason(call: RNNCall, backend: str) -> str | None:
    """The refusal of a backend without kernels for sLSTM and multi-head recurrences (issue #21; `reference` and
    `cpu` compute both, `triton` sLSTM). None for other calls."""
    if call.mode == SLSTM or call.num_heads > 1:
        return (f"backend {backend!r} has no {call.variant} kernels yet (issue #21); use backend 'reference' (or "
                "'auto', which picks it)")
    return None


def is_one_step(call: RNNCall) -> bool:
    """One time step of one unidirectional layer of torch.nn's math without projection or per-row lengths: what a
    cell computes, and a 1-step layer call of a decoder loop."""
    return (call.seq_len == 1 and call.num_layers == 1 and not call.bidirectional and not call.proj_size
            and not call.variable_lengths and call.variant is None)  # fmt: skip


class LayerWeights(NamedTuple):
    """The parameters of one layer and direction, in torch.nn's order; absent ones are None. IndRNN: w_hh is the
    vector u [H]. `norm`: the layer-norm gains of LayerNormLSTM / LayerNormGRU (RNNCall.layer_norm). Multi-head
    (RNNCall.num_heads > 1) and sLSTM: w_hh [num_heads, G*d, d]; sLSTM: w_ih None when the input is already the
    gate pre-activations [T, N, 4*H] (xlstm's sLSTMCell), and w_hr None."""

    w_ih: Tensor
    w_hh: Tensor
    b_ih: Tensor | None
    b_hh: Tensor | None
    w_hr: Tensor | None
    norm: LayerNormWeights | None = None


class Backend:
    """Base class; subclasses set `name`, `summary` and override what differs."""

    name: str = ""
    summary: str = ""

    def unavailable_reason(self) -> str | None:
        """None when the backend can run on this machine, else why not (missing package, device, build)."""
        return None

    def unsupported_reason(self, call: RNNCall) -> str | None:
        """None when the backend serves `call`, else a reason a user can act on."""
        return None

    def preference(self, call: RNNCall) -> int:
        """Ordering for `auto`: higher first; 0 means `auto` never picks this backend for such a call. It should
        follow measured speed, which depends on the device and can depend on the cell or sizes."""
        return 0

    def run(
        self,
        call: RNNCall,
        x: Tensor,
        lengths: Tensor | None,
        hx: Tensor | None,
        cx: Tensor | None,
        weights: list[LayerWeights],
        dropout: float,
        *,
        zoneout: list[ZoneoutMasks] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """The whole stack. x [T, N, I]; lengths [N] int64 on the CPU (as PackedSequence keeps them) or None;
        hx [L*D, N, P] or None; cx [L*D, N, H] or None; weights per (layer, dir).

        Returns y [T, N, D*P], h_n [L*D, N, P], c_n [L*D, N, H] (None unless LSTM). `dropout` is the inter-layer
        dropout probability, already zero outside training. `zoneout`: one ZoneoutMasks per (layer, dir), given
        exactly when call.zoneout (callers pass the keyword only then, so a backend without zoneout need not take it).
        """
        raise NotImplementedError

    def run_slstm(
        self,
        call: RNNCall,
        x: Tensor,
        lengths: Tensor | None,
        state: SLSTMState | None,
        weights: list[LayerWeights],
        dropout: float,
    ) -> tuple[Tensor, SLSTMState]:
        """`run` for an sLSTM call (call.mode == SLSTM): state is None (zeros) or an SLSTMState of [L*D, N, H]
        tensors; returns y [T, N, D*H] and the final SLSTMState of [L*D, N, H] tensors. A backend that does not
        refuse SLSTM calls in `unsupported_reason` implements this."""
        raise NotImplementedError(f"backend {self.name!r} does not run sLSTM")

    def cell(
        self, call: RNNCall, x: Tensor, hx: Tensor | None, cx: Tensor | None, weights: LayerWeights
    ) -> tuple[Tensor, Tensor | None]:
        """One step of a one-layer cell (torch.nn's LSTMCell & co.): x [N, I], hx [N, H] or None (zeros), cx [N, H]
        or None (zeros; LSTM only) -> (h' [N, H], c' [N, H] or None). A cell is latency-bound, so a backend may
        override this with a path cheaper than `run` on a one-step sequence, which is the default."""
        unsqueeze = lambda state: None if state is None else state.unsqueeze(0)  # noqa: E731
        _, h_n, c_n = self.run(call, x.unsqueeze(0), None, unsqueeze(hx), unsqueeze(cx), [weights], 0.0)
        return h_n[0], (None if c_n is None else c_n[0])

    def direct_cell_op(self, call: RNNCall):
        """The ATen op that computes `cell` for `call` from the caller's own arguments, op(x, hx, w_ih, w_hh, b_ih,
        b_hh) with hx = (h, c) for an LSTM, or None (the default): then the cell goes through `cell`. See
        `direct_cell_op` below."""
        return None

    def __repr__(self) -> str:
        return f"<fusedrnn backend {self.name!r}>"


class LayerBackend(Backend):
    """A backend that implements one layer in one direction; stacking is done here, once for all such backends."""

    def layer(
        self,
        mode: str,
        x: Tensor,
        hx: Tensor | None,
        cx: Tensor | None,
        w: LayerWeights,
        reverse: bool,
        lengths: Tensor | None,
        *,
        zoneout: ZoneoutMasks | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Same contract as `fusedrnn.reference.rnn_layer` (w.norm is its `norm`); lengths, if any, are on x's
        device. `zoneout` is passed only when the call has masks."""
        raise NotImplementedError

    def cell(self, call, x, hx, cx, weights):
        _, h, c = self.layer(call.mode, x.unsqueeze(0), hx, cx, weights, False, None)
        return h, c

    def stack(self, call, x, lengths, dropout, layer_direction):
        """The layer stack every recurrence shares: layer_direction(k, layer_input, reverse, lengths) -> (y, final)
        runs layer direction k (lengths on x's device); between layers, dropout drawn as ATen draws it. Returns the
        last layer's output and every direction's final state, in k order."""
        directions = 2 if call.bidirectional else 1
        host_lengths = lengths  # on the CPU, where packing the dropout's input wants them
        if lengths is not None:
            lengths = lengths.to(x.device)  # once per call: layer kernels read the lengths where x lives
        finals = []
        layer_input = x
        for layer in range(call.num_layers):
            outputs = []
            for direction in range(directions):
                y, final = layer_direction(layer * directions + direction, layer_input, direction == 1, lengths)
                outputs.append(y)
                finals.append(final)
            layer_input = outputs[0] if directions == 1 else torch.cat(outputs, dim=-1)
            if dropout > 0 and layer < call.num_layers - 1:
                layer_input = inter_layer_dropout(layer_input, host_lengths, dropout)
        return layer_input, finals

    def run(self, call, x, lengths, hx, cx, weights, dropout, *, zoneout=None):
        def layer_direction(k, layer_input, reverse, lengths):
            masks = None if zoneout is None else zoneout[k]
            if call.variant is not None:  # here, once for every layer kernel: they read the masks by pointer
                check_variant(call.mode, layer_input, weights[k].w_hh, weights[k].norm, masks, weights[k].w_hr)
            y, h, c = self.layer(call.mode, layer_input, None if hx is None else hx[k], None if cx is None else cx[k],
                                 weights[k], reverse, lengths, **({} if masks is None else {"zoneout": masks}))
            return y, (h, c)

        y, finals = self.stack(call, x, lengths, dropout, layer_direction)
        c_n = [c for _, c in finals if c is not None]
        return y, torch.stack([h for h, _ in finals]), (torch.stack(c_n) if c_n else None)

    def slstm_layer(
        self, x: Tensor, state: SLSTMState | None, w: LayerWeights, reverse: bool, lengths: Tensor | None,
        formulation: str,
    ) -> tuple[Tensor, SLSTMState]:  # fmt: skip
        """Same contract as `fusedrnn.reference_slstm.slstm_layer`; lengths, if any, are on x's device."""
        raise NotImplementedError(f"backend {self.name!r} does not run sLSTM")

    def run_slstm(self, call, x, lengths, state, weights, dropout):
        def layer_direction(k, layer_input, reverse, lengths):
            initial = None if state is None else SLSTMState(*(s[k] for s in state))
            return self.slstm_layer(layer_input, initial, weights[k], reverse, lengths, call.formulation)

        y, finals = self.stack(call, x, lengths, dropout, layer_direction)
        return y, SLSTMState(*(torch.stack(parts) for parts in zip(*finals)))


def inter_layer_dropout(y: Tensor, lengths: Tensor | None, p: float) -> Tensor:
    """Dropout between layers, drawn as ATen's RNN stack draws it so that a seeded run gives torch.nn's mask and
    leaves torch's RNG where torch.nn leaves it: one F.dropout of the layer output, y [T, N, D*H]. For a packed
    sequence ATen drops out the packed data [sum(lengths), D*H] (only the valid steps, time-major), so the mask is
    drawn on that and the result padded back to [T, N, D*H] (zeros past each row's end, as every layer writes there).
    lengths: [N] int64 on the CPU (as pack_padded_sequence wants them), decreasing (the packed batch order), or None."""
    if lengths is None:
        return F.dropout(y, p, training=True)
    packed = pack_padded_sequence(y, lengths, enforce_sorted=True)
    dropped = PackedSequence(F.dropout(packed.data, p, training=True), packed.batch_sizes)
    return pad_packed_sequence(dropped, total_length=y.shape[0])[0]


# ----------------------------------------------------------------------------------------------------------------
# The registry proper

_PATHS: dict[str, str | Backend] = {}  # name -> "module:attribute" or an instance, in registration order
_LOADED: dict[str, Backend | str] = {}  # name -> instance, or the import error text


def register(name: str, backend: str | Backend) -> None:
    """Register a backend: an instance, or "package.module:ATTRIBUTE" naming one, imported on first use."""
    _PATHS[name] = backend
    _LOADED.pop(name, None)
    if isinstance(backend, Backend):
        _LOADED[name] = backend
    _clear_selection_caches()


def unregister(name: str) -> None:
    _PATHS.pop(name, None)
    _LOADED.pop(name, None)
    _clear_selection_caches()


def _clear_selection_caches() -> None:
    _select_cached.cache_clear()
    _select_with_call.cache_clear()
    _DIRECT_CELL_OPS.clear()


def backend_names() -> list[str]:
    return list(_PATHS)


def _load(name: str) -> Backend | str:
    if name not in _LOADED:
        module_name, attribute = _PATHS[name].split(":")
        try:
            _LOADED[name] = getattr(importlib.import_module(module_name), attribute)
        except Exception as error:  # noqa: BLE001 - any import failure makes the backend unavailable, with why
            _LOADED[name] = f"cannot import {module_name}: {type(error).__name__}: {error}"
    return _LOADED[name]


def get_backend(name: str) -> Backend:
    """The backend object by name; raises BackendError if unknown or unavailable here."""
    if name not in _PATHS:
        raise BackendError(f"unknown fusedrnn backend {name!r}; known: {', '.join([AUTO, *_PATHS])}")
    backend = _load(name)
    reason = backend if isinstance(backend, str) else backend.unavailable_reason()
    if reason is not None:
        raise BackendError(f"fusedrnn backend {name!r} is not available: {reason}")
    return backend


def availability() -> dict[str, str | None]:
    """Every registered backend mapped to None (available) or the reason it is not."""
    result = {}
    for name in _PATHS:
        backend = _load(name)
        result[name] = backend if isinstance(backend, str) else backend.unavailable_reason()
    return result


def available_backends() -> list[str]:
    """Names of the backends that can run on this machine."""
    return [name for name, reason in availability().items() if reason is None]


def requested_backend(requested: str) -> str:
    """The name a module asked for, with FUSEDRNN_BACKEND replacing the default `auto` (read at every call, so a
    change takes effect at the next one)."""
    if requested == AUTO:
        return _environment_backend() or AUTO
    return requested


# os.environ.get costs 1-2 us per call (Mapping.get, then the key's encoding), more than the rest of a cell's
# selection (issue 24): where os.environ keeps its values in a dict of encoded keys (CPython's _Environ, updated by
# every os.environ assignment, as monkeypatch.setenv makes), that dict is read with the key encoded once.
_ENVIRON_DATA = getattr(os.environ, "_data", None)
_ENVIRON_KEY = os.environ.encodekey(BACKEND_ENV) if hasattr(os.environ, "encodekey") else None


def _environment_backend() -> str | None:
    if _ENVIRON_DATA is None or _ENVIRON_KEY is None:
        return os.environ.get(BACKEND_ENV)
    value = _ENVIRON_DATA.get(_ENVIRON_KEY)
    return None if value is None else os.environ.decodevalue(value)


# ----------------------------------------------------------------------------------------------------------------
# Export: while torch.jit.trace, torch.export.export or torch.onnx.export (either exporter) records a model, every
# layer runs on EXPORT_BACKEND, whatever backend it asked for. The recorded graph then holds torch's own RNN ops
# (aten::lstm, gru, rnn_tanh, rnn_relu) as torch.nn's layers do: ONNX maps them to its standard LSTM/GRU/RNN nodes,
# and TorchScript files and exported programs run wherever torch runs, without fusedrnn. (Our own ops would bake the
# grad mode of the recording into a trace, and no ONNX exporter knows them.)

#: The backend every layer records while a graph is exported or traced.
EXPORT_BACKEND = "torch"


def recording_graph() -> bool:
    """True while torch.jit.trace, torch.export.export or torch.onnx.export records a model (not torch.compile)."""
    # TorchScript-based ONNX export traces; the dynamo-based one runs torch.export.
    return torch.jit.is_tracing() or _exporting()


#: Whether torch has the export flag `_exporting()` reads (direct_cell_op reads it too, without a frame).
_HAS_EXPORT_FLAG = hasattr(torch.compiler, "_is_exporting_flag")


def _exporting() -> bool:
    """torch.export's flag. Read directly where torch has it: torch 2.11's Dynamo folds `torch.compiler.is_exporting()`
    to True while it traces anything, torch.compile included (later versions read the flag); the flag itself is a
    module global, which Dynamo reads (and guards on) like any other."""
    return bool(torch.compiler._is_exporting_flag) if _HAS_EXPORT_FLAG else torch.compiler.is_exporting()


#: What a variant (layer norm, zoneout, IndRNN: no torch op computes them) records instead: its plain-PyTorch loop.
EXPORT_VARIANT_BACKEND = "reference"


def select(requested: str, call: RNNCall) -> Backend:
    """The backend that runs `call`: the named one (or an error saying why it cannot), or for `auto` the most
    preferred available backend on the call's device that supports it; `EXPORT_BACKEND` while a graph is recorded
    (`EXPORT_VARIANT_BACKEND` for a variant)."""
    if recording_graph():
        return get_backend(EXPORT_BACKEND if call.variant is None else EXPORT_VARIANT_BACKEND)
    fields = tuple(getattr(call, name) for name in _CALL_FIELDS)
    if torch.compiler.is_compiling():
        fields = _compiled_fields(fields)
    return _LOADED[_select_name(requested_backend(requested), *fields)]


def select_call(requested: str, fields: tuple) -> tuple[Backend, RNNCall]:
    """`select` for a call given as its field values (RNNCall's order), and the call: in eager mode both are looked up
    by the values (a layer called once per decoder step pays for neither the RNNCall nor the selection; issue 24)."""
    if recording_graph() or torch.compiler.is_compiling():
        call = RNNCall(*fields)
        return select(requested, call), call
    return _select_with_call(requested_backend(requested), fields)


def select_cell(
    requested: str, mode: str, x: Tensor, hidden_size: int, bias: bool, layer_norm: bool = False
) -> tuple[Backend, RNNCall]:
    """`select` for one step of a cell on input x [N, I], and the call it was selected for. The selection is looked
    up by the call's field values, so a cell (latency-bound) pays for building the RNNCall only in eager mode."""
    compiling = torch.compiler.is_compiling()
    fields = (mode, x.device.type, x.dtype, x.shape[1], hidden_size, 0, 1, False, bias, x.shape[0], 1, False, 0.0,
              torch.is_grad_enabled(), compiling, layer_norm, False, False)  # fmt: skip  (RNNCall's field order)
    if recording_graph():
        call = RNNCall(*fields)
        return get_backend(EXPORT_BACKEND if call.variant is None else EXPORT_VARIANT_BACKEND), call
    if compiling:  # Dynamo: the constant-result selection, and a call built in the traced code (no lru_cache)
        fields = _compiled_fields(fields)
        return _LOADED[_select_name(requested_backend(requested), *fields)], RNNCall(*fields)
    return _select_with_call(requested_backend(requested), fields)


# A decoder calls a cell hundreds of times per sequence, and each call's Python is a cost of its own (issue 24). At
# H ~ 256 it costs more than its count of instructions says: the cell's weights (2 MB for an fp32 LSTMCell, this CPU's
# whole L2) evict the Python's code and objects between calls, so every line runs from L3. select_cell plus
# Backend.cell cost ~5 us per call there, torch.nn's whole forward ~7 us. Where the selection is torch's own cell op,
# the cells call it directly, found by the call's signature in one dict lookup.
#: (backend requested, mode, hidden size, bias, layer norm, x.shape, x.dtype, x.device, grad mode) -> the op or None.
_DIRECT_CELL_OPS: dict[tuple, object] = {}
#: Signatures kept before the table starts over (a model has a few; a sweep over sizes should not grow it forever).
MAX_DIRECT_CELL_OPS = 1024
_NOT_SELECTED = object()


def direct_cell_op(requested: str, mode: str, x: Tensor, hidden_size: int, bias: bool, layer_norm: bool = False):
    """For an eager cell call on input x [N, I] with its states given: the ATen op `select_cell`'s backend computes
    it with (Backend.direct_cell_op), or None: then call `select_cell`. The caller has checked only the ranks (x 2-D,
    each state a 2-D tensor); the op checks sizes, dtypes and devices itself. None while torch.compile traces or a
    graph is recorded (their selections differ)."""
    # recording_graph() and requested_backend() inlined: at H ~ 256 each Python frame costs ~2 us (above).
    compiler = torch.compiler
    if compiler.is_compiling() or _is_tracing() or (compiler._is_exporting_flag if _HAS_EXPORT_FLAG else _exporting()):
        return None
    if requested == AUTO and (_ENVIRON_DATA is None or _ENVIRON_KEY is None or _ENVIRON_KEY in _ENVIRON_DATA):
        requested = requested_backend(requested)  # FUSEDRNN_BACKEND is set (or os.environ is not CPython's)
    key = (requested, mode, hidden_size, bias, layer_norm, x.shape, x.dtype, x.device, torch.is_grad_enabled())
    op = _DIRECT_CELL_OPS.get(key, _NOT_SELECTED)
    if op is _NOT_SELECTED:
        backend, call = select_cell(requested, mode, x, hidden_size, bias, layer_norm)
        if len(_DIRECT_CELL_OPS) >= MAX_DIRECT_CELL_OPS:
            _DIRECT_CELL_OPS.clear()
        op = _DIRECT_CELL_OPS[key] = backend.direct_cell_op(call)
    return op


#: torch.jit.is_tracing() without its is_scripting() frame (these cells' forwards are never scripted: see
#: __prepare_scriptable__).
_is_tracing = torch._C._is_tracing


@functools.lru_cache(maxsize=1024)
def _select_with_call(name: str, fields: tuple) -> tuple[Backend, RNNCall]:
    return _LOADED[_select_cached(name, fields)], RNNCall(*fields)


_CALL_FIELDS = tuple(field.name for field in dataclasses.fields(RNNCall))


# torch.compile runs the selection once while tracing and keeps its answer as a constant: the checks behind it
# (imports, device queries, CPU capability) are Python that Dynamo cannot and need not trace. The call travels as
# its field values because Dynamo hands such a function constants, not objects it built while tracing.
@torch.compiler.assume_constant_result
def _select_name(name: str, *fields) -> str:
    return _select_cached(name, fields)


#: The fields that Dynamo can make symbolic: the sizes (automatic dynamic shapes after a second size, dynamic=True,
#: mark_dynamic) and, with dynamic=True, the module's float dropout.
_SYMBOLIC_FIELDS = tuple(_CALL_FIELDS.index(name) for name in ("batch_size", "seq_len", "dropout"))


def _compiled_fields(fields: tuple) -> tuple:
    """The fields that torch.compile selects on: those Dynamo can make symbolic replaced by None, "unknown".

    A symbolic value cannot be an argument of the constant-result `_select_name`, and Dynamo reports a SymInt as a
    plain int, so it cannot be told apart here. Why not the size's hint: the selection is a constant of the graph,
    and a decision taken on one size would be reused for every size the graph serves, unguarded. Why not
    specialising: one recompilation per batch size, which dynamic shapes exist to avoid. Unknown in every compiled
    graph, static or not, so the backend does not change when Dynamo turns a size dynamic. All backends compute the
    same function, so an unknown size can only change which one is chosen: each backend whose preference or refusal
    depends on a size handles None, and a refusal it cannot rule out is checked where the size is known (see the
    triton backend). No backend selects on the dropout probability (they are given it by `run`)."""
    return tuple(
        None if index in _SYMBOLIC_FIELDS else (True if value else False) if index in _FLAG_FIELDS else value
        for index, value in enumerate(fields)
    )


#: The flags. With dynamic=True, `weight_dropout > 0.0` on the module's (then symbolic) float is a SymBool: a branch
#: on it (bool() leaves it symbolic under Dynamo) makes Dynamo guard on its value, so a change recompiles.
_FLAG_FIELDS = tuple(index for index, field in enumerate(dataclasses.fields(RNNCall)) if field.type == "bool")


@functools.lru_cache(maxsize=1024)
def _select_cached(name: str, fields: tuple) -> str:
    """The registered name of the backend that runs the call with these field values (built only on a miss)."""
    call = RNNCall(*fields)
    if name != AUTO:
        reason = get_backend(name).unsupported_reason(call)
        if reason is not None:
            raise BackendError(f"fusedrnn backend {name!r} cannot run this {call.mode} call: {reason}")
        return name
    loaded = {candidate: _load(candidate) for candidate in _PATHS}
    ranked = sorted(
        ((backend.preference(call), candidate) for candidate, backend in loaded.items() if isinstance(backend, Backend)),
        key=lambda pair: -pair[0],
    )
    reasons = []
    for preference, candidate in ranked:
        if preference <= 0:
            continue
        backend = loaded[candidate]
        reason = backend.unavailable_reason() or backend.unsupported_reason(call)
        if reason is None:
            return candidate
        reasons.append(f"{candidate}: {reason}")
    raise BackendError(f"no fusedrnn backend can run this call ({call}); " + "; ".join(reasons))


# ----------------------------------------------------------------------------------------------------------------
# The built-in backends, one registration each. `auto` orders them by `preference`, not by this order.

register("reference", "fusedrnn.backends.reference:BACKEND")
register("torch", "fusedrnn.backends.torch_native:BACKEND")
register("triton", "fusedrnn.backends.triton:BACKEND")
register("cuda", "fusedrnn.backends.native:CUDA_BACKEND")
register("cpu", "fusedrnn.backends.native:CPU_BACKEND")
