"""fusedrnn cells against torch.nn cells (float64; Triton's float32 under its interpreter): outputs and gradients,
batched and unbatched, states or not, with `auto` and every backend that runs CPU tensors here."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fusedrnn
from cpu_backends import backend_params
from parity import TOLERANCES, assert_all_close, forward_backward, leaf

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


class Doubled(nn.Module):
    """A parametrization: the weight used is twice the stored one."""

    def forward(self, weight):
        return 2 * weight


#: What a user changes between two calls of a cell (issue 24: the cell's fast path reads weights and selects its
#: backend per call, from what can change): each is applied to both cells, then both are called again.
CHANGES = {
    "none": lambda cell, dtype: None,
    "new_parameter": lambda cell, dtype: setattr(cell, "weight_hh", nn.Parameter(
        torch.randn(cell.weight_hh.shape, generator=torch.Generator().manual_seed(5), dtype=cell.weight_hh.dtype))),
    "parametrized": lambda cell, dtype: nn.utils.parametrize.register_parametrization(cell, "weight_ih", Doubled()),
    "plain_tensor_weight": lambda cell, dtype: (cell._parameters.pop("weight_hh"),
                                                setattr(cell, "weight_hh", torch.ones(cell.weight_ih.shape[0],
                                                                                      cell.hidden_size, dtype=dtype))),
    "other_dtype": lambda cell, dtype: cell.float() if dtype == torch.float64 else None,
}


@pytest.mark.parametrize("backend,dtype", backend_params())
@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("cell", CELLS[:2], ids=[c[0] for c in CELLS[:2]])
def test_cell_follows_changes_between_calls(cell, change, backend, dtype):
    """Called, changed, called again with another batch size and grad mode: every output and gradient as torch.nn's."""
    _, fused_cls, torch_cls, extra = cell
    expected = torch_cls(5, HIDDEN, dtype=dtype, **extra)
    actual = fused_cls(5, HIDDEN, dtype=dtype, backend=backend, **extra)
    actual.load_state_dict(expected.state_dict())
    is_lstm = fused_cls is fusedrnn.LSTMCell

    def inputs(batch, dtype):
        x, h = torch.randn(batch, 5, dtype=dtype), torch.randn(batch, HIDDEN, dtype=dtype)

        def make_inputs():
            leaves = {"input": leaf(x), "h": leaf(h)}
            return (leaves["input"], (leaves["h"], leaves["h"] * 0.5) if is_lstm else leaves["h"]), leaves

        return make_inputs

    with torch.no_grad():
        first = inputs(3, dtype)
        torch.testing.assert_close(actual(*first()[0]), expected(*first()[0]), **TOLERANCES[dtype])
    for module in (expected, actual):
        CHANGES[change](module, dtype)
    new_dtype = expected.weight_ih.dtype
    second = inputs(2, new_dtype)
    assert_all_close(forward_backward(actual, second), forward_backward(expected, second), new_dtype)


LAYERS = [
    ("lstm", fusedrnn.LSTM, nn.LSTM, {}),
    ("gru", fusedrnn.GRU, nn.GRU, {}),
    ("rnn_relu", fusedrnn.RNN, nn.RNN, {"nonlinearity": "relu"}),
]


@pytest.mark.parametrize("backend,dtype", backend_params())
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq_first", "batch_first"])
@pytest.mark.parametrize("layer", LAYERS, ids=[c[0] for c in LAYERS])
def test_one_step_layer_call_matches_torch_nn(layer, batch_first, backend, dtype):
    """A decoder's 1-step layer call (which `auto` and `torch` run on torch's cell op, issue 24): every output and
    gradient as torch.nn's layer."""
    _, fused_cls, torch_cls, extra = layer
    expected = torch_cls(5, HIDDEN, batch_first=batch_first, dtype=dtype, **extra)
    actual = fused_cls(5, HIDDEN, batch_first=batch_first, dtype=dtype, backend=backend, **extra)
    actual.load_state_dict(expected.state_dict())
    x = torch.randn(3, 1, 5, dtype=dtype) if batch_first else torch.randn(1, 3, 5, dtype=dtype)
    h = torch.randn(1, 3, HIDDEN, dtype=dtype)

    def make_inputs():
        leaves = {"input": leaf(x), "h": leaf(h)}
        hx = (leaves["h"], leaves["h"] * 0.5) if fused_cls is fusedrnn.LSTM else leaves["h"]
        return (leaves["input"], hx), leaves

    assert_all_close(forward_backward(actual, make_inputs), forward_backward(expected, make_inputs), dtype)


