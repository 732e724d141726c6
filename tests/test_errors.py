"""Bad input gets the same exception from fusedrnn as from torch.nn: the same type and, string for string, the same
text (issue 24), under `auto` and every backend that runs CPU tensors here."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import fusedrnn
from cpu_backends import backend_params
from torch.nn.utils.rnn import pack_padded_sequence


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
    """Same exception type and the same message text, which names the problem (`keyword`)."""
    expected, actual = raised(torch_build), raised(fused_build)
    assert expected is not None, "torch.nn accepted this input; the test case is wrong"
    assert type(actual) is type(expected), f"fusedrnn raised {actual!r}, torch.nn raised {expected!r}"
    assert str(actual) == str(expected), f"fusedrnn's text {str(actual)!r}, torch.nn's {str(expected)!r}"
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


def _packed(x, lengths=(5, 3, 2)):
    return pack_padded_sequence(x, list(lengths))


#: (id, input factory, state factory or None, keyword[, the classes it applies to, default all]) — the module is built
#: as CLS(4, 8, 2). The keyword is what the message must mention; several of torch.nn's texts come from ATen's kernels
#: ("mat1 and mat2", "get_mkldnn_dtype"), some from Python ("'tuple' object has no attribute").
FORWARD_ERRORS = [
    ("wrong_feature_size", lambda: torch.randn(5, 3, 6), None, "input_size"),
    ("input_4d", lambda: torch.randn(5, 3, 4, 1), None, "2D or 3D"),
    ("input_1d", lambda: torch.randn(5), None, "2D or 3D"),
    ("integer_input", lambda: torch.ones(5, 3, 4, dtype=torch.long), None, "dtype"),
    ("integer_unbatched_input", lambda: torch.ones(5, 4, dtype=torch.long), None, "dtype"),
    ("input_weight_dtype_mismatch", lambda: torch.randn(5, 3, 4, dtype=torch.float64), None, "dtype"),
    ("empty_sequence", lambda: torch.randn(0, 3, 4), None, "sequence length"),
    ("state_wrong_batch", lambda: torch.randn(5, 3, 4), lambda n: _states(n, (2, 2, 8)), "size"),
    ("state_wrong_hidden", lambda: torch.randn(5, 3, 4), lambda n: _states(n, (2, 3, 7)), "size"),
    ("state_wrong_layers", lambda: torch.randn(5, 3, 4), lambda n: _states(n, (1, 3, 8)), "size"),
    ("cell_state_wrong_hidden", lambda: torch.randn(5, 3, 4), lambda n: _states(n, (2, 3, 8), (2, 3, 7)), "size",
     ["LSTM"]),
    ("state_rank_2_for_batched", lambda: torch.randn(5, 3, 4), lambda n: _states(n, (2, 8)), "3-D"),
    ("state_rank_3_for_unbatched", lambda: torch.randn(5, 4), lambda n: _states(n, (2, 1, 8)), "2-D"),
    ("state_ranks_mixed", lambda: torch.randn(5, 3, 4), lambda n: _states(n, (2, 3, 8), (3, 8)), "-D", ["LSTM"]),
    ("state_dtype_mismatch", lambda: torch.randn(5, 3, 4), lambda n: _states(n, (2, 3, 8), dtype=torch.float64), ""),
    ("lstm_state_not_a_pair", lambda: torch.randn(5, 3, 4), lambda n: torch.zeros(2, 3, 8), "", ["LSTM"]),
    ("lstm_state_one_layer_tensor", lambda: torch.randn(5, 3, 4), lambda n: torch.zeros(1, 3, 8), "", ["LSTM"]),
    ("state_tuple_of_three", lambda: torch.randn(5, 3, 4), lambda n: (torch.zeros(2, 3, 8),) * 3, ""),
    ("packed_wrong_feature_size", lambda: _packed(torch.randn(5, 3, 6)), None, ""),
    ("packed_state_wrong_batch", lambda: _packed(torch.randn(5, 3, 4)), lambda n: _states(n, (2, 2, 8)), ""),
]


FORWARD_ERROR_PARAMS = [pytest.param(name, *case[1:4], id=f"{case[0]}-{name}") for case in FORWARD_ERRORS
                        for name in (case[4] if len(case) > 4 else PAIRS)]  # fmt: skip


@pytest.mark.parametrize("backend,dtype", backend_params())
@pytest.mark.parametrize("name,make_input,make_state,keyword", FORWARD_ERROR_PARAMS)
def test_forward_errors_match_torch_nn(name, make_input, make_state, keyword, backend, dtype):
    """The module in float32 (torch.nn's default) whatever the backend's parity dtype: the cases choose the dtypes."""
    fused_cls, torch_cls = PAIRS[name]
    x = make_input()
    hx = make_state(name) if make_state else None
    assert_same_error(lambda: fused_cls(4, 8, 2, backend=backend)(x, hx), lambda: torch_cls(4, 8, 2)(x, hx),
                      keyword)  # fmt: skip


def test_lstm_cell_state_of_wrong_size_names_the_state():
    with pytest.raises(RuntimeError, match="hidden1 has inconsistent hidden_size"):
        fusedrnn.LSTMCell(4, 8)(torch.randn(3, 4), (torch.zeros(3, 8), torch.zeros(3, 5)))


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
    ("integer_input", lambda: torch.ones(3, 4, dtype=torch.long), None, "dtype"),
    ("state_dtype_mismatch", lambda: torch.randn(3, 4), lambda n: torch.zeros(3, 8, dtype=torch.float64), "dtype"),
    ("unbatched_input_batched_state", lambda: torch.randn(4), lambda n: torch.zeros(3, 8), ""),
    ("batched_input_unbatched_state", lambda: torch.randn(3, 4), lambda n: torch.zeros(8), ""),
]
#: LSTMCell only: its state is a pair.
LSTM_CELL_STATE_ERRORS = [
    ("state_not_a_pair", lambda: torch.zeros(3, 8), ""),
    ("cell_state_hidden_mismatch", lambda: (torch.zeros(3, 8), torch.zeros(3, 5)), "hidden1"),
    ("cell_state_batch_mismatch", lambda: (torch.zeros(3, 8), torch.zeros(2, 8)), "hidden1"),
]


@pytest.mark.parametrize("backend,dtype", backend_params())
@pytest.mark.parametrize("name", CELL_PAIRS)
@pytest.mark.parametrize("make_input,make_state,keyword", [c[1:] for c in CELL_ERRORS],
                         ids=[c[0] for c in CELL_ERRORS])  # fmt: skip
def test_cell_errors_match_torch_nn(name, make_input, make_state, keyword, backend, dtype):
    fused_cls, torch_cls = CELL_PAIRS[name]
    x = make_input()
    hx = make_state(name) if make_state else None
    if hx is not None and name == "LSTMCell":
        hx = (hx, hx)
    assert_same_error(lambda: fused_cls(4, 8, backend=backend)(x, hx), lambda: torch_cls(4, 8)(x, hx), keyword)


@pytest.mark.parametrize("backend,dtype", backend_params())
@pytest.mark.parametrize("make_state,keyword", [c[1:] for c in LSTM_CELL_STATE_ERRORS],
                         ids=[c[0] for c in LSTM_CELL_STATE_ERRORS])  # fmt: skip
def test_lstm_cell_state_errors_match_torch_nn(make_state, keyword, backend, dtype):
    x, hx = torch.randn(3, 4), make_state()
    assert_same_error(lambda: fusedrnn.LSTMCell(4, 8, backend=backend)(x, hx), lambda: nn.LSTMCell(4, 8)(x, hx),
                      keyword)  # fmt: skip


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
    # A lone tensor: torch.nn indexes it as the pair (here IndexError: one layer, no hx[1]), and so does fusedrnn.
    assert_same_error(lambda: lstm(x, h), lambda: nn.LSTM(3, 4)(x, h), "index")
