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


#: Batch sizes, then sequence lengths, of successive calls: the second call makes Dynamo's automatic dynamic shapes
#: mark the size symbolic, so the later ones run the dynamic-shape graph.
VARYING_SIZES = [(4, 3), (4, 5), (6, 7)]
DYNAMIC_MODULES = {
    "lstm": lambda backend: fusedrnn.LSTM(4, 5, 2, bidirectional=True, backend=backend),
    "gru": lambda backend: fusedrnn.GRU(4, 5, backend=backend),
    "rnn": lambda backend: fusedrnn.RNN(4, 5, backend=backend),
    "layernorm_lstm": lambda backend: fusedrnn.LayerNormLSTM(4, 5, backend=backend),
}


def _first_output(result):
    return result[0] if isinstance(result, tuple) else result


def _assert_compiled_matches_eager(module, compiled, x):
    x = x.requires_grad_()
    outputs = [_first_output(fn(x)) for fn in (compiled, module)]
    grads = [torch.autograd.grad(y.square().sum(), [x, *module.parameters()]) for y in outputs]
    torch.testing.assert_close(outputs[0], outputs[1])
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("dynamic", [None, True], ids=["automatic", "dynamic"])
@pytest.mark.parametrize("backend", ["auto", "cpu"])
@pytest.mark.parametrize("name", list(DYNAMIC_MODULES))
def test_compile_with_dynamic_batch_and_length(name, backend, dynamic):
    """Like torch.nn.LSTM, a compiled module serves varying batch sizes and lengths once Dynamo makes them symbolic."""
    torch._dynamo.reset()
    module = DYNAMIC_MODULES[name](backend)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager", dynamic=dynamic)
    for seq_len, batch in VARYING_SIZES:
        _assert_compiled_matches_eager(module, compiled, torch.randn(seq_len, batch, 4))
    torch._dynamo.reset()


@pytest.mark.parametrize("backend", ["auto", "cpu"])
def test_compile_of_a_cell_with_dynamic_batch(backend):
    torch._dynamo.reset()
    cell = fusedrnn.LSTMCell(4, 5, backend=backend)
    compiled = torch.compile(cell, fullgraph=True, backend="aot_eager")
    for _, batch in VARYING_SIZES:
        _assert_compiled_matches_eager(cell, compiled, torch.randn(batch, 4))
    torch._dynamo.reset()


def test_inductor_compile_with_marked_dynamic_batch():
    torch._dynamo.reset()
    module = fusedrnn.LSTM(4, 5)
    compiled = torch.compile(module, fullgraph=True)
    for seq_len, batch in VARYING_SIZES:
        x = torch.randn(seq_len, batch, 4)
        torch._dynamo.mark_dynamic(x, 1)
        _assert_compiled_matches_eager(module, compiled, x)
    torch._dynamo.reset()


@pytest.mark.skipif(
    fusedrnn.registry.availability()["triton"] is not None, reason="triton backend unavailable here"
)
def test_compile_with_dynamic_batch_on_triton():
    """The triton backend refuses batches past its 32-bit offsets, which a compiled selection cannot see: it checks
    them at run time instead (fusedrnn.backends.triton), and the sizes that fit run as in eager."""
    torch._dynamo.reset()
    module = DYNAMIC_MODULES["gru"]("triton")
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    for seq_len, batch in VARYING_SIZES:
        _assert_compiled_matches_eager(module, compiled, torch.randn(seq_len, batch, 4))
    torch._dynamo.reset()


@pytest.mark.skipif(
    fusedrnn.registry.availability()["triton"] is not None, reason="triton backend unavailable here"
)
def test_compiled_triton_refuses_a_batch_past_its_offsets(monkeypatch):
    from fusedrnn.backends import triton as triton_backend

    # GRU, H=5: weights 3*5*5 = 75 fit; a step is N*4*5 offsets, so batches 3 and 5 fit and 7 does not.
    monkeypatch.setattr(triton_backend, "MAX_OFFSET", 6 * 4 * 5)
    torch._dynamo.reset()
    module = DYNAMIC_MODULES["gru"]("triton")
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    for batch in (3, 5):
        _assert_compiled_matches_eager(module, compiled, torch.randn(4, batch, 4))
    with pytest.raises(Exception, match="exceeds the kernels' 32-bit offsets"):
        compiled(torch.randn(4, 7, 4))
    torch._dynamo.reset()
