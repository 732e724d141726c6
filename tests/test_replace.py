"""replace_rnns swaps torch.nn recurrent layers for fusedrnn's in place, keeping weights (shared), outputs and
everything attached to the layers; restore_rnns turns them back.

The attachment scenarios (hooks, parametrizations, old-style weight_norm, AWD-LSTM weight drop) each run a model
twice — built alike, one left on torch.nn, one swapped to fusedrnn under `auto` and under every backend forced — for
two training steps, and compare every output, every gradient and what the hooks saw.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from cpu_backends import backend_params
from parity import TOLERANCES, assert_all_close, forward_backward, leaf
from torch import Tensor, nn
from torch.nn.utils import parametrizations, parametrize

import fusedrnn
from fusedrnn import registry

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


@pytest.fixture
def fusedrnn_calls(monkeypatch):
    """A list that gets one entry per layer or cell call that fusedrnn's registry serves: proof that a layer runs on
    fusedrnn, which its outputs cannot give (they equal torch.nn's)."""
    calls = []
    select_call, select_cell = registry.select_call, registry.select_cell

    def counted(function):
        def wrapper(*args, **kwargs):
            calls.append(function.__name__)
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(registry, "select_call", counted(select_call))  # a layer's selection
    monkeypatch.setattr(registry, "select_cell", counted(select_cell))
    return calls


#: replace_rnns' two modes, as test ids.
KEEP_TYPE = [pytest.param(True, id="keep_type"), pytest.param(False, id="fusedrnn_type")]


def expected_class(torch_cls: type, keep_type: bool) -> type:
    """The class a torch.nn layer has after replace_rnns in that mode."""
    return torch_cls if keep_type else fusedrnn.replace.TWINS[torch_cls]


@pytest.mark.parametrize("keep_type", KEEP_TYPE)
def test_replace_keeps_outputs_gradients_and_parameters(keep_type, fusedrnn_calls):
    torch.manual_seed(0)
    model = Tagger().double()
    x = torch.randn(3, 7, 6, dtype=torch.float64)
    upstream = torch.randn(3, 2, dtype=torch.float64)
    expected = model(x)
    parameters = list(model.parameters())
    expected_grads = torch.autograd.grad(expected, parameters, upstream)
    state_keys = list(model.state_dict())

    assert fusedrnn.replace_rnns(model, backend="reference", keep_type=keep_type) is model
    assert type(model.encoder) is expected_class(nn.LSTM, keep_type)
    assert model.encoder.proj_size == 4 and model.encoder.batch_first
    assert type(model.middle[0]) is expected_class(nn.GRU, keep_type)
    assert type(model.rnn) is expected_class(nn.RNN, keep_type)
    assert model.rnn.nonlinearity == "relu" and not model.rnn.bias
    assert type(model.cell) is expected_class(nn.GRUCell, keep_type)
    assert all(m.backend == "reference" for m in (model.encoder, model.middle[0], model.rnn, model.cell))
    assert all(a is b for a, b in zip(model.parameters(), parameters, strict=True)), "parameters must be shared"
    assert list(model.state_dict()) == state_keys
    actual = model(x)
    assert len(fusedrnn_calls) == 4, "every layer and the cell ran on fusedrnn"
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)
    for parameter, got, want in zip(parameters, torch.autograd.grad(actual, parameters, upstream), expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=lambda m, p=parameter: f"{p.shape}: {m}")


@pytest.mark.parametrize("keep_type", KEEP_TYPE)
def test_replace_converts_a_bare_layer_in_place_keeping_training_mode(keep_type):
    lstm = nn.LSTM(3, 4, 2, dropout=0.25).eval()
    weight = lstm.weight_hh_l1
    assert fusedrnn.replace_rnns(lstm, backend="reference", keep_type=keep_type) is lstm
    assert type(lstm) is expected_class(nn.LSTM, keep_type) and not lstm.training and lstm.dropout == 0.25
    assert lstm.backend == "reference" and lstm.weight_hh_l1 is weight
    assert fusedrnn.replace.is_routed(lstm) == keep_type


