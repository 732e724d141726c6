"""replace_rnns swaps torch.nn recurrent layers for fusedrnn's in place, keeping weights (shared), outputs and
everything attached to the layers; restore_rnns turns them back.

The attachment scenarios (hooks, parametrizations, old-style weight_norm, AWD-LSTM weight drop) each run a model
twice — built alike, one left on torch.nn, one swapped to fusedrnn under `auto` and under every backend forced — for
two training steps, and compare every output, every gradient and what the hooks saw.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from cpu_backends import backend_params
from parity import TOLERANCES, assert_all_close, forward_backward, leaf
from torch import Tensor, nn
from torch.nn.utils import parametrizations, parametrize

import fusedrnn

INPUT_SIZE, HIDDEN_SIZE, SEQ_LEN, BATCH = 3, 4, 5, 2
WEIGHT_DROP_P = 0.5
STEPS = 2  # the second step runs on weights the optimizer changed through the shared parameters


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


def test_replace_converts_a_bare_layer_in_place_keeping_training_mode():
    lstm = nn.LSTM(3, 4, 2, dropout=0.25).eval()
    weight = lstm.weight_hh_l1
    assert fusedrnn.replace_rnns(lstm, backend="reference") is lstm
    assert type(lstm) is fusedrnn.LSTM and not lstm.training and lstm.dropout == 0.25
    assert lstm.backend == "reference" and lstm.weight_hh_l1 is weight


def test_replace_leaves_user_subclasses_alone():
    class MyLSTM(nn.LSTM):
        pass

    model = nn.Sequential(MyLSTM(3, 4))
    fusedrnn.replace_rnns(model)
    assert type(model[0]) is MyLSTM


def test_replace_with_an_unknown_backend_raises_and_changes_nothing():
    model = nn.Sequential(nn.LSTM(3, 4))
    with pytest.raises(ValueError, match="unknown fusedrnn backend"):
        fusedrnn.replace_rnns(model, backend="no-such-backend")
    assert type(model[0]) is nn.LSTM


# ----------------------------------------------------------------------------------------------------------------
# AWD-LSTM weight drop, as the two public implementations do it (written here from their descriptions)


class SalesforceWeightDrop(nn.Module):
    """Salesforce awd-lstm-lm's `WeightDrop`: deletes the wrapped layer's parameter, registers the raw weight on
    the layer as `<name>_raw`, and before every forward assigns a dropped-out plain tensor under the old name."""

    def __init__(self, module: nn.Module, weights: list[str], dropout: float):
        super().__init__()
        self.module, self.weights, self.dropout = module, weights, dropout
        if isinstance(module, nn.RNNBase):
            module.flatten_parameters = lambda *args, **kwargs: None  # it no-ops this too (non-contiguous weights)
        for name in weights:
            weight = getattr(module, name)
            del module._parameters[name]
            module.register_parameter(f"{name}_raw", nn.Parameter(weight.data))

    def forward(self, *args):
        for name in self.weights:
            raw = getattr(self.module, f"{name}_raw")
            setattr(self.module, name, F.dropout(raw, p=self.dropout, training=self.training))
        return self.module.forward(*args)


class FastaiWeightDropout(nn.Module):
    """fastai's `WeightDropout`: keeps the raw weight as its own parameter `<name>_raw`, deletes the layer's, and
    assigns the dropped-out weight to the layer with setattr (the layer's `_flat_weights` follow)."""

    def __init__(self, module: nn.Module, weight_p: float, layer_names: list[str]):
        super().__init__()
        self.module, self.weight_p, self.layer_names = module, weight_p, layer_names
        for name in layer_names:
            weight = getattr(module, name)
            delattr(module, name)
            self.register_parameter(f"{name}_raw", nn.Parameter(weight.data))
            setattr(module, name, weight.clone())
            if isinstance(module, nn.RNNBase):
                module.flatten_parameters = lambda *args, **kwargs: None

    def forward(self, *args):
        for name in self.layer_names:
            raw = getattr(self, f"{name}_raw")
            weight = F.dropout(raw, p=self.weight_p) if self.training else raw.clone()
            setattr(self.module, name, weight)
        return self.module(*args)


class FastaiV1WeightDropout(nn.Module):
    """fastai v1's `WeightDropout`: writes the dropped-out tensor straight into the layer's `_parameters` dict."""

    def __init__(self, module: nn.Module, weight_p: float, layer_names: list[str]):
        super().__init__()
        self.module, self.weight_p, self.layer_names = module, weight_p, layer_names
        for name in layer_names:
            weight = getattr(module, name)
            self.register_parameter(f"{name}_raw", nn.Parameter(weight.data))
            module._parameters[name] = F.dropout(weight, p=weight_p, training=False)

    def forward(self, *args):
        for name in self.layer_names:
            raw = getattr(self, f"{name}_raw")
            self.module._parameters[name] = F.dropout(raw, p=self.weight_p, training=self.training)
        return self.module(*args)


# ----------------------------------------------------------------------------------------------------------------
# Attachment scenarios: each takes a fresh torch.nn layer and a log list, attaches something and returns the module
# to put in the model (the layer or a wrapper around it).


def recurrent_weight(layer: nn.Module) -> str:
    return "weight_hh" if isinstance(layer, nn.RNNCellBase) else "weight_hh_l0"


def first_tensor(value) -> Tensor:
    return value if isinstance(value, Tensor) else first_tensor(value[0])


def attach_hooks(layer, log):
    """Every kind of module hook; they change the input and the gradients so a lost hook changes the results."""
    layer.register_forward_pre_hook(lambda module, args: (args[0] * 2, *args[1:]))
    layer.register_forward_hook(lambda module, args, output: log.append(("forward", first_tensor(output).detach())))
    layer.register_forward_hook(
        lambda module, args, kwargs, output: log.append(("forward_kwargs", sorted(kwargs))), with_kwargs=True
    )

    def backward_pre_hook(module, grad_output):
        log.append(("backward_pre", first_tensor(grad_output).detach()))

    def backward_hook(module, grad_input, grad_output):
        log.append(("backward", first_tensor(grad_output).detach()))
        return tuple(None if g is None else 3 * g for g in grad_input)

    layer.register_full_backward_pre_hook(backward_pre_hook)
    layer.register_full_backward_hook(backward_hook)
    return layer


def attach_orthogonal(layer, log):
    return parametrizations.orthogonal(layer, recurrent_weight(layer))


def attach_weight_norm(layer, log):
    return parametrizations.weight_norm(layer, recurrent_weight(layer))


def attach_old_weight_norm(layer, log):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated in favour of parametrizations.weight_norm
        return nn.utils.weight_norm(layer, recurrent_weight(layer))


SCENARIOS = {
    "hooks": attach_hooks,
    "orthogonal": attach_orthogonal,
    "weight_norm": attach_weight_norm,
    "old_weight_norm": attach_old_weight_norm,
    "salesforce_weight_drop": lambda layer, log: SalesforceWeightDrop(layer, [recurrent_weight(layer)], WEIGHT_DROP_P),
    "fastai_weight_dropout": lambda layer, log: FastaiWeightDropout(layer, WEIGHT_DROP_P, [recurrent_weight(layer)]),
    "fastai_v1_weight_dropout": lambda layer, log: FastaiV1WeightDropout(
        layer, WEIGHT_DROP_P, [recurrent_weight(layer)]
    ),
}
LAYERS = {
    "lstm": lambda dtype: nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, dtype=dtype),
    "gru_cell": lambda dtype: nn.GRUCell(INPUT_SIZE, HIDDEN_SIZE, dtype=dtype),
}


