"""Recycled CPU buffers (csrc/cpu_buffers.*): the saved activations and gate gradients whose memory the CPU kernels
take back from released tensors instead of fresh pages. Two graphs alive at once keep their own buffers, a graph's
second backward (retain_graph) reads what its forward saved, and the memory kept is reused and bounded.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import fusedrnn
from fusedrnn import _extension
from parity import TOLERANCES

ops = torch.ops.fusedrnn
#: csrc/cpu_buffers.h: kMaxKeptBufferBytes.
MAX_KEPT_BYTES = 256 << 20
#: (cell, FUSEDRNN_CPU_LSTM): the fused kernels and the per-step loop, which recycle different buffers.
PATHS = {"LSTM_fused": ("LSTM", "fused"), "LSTM_loop": ("LSTM", "loop"), "GRU_fused": ("GRU", "fused"),
         "GRU_loop": ("GRU", "loop"), "RNN": ("RNN", None)}
#: Sizes whose buffers are recycled (csrc/cpu_buffers.h: from kMinRecycledBufferBytes, 1 MB): every cell's saved
#: activations or chunk gradients take 1.3-3.3 MB.
T, N, I, H = 20, 32, 16, 512


@pytest.fixture(scope="module", autouse=True)
def extension():
    return _extension.load()


def gradients(module: nn.Module, y: torch.Tensor, x: torch.Tensor, upstream: torch.Tensor, retain: bool = False):
    """d(y . upstream) / d(x and every parameter)."""
    return torch.autograd.grad(y, [x, *module.parameters()], upstream, retain_graph=retain)


@pytest.mark.parametrize(("cell", "force"), PATHS.values(), ids=PATHS.keys())
def test_graphs_alive_at_once_keep_their_own_buffers(cell, force, monkeypatch):
    """Two forwards before either backward, a third after the second graph's buffers were released, and the first
    graph's backward twice: every gradient as the same calls made one at a time."""
    if force:
        monkeypatch.setenv("FUSEDRNN_CPU_LSTM", force)
    torch.manual_seed(0)
    ours = getattr(fusedrnn, cell)(I, H, backend="cpu")
    inputs = [torch.randn(T, N, I, requires_grad=True) for _ in range(3)]
    upstream = [torch.randn(T, N, H) for _ in range(3)]
    alone = [gradients(ours, ours(x)[0], x, g) for x, g in zip(inputs, upstream)]

    y0, y1 = ours(inputs[0])[0], ours(inputs[1])[0]
    actual = {1: gradients(ours, y1, inputs[1], upstream[1])}
    y2 = ours(inputs[2])[0]  # may take the buffers y1's graph released, never y0's
    actual[0] = gradients(ours, y0, inputs[0], upstream[0], retain=True)
    actual[2] = gradients(ours, y2, inputs[2], upstream[2])
    again = gradients(ours, y0, inputs[0], upstream[0])

    for i in range(3):
        for ours_grad, expected in zip(actual[i], alone[i]):
            torch.testing.assert_close(ours_grad, expected, **TOLERANCES[torch.float32])
    for first, second in zip(actual[0], again):
        torch.testing.assert_close(second, first, rtol=0, atol=0)


def train_once(module: nn.Module, seq_len: int, batch: int) -> None:
    x = torch.randn(seq_len, batch, module.input_size, requires_grad=True)
    module(x)[0].sum().backward()


def test_kept_memory_is_reused():
    """A second identical training call finds every buffer it needs among those the first one released."""
    layer = fusedrnn.GRU(4, 64, backend="cpu")  # saved activations: 64 x 64 x 4 x 64 floats, 4 MB
    train_once(layer, 64, 64)
    kept = ops.cpu_kept_buffer_bytes()
    assert kept > 0
    train_once(layer, 64, 64)
    assert ops.cpu_kept_buffer_bytes() == kept


def test_kept_memory_is_bounded():
    """Calls whose saved activations grow (100 to 200 MB, more than the bound in all: the oldest buffers go), then
    one past the bound alone (295 MB): the memory kept stays within kMaxKeptBufferBytes, and the oversized buffer is
    not kept. A narrow, wide-batch LSTM on the loop makes large buffers quickly (5 x 32 float32 saved per row and
    step); its other buffers (a chunk's gradients, 0.5 MB) stay below the pool's 1 MB, and its output (pooled) is
    held across the backward that releases the oversized activations."""
    layer = fusedrnn.LSTM(8, 32, backend="cpu")
    for seq_len in (320, 480, 640):
        train_once(layer, seq_len, 512)
        assert 0 < ops.cpu_kept_buffer_bytes() <= MAX_KEPT_BYTES
    y = layer(torch.randn(900, 512, layer.input_size, requires_grad=True))[0]
    kept = ops.cpu_kept_buffer_bytes()
    y.sum().backward()
    assert ops.cpu_kept_buffer_bytes() == kept


@pytest.mark.parametrize("force", ["fused", "loop"])
def test_outputs_are_recycled_and_ordinary(force, monkeypatch):
    """A layer's output comes from the pool (csrc/cpu_buffers.h): dropped, the next call's output takes its memory
    back; kept, it is an ordinary tensor whose storage resizes like at::empty's, and whose old memory goes back to
    the pool when it does."""
    monkeypatch.setenv("FUSEDRNN_CPU_LSTM", force)
    layer = fusedrnn.LSTM(8, 64, backend="cpu")  # W_hh packed: 64 KB, below the pool; y: 2 MB
    x = torch.randn(128, 64, 8)
    with torch.no_grad():
        y = layer(x)[0]
        address = y.data_ptr()
        expected = y.clone()
        del y
        y = layer(x)[0]
    assert y.data_ptr() == address
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    y.resize_(2 * y.numel())
    assert y.data_ptr() != address
    torch.testing.assert_close(y[: expected.numel()].view_as(expected), expected, rtol=0, atol=0)
    with torch.no_grad():
        assert layer(x)[0].data_ptr() == address


def test_empty_cache_hands_the_kept_buffers_back():
    """fusedrnn.empty_cache returns every kept byte to the OS, leaves a tensor in use alone (its memory is kept when
    it is released), and the next calls compute as before on fresh memory."""
    layer = fusedrnn.GRU(4, 64, backend="cpu")
    x = torch.randn(64, 64, 4)
    with torch.no_grad():
        expected = layer(x)[0].clone()
    fusedrnn.empty_cache()  # the earlier tests' buffers
    train_once(layer, 64, 64)
    kept = ops.cpu_kept_buffer_bytes()
    assert kept > 0
    with torch.no_grad():
        y = layer(x)[0]  # takes a kept buffer (1 MB, at most twice that)
    left = ops.cpu_kept_buffer_bytes()
    in_use = kept - left
    assert y.numel() * y.element_size() <= in_use <= 2 * y.numel() * y.element_size()
    assert fusedrnn.empty_cache() == left
    assert ops.cpu_kept_buffer_bytes() == 0
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    del y
    assert ops.cpu_kept_buffer_bytes() == in_use
    assert fusedrnn.empty_cache() == in_use
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[0], expected, rtol=0, atol=0)


def test_empty_cache_without_the_operators_loads_nothing():
    """Before any `cpu` call the compiled operators are not loaded, and empty_cache does not load (or build) them."""
    code = (
        "import fusedrnn; from fusedrnn import _extension\n"
        "assert fusedrnn.empty_cache() == 0 and not _extension.loaded()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
