"""Export: torch.onnx.export (TorchScript-based and dynamo=True), torch.jit.trace and torch.export.export of fusedrnn
layers give what the same torch.nn layers give.

While a graph is recorded every fusedrnn layer runs on the `torch` backend (registry.EXPORT_BACKEND), so the graphs
hold torch's own RNN ops: ONNX gets its standard LSTM/GRU/RNN nodes where torch.nn's export gets them. The full grid
of layers runs under `auto`; every backend forced by name runs on one layer (GRU, which `auto` sends to the C++
backend on CPU). The ONNX tests need the `export` extra (onnx, onnxruntime, onnxscript) and skip without it.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import re
import warnings

import pytest
import torch
from cpu_backends import backend_params
from devices import needs_cuda
from parity import TOLERANCES, output_tensors
from torch import nn

import fusedrnn
from fusedrnn import registry
from fusedrnn.replace import TWINS

INPUT_SIZE, HIDDEN_SIZE = 4, 6
EXAMPLE_SEQ, EXAMPLE_BATCH = 5, 3
OTHER_SEQ, OTHER_BATCH = 7, 2  # a second input of other sizes: the graph must not be specialised to the example
RECURRENT_ONNX_OPS = {"LSTM", "GRU", "RNN"}
ONNX_EXTRA = "onnx export needs the `export` extra: pip install 'fusedrnn[export]'"

#: (id, torch.nn class, constructor arguments besides the sizes)
LAYERS = [
    ("lstm_2layers_bidir_batch_first", nn.LSTM, {"num_layers": 2, "bidirectional": True, "batch_first": True}),
    ("lstm_proj", nn.LSTM, {"proj_size": 3}),
    ("gru", nn.GRU, {}),
    ("rnn_relu", nn.RNN, {"nonlinearity": "relu"}),
    ("lstm_cell", nn.LSTMCell, {}),
    ("gru_cell", nn.GRUCell, {}),
    ("rnn_cell", nn.RNNCell, {}),
]
GRU_LAYER = LAYERS[2]
#: (layer, backend, dtype): every layer under `auto`, every backend forced on the GRU.
GRID = [pytest.param(layer, "auto", torch.float32, id=f"{layer[0]}-auto") for layer in LAYERS] + [
    pytest.param(GRU_LAYER, *p.values, id=f"{GRU_LAYER[0]}-{p.id}", marks=p.marks)
    for p in backend_params(float32_only=True)
    if p.id != registry.AUTO
]


def make_pair(layer, backend: str, dtype=torch.float32) -> tuple[nn.Module, nn.Module]:
    """(torch.nn layer, fusedrnn twin) with the same weights, in eval mode."""
    _, torch_cls, kwargs = layer
    torch.manual_seed(0)
    expected = torch_cls(INPUT_SIZE, HIDDEN_SIZE, **kwargs, dtype=dtype).eval()
    actual = TWINS[torch_cls](INPUT_SIZE, HIDDEN_SIZE, **kwargs, dtype=dtype, backend=backend).eval()
    actual.load_state_dict(expected.state_dict())
    return expected, actual


def is_cell(module: nn.Module) -> bool:
    return isinstance(module, nn.RNNCellBase)


def make_input(module: nn.Module, seq_len: int, batch: int, dtype=torch.float32, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if is_cell(module):
        shape = (batch, INPUT_SIZE)
    elif module.batch_first:
        shape = (batch, seq_len, INPUT_SIZE)
    else:
        shape = (seq_len, batch, INPUT_SIZE)
    return torch.randn(shape, generator=generator, dtype=dtype)


def dynamic_axes(module: nn.Module, dynamo: bool) -> dict[int, str]:
    """Batch and sequence axes. The dynamo exporter gets a dynamic batch only: in torch 2.14 its second export of
    a dynamic-length LSTM in one process fails, torch.nn's as well (its while_loop decomposition patch)."""
    if is_cell(module):
        return {0: "batch"}
    batch, seq = (0, 1) if module.batch_first else (1, 0)
    return {batch: "batch"} if dynamo else {batch: "batch", seq: "seq"}


def outcome(function):
    """("ok", result) or ("raised", exception type): two runs of a scenario must end the same way."""
    try:
        return "ok", function()
    except Exception as error:  # noqa: BLE001 - the type is the outcome compared
        return "raised", type(error)