def test_replace_switches_between_modes_and_backends(fusedrnn_calls):
    lstm = nn.LSTM(3, 4)
    fusedrnn.replace_rnns(lstm, backend="reference")
    fusedrnn.replace_rnns(lstm, backend="torch", keep_type=False)
    assert type(lstm) is fusedrnn.LSTM and lstm.backend == "torch" and not fusedrnn.replace.is_routed(lstm)
    fusedrnn.restore_rnns(lstm)
    fusedrnn.replace_rnns(lstm, backend="reference")
    fusedrnn.replace_rnns(lstm, backend="torch")  # routed again, to the new backend
    assert type(lstm) is nn.LSTM and lstm.backend == "torch"
    lstm(torch.randn(2, 1, 3))
    assert fusedrnn_calls == ["select_call"]


def test_replace_refuses_a_layer_with_a_forward_of_its_own():
    lstm = nn.LSTM(3, 4)
    lstm.forward = lambda *args: "the user's"
    with pytest.raises(ValueError, match="forward of its own"):
        fusedrnn.replace_rnns(lstm)
    assert lstm(torch.randn(2, 1, 3)) == "the user's"


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


@pytest.mark.parametrize("keep_type", KEEP_TYPE)
@pytest.mark.parametrize(("backend", "dtype"), backend_params())
@pytest.mark.parametrize("layer_kind", LAYERS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_replace_keeps_what_is_attached_to_the_layer(scenario, layer_kind, backend, dtype, keep_type, fusedrnn_calls):
    expected_log, actual_log = [], []
    expected_model = build(scenario, layer_kind, dtype, expected_log)
    actual_model = build(scenario, layer_kind, dtype, actual_log)
    parameters = dict(actual_model.named_parameters())
    assert fusedrnn.replace_rnns(actual_model, backend=backend, keep_type=keep_type) is actual_model

    layer = the_layer(actual_model)
    torch_cls = parametrize.type_before_parametrizations(the_layer(expected_model))
    assert parametrize.type_before_parametrizations(layer) is expected_class(torch_cls, keep_type)
    assert parametrize.is_parametrized(layer) == parametrize.is_parametrized(the_layer(expected_model))
    assert all(p.device.type == "cpu" for p in actual_model.parameters()), "no weight may stay on the meta device"
    assert dict(actual_model.named_parameters()) == parameters, "the very same parameters, under the same names"

    expected = train(expected_model, layer_kind, dtype)
    assert not fusedrnn_calls
    actual = train(actual_model, layer_kind, dtype)
    assert len(fusedrnn_calls) == STEPS, "the layer ran on fusedrnn at every step"
    for got, want in zip(actual, expected, strict=True):
        assert_all_close(got, want, dtype)
    assert [entry[0] for entry in actual_log] == [entry[0] for entry in expected_log]
    for (tag, got), (_, want) in zip(actual_log, expected_log):
        if isinstance(want, Tensor):
            torch.testing.assert_close(got, want, **TOLERANCES[dtype], msg=lambda m, tag=tag: f"{tag} hook: {m}")
        else:
            assert got == want, tag


@pytest.mark.parametrize("model_kind", ["torch.nn", "fusedrnn", "fusedrnn_type"])
def test_hook_handles_taken_before_the_swap_still_remove_their_hooks(model_kind):
    calls = []
    layer = nn.GRU(INPUT_SIZE, HIDDEN_SIZE)
    handles = [
        layer.register_forward_pre_hook(lambda *args: calls.append("pre")),
        layer.register_forward_hook(lambda *args: calls.append("forward")),
        layer.register_full_backward_hook(lambda *args: calls.append("backward")),
    ]
    if model_kind != "torch.nn":
        fusedrnn.replace_rnns(layer, keep_type=model_kind == "fusedrnn")
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, requires_grad=True)
    layer(x)[0].sum().backward()
    assert calls == ["pre", "forward", "backward"]
    for handle in handles:
        handle.remove()
    layer(x)[0].sum().backward()
    assert calls == ["pre", "forward", "backward"]


