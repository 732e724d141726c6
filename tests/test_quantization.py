"""fusedrnn.quantize_dynamic quantizes a fusedrnn model exactly as torch.ao.quantization.quantize_dynamic quantizes
the same torch.nn model: the same layers become the same quantized classes and give the same outputs; the layers
torch leaves float stay fusedrnn's, on their backend."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from cpu_backends import backend_params
from parity import TOLERANCES
from torch import nn

import fusedrnn

INPUT_SIZE, HIDDEN_SIZE, SEQ_LEN, BATCH = 4, 6, 5, 3


class Model(nn.Module):
    """Every recurrent class torch.nn has, and a Linear."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bidirectional=True)
        self.gru = nn.GRU(2 * HIDDEN_SIZE, HIDDEN_SIZE)
        self.rnn = nn.RNN(HIDDEN_SIZE, HIDDEN_SIZE)  # torch has no dynamic quantized RNN: stays float
        self.lstm_cell = nn.LSTMCell(HIDDEN_SIZE, HIDDEN_SIZE)
        self.gru_cell = nn.GRUCell(HIDDEN_SIZE, HIDDEN_SIZE)
        self.rnn_cell = nn.RNNCell(HIDDEN_SIZE, HIDDEN_SIZE)
        self.head = nn.Linear(HIDDEN_SIZE, 2)

    def forward(self, x):
        y, _ = self.lstm(x)
        y, _ = self.gru(y)
        y, _ = self.rnn(y)
        h, _ = self.lstm_cell(y[-1])
        return self.head(self.rnn_cell(self.gru_cell(h)))


def torch_quantize_dynamic(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization points to torchao
        return torch.ao.quantization.quantize_dynamic(*args, **kwargs)


def fused_quantize_dynamic(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return fusedrnn.quantize_dynamic(*args, **kwargs)


def module_types(model: nn.Module) -> dict[str, type]:
    return {name: type(module) for name, module in model.named_children()}


SPECS = {
    "default_qint8": {"dtype": torch.qint8},
    "default_float16": {"dtype": torch.float16},
    "set_of_classes": {"qconfig_spec": {nn.LSTM, nn.GRUCell, nn.Linear}},
}


@pytest.mark.parametrize("keep_type", [pytest.param(True, id="keep_type"), pytest.param(False, id="fusedrnn_type")])
@pytest.mark.parametrize(("backend", "dtype"), backend_params(float32_only=True))
@pytest.mark.parametrize("spec", SPECS)
def test_quantize_dynamic_treats_fusedrnn_layers_like_torch_nn(spec, backend, dtype, keep_type):
    torch.manual_seed(0)
    float_model = Model().eval()
    fused_model = fusedrnn.replace_rnns(copy.deepcopy(float_model), backend=backend, keep_type=keep_type)
    fused_types = module_types(fused_model)
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE)

    expected = torch_quantize_dynamic(float_model, **SPECS[spec])
    actual = fused_quantize_dynamic(fused_model, **SPECS[spec])
    assert module_types(fused_model) == fused_types, "inplace=False must leave the model alone"

    quantized = {name for name, cls in module_types(expected).items() if cls.__module__.startswith("torch.ao")}
    assert quantized, "torch quantized nothing: the scenario tests nothing"
    for name, cls in module_types(actual).items():
        if name in quantized:
            assert cls is module_types(expected)[name], name
        else:  # left float by torch: the fusedrnn layer again, on its backend
            assert cls is fused_types[name], name
            assert getattr(actual, name).backend == backend or cls is nn.Linear, name
            assert fusedrnn.replace.is_routed(getattr(actual, name)) == (keep_type and cls is not nn.Linear), name
    torch.testing.assert_close(actual(x), expected(x), **TOLERANCES[dtype])


def test_a_fusedrnn_class_in_qconfig_spec_stands_for_its_torch_nn_class():
    model = fusedrnn.replace_rnns(Model().eval(), keep_type=False)
    quantized = fused_quantize_dynamic(model, qconfig_spec={fusedrnn.GRU, fusedrnn.LSTMCell})
    assert isinstance(quantized.gru, torch.ao.nn.quantized.dynamic.GRU)
    assert isinstance(quantized.lstm_cell, torch.ao.nn.quantized.dynamic.LSTMCell)
    assert type(quantized.lstm) is fusedrnn.LSTM and type(quantized.head) is nn.Linear


def test_inplace_quantizes_the_model_itself():
    model = fusedrnn.replace_rnns(Model().eval(), keep_type=False)
    assert fused_quantize_dynamic(model, inplace=True) is model
    assert isinstance(model.lstm, torch.ao.nn.quantized.dynamic.LSTM) and type(model.rnn) is fusedrnn.RNN
