"""Optional rows for other RNN kernel libraries (imported only when their row runs).

Neither library installs on this project's CPU machine (both need CUDA), so these adapters are unverified: the
weight mappings follow the libraries' documented layouts, and the correctness gate (outputs and input gradients
against torch.nn; their parameters have other names, so parameter gradients are not compared) shows in the table
whether a mapping is right. Configurations a library does not support raise `Unsupported` and show as such.
"""

from __future__ import annotations

from torch import nn

from .configs import BenchConfig
from .runnable import Runnable, Unsupported


def _single_layer_only(config: BenchConfig, library: str, modes: tuple[str, ...]) -> None:
    s = config.shape
    if s.step_by_step or s.decoder:
        raise Unsupported(f"{library} has no one-step cell API")
    if config.torch_mode not in modes or s.layers != 1 or s.bidirectional or s.proj_size:
        raise Unsupported(f"{library} adapter runs one unidirectional layer of {'/'.join(modes)} without projection")
    if library == "haste" and config.dtype != "float32":
        raise Unsupported("haste runs float32 only")


def haste_runnable(config: BenchConfig, baseline: nn.Module):
    """haste_pytorch.LSTM/GRU loaded with the baseline's weights through haste's own `from_native_weights`."""
    import haste_pytorch as haste

    _single_layer_only(config, "haste", ("LSTM", "GRU"))
    s = config.shape
    cls = haste.LSTM if config.torch_mode == "LSTM" else haste.GRU
    module = cls(s.input_size, s.hidden_size).to(baseline.weight_ih_l0.device)
    module.from_native_weights(baseline.weight_ih_l0, baseline.weight_hh_l0, baseline.bias_ih_l0, baseline.bias_hh_l0)
    module.train(config.training)

    def forward(x, h0, c0):
        y, state = module(x, h0 if c0 is None else (h0, c0))  # haste's states are [1, N, H], as torch's here
        return [y, *state] if isinstance(state, tuple) else [y, state]

    return Runnable(forward, {})


def flashrnn_runnable(config: BenchConfig, baseline: nn.Module):
    """FlashRNN's `flashrnn(Wx, R, b, states, function="lstm")` with one head of size H.

    FlashRNN takes the input projection precomputed (Wx [N, T, G, heads, D]), the recurrent weights per gate
    (R [G, heads, D_in, D_out]) and one bias (b [G, heads, D]); its LSTM gate order i, f, z, o is torch's i, f, g, o.
    """
    import torch
    import torch.nn.functional as F
    from flashrnn import flashrnn

    _single_layer_only(config, "flashrnn", ("LSTM",))
    H = config.shape.hidden_size
    gates = 4
    w_ih, w_hh, b_ih, b_hh = baseline.weight_ih_l0, baseline.weight_hh_l0, baseline.bias_ih_l0, baseline.bias_hh_l0
    recurrent = w_hh.detach().view(gates, H, H).transpose(1, 2).unsqueeze(1).contiguous()  # [G, 1, D_in, D_out]
    bias = (b_ih + b_hh).detach().view(gates, 1, H)

    def forward(x, h0, c0):
        T, N, _ = x.shape
        wx = F.linear(x, w_ih).transpose(0, 1).reshape(N, T, gates, 1, H)
        states = torch.stack([h0[0], c0[0]]).view(2, N, 1, 1, H)
        h, last = flashrnn(wx, recurrent, bias, states=states, function="lstm", dtype=config.dtype)
        y = h[0].reshape(N, T, H).transpose(0, 1)
        return [y, last[0].reshape(1, N, H), last[1].reshape(1, N, H)]

    return Runnable(forward, {})


#: FlashRNN's fused persistent kernel (its default and fastest backend).
FLASHRNN_BACKEND = "cuda_fused"


def flashrnn_lstm_heads(layer: nn.Module, x, dtype: str, backend: str = FLASHRNN_BACKEND):
    """FlashRNN's multi-head LSTM on the weights of a one-layer `fusedrnn.LSTM(H, H, num_heads=K)`: x [T, N, I] ->
    y [T, N, H], differentiable in x and the layer's parameters (its inputs are views of them, so the gradients land
    on the layer's own parameters and compare name by name with the layer's).

    As `flashrnn_runnable` with K heads of d = H/K: Wx [N, T, G, K, d] (the input projection's gate-major order, gate g,
    head k, unit j at g*H + k*d + j, is FlashRNN's), R [G, K, d_in, d_out] from W_hh's blocks [K, G*d_out, d_in], b [G,
    K, d]; zero initial states (the layer's default). `dtype` is FlashRNN's compute dtype name ("float32", ...).
    """
    import torch.nn.functional as F
    from flashrnn import flashrnn

    T, N, _ = x.shape
    K, H = layer.num_heads, layer.hidden_size
    d, gates = H // K, 4
    wx = F.linear(x, layer.weight_ih_l0).transpose(0, 1).reshape(N, T, gates, K, d)
    # W_hh's blocks [K, G*d_out, d_in] -> [K, G, d_out, d_in] -> FlashRNN's [G, K, d_in, d_out]
    recurrent = layer.weight_hh_l0.view(K, gates, d, d).permute(1, 0, 3, 2)
    bias = (layer.bias_ih_l0 + layer.bias_hh_l0).view(gates, K, d)
    h, _ = flashrnn(wx, recurrent, bias, function="lstm", backend=backend, dtype=dtype)
    return h[0].reshape(N, T, H).transpose(0, 1)  # h [states, N, T, K, d]: the hidden state's sequence