# ----------------------------------------------------------------------------------------------------------------
# restore_rnns


@pytest.mark.parametrize("keep_type", KEEP_TYPE)
def test_restore_is_the_inverse_of_replace(keep_type, fusedrnn_calls):
    torch.manual_seed(0)
    model = Tagger().double()
    nn.utils.parametrizations.orthogonal(model.middle[0], "weight_hh_l0")
    x = torch.randn(3, 7, 6, dtype=torch.float64)
    expected = model(x)
    attributes = {name: dict(vars(m)).keys() for name, m in model.named_modules()}

    fusedrnn.restore_rnns(fusedrnn.replace_rnns(model, backend="reference", keep_type=keep_type))
    assert type(model.encoder) is nn.LSTM and type(model.cell) is nn.GRUCell
    assert parametrize.type_before_parametrizations(model.middle[0]) is nn.GRU
    assert parametrize.is_parametrized(model.middle[0], "weight_hh_l0")
    assert {name: dict(vars(m)).keys() for name, m in model.named_modules()} == attributes, "no attribute left behind"
    torch.testing.assert_close(model(x), expected, **TOLERANCES[torch.float64])
    assert not fusedrnn_calls, "restored layers run torch.nn's forward"


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


# ----------------------------------------------------------------------------------------------------------------
# Type identity (issue 24): code that picks layers by their torch.nn class, in either mode of replace_rnns.


class D2LRNNModel(nn.Module):
    """d2l's `RNNModel` ("Concise Implementation of Recurrent Neural Networks"), as d2l writes it: `begin_state`
    picks the form of the state by the layer's class. (d2l casts to float32; here to the model's dtype.)"""

    def __init__(self, rnn_layer: nn.Module, vocab_size: int):
        super().__init__()
        self.rnn = rnn_layer
        self.vocab_size = vocab_size
        self.num_hiddens = self.rnn.hidden_size
        self.num_directions = 2 if self.rnn.bidirectional else 1
        self.linear = nn.Linear(self.num_hiddens * self.num_directions, self.vocab_size)

    def forward(self, inputs, state):
        X = F.one_hot(inputs.T.long(), self.vocab_size).to(self.linear.weight.dtype)
        Y, state = self.rnn(X, state)
        output = self.linear(Y.reshape((-1, Y.shape[-1])))
        return output, state

    def begin_state(self, device, batch_size=1):
        shape = (self.num_directions * self.rnn.num_layers, batch_size, self.num_hiddens)
        dtype = self.linear.weight.dtype
        if not isinstance(self.rnn, nn.LSTM):
            return torch.zeros(shape, device=device, dtype=dtype)
        return torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)


class D2LSeq2SeqEncoder(nn.Module):
    """d2l's `Seq2SeqEncoder` (embedding + GRU), whose training loop `train_seq2seq` re-initialises it by exact
    class (d2l_xavier_init_weights)."""

    def __init__(self, vocab_size, embed_size, num_hiddens, num_layers):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.rnn = nn.GRU(embed_size, num_hiddens, num_layers)
        self.dense = nn.Linear(num_hiddens, vocab_size)

    def forward(self, X):
        output, state = self.rnn(self.embedding(X).permute(1, 0, 2))
        return self.dense(output), state


def d2l_xavier_init_weights(m):
    """d2l's `train_seq2seq` initialisation, verbatim."""
    if type(m) == nn.Linear:  # noqa: E721 - d2l's code
        nn.init.xavier_uniform_(m.weight)
    if type(m) == nn.GRU:  # noqa: E721
        for param in m._flat_weights_names:
            if "weight" in param:
                nn.init.xavier_uniform_(m._parameters[param])


VOCAB, D2L_HIDDEN, D2L_LAYERS, D2L_STEPS, D2L_BATCH = 7, 5, 2, 4, 3


def d2l_tokens(dtype_seed: int = 0) -> Tensor:
    return torch.randint(0, VOCAB, (D2L_BATCH, D2L_STEPS), generator=torch.Generator().manual_seed(dtype_seed))