#: 1-step layer calls and whether they fit the fast path (fusedrnn.modules._FusedRNNBase._one_step): the decoder's
#: plain call does; every other shape of call takes the general path, which raises torch.nn's errors.
ONE_STEP_CALLS = {
    "gru": ({}, (1, 3, 5), (1, 3, HIDDEN), True),
    "gru_batch_first": ({"batch_first": True}, (3, 1, 5), (1, 3, HIDDEN), True),
    "gru_no_bias": ({"bias": False}, (1, 3, 5), (1, 3, HIDDEN), True),
    "gru_no_state": ({}, (1, 3, 5), None, False),
    "gru_two_steps": ({}, (2, 3, 5), (1, 3, HIDDEN), False),
    "gru_two_layers": ({"num_layers": 2}, (1, 3, 5), (2, 3, HIDDEN), False),
    "gru_bidirectional": ({"bidirectional": True}, (1, 3, 5), (2, 3, HIDDEN), False),
    "gru_unbatched": ({}, (1, 5), (1, HIDDEN), False),
    "gru_empty_batch": ({}, (1, 0, 5), (1, 0, HIDDEN), False),
    "gru_zoneout": ({"zoneout": 0.1}, (1, 3, 5), (1, 3, HIDDEN), False),
    "lstm_projection": ({"proj_size": 2}, (1, 3, 5), (1, 3, 2), False),
}


@pytest.mark.parametrize(("options", "x_shape", "h_shape", "fast"), ONE_STEP_CALLS.values(), ids=ONE_STEP_CALLS.keys())
def test_one_step_fast_path_serves_exactly_the_plain_call(options, x_shape, h_shape, fast, monkeypatch):
    """The plain call skips the general path (its `_prepare`) and matches torch.nn's layer in every output and
    gradient; the others take the general path."""
    cls = fusedrnn.LSTM if "proj_size" in options else fusedrnn.GRU
    torch.manual_seed(0)
    actual = cls(5, HIDDEN, dtype=torch.float64, **options)
    prepared = []
    original = type(actual)._prepare
    monkeypatch.setattr(type(actual), "_prepare", lambda self, *a: prepared.append(1) or original(self, *a))
    x = torch.randn(*x_shape, dtype=torch.float64)
    h = None if h_shape is None else torch.randn(*h_shape, dtype=torch.float64)
    hx = (h, torch.randn(1, 3, HIDDEN, dtype=torch.float64)) if cls is fusedrnn.LSTM else h
    actual(x, hx)
    assert (not prepared) == fast
    if fast:
        expected = nn.GRU(5, HIDDEN, dtype=torch.float64, **options)
        expected.load_state_dict(actual.state_dict())

        def make_inputs():
            leaves = {"input": leaf(x), "h": leaf(h)}
            return (leaves["input"], leaves["h"]), leaves

        assert_all_close(forward_backward(actual, make_inputs), forward_backward(expected, make_inputs), torch.float64)


@pytest.mark.parametrize("bad", ["state_rank", "state_batch", "state_dtype", "input_size", "lstm_lone_state"])
def test_one_step_bad_calls_raise_torch_nn_errors(bad):
    """A 1-step call that does not fit the fast path because it is wrong raises what torch.nn's layer raises."""
    cls, torch_cls = (fusedrnn.LSTM, nn.LSTM) if bad == "lstm_lone_state" else (fusedrnn.GRU, nn.GRU)
    ours, theirs = cls(5, HIDDEN), torch_cls(5, HIDDEN)
    x, h = torch.randn(1, 3, 5), torch.randn(1, 3, HIDDEN)
    hx = {"state_rank": h[0], "state_batch": h[:, :2], "state_dtype": h.double(), "input_size": h,
          "lstm_lone_state": h}[bad]  # fmt: skip
    if bad == "input_size":
        x = torch.randn(1, 3, 4)
    with pytest.raises(Exception) as theirs_error:
        theirs(x, hx)
    with pytest.raises(type(theirs_error.value)) as ours_error:
        ours(x, hx)
    assert str(ours_error.value) == str(theirs_error.value)


# The direct path (issue 24): where `auto` runs torch's own cell op, a plain cell call goes to it straight from the
# module, found by the call's signature (registry.direct_cell_op); everything above also runs through it.
DIRECT_OPS = {"LSTM": torch._VF.lstm_cell, "GRU": torch._VF.gru_cell, "RNN_TANH": torch._VF.rnn_tanh_cell}


@pytest.mark.parametrize("mode", DIRECT_OPS)
def test_direct_cell_op_is_torchs_own_op_only_where_torch_is_selected(mode, monkeypatch):
    x = torch.randn(3, 5)
    backend, _ = fusedrnn.registry.select_cell("auto", mode, x, HIDDEN, True)
    expected = DIRECT_OPS[mode] if backend.name == "torch" else None
    assert fusedrnn.registry.direct_cell_op("auto", mode, x, HIDDEN, True) is expected
    assert fusedrnn.registry.direct_cell_op("torch", mode, x, HIDDEN, True) is DIRECT_OPS[mode]
    for other in ("reference", "cpu"):  # backends whose cells are their own code
        assert fusedrnn.registry.direct_cell_op(other, mode, x, HIDDEN, True) is None
    monkeypatch.setenv("FUSEDRNN_BACKEND", "reference")  # read at every call, as for the selection
    assert fusedrnn.registry.direct_cell_op("auto", mode, x, HIDDEN, True) is None
    monkeypatch.delenv("FUSEDRNN_BACKEND")
    # While a graph is recorded, the sequence op instead (export): torch.export's flag, and torch.jit.trace's state
    # as direct_cell_op reads it (torch._C._is_tracing, without is_scripting's frame).
    with monkeypatch.context() as patch:
        patch.setattr(torch.compiler, "_is_exporting_flag", True)
        assert fusedrnn.registry.direct_cell_op("torch", mode, x, HIDDEN, True) is None
    with monkeypatch.context() as patch:
        patch.setattr(fusedrnn.registry, "_is_tracing", lambda: True)
        assert fusedrnn.registry.direct_cell_op("torch", mode, x, HIDDEN, True) is None
    assert fusedrnn.registry.direct_cell_op("torch", mode, x, HIDDEN, True) is DIRECT_OPS[mode]


