"""Bad input gets the same exception type from fusedrnn as from torch.nn, with a message naming the problem."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import fusedrnn


def raised(build):
    """The exception `build()` raises (None if it does not), with warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            build()
        except Exception as error:  # noqa: BLE001 - the point is to capture whatever is raised
            return error
    return None


def assert_same_error(fused_build, torch_build, keyword: str) -> None:
    expected, actual = raised(torch_build), raised(fused_build)
    assert expected is not None, "torch.nn accepted this input; the test case is wrong"
    assert type(actual) is type(expected), f"fusedrnn raised {actual!r}, torch.nn raised {expected!r}"
    assert keyword.lower() in str(actual).lower(), f"message {str(actual)!r} does not mention {keyword!r}"


PAIRS = {"LSTM": (fusedrnn.LSTM, nn.LSTM), "GRU": (fusedrnn.GRU, nn.GRU), "RNN": (fusedrnn.RNN, nn.RNN)}

#: (id, class name, args, kwargs, keyword the message must contain)
CONSTRUCTOR_ERRORS = [
    ("hidden_size_str", "LSTM", (4, "8"), {}, "hidden_size"),
    ("hidden_size_zero", "GRU", (4, 0), {}, "hidden_size"),
    ("input_size_float", "RNN", (4.0, 8), {}, "input_size"),
    ("input_size_negative", "LSTM", (-1, 8), {}, "input_size"),
    ("num_layers_zero", "GRU", (4, 8, 0), {}, "num_layers"),
    ("bias_not_bool", "LSTM", (4, 8), {"bias": 1}, "bias"),
    ("batch_first_not_bool", "GRU", (4, 8), {"batch_first": "yes"}, "batch_first"),
    ("dropout_above_one", "LSTM", (4, 8, 2), {"dropout": 1.5}, "dropout"),
    ("dropout_negative", "RNN", (4, 8, 2), {"dropout": -0.1}, "dropout"),
    ("dropout_bool", "GRU", (4, 8, 2), {"dropout": True}, "dropout"),
    ("proj_size_on_gru", "GRU", (4, 8), {"proj_size": 2}, "proj_size"),
    ("proj_size_on_rnn", "RNN", (4, 8), {"proj_size": 2}, "proj_size"),
    ("proj_size_not_smaller", "LSTM", (4, 8), {"proj_size": 8}, "proj_size"),
    ("proj_size_negative", "LSTM", (4, 8), {"proj_size": -1}, "proj_size"),
    ("bad_nonlinearity", "RNN", (4, 8), {"nonlinearity": "sigmoid"}, "nonlinearity"),
    ("bad_nonlinearity_positional", "RNN", (4, 8, 1, "gelu"), {}, "nonlinearity"),
]


@pytest.mark.parametrize("name,args,kwargs,keyword", [c[1:] for c in CONSTRUCTOR_ERRORS],
                         ids=[c[0] for c in CONSTRUCTOR_ERRORS])  # fmt: skip
def test_constructor_errors_match_torch_nn(name, args, kwargs, keyword):
    fused_cls, torch_cls = PAIRS[name]
    assert_same_error(lambda: fused_cls(*args, **kwargs), lambda: torch_cls(*args, **kwargs), keyword)


def test_dropout_with_one_layer_warns_like_torch_nn():
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        fusedrnn.LSTM(4, 8, dropout=0.5)


def test_unknown_backend_is_rejected_at_construction():
    with pytest.raises(ValueError, match="unknown fusedrnn backend 'nope'"):
        fusedrnn.GRU(4, 8, backend="nope")
    with pytest.raises(TypeError, match="backend"):
        fusedrnn.LSTMCell(4, 8, backend=None)


def _states(name, shape_h, shape_c=None, dtype=torch.float32):
    h = torch.zeros(*shape_h, dtype=dtype)
    return (h, torch.zeros(*(shape_c or shape_h), dtype=dtype)) if name == "LSTM" else h


