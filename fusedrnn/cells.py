"""Drop-in `LSTMCell`, `GRUCell` and `RNNCell`: one time step, run as a one-step, one-layer sequence.

They derive from `torch.nn.RNNCellBase` (parameters, initialisation and `state_dict` are torch.nn's own) and send the
step through the same backend registry as the sequence modules, so a cell and a layer share one code path.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import registry
from .modules import check_backend_name, torch_nn_error, torch_twin
from .registry import LayerWeights


#: torch.nn's cell of each mode it has. On bad input, a cell raises what torch.nn's raises (_FusedCellBase._refused).
TORCH_CELL_CLASSES = {"LSTM": nn.LSTMCell, "GRU": nn.GRUCell, "RNN_TANH": nn.RNNCell, "RNN_RELU": nn.RNNCell}


class _FusedCellBase(nn.RNNCellBase):
    mode: str
    layer_norm = False  # fusedrnn.variants' layer-norm cells set it
    _plain_weights = True  # whether the weights are layer_weights()'s plain four: set per class (__init_subclass__)

    def __init__(self, input_size, hidden_size, bias, num_chunks, device=None, dtype=None, *, backend) -> None:
        super().__init__(input_size, hidden_size, bias, num_chunks, device=device, dtype=dtype)
        self.backend = check_backend_name(backend)

    def _check_step(self, input: Tensor, hx: Tensor | None, cx: Tensor | None) -> None:
        """Refuse what torch.nn's cell refuses: input [N, I], hx/cx [N, H] or None (zeros)."""
        name = type(self).__name__
        if input.dtype != self.weight_ih.dtype:
            raise RuntimeError(f"{name}: input dtype ({input.dtype}) does not match weight dtype ({self.weight_ih.dtype})")
        if input.size(1) != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)} expected {self.input_size}")
        for index, state in enumerate((hx, cx)):
            if state is None:
                continue
            if state.size(0) != input.size(0):
                raise RuntimeError(
                    f"Input batch size {input.size(0)} doesn't match hidden{index} batch size {state.size(0)}"
                )
            if state.size(1) != self.hidden_size:
                raise RuntimeError(
                    f"hidden{index} has inconsistent hidden_size: got {state.size(1)}, expected {self.hidden_size}"
                )
            if state.dtype != input.dtype or state.device != input.device:
                raise RuntimeError(
                    f"{name}: hidden{index} has dtype {state.dtype} on {state.device}, "
                    f"the input {input.dtype} on {input.device}; they must match"
                )

    def _step(self, input: Tensor, hx: Tensor | None, cx: Tensor | None,
              weights: LayerWeights | None = None) -> tuple[Tensor, Tensor | None]:  # fmt: skip
        """input [N, I], hx/cx [N, H] or None (zeros), checked -> (h' [N, H], c' [N, H] or None)."""
        backend, call = registry.select_cell(self.backend, self.mode, input, self.hidden_size, self.bias,
                                             self.layer_norm)  # fmt: skip
        return backend.cell(call, input, hx, cx, self.layer_weights() if weights is None else weights)

    def layer_weights(self) -> LayerWeights:
        return LayerWeights(self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, None)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        # Whether the class's weights are `layer_weights()`'s plain four (a variant's are not): looked up once here,
        # not per call.
        cls._plain_weights = cls.layer_weights is _FusedCellBase.layer_weights

    def _fits(self, input: Tensor, state: Tensor | None, weights: LayerWeights) -> bool:
        """Whether input and one state are the common call that `_check_step` would pass."""
        shape = input.shape
        if len(shape) != 2 or shape[1] != self.input_size or input.dtype != weights.w_ih.dtype:
            return False
        if state is None:
            return True
        return state.shape == (shape[0], self.hidden_size) and state.dtype == input.dtype and (
            state.device == input.device)

    def _refused(self, error: Exception, input, hx) -> Exception:
        """The exception to raise for arguments this cell refused with `error`: torch.nn's own for them (type and
        text; see fusedrnn.modules.torch_nn_error), or `error` where torch.nn has no such cell or accepts them."""
        torch_cls = None if self.layer_norm else TORCH_CELL_CLASSES.get(self.mode)
        torch_error = None if torch_cls is None else torch_nn_error(torch_cls.forward, self, input, hx)
        return error if torch_error is None else torch_error

    # The fast paths (issue 24: a decoder calls a cell hundreds of times per sequence, so a call's Python is a cost of
    # its own). Both read the weights from `_parameters` once (a module attribute lookup costs ~1 us each), where the
    # class's weights are plain parameters there (not parametrized, weight-drop tensors or a variant's). A plain call
    # (batched input, its states given as 2-D tensors) whose backend computes it with torch's own cell op
    # (registry.direct_cell_op) calls that op straight away: torch.nn's cells check only the ranks before they call
    # it, and the op checks the sizes, dtypes and devices in the words torch.nn users see, so neither does this path.
    # Else a call `_check_step` would pass (`_fits`) goes to the backend's cell. Anything else takes the full checks,
    # which raise torch.nn's errors. Written out in both forwards, without helpers: at H ~ 256 each Python frame costs
    # ~2 us (the weights evict the Python's code from L2 between calls; bench/call_overhead.py --training).

    def _one_state_forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        """input [N, I] or [I]; hx [N, H] or [H] (None: zeros) -> h' of hx's shape."""
        parameters = self._parameters
        w_ih, w_hh = parameters.get("weight_ih"), parameters.get("weight_hh")
        b_ih, b_hh = parameters.get("bias_ih"), parameters.get("bias_hh")
        if self._plain_weights and w_ih is not None and w_hh is not None and (
                not self.bias or (b_ih is not None and b_hh is not None)):  # fmt: skip
            if input.dim() == 2 and isinstance(hx, Tensor) and hx.dim() == 2:
                op = registry.direct_cell_op(self.backend, self.mode, input, self.hidden_size, self.bias,
                                             self.layer_norm)  # fmt: skip
                if op is not None:
                    return op(input, hx, w_ih, w_hh, b_ih, b_hh)
            weights = LayerWeights(w_ih, w_hh, b_ih, b_hh, None)
            if self._fits(input, hx, weights):
                return self._step(input, hx, None, weights)[0]
        try:
            is_batched = self._check_ranks(input, (hx,))
            step_input, step_hx = (input, hx) if is_batched else (input.unsqueeze(0), None if hx is None else
                                                                   hx.unsqueeze(0))  # fmt: skip
            self._check_step(step_input, step_hx, None)
        except Exception as error:  # noqa: BLE001 - any refusal: torch.nn's own words for it
            refused = self._refused(error, input, hx)
            if refused is error:
                raise
            raise refused from error
        h, _ = self._step(step_input, step_hx, None)
        return h if is_batched else h.squeeze(0)

    def _two_state_forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """input [N, I] or [I]; hx = (h [N, H], c [N, H]) or unbatched, or None (zeros) -> (h', c')."""
        parameters = self._parameters
        w_ih, w_hh = parameters.get("weight_ih"), parameters.get("weight_hh")
        b_ih, b_hh = parameters.get("bias_ih"), parameters.get("bias_hh")
        if self._plain_weights and w_ih is not None and w_hh is not None and (
                not self.bias or (b_ih is not None and b_hh is not None)) and (
                type(hx) is tuple and len(hx) == 2):  # fmt: skip
            h0, c0 = hx
            if (input.dim() == 2 and isinstance(h0, Tensor) and h0.dim() == 2 and isinstance(c0, Tensor) and
                    c0.dim() == 2):  # fmt: skip
                op = registry.direct_cell_op(self.backend, self.mode, input, self.hidden_size, self.bias,
                                             self.layer_norm)  # fmt: skip
                if op is not None:
                    return op(input, hx, w_ih, w_hh, b_ih, b_hh)
            weights = LayerWeights(w_ih, w_hh, b_ih, b_hh, None)
            if self._fits(input, h0, weights) and self._fits(input, c0, weights):
                return self._step(input, h0, c0, weights)
        try:
            is_batched = self._check_ranks(input, tuple(hx) if hx is not None else (None, None))
            h0, c0 = hx if hx is not None else (None, None)
            if not is_batched:
                h0 = None if h0 is None else h0.unsqueeze(0)
                c0 = None if c0 is None else c0.unsqueeze(0)
            step_input = input if is_batched else input.unsqueeze(0)
            self._check_step(step_input, h0, c0)
        except Exception as error:  # noqa: BLE001 - any refusal: torch.nn's own words for it
            refused = self._refused(error, input, hx)
            if refused is error:
                raise
            raise refused from error
        h, c = self._step(step_input, h0, c0)
        return (h, c) if is_batched else (h.squeeze(0), c.squeeze(0))

    def _check_ranks(self, input: Tensor, states) -> bool:
        name = type(self).__name__
        if input.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        for index, state in enumerate(states):
            if state is not None and state.dim() not in (1, 2):
                label = "hidden" if len(states) == 1 else f"hx[{index}]"
                raise ValueError(f"{name}: Expected {label} to be 1D or 2D, got {state.dim()}D instead")
        return input.dim() == 2

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.backend == registry.AUTO else f"{s}, backend={self.backend!r}"

    def __prepare_scriptable__(self) -> nn.Module:
        """torch.jit.script compiles torch.nn's cell with these parameters instead (see fusedrnn.modules)."""
        torch_cls = {"LSTM": nn.LSTMCell, "GRU": nn.GRUCell}.get(self.mode, nn.RNNCell)
        extra = {"nonlinearity": self.nonlinearity} if torch_cls is nn.RNNCell else {}
        return torch_twin(self, torch_cls, self.input_size, self.hidden_size, self.bias, **extra)