@pytest.mark.parametrize("keep_type", KEEP_TYPE)
@pytest.mark.parametrize(("backend", "dtype"), backend_params())
def test_d2l_begin_state_by_isinstance(backend, dtype, keep_type, fusedrnn_calls):
    """keep_type: the LSTM gets its (h, c) pair, and training matches torch.nn. fusedrnn's class: begin_state hands
    the LSTM a lone tensor, which fails loudly, with torch.nn's own error for that input."""
    torch.manual_seed(0)
    expected_model = D2LRNNModel(nn.LSTM(VOCAB, D2L_HIDDEN, D2L_LAYERS, dtype=dtype), VOCAB).to(dtype)
    torch.manual_seed(0)
    actual_model = D2LRNNModel(nn.LSTM(VOCAB, D2L_HIDDEN, D2L_LAYERS, dtype=dtype), VOCAB).to(dtype)
    fusedrnn.replace_rnns(actual_model, backend=backend, keep_type=keep_type)
    tokens = d2l_tokens()

    def make_inputs(model):
        return lambda: ((tokens, model.begin_state("cpu", D2L_BATCH)), {})

    if not keep_type:
        with pytest.raises(RuntimeError, match=r"hx and cx should also be 3-D but got \(2-D, 2-D\) tensors"):
            actual_model(*make_inputs(actual_model)()[0])
        return
    expected = forward_backward(expected_model, make_inputs(expected_model))
    actual = forward_backward(actual_model, make_inputs(actual_model))
    assert fusedrnn_calls == ["select_call"]
    assert_all_close(actual, expected, dtype)


@pytest.mark.parametrize("keep_type", KEEP_TYPE)
@pytest.mark.parametrize(("backend", "dtype"), backend_params())
def test_d2l_init_by_exact_type(backend, dtype, keep_type, fusedrnn_calls):
    """keep_type: `type(m) == nn.GRU` re-initialises the replaced GRU, and training matches torch.nn. fusedrnn's
    class: the GRU keeps its default initialisation (the documented cost of that mode: `type(m) ==` cannot be
    intercepted; README, "Type identity")."""
    models = []
    for replace in (False, True):
        torch.manual_seed(0)
        model = D2LSeq2SeqEncoder(VOCAB, 4, D2L_HIDDEN, D2L_LAYERS).to(dtype)
        if replace:
            fusedrnn.replace_rnns(model, backend=backend, keep_type=keep_type)
        torch.manual_seed(1)
        model.apply(d2l_xavier_init_weights)
        models.append(model)
    expected_model, actual_model = models
    same_init = torch.equal(actual_model.rnn.weight_hh_l1, expected_model.rnn.weight_hh_l1)
    assert same_init == keep_type
    if keep_type:
        expected = forward_backward(expected_model, lambda: ((d2l_tokens(),), {}))
        actual = forward_backward(actual_model, lambda: ((d2l_tokens(),), {}))
        assert fusedrnn_calls == ["select_call"]
        assert_all_close(actual, expected, dtype)


class PatternModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(INPUT_SIZE, HIDDEN_SIZE)
        self.head = nn.Linear(HIDDEN_SIZE, 2)

    def forward(self, x):
        return self.head(self.lstm(x)[0])


def sees_torch_nn_class(pattern: str, model: PatternModel, x: Tensor) -> bool:
    """Whether `pattern`, code that picks layers by class, treats model.lstm as torch.nn's LSTM (for the compile
    pattern: whether the model compiles without a graph break); each checks its outcome against torch.nn's."""
    layer = model.lstm
    if pattern == "isinstance":
        return isinstance(layer, nn.LSTM)
    if pattern == "type_eq":
        return type(layer) == nn.LSTM  # noqa: E721 - the pattern measured
    if pattern == "class_name":
        return layer.__class__.__name__ == "LSTM"
    if pattern == "torch_quantize_dynamic":
        quantized = torch.ao.quantization.quantize_dynamic(model.eval(), dtype=torch.qint8)
        if not isinstance(quantized.lstm, torch.ao.nn.quantized.dynamic.LSTM):
            return False
        torch.manual_seed(0)
        reference = torch.ao.quantization.quantize_dynamic(PatternModel().eval(), dtype=torch.qint8)
        torch.testing.assert_close(quantized(x), reference(x), **TOLERANCES[torch.float32])
        return True
    if pattern == "compile_fullgraph":
        torch._dynamo.reset()
        try:
            compiled = torch.compile(model, fullgraph=True, backend="eager")(x)
        except torch._dynamo.exc.Unsupported:
            return False
        torch.testing.assert_close(compiled, model(x), **TOLERANCES[torch.float32])
        return True
    raise AssertionError(pattern)