# ----------------------------------------------------------------------------------------------------------------
# ONNX


def onnx_model(module: nn.Module, example: tuple, names: list[str], axes: dict, dynamo: bool):
    """Export with the given dynamic axes per input name; the ONNX ModelProto."""
    import onnx

    kwargs = {"input_names": names, "dynamic_axes": axes}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' advice (e.g. about batch_first and dynamic axes)
        if dynamo:
            return torch.onnx.export(module, example, dynamo=True, verbose=False, **kwargs).model_proto
        buffer = io.BytesIO()
        torch.onnx.export(module, example, buffer, dynamo=False, **kwargs)
        return onnx.load_from_string(buffer.getvalue())


def onnx_run(module: nn.Module, inputs: list[tuple], names: list[str], axes: dict, dynamo: bool):
    """Export (example: inputs[0]), check and run every input in ONNX Runtime: (op types, outputs per input)."""
    import onnx
    import onnxruntime

    model = onnx_model(module, inputs[0], names, axes, dynamo)
    onnx.checker.check_model(model)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    op_types = {node.op_type for node in model.graph.node}
    feeds = [dict(zip(names, (t.numpy() for t in output_tensors(args)), strict=True)) for args in inputs]
    return op_types, [session.run(None, feed) for feed in feeds]


#: torch.nn's ONNX outcome per (layer id, dynamo): the same for every backend's row of the grid, so run once.
_TORCH_NN_ONNX: dict[tuple[str, bool], tuple] = {}


def check_onnx_like_torch_nn(expected_module, actual_module, inputs, names, axes, dynamo, dtype, key=None) -> None:
    """Both modules through export and ONNX Runtime: the same outcome, the same outputs (and ours as in eager).
    With a `key`, torch.nn's outcome is computed once per key and exporter."""
    for module in ("onnx", "onnxruntime", *(["onnxscript"] if dynamo else [])):
        pytest.importorskip(module, reason=ONNX_EXTRA)
    expected = _TORCH_NN_ONNX.get((key, dynamo)) if key else None
    if expected is None:
        expected = outcome(lambda: onnx_run(expected_module, inputs, names, axes, dynamo))
        if key:
            _TORCH_NN_ONNX[(key, dynamo)] = expected
    actual = outcome(lambda: onnx_run(actual_module, inputs, names, axes, dynamo))
    # Where torch.nn's export fails, ours fails the same way: the TorchScript exporter has no LSTM with projections,
    # and torch 2.14's dynamo exporter writes it as an ONNX LSTM node that ONNX Runtime rejects.
    assert actual[0] == expected[0], f"torch.nn: {expected}, fusedrnn: {actual}"
    if expected[0] == "raised":
        assert actual[1] is expected[1]
        return
    (expected_ops, expected_outputs), (actual_ops, actual_outputs) = expected[1], actual[1]
    # Standard nodes wherever torch.nn's export has them; cells get them too (torch.nn writes its cells as Gemms).
    assert expected_ops & RECURRENT_ONNX_OPS <= actual_ops & RECURRENT_ONNX_OPS
    # (torch's dynamo exporter has no ONNX RNN translation: it unrolls Elman RNNs, torch.nn's as well.)
    elman = [m for m in actual_module.modules() if getattr(m, "mode", "").startswith("RNN_")]
    assert actual_ops & RECURRENT_ONNX_OPS or (dynamo and elman)

    for args, want, got in zip(inputs, expected_outputs, actual_outputs, strict=True):
        eager = output_tensors(actual_module(*args))
        for index, (w, g, e) in enumerate(zip(want, got, eager, strict=True)):
            message = lambda m, i=index, shape=tuple(args[0].shape): f"output {i}, input {shape}: {m}"  # noqa: E731
            torch.testing.assert_close(torch.from_numpy(g), torch.from_numpy(w), **TOLERANCES[dtype], msg=message)
            torch.testing.assert_close(torch.from_numpy(g), e.detach(), **TOLERANCES[dtype], msg=message)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize(("layer", "backend", "dtype"), GRID)
