"""Backend `torch`: PyTorch's own fused RNN kernels (cuDNN on CUDA, ATen/oneDNN on CPU) — the baseline to beat."""

from __future__ import annotations

import torch
from torch import _VF
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .. import registry
from ..registry import Backend

_FUNCTIONS = {"LSTM": _VF.lstm, "GRU": _VF.gru, "RNN_TANH": _VF.rnn_tanh, "RNN_RELU": _VF.rnn_relu}
#: The one-step functions torch.nn's cells call (the sequence functions above would take oneDNN's LSTM on CPU, which
#: is slower for one step and refuses hidden_size=0, which torch.nn.LSTMCell accepts).
_CELL_FUNCTIONS = {"GRU": _VF.gru_cell, "RNN_TANH": _VF.rnn_tanh_cell, "RNN_RELU": _VF.rnn_relu_cell}
#: Bound once: `_VF.lstm_cell` is a module __getattr__ per call (~1 us of a cell's Python, issue 24).
_LSTM_CELL = _VF.lstm_cell


def aten_train_flag(call, dropout: float) -> bool:
    """ATen's `train` argument. It also decides whether cuDNN keeps what its backward needs ("cudnn RNN backward can
    only be called in training mode"), so on CUDA it is set whenever autograd may run, not only with dropout — which
    also gives the eval-mode backward torch.nn lacks; `dropout` is already 0 outside training, so no dropout is added.
    On CPU the flag only switches dropout, and setting it needlessly breaks torch.compile's AOT autograd.
    A recorded graph (torch.jit.trace, export) must not depend on the grad mode of the recording (jit.trace checks
    its trace again under no_grad), so on CUDA it keeps what backward needs there."""
    if dropout > 0:
        return True
    return call.device_type == "cuda" and (call.needs_grad or registry.recording_graph())


class TorchBackend(Backend):
    name = "torch"
    summary = "torch's own kernels: cuDNN on CUDA, ATen/oneDNN on CPU"

    def unsupported_reason(self, call) -> str | None:
        reason = registry.reference_only_reason(call, self.name)
        if reason is not None:
            return reason
        if call.variant is not None:
            return f"torch's RNN kernels have no {call.variant}; use backend 'auto', 'reference', 'cpu' or 'triton'"
        if call.weight_dropout and call.device_type == "cuda":
            # cuDNN wants W_hh inside the module's flat weight buffer: a dropped copy is copied again and warned
            # about ("not part of single contiguous chunk of memory") on every call.
            return "cuDNN needs the weights in one flat buffer, which a weight_dropout copy of W_hh is not"
        if call.compiling:
            # PyTorch graph-breaks on its own nn.LSTM/GRU/RNN, and AOT autograd fails on these ATen ops (even for
            # nn.LSTM with torch._dynamo.config.allow_rnn) when the input needs no gradient.
            return "torch.compile cannot trace torch's fused RNN ops; use backend 'auto', 'cpu', 'cuda' or 'triton'"
        return None

    def preference(self, call) -> int:
        return 10

    def direct_cell_op(self, call):
        # What `cell` runs when both states are given and no graph is recorded: torch.nn's own cell op.
        return _LSTM_CELL if call.mode == "LSTM" else _CELL_FUNCTIONS[call.mode]

    def cell(self, call, x, hx, cx, weights):
        if registry.recording_graph():
            # A recorded graph holds the one-step sequence op (aten::lstm & co.), which ONNX maps to its standard
            # LSTM/GRU/RNN nodes, rather than the cell ops, which it decomposes.
            return super().cell(call, x, hx, cx, weights)
        if hx is None:
            hx = x.new_zeros(x.shape[0], call.hidden_size)
        w_ih, w_hh, b_ih, b_hh = weights[:4]
        if call.mode == "LSTM":
            return _LSTM_CELL(x, (hx, x.new_zeros(hx.shape) if cx is None else cx), w_ih, w_hh, b_ih, b_hh)
        return _CELL_FUNCTIONS[call.mode](x, hx, w_ih, w_hh, b_ih, b_hh), None

    def run(self, call, x, lengths, hx, cx, weights, dropout):
        if registry.is_one_step(call) and not registry.recording_graph():
            # One step: torch's cell op, which is what torch.nn's cells run; the sequence op costs more for one step
            # (on CPU, oneDNN's LSTM primitive: measured 588 vs 133 us for H=256, N=1, issue 24). A recorded graph
            # keeps the sequence op, which ONNX maps to its LSTM/GRU/RNN nodes.
            h, c = self.cell(call, x[0], None if hx is None else hx[0], None if cx is None else cx[0], weights[0])
            return h.unsqueeze(0), h.unsqueeze(0), (None if c is None else c.unsqueeze(0))
        T, N, _ = x.shape
        states = call.num_layers * (2 if call.bidirectional else 1)
        if hx is None:
            hx = x.new_zeros(states, N, call.output_size)
        if call.mode == "LSTM":
            hidden = (hx, x.new_zeros(states, N, call.hidden_size) if cx is None else cx)
        else:
            hidden = hx
        flat = [w for layer in weights for w in layer[:5] if w is not None]
        options = (call.bias, call.num_layers, dropout, aten_train_flag(call, dropout), call.bidirectional)
        function = _FUNCTIONS[call.mode]
        if lengths is None:
            result = function(x, hidden, flat, *options, False)
        else:
            packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=True)
            result = function(packed.data, packed.batch_sizes, hidden, flat, *options)
            y, _ = pad_packed_sequence(PackedSequence(result[0], packed.batch_sizes), total_length=T)
            result = (y, *result[1:])
        if call.mode == "LSTM":
            return result[0], result[1], result[2]
        return result[0], result[1], None


BACKEND = TorchBackend()
