"""tests/layer_truth.py's torch.nn layer (the GPU tests' baseline) against its reference layer (their truth), on the
CPU in float64, so that a GPU run's comparisons rest on helpers already checked here."""

from __future__ import annotations

import pytest
import torch

from layer_truth import make_values, reference_layer, torch_nn_layer
from parity import assert_all_close

#: (id, mode, bias, reverse, lengths)
CONFIGS = [
    ("lstm", "LSTM", True, False, False),
    ("lstm_no_bias_reverse", "LSTM", False, True, False),
    ("lstm_lengths_reverse", "LSTM", True, True, True),
    ("gru_lengths", "GRU", True, False, True),
    ("gru_no_bias_lengths_reverse", "GRU", False, True, True),
    ("rnn_tanh_reverse", "RNN_TANH", True, True, False),
    ("rnn_relu_lengths", "RNN_RELU", True, False, True),
]


@pytest.mark.parametrize(("name", "mode", "bias", "reverse", "lengths"), CONFIGS, ids=[c[0] for c in CONFIGS])
def test_torch_nn_layer_equals_the_reference_layer(name, mode, bias, reverse, lengths):
    values = make_values(mode, (6, 5, 3, 7), bias, lengths)
    if lengths:
        assert values.lengths.min() < values.lengths.max(), "the lengths must differ to test the flip"
    assert_all_close(torch_nn_layer(values, reverse, torch.float64, "cpu"), reference_layer(values, reverse),
                     torch.float64)  # fmt: skip
