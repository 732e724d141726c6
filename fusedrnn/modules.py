"""Drop-in `LSTM`, `GRU` and `RNN`: torch.nn's contract, fusedrnn's backends.

The classes derive from `torch.nn.RNNBase`, so constructor validation, parameter names, shapes, registration order,
initialisation, `state_dict`s and the shape checks of `forward` are torch.nn's own code. Only the computation is
routed through the backend registry. (They deliberately do not derive from `nn.LSTM` & co.: Dynamo refuses to trace
those classes, and tracing without graph breaks is one of the things fusedrnn is for.)
"""

from __future__ import annotations

import numbers
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import registry
from .registry import LayerWeights, ZoneoutMasks


def check_backend_name(backend: object) -> str:
    """Validate the `backend` argument when a module is built. Whether the backend can serve a call is decided per
    call (the module may still move to another device); an unknown name is an error right away."""
    if not isinstance(backend, str):
        raise TypeError(f"backend should be a str, got: {type(backend).__name__}")
    if backend != registry.AUTO and backend not in registry.backend_names():
        known = ", ".join([registry.AUTO, *registry.backend_names()])
        raise ValueError(f"unknown fusedrnn backend {backend!r}; known: {known}")
    return backend


def check_rate(name: str, value: object) -> float:
    """A probability argument, validated as torch.nn validates `dropout` (ValueError, bools refused)."""
    if not isinstance(value, numbers.Number) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ValueError(f"{name} should be a number in range [0, 1] representing the probability of an element "
                         f"being zeroed or kept, got {value!r}")  # fmt: skip
    return float(value)


def check_num_heads(num_heads: object, hidden_size: int) -> int:
    """Validate `num_heads` as torch.nn validates sizes: TypeError for a non-int, ValueError for a bad value."""
    if not isinstance(num_heads, numbers.Integral) or isinstance(num_heads, bool):
        raise TypeError(f"num_heads should be of type int, got: {type(num_heads).__name__}")
    if num_heads <= 0:
        raise ValueError("num_heads must be greater than zero")
    if hidden_size % num_heads != 0:
        raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
    return int(num_heads)


def head_weight(hidden_size: int, num_heads: int, gates: int, factory: dict) -> nn.Parameter:
    """An uninitialised block-diagonal recurrent weight [num_heads, gates*d, d] (d = hidden_size / num_heads)."""
    d = hidden_size // num_heads
    return nn.Parameter(torch.empty(num_heads, gates * d, d, **factory))


def normalise_zoneout(zoneout: object, mode: str, layer: str) -> float | tuple[float, float]:
    """Validate the `zoneout` argument of a `layer` (its class name) computing `mode`: a rate p (h and, LSTM, c) or,
    LSTM only, a pair (p_h, p_c). Returns it as a float or a tuple of two floats."""
    if isinstance(zoneout, (tuple, list)):
        if mode != "LSTM":
            raise ValueError(f"zoneout=(p_h, p_c) needs a cell state (LSTM); give {layer} one rate")
        if len(zoneout) != 2:
            raise ValueError(f"zoneout should be a rate or a pair (p_h, p_c), got {zoneout!r}")
        return check_rate("zoneout p_h", zoneout[0]), check_rate("zoneout p_c", zoneout[1])
    return check_rate("zoneout", zoneout)


def zoneout_rates(zoneout: float | tuple[float, float], mode: str) -> tuple[float, float]:
    """A normalised `zoneout` (normalise_zoneout) -> (p_h, p_c); p_c is 0 without a cell state."""
    if isinstance(zoneout, tuple):
        return zoneout
    return zoneout, (zoneout if mode == "LSTM" else 0.0)


#: torch.nn's class of each mode it has. On bad input, a layer raises what torch.nn's forward raises (torch_nn_error).
TORCH_LAYER_CLASSES = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN_TANH": nn.RNN, "RNN_RELU": nn.RNN}


