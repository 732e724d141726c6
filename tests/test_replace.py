"""replace_rnns swaps torch.nn recurrent layers for fusedrnn's, keeping weights (shared) and outputs."""

from __future__ import annotations

import torch
from torch import nn

import fusedrnn


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.LSTM(6, 10, num_layers=2, batch_first=True, bidirectional=True, proj_size=4)
        self.middle = nn.Sequential(nn.GRU(8, 5), nn.Identity())
        self.rnn = nn.RNN(5, 5, nonlinearity="relu", bias=False)
        self.cell = nn.GRUCell(5, 3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        y, _ = self.encoder(x)
        y, _ = self.middle[0](y.transpose(0, 1))
        y, _ = self.rnn(y)
        return self.head(self.cell(y[-1]))


def test_replace_keeps_outputs_gradients_and_parameters():
    torch.manual_seed(0)
    model = Tagger().double()
    x = torch.randn(3, 7, 6, dtype=torch.float64)
    upstream = torch.randn(3, 2, dtype=torch.float64)
    expected = model(x)
    parameters = list(model.parameters())
    expected_grads = torch.autograd.grad(expected, parameters, upstream)
    state_keys = list(model.state_dict())

    assert fusedrnn.replace_rnns(model, backend="reference") is model
    assert isinstance(model.encoder, fusedrnn.LSTM) and model.encoder.proj_size == 4 and model.encoder.batch_first
    assert isinstance(model.middle[0], fusedrnn.GRU)
    assert isinstance(model.rnn, fusedrnn.RNN) and model.rnn.nonlinearity == "relu" and not model.rnn.bias
    assert isinstance(model.cell, fusedrnn.GRUCell)
    assert all(a is b for a, b in zip(model.parameters(), parameters, strict=True)), "parameters must be shared"
    assert list(model.state_dict()) == state_keys
    actual = model(x)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)
    for parameter, got, want in zip(parameters, torch.autograd.grad(actual, parameters, upstream), expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=lambda m, p=parameter: f"{p.shape}: {m}")


def test_replace_keeps_training_mode_and_returns_a_twin_for_a_bare_layer():
    lstm = nn.LSTM(3, 4, 2, dropout=0.25).eval()
    twin = fusedrnn.replace_rnns(lstm)
    assert isinstance(twin, fusedrnn.LSTM) and not twin.training and twin.dropout == 0.25
    assert twin.weight_hh_l1 is lstm.weight_hh_l1


def test_replace_leaves_user_subclasses_alone():
    class MyLSTM(nn.LSTM):
        pass

    model = nn.Sequential(MyLSTM(3, 4))
    fusedrnn.replace_rnns(model)
    assert type(model[0]) is MyLSTM