#: pattern -> (outcome with keep_type=True, with keep_type=False): what the README's table reports.
TYPE_PATTERNS = {
    "isinstance": (True, False),
    "type_eq": (True, False),
    "class_name": (True, True),
    "torch_quantize_dynamic": (True, False),
    "compile_fullgraph": (False, True),
}


@pytest.mark.parametrize("keep_type", KEEP_TYPE)
@pytest.mark.parametrize("pattern", TYPE_PATTERNS)
def test_type_identity_patterns(pattern, keep_type):
    torch.manual_seed(0)
    model = fusedrnn.replace_rnns(PatternModel(), keep_type=keep_type)
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE)
    assert sees_torch_nn_class(pattern, model, x) == TYPE_PATTERNS[pattern][0 if keep_type else 1]


def test_routed_layers_survive_deepcopy_pickle_and_weights_only_load(tmp_path, fusedrnn_calls):
    torch.manual_seed(0)
    model = fusedrnn.replace_rnns(Tagger().double(), backend="reference")
    x = torch.randn(3, 7, 6, dtype=torch.float64)
    expected = model(x)
    torch.save(model, tmp_path / "model.pt")
    with torch.serialization.safe_globals([Tagger, nn.LSTM, nn.GRU, nn.RNN, nn.GRUCell, nn.Linear, nn.Sequential,
                                           nn.Identity]):  # fmt: skip
        loaded = torch.load(tmp_path / "model.pt")
    for copied in (copy.deepcopy(model), loaded):
        layers = [copied.encoder, copied.middle[0], copied.rnn, copied.cell]
        assert all(fusedrnn.replace.is_routed(m) and m.forward.module is m for m in layers), "routed to itself"
        del fusedrnn_calls[:]
        torch.testing.assert_close(copied(x), expected, rtol=0, atol=0)
        assert len(fusedrnn_calls) == 4


@pytest.mark.parametrize("cls", [nn.LSTMCell, nn.GRUCell, nn.LSTM], ids=["lstm_cell", "gru_cell", "lstm"])
def test_routed_layer_follows_a_parametrization_registered_after_its_first_call(cls, fusedrnn_calls):
    """The routed forward reuses its view of the layer while the layer's class is unchanged (issue 24: per-call
    cost); registering a parametrization changes the class, a second one adds to it, and the next call must see
    each."""
    torch.manual_seed(0)
    reference = cls(INPUT_SIZE, HIDDEN_SIZE).double()
    layer = copy.deepcopy(reference)
    fusedrnn.replace_rnns(layer, backend="reference")
    x = torch.randn(BATCH, INPUT_SIZE, dtype=torch.float64)
    if cls is nn.LSTM:
        x = x.unsqueeze(0)
    suffix = "_l0" if cls is nn.LSTM else ""
    torch.testing.assert_close(layer(x), reference(x), rtol=0, atol=1e-12)  # the view is built here
    # The first parametrization changes the layer's class; a second one adds to that class, after the routed
    # forward made its twin of it.
    for attach, name in ((parametrizations.orthogonal, "weight_hh"), (parametrizations.weight_norm, "weight_ih")):
        for module in (reference, layer):
            attach(module, name + suffix)
        del fusedrnn_calls[:]
        torch.testing.assert_close(layer(x), reference(x), rtol=0, atol=1e-12)
        assert len(fusedrnn_calls) == 1, "still routed to fusedrnn"
    assert isinstance(layer, cls) and parametrize.is_parametrized(layer, "weight_ih" + suffix)
