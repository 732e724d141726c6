"""xLSTM's sLSTM as torch.nn-style modules (issue #21): `sLSTM` (multi-layer, bidirectional, packed) and `sLSTMCell`.

Math: fusedrnn.reference_slstm (xlstm's stabilised formulation, or TiRex's with `formulation="tirex"`). The contract
is torch.nn.LSTM's, with the state a 4-tuple (h, c, n, m) in place of (h, c): constructor arguments and their
validation (torch.nn's own code, through nn.RNNBase), inputs (packed, batch_first, unbatched), inter-layer dropout.

Parameters, per layer k and direction suffix ('' or '_reverse'), in registration order, gates (i, f, z, o):
    weight_ih_l{k} [4*H, I_k]     rows gate-major (gate g, head h, unit j at g*H + h*d + j), as torch.nn's LSTM
    weight_hh_l{k} [K, 4*d, d]    one recurrent matrix per head (d = H / K), rows gate-major within the head
    bias_ih_l{k}, bias_hh_l{k} [4*H]   (with bias)
Initialisation: torch.nn's U(-1/sqrt(H), 1/sqrt(H)) of everything. From xlstm's vanilla `sLSTMCell`: its internal
`_recurrent_kernel_` [K, 4*d, d] is weight_hh as is, its `_bias_` [4*H] (gate-major) is bias_hh; xlstm's cell takes
the input already projected (its sLSTMLayer's headwise gate projections), which `replace_slstm` keeps as it is.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import registry
from .modules import _FusedRNNBase, check_backend_name, check_num_heads, head_weight
from .reference_slstm import SLSTM_GATES, SLSTMState, check_formulation
from .registry import SLSTM, LayerWeights, RNNCall
from .variants import refuse_script


def _call(module: nn.Module, x: Tensor, num_layers: int, bidirectional: bool, lengths, dropout: float) -> RNNCall:
    """The registry call of a forward; RuntimeError under torch.jit.trace, as fusedrnn's other variants."""
    if torch.jit.is_tracing():
        raise RuntimeError(
            f"torch.jit.trace (and the TorchScript-based torch.onnx.export) cannot record fusedrnn."
            f"{type(module).__name__}: no torch op computes it, and its plain-PyTorch loop would be unrolled at the "
            "traced sequence length, silently wrong at any other; use torch.export or torch.compile"
        )
    return RNNCall(
        mode=SLSTM,
        device_type=x.device.type,
        dtype=x.dtype,
        input_size=module.input_size,
        hidden_size=module.hidden_size,
        num_layers=num_layers,
        bidirectional=bidirectional,
        bias=module.bias,
        batch_size=x.shape[1],
        seq_len=x.shape[0],
        variable_lengths=lengths is not None,
        dropout=dropout,
        needs_grad=torch.is_grad_enabled(),
        compiling=torch.compiler.is_compiling(),
        num_heads=module.num_heads,
        formulation=module.formulation,
    )


class sLSTM(_FusedRNNBase):  # noqa: N801 - xLSTM's name
    """xLSTM's sLSTM layer stack. torch.nn.LSTM's arguments (no proj_size) and keyword-only `num_heads` (must divide
    hidden_size; heads never exchange state), `formulation` ("xlstm" or "tirex", fusedrnn.reference_slstm) and
    `backend`. forward(input, (h_0, c_0, n_0, m_0)) -> (output, (h_n, c_n, n_n, m_n)); each state [D*L, N, H]
    ([D*L, H] unbatched), None for zeros."""

    _STATE_TUPLES = {SLSTM: tuple(f"{name}_0" for name in SLSTMState._fields)}

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, device=None, dtype=None, *, num_heads=1, formulation="xlstm",
                 backend=registry.AUTO) -> None:  # fmt: skip
        # torch.nn.LSTM's constructor (its validation and the parameters' names and order), then the recurrent
        # weights made block-diagonal.
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, 0,
                         device, dtype, backend=backend)  # fmt: skip
        self.num_heads = check_num_heads(num_heads, hidden_size)
        self.formulation = check_formulation(formulation)
        self.mode = SLSTM
        factory = {"device": device, "dtype": dtype}
        for layer in range(num_layers):
            for suffix in ("", "_reverse") if bidirectional else ("",):
                setattr(self, f"weight_hh_l{layer}{suffix}", head_weight(hidden_size, num_heads, SLSTM_GATES, factory))
        self._init_flat_weights()
        self.reset_parameters()

    def flatten_parameters(self) -> None:
        """Nothing to do: no cuDNN weight buffer (torch's kernels never run this layer)."""

    def __prepare_scriptable__(self) -> nn.Module:
        refuse_script(self)

    def check_forward_args(self, input: Tensor, hidden: tuple, batch_sizes: Tensor | None) -> None:
        self.check_input(input, batch_sizes)
        expected = self.get_expected_hidden_size(input, batch_sizes)
        for name, state in zip(SLSTMState._fields, hidden):
            self.check_hidden_size(state, expected, f"Expected hidden {name} size {{}}, got {{}}")

    def permute_hidden(self, hx: tuple | None, permutation: Tensor | None) -> tuple | None:
        if hx is None or permutation is None:
            return hx
        return tuple(state.index_select(1, permutation) for state in hx)

    def forward(self, input, hx=None):
        """input [T, N, I] (or [N, T, I] with batch_first), [T, I] unbatched, or a PackedSequence; hx a 4-tuple
        (h_0, c_0, n_0, m_0) of [L*D, N, H] ([L*D, H] unbatched) or None for zeros. Returns (output, hx_n)."""
        self._update_flat_weights()
        x, lengths, hx, is_batched, packed_as = self._prepare_input(input, hx)  # torch.nn's conventions and checks
        dropout = self.dropout if self.training else 0.0
        call = _call(self, x, self.num_layers, self.bidirectional, lengths, dropout)
        backend = registry.select(self.backend, call)
        state = None if hx is None else SLSTMState(*hx)
        y, final = backend.run_slstm(call, x, lengths, state, self.layer_weights(), dropout)
        return self._layout(y, tuple(final), lengths, is_batched, packed_as)

    def extra_repr(self) -> str:
        s = super().extra_repr()  # num_heads and backend: _FusedRNNBase's
        return s if self.formulation == "xlstm" else f"{s}, formulation={self.formulation!r}"


