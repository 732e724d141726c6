"""Recycled CPU buffers (csrc/cpu_buffers.*): the saved activations and gate gradients whose memory the CPU kernels
take back from released tensors instead of fresh pages. Two graphs alive at once keep their own buffers, a graph's
second backward (retain_graph) reads what its forward saved, and the memory kept is reused and bounded.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fusedrnn
from fusedrnn import _extension
from parity import TOLERANCES

ops = torch.ops.fusedrnn
#: csrc/cpu_buffers.h: kMaxKeptBufferBytes.
MAX_KEPT_BYTES = 256 << 20
#: (cell, FUSEDRNN_CPU_LSTM): the fused LSTM kernels and the per-step loop, which recycle different buffers.
PATHS = {"LSTM_fused": ("LSTM", "fused"), "LSTM_loop": ("LSTM", "loop"), "GRU": ("GRU", None), "RNN": ("RNN", None)}
T, N, I, H = 5, 3, 4, 20


@pytest.fixture(scope="module", autouse=True)
def extension():
    return _extension.load()


def gradients(module: nn.Module, y: torch.Tensor, x: torch.Tensor, upstream: torch.Tensor, retain: bool = False):
    """d(y . upstream) / d(x and every parameter)."""
    return torch.autograd.grad(y, [x, *module.parameters()], upstream, retain_graph=retain)


@pytest.mark.parametrize(("cell", "force"), PATHS.values(), ids=PATHS.keys())
def test_graphs_alive_at_once_keep_their_own_buffers(cell, force, monkeypatch):
    """Two forwards before either backward, a third after the second graph's buffers were released, and the first
    graph's backward twice: every gradient as torch.nn's in float64."""
    if force:
        monkeypatch.setenv("FUSEDRNN_CPU_LSTM", force)
    torch.manual_seed(0)
    exact = getattr(nn, cell)(I, H, dtype=torch.float64)
    ours = getattr(fusedrnn, cell)(I, H, backend="cpu")
    ours.load_state_dict({k: v.float() for k, v in exact.state_dict().items()})
    xs = [torch.randn(T, N, I, dtype=torch.float64) for _ in range(3)]
    upstream = [torch.randn(T, N, H, dtype=torch.float64) for _ in range(3)]
    inputs = [x.float().requires_grad_() for x in xs]

    y0, y1 = ours(inputs[0])[0], ours(inputs[1])[0]
    actual = {1: gradients(ours, y1, inputs[1], upstream[1].float())}
    y2 = ours(inputs[2])[0]  # may take the buffers y1's graph released, never y0's
    actual[0] = gradients(ours, y0, inputs[0], upstream[0].float(), retain=True)
    actual[2] = gradients(ours, y2, inputs[2], upstream[2].float())
    again = gradients(ours, y0, inputs[0], upstream[0].float())

    for i, x in enumerate(xs):
        x = x.clone().requires_grad_()
        truth = gradients(exact, exact(x)[0], x, upstream[i])
        for ours_grad, true_grad in zip(actual[i], truth):
            torch.testing.assert_close(ours_grad.double(), true_grad, **TOLERANCES[torch.float32])
    for first, second in zip(actual[0], again):
        torch.testing.assert_close(second, first, rtol=0, atol=0)


def train_once(module: nn.Module, seq_len: int, batch: int) -> None:
    x = torch.randn(seq_len, batch, module.input_size, requires_grad=True)
    module(x)[0].sum().backward()


def test_kept_memory_is_reused():
    """A second identical training call finds every buffer it needs among those the first one released."""
    layer = fusedrnn.GRU(I, H, backend="cpu")
    train_once(layer, 64, 32)
    kept = ops.cpu_kept_buffer_bytes()
    assert kept > 0
    train_once(layer, 64, 32)
    assert ops.cpu_kept_buffer_bytes() == kept


def test_kept_memory_is_bounded():
    """Calls whose saved activations grow (100 to 200 MB, more than the bound in all) and one past the bound alone
    (295 MB, never kept): the memory kept stays within kMaxKeptBufferBytes. A narrow, wide-batch LSTM on the loop
    makes large buffers quickly (5 x 32 float32 saved per row and step)."""
    layer = fusedrnn.LSTM(8, 32, backend="cpu")
    for seq_len in (320, 480, 640, 900):
        train_once(layer, seq_len, 512)
        assert 0 < ops.cpu_kept_buffer_bytes() <= MAX_KEPT_BYTES
