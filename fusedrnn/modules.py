"""Drop-in `LSTM`, `GRU` and `RNN`: torch.nn's contract, fusedrnn's backends.

The classes derive from `torch.nn.RNNBase`, so constructor validation, parameter names, shapes, registration order,
initialisation, `state_dict`s and the shape checks of `forward` are torch.nn's own code. Only the computation is
routed through the backend registry. (They deliberately do not derive from `nn.LSTM` & co.: Dynamo refuses to trace
those classes, and tracing without graph breaks is one of the things fusedrnn is for.)
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import registry
from .registry import LayerWeights, RNNCall


def check_backend_name(backend: object) -> str:
    """Validate the `backend` argument when a module is built. Whether the backend can serve a call is decided per
    call (the module may still move to another device); an unknown name is an error right away."""
    if not isinstance(backend, str):
        raise TypeError(f"backend should be a str, got: {type(backend).__name__}")
    if backend != registry.AUTO and backend not in registry.backend_names():
        known = ", ".join([registry.AUTO, *registry.backend_names()])
        raise ValueError(f"unknown fusedrnn backend {backend!r}; known: {known}")
    return backend


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
    """Shared forward of LSTM, GRU and RNN; `self.mode` tells them apart, as in torch.nn."""

    def __init__(self, mode: str, *args, backend: str = registry.AUTO, **kwargs) -> None:
        super().__init__(mode, *args, **kwargs)
        self.backend = check_backend_name(backend)

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
        rank = 3 if is_batched else 2
        states = hx if isinstance(hx, tuple) else (hx,)
        if any(state.dim() != rank for state in states):
            kind = "batched 3-D" if is_batched else "unbatched 2-D"
            got = ", ".join(f"{state.dim()}-D" for state in states)
            raise RuntimeError(f"For {kind} input, hx should also be {rank}-D but got ({got}) tensor(s)")

    def _check_state_dtype(self, input: Tensor, hx) -> None:
        for state in hx if isinstance(hx, tuple) else (hx,):
            if state.dtype != input.dtype or state.device != input.device:
                raise RuntimeError(
                    f"{type(self).__name__}: initial state has dtype {state.dtype} on {state.device}, but the input "
                    f"has dtype {input.dtype} on {input.device}; they must match"
                )

    def forward(self, input, hx=None):
        """input [T, N, I] (or [N, T, I] with batch_first), [T, I] unbatched, or a PackedSequence;
        hx [L*D, N, P] (LSTM: a tuple with c0 [L*D, N, H]) or None for zeros. Returns (output, h_n) like torch.nn."""
        self._update_flat_weights()
        is_lstm = self.mode == "LSTM"
        is_packed = isinstance(input, PackedSequence)
        is_batched = True
        if is_packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            if hx is not None:
                hx = self.permute_hidden(hx, sorted_indices)
                self.check_forward_args(data, hx, batch_sizes)
            else:
                self.check_input(data, batch_sizes)
            x, lengths = pad_packed_sequence(PackedSequence(data, batch_sizes))
        else:
            if input.dim() not in (2, 3):
                raise ValueError(f"{type(self).__name__}: Expected input to be 2D or 3D, got {input.dim()}D instead")
            is_batched = input.dim() == 3
            if not is_batched:
                input = input.unsqueeze(0 if self.batch_first else 1)
            if hx is not None:
                if is_lstm:
                    if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                        raise TypeError("LSTM: hx must be a tuple (h_0, c_0) of tensors")
                    hx = tuple(hx)
                self._check_state_rank(hx, is_batched)
                if not is_batched:
                    hx = tuple(state.unsqueeze(1) for state in hx) if is_lstm else hx.unsqueeze(1)
                self.check_forward_args(input, hx, None)
            else:
                self.check_input(input, None)
            x = input.transpose(0, 1) if self.batch_first else input
            lengths = None
            sorted_indices = unsorted_indices = None
        if x.shape[0] == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        if hx is not None:
            self._check_state_dtype(x, hx)
        h0, c0 = hx if is_lstm and hx is not None else (hx, None)

        y, h_n, c_n = self._run(x, lengths, h0, c0)

        hidden = (h_n, c_n) if is_lstm else h_n
        if is_packed:
            packed = pack_padded_sequence(y, lengths, enforce_sorted=True)
            output = PackedSequence(packed.data, batch_sizes, sorted_indices, unsorted_indices)
            return output, self.permute_hidden(hidden, unsorted_indices)
        if self.batch_first:
            y = y.transpose(0, 1)
        if not is_batched:
            y = y.squeeze(0 if self.batch_first else 1)
            hidden = (h_n.squeeze(1), c_n.squeeze(1)) if is_lstm else h_n.squeeze(1)
        return y, hidden

    def _run(self, x: Tensor, lengths: Tensor | None, h0: Tensor | None, c0: Tensor | None):
        dropout = self.dropout if self.training else 0.0
        weights = self.layer_weights()
        call = RNNCall(
            mode=self.mode,
            device_type=x.device.type,
            dtype=x.dtype,
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            proj_size=self.proj_size,
            num_layers=self.num_layers,
            bidirectional=self.bidirectional,
            bias=self.bias,
            batch_size=x.shape[1],
            seq_len=x.shape[0],
            variable_lengths=lengths is not None,
            dropout=dropout,
            needs_grad=torch.is_grad_enabled(),
            compiling=torch.compiler.is_compiling(),
        )
        backend = registry.select(self.backend, call)
        return backend.run(call, x, lengths, h0, c0, weights, dropout)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.backend == registry.AUTO else f"{s}, backend={self.backend!r}"

    def __prepare_scriptable__(self) -> nn.Module:
        """What `torch.jit.script` compiles in place of this layer: torch.nn's own class with these very parameters
        (TorchScript cannot compile the backend registry). A scripted model therefore runs torch's kernels, and
        saves and loads with torch.jit like one built from torch.nn."""
        torch_cls = {"LSTM": nn.LSTM, "GRU": nn.GRU}.get(self.mode, nn.RNN)
        kwargs = {"num_layers": self.num_layers, "bias": self.bias, "batch_first": self.batch_first,
                  "dropout": self.dropout, "bidirectional": self.bidirectional}  # fmt: skip
        if self.mode == "LSTM":
            kwargs["proj_size"] = self.proj_size
        elif torch_cls is nn.RNN:
            kwargs["nonlinearity"] = self.nonlinearity
        return torch_twin(self, torch_cls, self.input_size, self.hidden_size, **kwargs)


class LSTM(_FusedRNNBase):
    """`torch.nn.LSTM` (incl. `proj_size`) with a `backend` keyword; see torch.nn.LSTM for the arguments."""

    def __init__(self, *args, backend: str = registry.AUTO, **kwargs) -> None:
        super().__init__("LSTM", *args, backend=backend, **kwargs)

    # torch.nn.LSTM's own checks for the (h_0, c_0) pair, reused rather than rewritten.
    get_expected_cell_size = nn.LSTM.get_expected_cell_size
    check_forward_args = nn.LSTM.check_forward_args
    permute_hidden = nn.LSTM.permute_hidden


class GRU(_FusedRNNBase):
    """`torch.nn.GRU` with a `backend` keyword."""

    def __init__(self, *args, backend: str = registry.AUTO, **kwargs) -> None:
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, backend=backend, **kwargs)


class RNN(_FusedRNNBase):
    """`torch.nn.RNN` (Elman, tanh or relu) with a `backend` keyword; `nonlinearity` is the 4th positional."""

    def __init__(self, *args, backend: str = registry.AUTO, **kwargs) -> None:
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
        super().__init__(mode, *args, backend=backend, **kwargs)


# `torch.load(path)` of a whole model, with the default weights_only=True, accepts these classes like torch.nn's.
torch.serialization.add_safe_globals([LSTM, GRU, RNN])