def test_onnx_export_runs_in_onnxruntime_like_torch_nn_export(layer, backend, dtype, dynamo):
    expected_module, actual_module = make_pair(layer, backend, dtype)
    example = make_input(expected_module, EXAMPLE_SEQ, EXAMPLE_BATCH)
    other = make_input(expected_module, EXAMPLE_SEQ if dynamo else OTHER_SEQ, OTHER_BATCH, seed=2)
    axes = {"x": dynamic_axes(expected_module, dynamo)}
    inputs = [(example,), (other,)]
    check_onnx_like_torch_nn(expected_module, actual_module, inputs, ["x"], axes, dynamo, dtype, key=layer[0])


class Encoder(nn.Module):
    """A model that carries its recurrent state between calls (streaming): states in, states out."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2)
        self.head = nn.Linear(HIDDEN_SIZE, 2)

    def forward(self, x, state):
        y, state = self.lstm(x, state)
        return self.head(y), state


def encoder_pair(keep_type: bool) -> tuple[nn.Module, nn.Module]:
    """(torch.nn Encoder, the same model after replace_rnns in that mode), in eval mode."""
    torch.manual_seed(0)
    expected = Encoder().eval()
    return expected, fusedrnn.replace_rnns(copy.deepcopy(expected), keep_type=keep_type)


#: replace_rnns' two modes, as test ids.
KEEP_TYPE = [pytest.param(True, id="keep_type"), pytest.param(False, id="fusedrnn_type")]


def encoder_args(batch: int, seed: int) -> tuple:
    """(x [T, N, I], (h0, c0) [layers, N, H])."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(EXAMPLE_SEQ, batch, INPUT_SIZE, generator=generator)
    return x, tuple(torch.randn(2, batch, HIDDEN_SIZE, generator=generator) for _ in range(2))


@pytest.mark.parametrize("keep_type", KEEP_TYPE)
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_onnx_export_of_a_replaced_model_with_states_in_and_out(dynamo, keep_type):
    expected_module, actual_module = encoder_pair(keep_type)
    names = ["x", "h0", "c0"]
    axes = {"x": {1: "batch"}, "h0": {1: "batch"}, "c0": {1: "batch"}}
    inputs = [encoder_args(EXAMPLE_BATCH, seed=1), encoder_args(OTHER_BATCH, seed=2)]
    check_onnx_like_torch_nn(expected_module, actual_module, inputs, names, axes, dynamo, torch.float32)


# ----------------------------------------------------------------------------------------------------------------
# torch.jit.trace and torch.export.export (any dtype: float64 where the backend serves it)

TRACE_GRID = [pytest.param(layer, "auto", torch.float64, id=f"{layer[0]}-auto") for layer in LAYERS] + [
    pytest.param(GRU_LAYER, *p.values, id=f"{GRU_LAYER[0]}-{p.id}", marks=p.marks)
    for p in backend_params()
    if p.id != registry.AUTO
]


def recurrent_aten_ops(graph_text: str) -> set[str]:
    """torch's sequence RNN ops in a TorchScript graph (aten::lstm) or an exported program (aten.lstm.input)."""
    return set(re.findall(r"aten(?:::|\.)(lstm|gru|rnn_tanh|rnn_relu)\b", graph_text))


def assert_records_torch_rnn_ops(actual_graph, expected_graph) -> None:
    """Our graph holds torch's RNN op wherever torch.nn's does, and for cells too (torch.nn's cells record
    aten::lstm_cell & co.)."""
    actual, expected = recurrent_aten_ops(str(actual_graph)), recurrent_aten_ops(str(expected_graph))
    assert actual and expected <= actual, f"fusedrnn's graph holds {actual}, torch.nn's {expected}"