class Net(nn.Module):
    def __init__(self, recurrent: nn.Module, dtype):
        super().__init__()
        self.recurrent = recurrent
        self.head = nn.Linear(HIDDEN_SIZE, 2, dtype=dtype)

    def forward(self, x):
        return self.head(first_tensor(self.recurrent(x)))


def build(scenario: str, layer_kind: str, dtype, log: list) -> Net:
    torch.manual_seed(0)
    return Net(SCENARIOS[scenario](LAYERS[layer_kind](dtype), log), dtype).train()


def the_layer(model: nn.Module) -> nn.Module:
    (layer,) = [m for m in model.modules() if isinstance(m, (nn.RNNBase, nn.RNNCellBase))]
    return layer


def train(model: Net, layer_kind: str, dtype) -> list[dict]:
    """STEPS steps of SGD, seeded alike (weight-drop masks); every step's outputs and gradients."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    shape = (BATCH, INPUT_SIZE) if layer_kind.endswith("cell") else (SEQ_LEN, BATCH, INPUT_SIZE)
    results = []
    for step in range(STEPS):
        x = torch.randn(shape, generator=torch.Generator().manual_seed(step), dtype=dtype)
        torch.manual_seed(100 + step)
        results.append(forward_backward(model, lambda x=x: ((leaf(x),), {})))
        optimizer.step()
    return results


@pytest.mark.parametrize(("backend", "dtype"), backend_params())
@pytest.mark.parametrize("layer_kind", LAYERS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_replace_keeps_what_is_attached_to_the_layer(scenario, layer_kind, backend, dtype):
    expected_log, actual_log = [], []
    expected_model = build(scenario, layer_kind, dtype, expected_log)
    actual_model = build(scenario, layer_kind, dtype, actual_log)
    parameters = dict(actual_model.named_parameters())
    assert fusedrnn.replace_rnns(actual_model, backend=backend) is actual_model

    layer = the_layer(actual_model)
    assert (
        parametrize.type_before_parametrizations(layer)
        is fusedrnn.replace.TWINS[parametrize.type_before_parametrizations(the_layer(expected_model))]
    )
    assert parametrize.is_parametrized(layer) == parametrize.is_parametrized(the_layer(expected_model))
    assert all(p.device.type == "cpu" for p in actual_model.parameters()), "no weight may stay on the meta device"
    assert dict(actual_model.named_parameters()) == parameters, "the very same parameters, under the same names"

    expected = train(expected_model, layer_kind, dtype)
    actual = train(actual_model, layer_kind, dtype)
    for got, want in zip(actual, expected, strict=True):
        assert_all_close(got, want, dtype)
    assert [entry[0] for entry in actual_log] == [entry[0] for entry in expected_log]
    for (tag, got), (_, want) in zip(actual_log, expected_log):
        if isinstance(want, Tensor):
            torch.testing.assert_close(got, want, **TOLERANCES[dtype], msg=lambda m, tag=tag: f"{tag} hook: {m}")
        else:
            assert got == want, tag


@pytest.mark.parametrize("model_kind", ["torch.nn", "fusedrnn"])
def test_hook_handles_taken_before_the_swap_still_remove_their_hooks(model_kind):
    calls = []
    layer = nn.GRU(INPUT_SIZE, HIDDEN_SIZE)
    handles = [
        layer.register_forward_pre_hook(lambda *args: calls.append("pre")),
        layer.register_forward_hook(lambda *args: calls.append("forward")),
        layer.register_full_backward_hook(lambda *args: calls.append("backward")),
    ]
    if model_kind == "fusedrnn":
        fusedrnn.replace_rnns(layer)
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, requires_grad=True)
    layer(x)[0].sum().backward()
    assert calls == ["pre", "forward", "backward"]
    for handle in handles:
        handle.remove()
    layer(x)[0].sum().backward()
    assert calls == ["pre", "forward", "backward"]


# ----------------------------------------------------------------------------------------------------------------
# restore_rnns


def test_restore_is_the_inverse_of_replace():
    torch.manual_seed(0)
    model = Tagger().double()
    nn.utils.parametrizations.orthogonal(model.middle[0], "weight_hh_l0")
    x = torch.randn(3, 7, 6, dtype=torch.float64)
    expected = model(x)

    fusedrnn.restore_rnns(fusedrnn.replace_rnns(model, backend="reference"))
    assert type(model.encoder) is nn.LSTM and type(model.cell) is nn.GRUCell
    assert parametrize.type_before_parametrizations(model.middle[0]) is nn.GRU
    assert parametrize.is_parametrized(model.middle[0], "weight_hh_l0")
    assert not any(hasattr(m, "backend") for m in model.modules())
    torch.testing.assert_close(model(x), expected, **TOLERANCES[torch.float64])


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"])
def test_restore_turns_a_fusedrnn_layer_into_its_torch_nn_class(name):
    torch.manual_seed(0)
    cell = name.endswith("Cell")
    layer = getattr(fusedrnn, name)(INPUT_SIZE, HIDDEN_SIZE, dtype=torch.float64, backend="reference")
    x = torch.randn((BATCH, INPUT_SIZE) if cell else (SEQ_LEN, BATCH, INPUT_SIZE), dtype=torch.float64)
    expected = first_tensor(layer(x))
    state = layer.state_dict()
    assert fusedrnn.restore_rnns(layer) is layer
    assert type(layer) is getattr(nn, name) and not hasattr(layer, "backend")
    assert layer.state_dict().keys() == state.keys()
    torch.testing.assert_close(first_tensor(layer(x)), expected, **TOLERANCES[torch.float64])