#: (id, input factory, state factory or None, keyword) — the module is built as CLS(4, 8, 2).
FORWARD_ERRORS = [
    ("wrong_feature_size", lambda: torch.randn(5, 3, 6), None, "input_size"),
    ("input_4d", lambda: torch.randn(5, 3, 4, 1), None, "2D or 3D"),
    ("input_1d", lambda: torch.randn(5), None, "2D or 3D"),
    ("integer_input", lambda: torch.ones(5, 3, 4, dtype=torch.long), None, "dtype"),
    ("input_weight_dtype_mismatch", lambda: torch.randn(5, 3, 4, dtype=torch.float64), None, "dtype"),
    ("state_wrong_batch", lambda: torch.randn(5, 3, 4), lambda n: _states(n, (2, 2, 8)), "size"),
    ("state_wrong_hidden", lambda: torch.randn(5, 3, 4), lambda n: _states(n, (2, 3, 7)), "size"),
    ("state_wrong_layers", lambda: torch.randn(5, 3, 4), lambda n: _states(n, (1, 3, 8)), "size"),
    ("state_rank_2_for_batched", lambda: torch.randn(5, 3, 4), lambda n: _states(n, (2, 8)), "3-D"),
    ("state_rank_3_for_unbatched", lambda: torch.randn(5, 4), lambda n: _states(n, (2, 1, 8)), "2-D"),
]


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("make_input,make_state,keyword", [c[1:] for c in FORWARD_ERRORS],
                         ids=[c[0] for c in FORWARD_ERRORS])  # fmt: skip
def test_forward_errors_match_torch_nn(name, make_input, make_state, keyword):
    fused_cls, torch_cls = PAIRS[name]
    x = make_input()
    hx = make_state(name) if make_state else None
    assert_same_error(lambda: fused_cls(4, 8, 2, backend="reference")(x, hx), lambda: torch_cls(4, 8, 2)(x, hx),
                      keyword)  # fmt: skip


def test_lstm_cell_state_of_wrong_size_names_the_state():
    with pytest.raises(RuntimeError, match="hidden1 has inconsistent hidden_size"):
        fusedrnn.LSTMCell(4, 8)(torch.randn(3, 4), (torch.zeros(3, 8), torch.zeros(3, 5)))


def test_state_dtype_mismatch_is_a_clear_error():
    gru = fusedrnn.GRU(4, 8, backend="reference")
    with pytest.raises(RuntimeError, match="initial state has dtype torch.float64"):
        gru(torch.randn(5, 3, 4), torch.zeros(1, 3, 8, dtype=torch.float64))


CELL_PAIRS = {
    "LSTMCell": (fusedrnn.LSTMCell, nn.LSTMCell),
    "GRUCell": (fusedrnn.GRUCell, nn.GRUCell),
    "RNNCell": (fusedrnn.RNNCell, nn.RNNCell),
}
CELL_ERRORS = [
    ("wrong_feature_size", lambda: torch.randn(3, 5), None, "input_size"),
    ("input_3d", lambda: torch.randn(2, 3, 4), None, "1D or 2D"),
    ("state_batch_mismatch", lambda: torch.randn(3, 4), lambda n: torch.zeros(2, 8), "batch size"),
    ("state_hidden_mismatch", lambda: torch.randn(3, 4), lambda n: torch.zeros(3, 6), "hidden_size"),
    ("state_3d", lambda: torch.randn(3, 4), lambda n: torch.zeros(1, 3, 8), "1D or 2D"),
    ("input_weight_dtype_mismatch", lambda: torch.randn(3, 4, dtype=torch.float64), None, "dtype"),
]


@pytest.mark.parametrize("name", CELL_PAIRS)
@pytest.mark.parametrize("make_input,make_state,keyword", [c[1:] for c in CELL_ERRORS],
                         ids=[c[0] for c in CELL_ERRORS])  # fmt: skip
def test_cell_errors_match_torch_nn(name, make_input, make_state, keyword):
    fused_cls, torch_cls = CELL_PAIRS[name]
    x = make_input()
    hx = make_state(name) if make_state else None
    if hx is not None and name == "LSTMCell":
        hx = (hx, hx)
    assert_same_error(lambda: fused_cls(4, 8)(x, hx), lambda: torch_cls(4, 8)(x, hx), keyword)


def test_rnn_cell_bad_nonlinearity_fails_when_run_like_torch_nn():
    assert_same_error(
        lambda: fusedrnn.RNNCell(4, 8, nonlinearity="gelu")(torch.randn(2, 4)),
        lambda: nn.RNNCell(4, 8, nonlinearity="gelu")(torch.randn(2, 4)),
        "nonlinearity",
    )


def test_empty_sequence_is_an_error_on_every_backend():
    for backend in ("reference", "torch"):
        with pytest.raises(RuntimeError, match="sequence length"):
            fusedrnn.GRU(3, 4, backend=backend)(torch.randn(0, 2, 3))


def test_lstm_state_may_be_a_list_as_in_torch_nn():
    lstm = fusedrnn.LSTM(3, 4, backend="reference")
    x, h, c = torch.randn(5, 2, 3), torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)
    torch.testing.assert_close(lstm(x, [h, c])[0], lstm(x, (h, c))[0])
    with pytest.raises(TypeError, match=r"tuple \(h_0, c_0\)"):
        lstm(x, h)