def test_direct_cell_ops_are_forgotten_when_the_registry_changes(monkeypatch):
    x = torch.randn(3, 5)
    fusedrnn.registry.direct_cell_op("torch", "GRU", x, HIDDEN, True)
    assert fusedrnn.registry._DIRECT_CELL_OPS
    fusedrnn.registry.register("test_extra", fusedrnn.registry.get_backend("reference"))
    try:
        assert not fusedrnn.registry._DIRECT_CELL_OPS
    finally:
        fusedrnn.registry.unregister("test_extra")
    monkeypatch.setattr(fusedrnn.registry, "MAX_DIRECT_CELL_OPS", 2)
    for batch in (1, 2, 3, 4):  # a new signature each: the table starts over when full
        fusedrnn.registry.direct_cell_op("torch", "GRU", torch.randn(batch, 5), HIDDEN, True)
        assert len(fusedrnn.registry._DIRECT_CELL_OPS) <= 2


@pytest.mark.parametrize(("cls", "states"), [(fusedrnn.LSTMCell, 2), (fusedrnn.GRUCell, 1)], ids=["lstm", "gru"])
def test_plain_cell_call_skips_the_backend_only_on_the_direct_path(cls, states, monkeypatch):
    """With torch selected, a batched call with its states goes to the op directly; without a state, or unbatched, it
    goes through Backend.cell, as before. Both give torch.nn's result."""
    from fusedrnn.backends.torch_native import TorchBackend

    through_backend = []
    original = TorchBackend.cell
    monkeypatch.setattr(TorchBackend, "cell", lambda self, *a: through_backend.append(1) or original(self, *a))
    cell = cls(5, HIDDEN, backend="torch")
    torch_cell = (nn.LSTMCell if states == 2 else nn.GRUCell)(5, HIDDEN)
    torch_cell.load_state_dict(cell.state_dict())
    x, h = torch.randn(3, 5), torch.randn(3, HIDDEN)
    hx = (h, h * 0.5) if states == 2 else h
    torch.testing.assert_close(cell(x, hx), torch_cell(x, hx), rtol=0, atol=0)
    assert not through_backend
    torch.testing.assert_close(cell(x), torch_cell(x), rtol=0, atol=0)
    unbatched = (h[0], h[0] * 0.5) if states == 2 else h[0]
    torch.testing.assert_close(cell(x[0], unbatched), torch_cell(x[0], unbatched), rtol=0, atol=0)
    assert len(through_backend) == 2


#: CHANGES for a layer's first layer's weights.
LAYER_CHANGES = {
    "new_parameter": lambda layer: setattr(layer, "weight_hh_l0", nn.Parameter(
        torch.randn(layer.weight_hh_l0.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64))),
    "parametrized": lambda layer: nn.utils.parametrize.register_parametrization(layer, "weight_ih_l0", Doubled()),
    "new_bias_value": lambda layer: layer.bias_hh_l0.data.add_(1.0),
}


@pytest.mark.parametrize("change", LAYER_CHANGES)
@pytest.mark.parametrize("cls", [fusedrnn.GRU, fusedrnn.LSTM], ids=["gru", "lstm"])
def test_one_step_layer_follows_weight_changes_between_calls(cls, change):
    """The 1-step path reads the parameters from `_parameters` (not torch.nn's flat list, refreshed only by the
    general path): after each change between two 1-step calls, the output is torch.nn's."""
    torch_cls = nn.GRU if cls is fusedrnn.GRU else nn.LSTM
    expected = torch_cls(5, HIDDEN, dtype=torch.float64)
    actual = cls(5, HIDDEN, dtype=torch.float64)
    actual.load_state_dict(expected.state_dict())
    x, h = torch.randn(1, 3, 5, dtype=torch.float64), torch.randn(1, 3, HIDDEN, dtype=torch.float64)
    hx = (h, h * 0.5) if cls is fusedrnn.LSTM else h
    torch.testing.assert_close(actual(x, hx), expected(x, hx))
    for module in (expected, actual):
        LAYER_CHANGES[change](module)
    torch.testing.assert_close(actual(x, hx), expected(x, hx))