class _SingleStateCell(_FusedCellBase):
    forward = _FusedCellBase._one_state_forward  # the method itself: a frame less per call (see the direct path)


class RNNCell(_SingleStateCell):
    """`torch.nn.RNNCell` with a `backend` keyword."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None, *,
                 backend: str = registry.AUTO) -> None:  # fmt: skip
        super().__init__(input_size, hidden_size, bias, 1, device=device, dtype=dtype, backend=backend)
        self.nonlinearity = nonlinearity

    @property
    def mode(self) -> str:
        # Like torch.nn.RNNCell, a bad nonlinearity is reported when the cell runs.
        if self.nonlinearity == "tanh":
            return "RNN_TANH"
        if self.nonlinearity == "relu":
            return "RNN_RELU"
        raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")


class GRUCell(_SingleStateCell):
    """`torch.nn.GRUCell` with a `backend` keyword."""

    mode = "GRU"

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *,
                 backend: str = registry.AUTO) -> None:  # fmt: skip
        super().__init__(input_size, hidden_size, bias, 3, device=device, dtype=dtype, backend=backend)


class LSTMCell(_FusedCellBase):
    """`torch.nn.LSTMCell` with a `backend` keyword."""

    mode = "LSTM"

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *,
                 backend: str = registry.AUTO) -> None:  # fmt: skip
        super().__init__(input_size, hidden_size, bias, 4, device=device, dtype=dtype, backend=backend)

    forward = _FusedCellBase._two_state_forward  # the method itself: a frame less per call (see the direct path)


# As fusedrnn.modules: whole-model torch.load with weights_only=True accepts the cells.
torch.serialization.add_safe_globals([RNNCell, GRUCell, LSTMCell])