def torch_nn_error(forward, module: nn.Module, *args) -> Exception | None:
    """What torch.nn's `forward` (e.g. nn.LSTM.forward, run on `module`, which has its attributes and parameters)
    raises for these arguments, or None if it accepts them. Called only once fusedrnn has refused the arguments, so
    that bad input gets torch.nn's exception type and text, whichever check or kernel of torch.nn finds it (some come
    from ATen and differ between devices and dtypes). Run without autograd and with torch's RNG restored afterwards:
    a forward that does run (torch.nn accepting what fusedrnn refuses) leaves no trace, and the caller raises its own
    error then."""
    cuda = [p.device for p in module.parameters() if p.device.type == "cuda"][:1]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=cuda):
            forward(module, *args)
    except Exception as error:  # noqa: BLE001 - the point is to capture whatever torch.nn raises
        return error
    return None


def torch_twin(module: nn.Module, torch_cls: type, *args, **kwargs) -> nn.Module:
    """A `torch_cls(*args, **kwargs)` (built on the meta device: no memory, no initialisation) that holds `module`'s
    own parameters (the same Parameter objects) and training mode."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. dropout with one layer: `module` warned when it was built
        twin = torch_cls(*args, **kwargs, device="meta")
    for name, parameter in module.named_parameters(recurse=False):
        setattr(twin, name, parameter)
    return twin.train(module.training)


class _FusedRNNBase(nn.RNNBase):
    """Shared forward of LSTM, GRU and RNN (and of the variants in fusedrnn.variants); `self.mode` tells them apart,
    as in torch.nn.

    The regularisers (keyword-only, 0 = off, the torch.nn contract untouched: no extra RNG draw, the same path):
      zoneout: p, or (p_h, p_c) for an LSTM; in training each unit keeps its previous h (c) with probability p_h
        (p_c), masks drawn here from torch's RNG, per layer-direction in the flat weight order, h then c, [T, N, H];
        in eval the expectation (mask = p).
      weight_dropout: DropConnect on W_hh: in training one F.dropout(W_hh, p) per layer-direction and forward call,
        drawn before the zoneout masks; the backend runs on that copy.

    Multi-head (keyword-only `num_heads`, issue #21; 1 = torch.nn's layer, untouched): the hidden units split into
    num_heads heads of d = H / num_heads that never exchange state; weight_hh_l{k} is block-diagonal, stored as its
    blocks [num_heads, G*d, d] (rows gate-major within a head, torch.nn's gate order); the gate pre-activations keep
    torch.nn's gate-major order (fusedrnn.reference.headwise_linear). Not with proj_size.
    """

    # Class-level defaults: the state of modules pickled before these options existed, and of plain modules.
    zoneout: float | tuple[float, float] = 0.0
    weight_dropout: float = 0.0
    layer_norm = False  # the variants with layer norm set it
    num_heads = 1

    def __init__(self, mode: str, *args, backend: str = registry.AUTO, zoneout=0.0, weight_dropout=0.0, num_heads=1,
                 **kwargs) -> None:  # fmt: skip
        super().__init__(mode, *args, **kwargs)
        if num_heads != 1 or not isinstance(num_heads, int) or isinstance(num_heads, bool):  # set only when used
            self.num_heads = check_num_heads(num_heads, self.hidden_size)
            if self.num_heads != 1:
                self._use_heads()
        self.backend = check_backend_name(backend)
        zoneout = normalise_zoneout(zoneout, self.mode, type(self).__name__)
        # Set only when used (all-zero rates are no zoneout): a default module's __dict__ (and pickle) stays torch.nn's.
        if any(zoneout_rates(zoneout, self.mode)):
            if self.proj_size > 0:
                raise ValueError("zoneout with proj_size > 0 is not defined (the kept state would be the projection)")
            self.zoneout = zoneout
        if weight_dropout != 0.0:
            self.weight_dropout = check_rate("weight_dropout", weight_dropout)

    def _use_heads(self) -> None:
        """Replace every weight_hh_l{k} by its block-diagonal form [num_heads, G*d, d], initialised as torch.nn's."""
        if self.proj_size > 0:
            raise ValueError("num_heads > 1 with proj_size > 0 is not defined (heads split the hidden state)")
        gates = registry.GATES[self.mode]
        factory = {"device": self.weight_ih_l0.device, "dtype": self.weight_ih_l0.dtype}
        for layer in range(self.num_layers):
            for suffix in ("", "_reverse") if self.bidirectional else ("",):
                setattr(self, f"weight_hh_l{layer}{suffix}", head_weight(self.hidden_size, self.num_heads, gates,
                                                                         factory))  # fmt: skip
        self._init_flat_weights()
        self.reset_parameters()

    def flatten_parameters(self) -> None:
        """torch.nn's (cuDNN's weight buffer), except with heads, which cuDNN never runs."""
        if self.num_heads == 1:
            super().flatten_parameters()

    @property
    def regularised(self) -> bool:
        """Whether zoneout or weight_dropout is on (torch.nn's class would compute something else)."""
        return any(zoneout_rates(self.zoneout, self.mode)) or self.weight_dropout != 0.0

    def _zoneout_masks(self, x: Tensor) -> list[ZoneoutMasks] | None:
        """One ZoneoutMasks per layer-direction for input x [T, N, ...], or None when zoneout is off."""
        p_h, p_c = zoneout_rates(self.zoneout, self.mode)
        if p_h == 0.0 and p_c == 0.0:
            return None
        shape = (x.shape[0], x.shape[1], self.hidden_size)
        with_c = self.mode == "LSTM" and p_c > 0.0
        if not self.training:  # the expectation: every layer-direction reads the same constant masks
            eval_masks = ZoneoutMasks(x.new_full(shape, p_h), x.new_full(shape, p_c) if with_c else None)
            return [eval_masks] * self._layer_directions()

        def draw(p: float) -> Tensor:
            return x.new_empty(shape).bernoulli_(p) if p > 0.0 else x.new_zeros(shape)

        masks = []
        for _ in range(self._layer_directions()):
            h = draw(p_h)
            masks.append(ZoneoutMasks(h, draw(p_c) if with_c else None))
        return masks

    def _layer_directions(self) -> int:
        return self.num_layers * (2 if self.bidirectional else 1)

    def layer_weights(self) -> list[LayerWeights]:
        """The flat parameter list grouped per (layer, direction), in torch.nn's order."""
        flat = self._flat_weights
        per_group = len(flat) // (self.num_layers * (2 if self.bidirectional else 1))
        groups = []
        for start in range(0, len(flat), per_group):
            w_ih, w_hh, *rest = flat[start : start + per_group]
            b_ih, b_hh = (rest[0], rest[1]) if self.bias else (None, None)
            w_hr = rest[-1] if self.proj_size > 0 else None
            groups.append(LayerWeights(w_ih, w_hh, b_ih, b_hh, w_hr))
        return groups

    def _check_state_rank(self, hx, is_batched: bool) -> None:
        """torch.nn's check of the state's rank, with its text (LSTM: the pair, indexed as torch.nn indexes it)."""
        rank, kind = (3, "batched 3-D") if is_batched else (2, "unbatched 2-D")
        if self.mode == "LSTM":
            if hx[0].dim() != rank or hx[1].dim() != rank:
                raise RuntimeError(f"For {kind} input, hx and cx should also be {rank}-D but got "
                                   f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")  # fmt: skip
        elif isinstance(hx, tuple):  # sLSTM's (h, c, n, m): no torch.nn counterpart, worded as LSTM's pair
            if any(state.dim() != rank for state in hx):
                got = ", ".join(f"{state.dim()}-D" for state in hx)
                raise RuntimeError(f"For {kind} input, hx, cx, nx and mx should also be {rank}-D but got ({got}) "
                                   "tensors")  # fmt: skip
        elif hx.dim() != rank:
            raise RuntimeError(f"For {kind} input, hx should also be {rank}-D but got {hx.dim()}-D tensor")

    def _check_state_dtype(self, input: Tensor, hx) -> None:
        for state in hx if isinstance(hx, tuple) else (hx,):
            if state.dtype != input.dtype or state.device != input.device:
                raise RuntimeError(
                    f"{type(self).__name__}: initial state has dtype {state.dtype} on {state.device}, but the input "
                    f"has dtype {input.dtype} on {input.device}; they must match"
                )

    def forward(self, input, hx=None):
        """input [T, N, I] (or [N, T, I] with batch_first), [T, I] unbatched, or a PackedSequence;
        hx [L*D, N, P] (LSTM: a tuple with c0 [L*D, N, H]) or None for zeros. Returns (output, h_n) like torch.nn.
        Bad input raises torch.nn's exception, with its text (`torch_nn_error`)."""
        step = self._one_step(input, hx)
        if step is not None:
            return step
        self._update_flat_weights()
        try:
            x, lengths, h0, c0, is_batched, packed_as = self._prepare(input, hx)
        except Exception as error:  # noqa: BLE001 - any refusal: torch.nn's own words for it, where it has some
            torch_cls = None if self.layer_norm else TORCH_LAYER_CLASSES.get(self.mode)
            torch_error = None if torch_cls is None else torch_nn_error(torch_cls.forward, self, input, hx)
            if torch_error is None:
                raise
            raise torch_error from error
        return self._finish(self._run(x, lengths, h0, c0), lengths, is_batched, packed_as)

    # The one-step fast path (issue 24). An autoregressive decoder calls a one-layer LSTM/GRU with one time step
    # hundreds of times per sequence, so a call's Python is a cost of its own (the general path's checks, layouts and
    # weight grouping measured ~8 us over torch.nn's forward). This serves exactly that call, torch.nn's plain layer
    # (one unidirectional layer, no projection, no variant) on a batched tensor of one step with the state given in
    # the shape, dtype and device the general path accepts; it checks only what decides that, and anything else
    # takes the general path, whose checks raise torch.nn's errors. The backend runs the step as a cell
    # (Backend.cell): the same function, as `cell` is one step of `run`.

    def _one_step(self, input, hx):
        """forward's (output, h_n) for the decoder's one-step call, or None where the call is not one."""
        if (type(input) is not Tensor or hx is None or self.num_layers != 1 or self.bidirectional
                or self.proj_size != 0 or self.num_heads != 1 or self.layer_norm or self.zoneout != 0.0
                or self.weight_dropout != 0.0 or self.mode not in TORCH_LAYER_CLASSES
                or type(self).layer_weights is not _FusedRNNBase.layer_weights):  # fmt: skip
            return None
        shape = input.shape
        if len(shape) != 3 or shape[2] != self.input_size or shape[1 if self.batch_first else 0] != 1:
            return None
        batch = shape[0] if self.batch_first else shape[1]
        state = (1, batch, self.hidden_size)
        # The parameters as they are now, read from `_parameters` directly: torch.nn's _update_flat_weights, which
        # compares each attribute with the flat list (~6 us per call, run from L3 at decoder sizes), is left to the
        # general path. A weight that is not a plain parameter there (parametrized, a weight-drop tensor) takes it.
        parameters = self._parameters
        flat = [parameters.get(name) for name in self._ONE_STEP_WEIGHTS[self.bias]]
        if any(w is None for w in flat):
            return None
        if batch == 0 or input.dtype != flat[0].dtype or not self._fits_state(input, hx, state):
            return None  # an empty batch included: the general path has its rules for it
        h0, c0 = (hx[0][0], hx[1][0]) if self.mode == "LSTM" else (hx[0], None)
        x = input[:, 0] if self.batch_first else input[0]
        backend, call = registry.select_call(self.backend, self._call_fields(input, batch, 1, False, 0.0, False, False))
        weights = LayerWeights(*flat, None) if self.bias else LayerWeights(*flat, None, None, None)
        h, c = backend.cell(call, x, h0, c0, weights)
        output = h.unsqueeze(1 if self.batch_first else 0)
        h_n = h.unsqueeze(0)
        return output, ((h_n, c.unsqueeze(0)) if self.mode == "LSTM" else h_n)

    #: The one-step path's parameters (one layer, one direction), with bias and without.
    _ONE_STEP_WEIGHTS = {True: ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"),
                         False: ("weight_ih_l0", "weight_hh_l0")}  # fmt: skip

    def _fits_state(self, input: Tensor, hx, state: tuple[int, int, int]) -> bool:
        """Whether hx is a state the general path accepts for a batched input: of shape `state` [1, N, H] (LSTM: a
        tuple of two), the input's dtype and device."""
        states = hx if self.mode == "LSTM" and type(hx) is tuple and len(hx) == 2 else (hx,)
        if len(states) != (2 if self.mode == "LSTM" else 1):
            return False
        return all(type(s) is Tensor and s.shape == state and s.dtype == input.dtype and s.device == input.device
                   for s in states)  # fmt: skip

    #: The names of the state's tensors when it is a tuple (LSTM's pair; sLSTM's four), else None: hx is one tensor.
    _STATE_TUPLES = {"LSTM": ("h_0", "c_0")}

    def _prepare(self, input, hx):
        """Validate and normalise forward's arguments -> (x [T, N, I], lengths [N] or None, h0, c0, is_batched,
        packed_as: the input PackedSequence's (batch_sizes, sorted_indices, unsorted_indices) or None)."""
        x, lengths, hx, is_batched, packed_as = self._prepare_input(input, hx)
        h0, c0 = hx if self.mode == "LSTM" and hx is not None else (hx, None)
        return x, lengths, h0, c0, is_batched, packed_as

    def _prepare_input(self, input, hx):
        """_prepare with the state as given: hx None, a tensor, or the tuple of `_STATE_TUPLES` (each [L*D, N, H])."""
        names = self._STATE_TUPLES.get(self.mode)
        if hx is not None and names is not None:
            # A layer torch.nn has replaces this with torch.nn's own error (forward); the others keep it.
            if not (isinstance(hx, (tuple, list)) and len(hx) == len(names)):
                mode = "LSTM" if self.mode == "LSTM" else type(self).__name__
                raise TypeError(f"{mode}: hx must be a tuple ({', '.join(names)}) of tensors")
            hx = tuple(hx)
        is_batched = True
        packed_as = None
        if isinstance(input, PackedSequence):
            data, batch_sizes, sorted_indices, unsorted_indices = input
            packed_as = (batch_sizes, sorted_indices, unsorted_indices)
            if hx is not None:
                hx = self.permute_hidden(hx, sorted_indices)
                self.check_forward_args(data, hx, batch_sizes)
            else:
                self.check_input(data, batch_sizes)
            x, lengths = pad_packed_sequence(PackedSequence(data, batch_sizes))
        else:
            if input.dim() not in (2, 3):
                tensor = " tensor" if self.mode.startswith("RNN_") else ""  # torch.nn.RNN's text has the word
                raise ValueError(
                    f"{type(self).__name__}: Expected input to be 2D or 3D, got {input.dim()}D{tensor} instead"
                )
            is_batched = input.dim() == 3
            if not is_batched:
                input = input.unsqueeze(0 if self.batch_first else 1)
            if hx is not None:
                self._check_state_rank(hx, is_batched)
                if not is_batched:
                    hx = tuple(state.unsqueeze(1) for state in hx) if names is not None else hx.unsqueeze(1)
                self.check_forward_args(input, hx, None)
            else:
                self.check_input(input, None)
            x = input.transpose(0, 1) if self.batch_first else input
            lengths = None
        if x.shape[0] == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        if hx is not None:
            self._check_state_dtype(x, hx)
        return x, lengths, hx, is_batched, packed_as

    def _finish(self, result, lengths, is_batched: bool, packed_as):
        """The backend's (y [T, N, D*P], h_n, c_n) -> forward's return value, in the input's layout."""
        y, h_n, c_n = result
        return self._layout(y, (h_n, c_n) if self.mode == "LSTM" else h_n, lengths, is_batched, packed_as)

    def _layout(self, y, hidden, lengths, is_batched: bool, packed_as):
        """(y [T, N, D*P], the final state: a tensor or a tuple) in the input's layout (packed, batch_first,
        unbatched), as forward returns them."""
        if packed_as is not None:
            batch_sizes, sorted_indices, unsorted_indices = packed_as
            packed = pack_padded_sequence(y, lengths, enforce_sorted=True)
            output = PackedSequence(packed.data, batch_sizes, sorted_indices, unsorted_indices)
            return output, self.permute_hidden(hidden, unsorted_indices)
        if self.batch_first:
            y = y.transpose(0, 1)
        if not is_batched:
            y = y.squeeze(0 if self.batch_first else 1)
            hidden = tuple(s.squeeze(1) for s in hidden) if isinstance(hidden, tuple) else hidden.squeeze(1)
        return y, hidden

    def _call_fields(self, x: Tensor, batch, steps, variable_lengths: bool, dropout: float, zoneout: bool,
                     weight_dropout: bool) -> tuple:
        """RNNCall's field values, in its order, for a call of this layer on x: the selection and the call object are
        looked up by them (registry.select_call)."""
        return (self.mode, x.device.type, x.dtype, self.input_size, self.hidden_size, self.proj_size, self.num_layers,
                self.bidirectional, self.bias, batch, steps, variable_lengths, dropout, torch.is_grad_enabled(),
                torch.compiler.is_compiling(), self.layer_norm, zoneout, weight_dropout, self.num_heads)

    def _run(self, x: Tensor, lengths: Tensor | None, h0: Tensor | None, c0: Tensor | None):
        dropout = self.dropout if self.training else 0.0
        weights = self.layer_weights()
        weight_dropout = self.weight_dropout if self.training else 0.0
        if weight_dropout > 0.0:
            weights = [w._replace(w_hh=F.dropout(w.w_hh, weight_dropout, training=True)) for w in weights]
        masks = self._zoneout_masks(x)
        fields = self._call_fields(x, x.shape[1], x.shape[0], lengths is not None, dropout, masks is not None,
                                   weight_dropout > 0.0)  # fmt: skip
        backend, call = registry.select_call(self.backend, fields)
        if call.variant is not None and torch.jit.is_tracing():
            raise RuntimeError(
                f"torch.jit.trace (and the TorchScript-based torch.onnx.export) cannot record fusedrnn."
                f"{type(self).__name__} with {call.variant}: no torch op computes it, and its plain-PyTorch loop would "
                "be unrolled at the traced sequence length (zoneout's masks at the traced batch too), silently wrong "
                "at any other; use torch.export (which checks the shapes it recorded) or torch.compile"
            )
        # zoneout= only with masks: a backend that has none need not take the keyword (Backend.run).
        return backend.run(call, x, lengths, h0, c0, weights, dropout, **({} if masks is None else {"zoneout": masks}))

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.num_heads != 1:
            s += f", num_heads={self.num_heads}"
        if any(zoneout_rates(self.zoneout, self.mode)):
            s += f", zoneout={self.zoneout!r}"
        if self.weight_dropout != 0.0:
            s += f", weight_dropout={self.weight_dropout!r}"
        return s if self.backend == registry.AUTO else f"{s}, backend={self.backend!r}"

    def __prepare_scriptable__(self) -> nn.Module:
        """What `torch.jit.script` compiles in place of this layer: torch.nn's own class with these very parameters
        (TorchScript cannot compile the backend registry). A scripted model therefore runs torch's kernels, and
        saves and loads with torch.jit like one built from torch.nn. torch.nn has no zoneout or weight_dropout: a
        layer using them is refused rather than scripted without them."""
        if self.regularised:
            raise RuntimeError(f"torch.jit.script cannot compile {type(self).__name__} with zoneout or weight_dropout "
                               "(torch.nn has neither); use torch.compile, or torch.jit.trace / torch.export, which "
                               "record the layer's plain-PyTorch reference path")  # fmt: skip
        if self.num_heads != 1:
            raise RuntimeError(f"torch.jit.script cannot compile {type(self).__name__} with num_heads="
                               f"{self.num_heads} (torch.nn has no heads); use torch.compile, or torch.jit.trace / "
                               "torch.export")  # fmt: skip
        torch_cls = {"LSTM": nn.LSTM, "GRU": nn.GRU}.get(self.mode, nn.RNN)
        kwargs = {"num_layers": self.num_layers, "bias": self.bias, "batch_first": self.batch_first,
                  "dropout": self.dropout, "bidirectional": self.bidirectional}  # fmt: skip
        if self.mode == "LSTM":
            kwargs["proj_size"] = self.proj_size
        elif torch_cls is nn.RNN:
            kwargs["nonlinearity"] = self.nonlinearity
        return torch_twin(self, torch_cls, self.input_size, self.hidden_size, **kwargs)


class LSTM(_FusedRNNBase):
    """`torch.nn.LSTM` (incl. `proj_size`) with keyword-only `backend`, `zoneout` (p or (p_h, p_c)) and
    `weight_dropout`, `num_heads` (see _FusedRNNBase); see torch.nn.LSTM for the other arguments."""

    def __init__(self, *args, backend: str = registry.AUTO, zoneout=0.0, weight_dropout=0.0, num_heads=1,
                 **kwargs) -> None:  # fmt: skip
        super().__init__("LSTM", *args, backend=backend, zoneout=zoneout, weight_dropout=weight_dropout,
                         num_heads=num_heads, **kwargs)  # fmt: skip

    # torch.nn.LSTM's own checks for the (h_0, c_0) pair, reused rather than rewritten.
    get_expected_cell_size = nn.LSTM.get_expected_cell_size
    check_forward_args = nn.LSTM.check_forward_args
    permute_hidden = nn.LSTM.permute_hidden


class GRU(_FusedRNNBase):
    """`torch.nn.GRU` with keyword-only `backend`, `zoneout`, `weight_dropout` and `num_heads` (see _FusedRNNBase)."""

    def __init__(self, *args, backend: str = registry.AUTO, zoneout=0.0, weight_dropout=0.0, num_heads=1,
                 **kwargs) -> None:  # fmt: skip
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, backend=backend, zoneout=zoneout, weight_dropout=weight_dropout,
                         num_heads=num_heads, **kwargs)  # fmt: skip


class RNN(_FusedRNNBase):
    """`torch.nn.RNN` (Elman, tanh or relu) with keyword-only `backend` and `num_heads` (see _FusedRNNBase);
    `nonlinearity` is the 4th positional."""

    def __init__(self, *args, backend: str = registry.AUTO, num_heads=1, **kwargs) -> None:
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:
            self.nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if self.nonlinearity == "tanh":
            mode = "RNN_TANH"
        elif self.nonlinearity == "relu":
            mode = "RNN_RELU"
        else:
            raise ValueError(f"Unknown nonlinearity '{self.nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__(mode, *args, backend=backend, num_heads=num_heads, **kwargs)


# `torch.load(path)` of a whole model, with the default weights_only=True, accepts these classes like torch.nn's.
torch.serialization.add_safe_globals([LSTM, GRU, RNN])