class sLSTMCell(nn.RNNCellBase):  # noqa: N801 - xLSTM's name
    """One sLSTM step. torch.nn.LSTMCell's arguments, keyword-only `num_heads`, `formulation` and `backend`;
    forward(input [N, I] or [I], (h, c, n, m) each [N, H] or [H], or None for zeros) -> (h', c', n', m').
    Parameters: weight_ih [4*H, I], weight_hh [K, 4*d, d], bias_ih, bias_hh [4*H] (as sLSTM's, without _l0)."""

    mode = SLSTM

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *, num_heads=1,
                 formulation="xlstm", backend=registry.AUTO) -> None:  # fmt: skip
        super().__init__(input_size, hidden_size, bias, SLSTM_GATES, device=device, dtype=dtype)
        self.num_heads = check_num_heads(num_heads, hidden_size)
        self.formulation = check_formulation(formulation)
        self.backend = check_backend_name(backend)
        self.weight_hh = head_weight(hidden_size, num_heads, SLSTM_GATES, {"device": device, "dtype": dtype})
        self.reset_parameters()

    def forward(self, input: Tensor, hx: tuple | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        name = type(self).__name__
        if input.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        is_batched = input.dim() == 2
        if hx is not None:
            if not (isinstance(hx, (tuple, list)) and len(hx) == len(SLSTMState._fields)):
                raise TypeError(f"{name}: hx must be a tuple (h, c, n, m) of tensors")
            if any(state.dim() != input.dim() for state in hx):
                raise RuntimeError(f"{name}: Expected hx[i] to be {input.dim()}D, like the input")
        if not is_batched:
            input = input.unsqueeze(0)
            hx = None if hx is None else tuple(state.unsqueeze(0) for state in hx)
        if input.dtype != self.weight_ih.dtype:
            raise RuntimeError(f"{name}: input dtype ({input.dtype}) does not match weight dtype "
                               f"({self.weight_ih.dtype})")  # fmt: skip
        if input.size(1) != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)} expected {self.input_size}")
        for index, state in enumerate(hx or ()):
            if state.shape != (input.size(0), self.hidden_size):
                raise RuntimeError(f"hidden{index} should have shape {[input.size(0), self.hidden_size]}, got "
                                   f"{list(state.shape)}")  # fmt: skip
            if state.dtype != input.dtype or state.device != input.device:
                raise RuntimeError(f"{name}: hidden{index} has dtype {state.dtype} on {state.device}, the input "
                                   f"{input.dtype} on {input.device}; they must match")  # fmt: skip
        x = input.unsqueeze(0)
        call = _call(self, x, 1, False, None, 0.0)
        backend = registry.select(self.backend, call)
        state = None if hx is None else SLSTMState(*(s.unsqueeze(0) for s in hx))
        weights = [LayerWeights(self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, None)]
        _, final = backend.run_slstm(call, x, None, state, weights, 0.0)
        return tuple(s[0] if is_batched else s[0, 0] for s in final)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.num_heads != 1:
            s += f", num_heads={self.num_heads}"
        if self.formulation != "xlstm":
            s += f", formulation={self.formulation!r}"
        return s if self.backend == registry.AUTO else f"{s}, backend={self.backend!r}"

    def __prepare_scriptable__(self) -> nn.Module:
        refuse_script(self)


torch.serialization.add_safe_globals([sLSTM, sLSTMCell])
