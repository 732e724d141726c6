"""One recurrent layer direction (the layer ops' interface: reverse, per-row lengths) computed by code that shares
nothing with fusedrnn's kernels, for the GPU tests' truths and baselines:

  reference_layer   fusedrnn.reference.rnn_layer (plain PyTorch) on the CPU in float64: the truth;
  torch_nn_layer    torch.nn's module (cuDNN on a GPU) in any dtype on any device: the baseline error of an
                    independent implementation in the kernels' own dtype. torch.nn has no reverse-only layer, so a
                    reversed direction runs each row's valid steps flipped in time, as torch.nn's bidirectional layers
                    do; lengths run as a packed sequence.

Both take LayerValues (float64 CPU tensors) and return {"output[i]": y, h_n(, c_n), "grad[i]": x, h0(, c0), the
weights}: the same keys as a kernel run through `layer_result`.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from fusedrnn import reference

TORCH_NN = {"LSTM": (nn.LSTM, {}), "GRU": (nn.GRU, {}), "RNN_TANH": (nn.RNN, {"nonlinearity": "tanh"}),
            "RNN_RELU": (nn.RNN, {"nonlinearity": "relu"})}  # fmt: skip


@dataclasses.dataclass
class LayerValues:
    """Inputs of one layer call (float64, CPU) and the upstream gradients of its outputs (y, h_n, c_n)."""

    mode: str
    x: Tensor
    h0: Tensor
    c0: Tensor | None
    weights: tuple[Tensor, Tensor, Tensor | None, Tensor | None]  # w_ih, w_hh, b_ih, b_hh
    lengths: Tensor | None  # [N] int64 on the CPU, or None
    upstream: list[Tensor]

    @property
    def leaves(self) -> list[Tensor]:
        return [t for t in (self.x, self.h0, self.c0, *self.weights) if t is not None]


def make_values(mode: str, shape: tuple[int, int, int, int], bias: bool, lengths: bool, seed: int = 0) -> LayerValues:
    """Random inputs of a layer of `shape` (T, N, I, H), lengths in 1..T per row. The weights are scaled by
    1/sqrt(fan-in), as torch.nn initialises them: with larger ones the Elman recurrence is chaotic or explodes, which
    amplifies any rounding difference by a random factor, and no bound relative to another implementation holds."""
    T, N, I, H = shape
    G = reference.GATES[mode]
    generator = torch.Generator().manual_seed(seed)

    def randn(*size, scale=0.5):
        return torch.randn(*size, generator=generator, dtype=torch.float64) * scale

    x, h0 = randn(T, N, I, scale=1.0), randn(N, H)
    c0 = randn(N, H) if mode == "LSTM" else None
    weights = (randn(G * H, I, scale=I**-0.5), randn(G * H, H, scale=H**-0.5), randn(G * H) if bias else None,
               randn(G * H) if bias else None)  # fmt: skip
    row_lengths = torch.randint(1, T + 1, (N,), generator=generator) if lengths else None
    upstream = [torch.randn(T, N, H, generator=generator, dtype=torch.float64),
                torch.randn(N, H, generator=generator, dtype=torch.float64)]  # fmt: skip
    if mode == "LSTM":
        upstream.append(torch.randn(N, H, generator=generator, dtype=torch.float64))
    return LayerValues(mode, x, h0, c0, weights, row_lengths, upstream)


def layer_result(outputs: list[Tensor], leaves: list[Tensor], upstream: list[Tensor]) -> dict[str, Tensor]:
    """The outputs and the gradients of `leaves` for `upstream` (cast to each output), as one dict."""
    grads = torch.autograd.grad(outputs, leaves, [u.to(o) for u, o in zip(upstream, outputs)])
    result = {f"output[{i}]": o.detach() for i, o in enumerate(outputs)}
    result.update({f"grad[{i}]": g for i, g in enumerate(grads)})
    return result


def leaves_in(values: LayerValues, dtype: torch.dtype, device) -> list[Tensor]:
    return [t.to(device, dtype).requires_grad_() for t in values.leaves]


def split(values: LayerValues, leaves: list[Tensor]):
    """(x, h0, c0, (w_ih, w_hh, b_ih, b_hh)) from the leaves, None where values has none."""
    it = iter(leaves)
    x, h0 = next(it), next(it)
    c0 = next(it) if values.c0 is not None else None
    weights = tuple(next(it) if w is not None else None for w in values.weights)
    return x, h0, c0, weights


def reference_layer(values: LayerValues, reverse: bool) -> dict[str, Tensor]:
    """The truth: fusedrnn.reference.rnn_layer in float64 on the CPU."""
    leaves = leaves_in(values, torch.float64, "cpu")
    x, h0, c0, weights = split(values, leaves)
    outputs = reference.rnn_layer(values.mode, x, h0, c0, *weights, None, reverse=reverse, lengths=values.lengths)
    return layer_result([o for o in outputs if o is not None], leaves, values.upstream)


def flip_valid_steps(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Each row's first lengths[n] steps in reverse order (all T without lengths); steps past a row's length stay."""
    T, N = x.shape[:2]
    t = torch.arange(T).unsqueeze(1)
    row_lengths = torch.full((N,), T) if lengths is None else lengths.cpu()
    index = torch.where(t < row_lengths, row_lengths - 1 - t, t).to(x.device)  # [T, N]
    return x.gather(0, index.view(T, N, *[1] * (x.dim() - 2)).expand_as(x))


def torch_nn_layer(values: LayerValues, reverse: bool, dtype: torch.dtype, device) -> dict[str, Tensor]:
    """The same layer through torch.nn's module in `dtype` on `device` (cuDNN on a GPU: on CUDA the caller decides
    TF32 with torch.backends.cudnn.allow_tf32)."""
    cls, extra = TORCH_NN[values.mode]
    T, N, I = values.x.shape
    H = values.h0.shape[1]
    bias = values.weights[2] is not None
    module = cls(I, H, bias=bias, device=device, dtype=dtype, **extra)
    leaves = leaves_in(values, dtype, device)
    x, h0, c0, weights = split(values, leaves)
    names = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    for name, weight in zip(names, weights):
        if weight is not None:
            delattr(module, name)
            setattr(module, name, weight)  # the leaf itself: its gradient is the layer's
    if hasattr(module, "_flat_weights"):  # cuDNN reads the parameters through this list
        module._flat_weights = [getattr(module, name) for name in module._flat_weights_names]
    sequence = flip_valid_steps(x, values.lengths) if reverse else x
    state = (h0[None], c0[None]) if c0 is not None else h0[None]
    if values.lengths is not None:
        packed = pack_padded_sequence(sequence, values.lengths.cpu(), enforce_sorted=False)
        y, final = module(packed, state)
        y, _ = pad_packed_sequence(y, total_length=T)
    else:
        y, final = module(sequence, state)
    if reverse:
        y = flip_valid_steps(y, values.lengths)
    outputs = [y, final[0][0], final[1][0]] if c0 is not None else [y, final[0]]
    return layer_result(outputs, leaves, values.upstream)