@pytest.mark.parametrize(("layer", "backend", "dtype"), TRACE_GRID)
def test_jit_trace_runs_like_torch_nn_trace(layer, backend, dtype):
    expected_module, actual_module = make_pair(layer, backend, dtype)
    example = make_input(expected_module, EXAMPLE_SEQ, EXAMPLE_BATCH, dtype)
    other = make_input(expected_module, OTHER_SEQ, OTHER_BATCH, dtype, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        expected_trace = torch.jit.trace(expected_module, (example,))  # check_trace (the default) runs it twice
        actual_trace = torch.jit.trace(actual_module, (example,))
    assert_records_torch_rnn_ops(actual_trace.inlined_graph, expected_trace.inlined_graph)

    buffer = io.BytesIO()
    torch.jit.save(actual_trace, buffer)  # a TorchScript file that loads without fusedrnn's ops
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    for x in (example, other):
        want = output_tensors(expected_trace(x))
        for got in (output_tensors(actual_trace(x)), output_tensors(loaded(x)), output_tensors(actual_module(x))):
            for g, w in zip(got, want, strict=True):
                torch.testing.assert_close(g, w, **TOLERANCES[dtype])


@pytest.mark.parametrize(("layer", "backend", "dtype"), TRACE_GRID)
def test_torch_export_runs_like_torch_nn_export(layer, backend, dtype):
    expected_module, actual_module = make_pair(layer, backend, dtype)
    example = make_input(expected_module, EXAMPLE_SEQ, EXAMPLE_BATCH, dtype)
    # A dynamic batch; a dynamic sequence length fails for torch.nn's layers too (torch's RNN decompositions unroll).
    (batch_axis,) = dynamic_axes(expected_module, dynamo=True)
    dynamic_shapes = ({batch_axis: torch.export.Dim.DYNAMIC},)
    expected_program = torch.export.export(expected_module, (example,), dynamic_shapes=dynamic_shapes)
    actual_program = torch.export.export(actual_module, (example,), dynamic_shapes=dynamic_shapes)
    assert_records_torch_rnn_ops(actual_program.graph, expected_program.graph)

    x = make_input(expected_module, EXAMPLE_SEQ, OTHER_BATCH, dtype, seed=3)
    want = output_tensors(expected_module(x))
    for got in (output_tensors(actual_program.module()(x)), output_tensors(actual_module(x))):
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, **TOLERANCES[dtype])


@pytest.mark.parametrize("keep_type", KEEP_TYPE)
def test_jit_trace_and_torch_export_of_a_replaced_model_with_states_in_and_out(keep_type):
    expected_module, actual_module = encoder_pair(keep_type)
    example, other = encoder_args(EXAMPLE_BATCH, seed=1), encoder_args(EXAMPLE_BATCH, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        expected_trace, actual_trace = (torch.jit.trace(m, example) for m in (expected_module, actual_module))
    actual_program = torch.export.export(actual_module, example)
    assert_records_torch_rnn_ops(actual_trace.inlined_graph, expected_trace.inlined_graph)
    want = output_tensors(expected_module(*other))
    for got in (output_tensors(actual_trace(*other)), output_tensors(actual_program.module()(*other))):
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, **TOLERANCES[torch.float32])


def test_eager_runs_resume_the_requested_backend_after_an_export():
    _, module = make_pair(GRU_LAYER, "reference", torch.float64)
    x = make_input(module, EXAMPLE_SEQ, EXAMPLE_BATCH, torch.float64)
    torch.export.export(module, (x,))
    call = registry.RNNCall(mode="GRU", device_type="cpu", dtype=torch.float64, input_size=1, hidden_size=1)
    assert not registry.recording_graph()
    assert registry.select("reference", call).name == "reference"


def test_a_recorded_cuda_graph_keeps_what_backward_needs_whatever_the_grad_mode(monkeypatch):
    """cuDNN's `train` flag decides whether backward can run; a trace must not bake in the grad mode of the
    recording (jit.trace checks its trace again under no_grad)."""
    from fusedrnn.backends.torch_native import aten_train_flag

    call = registry.RNNCall(mode="LSTM", device_type="cuda", dtype=torch.float32, input_size=1, hidden_size=1)
    assert not aten_train_flag(call, 0.0)
    monkeypatch.setattr(registry, "recording_graph", lambda: True)
    assert aten_train_flag(call, 0.0)
    assert not aten_train_flag(dataclasses.replace(call, device_type="cpu"), 0.0)


@needs_cuda
@pytest.mark.parametrize("layer", LAYERS, ids=[layer[0] for layer in LAYERS])
def test_jit_trace_on_cuda_runs_like_torch_nn_trace(layer):
    expected_module, actual_module = (m.cuda() for m in make_pair(layer, "auto"))
    example = make_input(expected_module, EXAMPLE_SEQ, EXAMPLE_BATCH).cuda()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        expected_trace = torch.jit.trace(expected_module, (example,))
        actual_trace = torch.jit.trace(actual_module, (example,))
    assert_records_torch_rnn_ops(actual_trace.inlined_graph, expected_trace.inlined_graph)
    for got, want in zip(output_tensors(actual_trace(example)), output_tensors(expected_trace(example)), strict=True):
        torch.testing.assert_close(got, want, **TOLERANCES[torch.float32])
