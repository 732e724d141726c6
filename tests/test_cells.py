"""fusedrnn cells against torch.nn cells (float64; Triton's float32 under its interpreter): outputs and gradients,
batched and unbatched, states or not, with `auto` and every backend that runs CPU tensors here."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fusedrnn
from cpu_backends import backend_params
from parity import assert_all_close, forward_backward, leaf

CELLS = [
    ("lstm_cell", fusedrnn.LSTMCell, nn.LSTMCell, {}),
    ("gru_cell", fusedrnn.GRUCell, nn.GRUCell, {}),
    ("rnn_cell_tanh", fusedrnn.RNNCell, nn.RNNCell, {"nonlinearity": "tanh"}),
    ("rnn_cell_relu", fusedrnn.RNNCell, nn.RNNCell, {"nonlinearity": "relu"}),
]
#: id -> (input shape, state given, bias)
SHAPES = {
    "batch3_state": ((3, 5), True, True),
    "batch1_no_state": ((1, 5), False, True),
    "unbatched_state": ((5,), True, True),
    "no_bias": ((2, 5), True, False),
}
HIDDEN = 7


@pytest.mark.parametrize("backend,dtype", backend_params())
@pytest.mark.parametrize("shape,with_state,bias", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("cell", CELLS, ids=[c[0] for c in CELLS])
def test_cell_matches_torch_nn(cell, shape, with_state, bias, backend, dtype):
    _, fused_cls, torch_cls, extra = cell
    expected = torch_cls(5, HIDDEN, bias=bias, dtype=dtype, **extra)
    actual = fused_cls(5, HIDDEN, bias=bias, dtype=dtype, backend=backend, **extra)
    actual.load_state_dict(expected.state_dict())
    x = torch.randn(*shape, dtype=dtype)
    state_shape = (*shape[:-1], HIDDEN)
    h, c = torch.randn(state_shape, dtype=dtype), torch.randn(state_shape, dtype=dtype)
    is_lstm = fused_cls is fusedrnn.LSTMCell

    def make_inputs():
        leaves = {"input": leaf(x)}
        hx = None
        if with_state:
            leaves["h"] = leaf(h)
            if is_lstm:
                leaves["c"] = leaf(c)
            hx = (leaves["h"], leaves["c"]) if is_lstm else leaves["h"]
        return (leaves["input"], hx), leaves

    assert_all_close(forward_backward(actual, make_inputs), forward_backward(expected, make_inputs), dtype)


def test_cell_step_equals_one_step_of_the_layer():
    """A cell and a one-layer module share weights layout and math: one step of each agrees exactly."""
    cell = fusedrnn.GRUCell(4, 6, dtype=torch.float64)
    layer = fusedrnn.GRU(4, 6, dtype=torch.float64)
    layer.load_state_dict({f"{k}_l0": v for k, v in cell.state_dict().items()})
    x, h = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    torch.testing.assert_close(cell(x, h), layer(x.unsqueeze(0), h.unsqueeze(0))[1][0], rtol=0, atol=0)
