"""torch.compile(fullgraph=True) traces fusedrnn modules — backend selection included — without graph breaks."""

from __future__ import annotations

import pytest
import torch

import fusedrnn

#: Backends that run on CPU tensors here; the fused ones have their own compile tests in their files.
BACKENDS = ["auto", "reference"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls", [fusedrnn.LSTM, fusedrnn.GRU], ids=["lstm", "gru"])
def test_fullgraph_compile_forward_and_backward(cls, backend):
    torch._dynamo.reset()
    module = cls(6, 8, 2, bidirectional=True, backend=backend)
    x = torch.randn(5, 3, 6, requires_grad=True)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    y, _ = compiled(x)
    (grad_compiled,) = torch.autograd.grad(y.square().sum(), x)
    y_eager, _ = module(x)
    (grad_eager,) = torch.autograd.grad(y_eager.square().sum(), x)
    torch.testing.assert_close(y, y_eager)
    torch.testing.assert_close(grad_compiled, grad_eager)


def test_fullgraph_compile_of_a_cell():
    torch._dynamo.reset()
    cell = fusedrnn.LSTMCell(4, 5)
    x = torch.randn(2, 4)
    h, c = torch.compile(cell, fullgraph=True, backend="aot_eager")(x)
    torch.testing.assert_close(h, cell(x)[0])


def test_torch_backend_refuses_compile_with_a_reason():
    """torch's own RNN ops do not survive AOT autograd (nor does nn.LSTM): a clear error, and `auto` avoids them."""
    torch._dynamo.reset()
    module = fusedrnn.LSTM(4, 5, backend="torch")
    with pytest.raises(Exception, match="torch.compile cannot trace torch's fused RNN ops"):
        torch.compile(module, fullgraph=True, backend="aot_eager")(torch.randn(3, 2, 4))
