"""fusedrnn.LSTM / GRU / RNN against torch.nn in float64: every output and every gradient, over a grid of options.

Backends tested here are the two that always exist (`reference`, `torch`); the fused backends have their own files
and reuse `CASES` and `check_case` from here.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
from devices import DEVICE
from parity import assert_all_close, forward_backward, leaf

INPUT_SIZE, HIDDEN_SIZE, PROJ_SIZE = 5, 7, 3  # odd on purpose: no size is a multiple of a vector width

#: (id, fusedrnn class, torch.nn class, extra constructor arguments)
CELLS = [
    ("lstm", fusedrnn.LSTM, nn.LSTM, {}),
    ("lstm_proj", fusedrnn.LSTM, nn.LSTM, {"proj_size": PROJ_SIZE}),
    ("gru", fusedrnn.GRU, nn.GRU, {}),
    ("rnn_tanh", fusedrnn.RNN, nn.RNN, {"nonlinearity": "tanh"}),
    ("rnn_relu", fusedrnn.RNN, nn.RNN, {"nonlinearity": "relu"}),
]


@dataclasses.dataclass(frozen=True)
class Case:
    seq_len: int = 6
    batch: int = 3
    num_layers: int = 1
    bidirectional: bool = False
    bias: bool = True
    batch_first: bool = False
    unbatched: bool = False
    packed: bool = False
    with_state: bool = False
    dropout: float = 0.0  # modules run in eval mode here: dropout must then have no effect


CASES = {
    "T1_N1": Case(seq_len=1, batch=1),
    "T7_N3": Case(seq_len=7, batch=3),
    "no_bias": Case(bias=False, with_state=True),
    "states_given": Case(with_state=True),
    "3layers_bidir": Case(num_layers=3, bidirectional=True, with_state=True),
    "2layers_dropout_eval": Case(num_layers=2, dropout=0.5),
    "batch_first": Case(batch_first=True, with_state=True),
    "unbatched": Case(unbatched=True, with_state=True),
    "unbatched_no_state": Case(unbatched=True),
    "packed_unsorted": Case(seq_len=5, batch=4, packed=True),
    "packed_bidir_states": Case(seq_len=5, batch=4, packed=True, bidirectional=True, num_layers=2, with_state=True),
}
PACKED_LENGTHS = [3, 5, 1, 4]  # unsorted, one full-length row, one of length 1


def make_pair(cell: tuple, case: Case, dtype=torch.float64, device="cpu", backend="reference"):
    """A torch.nn module and its fusedrnn twin with identical weights, both in eval mode."""
    _, fused_cls, torch_cls, extra = cell
    kwargs = dict(
        input_size=INPUT_SIZE,
        hidden_size=HIDDEN_SIZE,
        num_layers=case.num_layers,
        bias=case.bias,
        batch_first=case.batch_first,
        dropout=case.dropout,
        bidirectional=case.bidirectional,
        dtype=dtype,
        device=device,
        **extra,
    )
    torch.manual_seed(0)
    expected = torch_cls(**kwargs).eval()
    actual = fused_cls(**kwargs, backend=backend).eval()
    actual.load_state_dict(expected.state_dict())
    return actual, expected


def input_maker(module: nn.RNNBase, case: Case, dtype=torch.float64, device="cpu"):
    """A `make_inputs` for parity.forward_backward: fresh leaves of the same random values on each call."""
    generator = torch.Generator().manual_seed(1)
    randn = lambda *shape: torch.randn(*shape, generator=generator, dtype=torch.float64).to(device, dtype)  # noqa: E731
    T, N = case.seq_len, case.batch
    x = randn(T, module.input_size) if case.unbatched else randn(*((N, T) if case.batch_first else (T, N)),
                                                                  module.input_size)  # fmt: skip
    states = module.num_layers * (2 if module.bidirectional else 1)
    state_batch = () if case.unbatched else (N,)
    h0 = randn(states, *state_batch, module.proj_size or module.hidden_size)
    c0 = randn(states, *state_batch, module.hidden_size)

    def make_inputs():
        leaves = {"input": leaf(x)}
        if case.with_state:
            leaves["h0"] = leaf(h0)
            if module.mode == "LSTM":
                leaves["c0"] = leaf(c0)
        data = leaves["input"]
        if case.packed:
            data = pack_padded_sequence(data, torch.tensor(PACKED_LENGTHS), batch_first=case.batch_first,
                                        enforce_sorted=False)  # fmt: skip
        hx = None
        if case.with_state:
            hx = (leaves["h0"], leaves["c0"]) if module.mode == "LSTM" else leaves["h0"]
        return (data, hx), leaves

    return make_inputs


def check_case(cell, case: Case, backend: str, dtype=torch.float64, device="cpu", tolerance_dtype=None):
    """Compare a fusedrnn module on `backend` with torch.nn: all outputs, all gradients."""
    actual, expected = make_pair(cell, case, dtype, device, backend)
    make_inputs = input_maker(expected, case, dtype, device)
    assert_all_close(
        forward_backward(actual, make_inputs), forward_backward(expected, make_inputs), tolerance_dtype or dtype
    )


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("cell", CELLS, ids=[c[0] for c in CELLS])
def test_matches_torch_nn_float64(cell, case, backend):
    check_case(cell, case, backend)


@pytest.mark.parametrize("cell", CELLS, ids=[c[0] for c in CELLS])
def test_float64_parity_is_tight(cell):
    """Guard against a loose tolerance table: the reference agrees with torch.nn to rounding, not to 1e-4."""
    actual, expected = make_pair(cell, CASES["3layers_bidir"])
    make_inputs = input_maker(expected, CASES["3layers_bidir"])
    a, e = forward_backward(actual, make_inputs), forward_backward(expected, make_inputs)
    worst = max((a[k] - e[k]).abs().max().item() for k in e if e[k] is not None)
    assert worst < 1e-12


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("cell", CELLS, ids=[c[0] for c in CELLS])
def test_train_mode_dropout_draws_torch_nn_mask(cell, backend):
    """In training, dropout between layers uses the same RNG draws as torch.nn: seeded runs agree exactly."""
    case = Case(num_layers=3, bidirectional=True, dropout=0.4, with_state=True)
    actual, expected = make_pair(cell, case, backend=backend)
    actual.train(), expected.train()
    x = torch.randn(case.seq_len, case.batch, INPUT_SIZE, dtype=torch.float64)
    results = []
    for module in (actual, expected):
        torch.manual_seed(123)
        results.append(module(x)[0])
    torch.testing.assert_close(results[0], results[1], rtol=1e-9, atol=1e-10)
    torch.manual_seed(123)
    assert not torch.allclose(actual.eval()(x)[0], results[0]), "dropout had no effect in training mode"


@pytest.mark.parametrize("cell", CELLS, ids=[c[0] for c in CELLS])
def test_train_mode_dropout_one_zeroes_deeper_layers(cell):
    """dropout=1 zeroes the input of every layer but the first, so the output no longer depends on x."""
    case = Case(num_layers=2, dropout=1.0)
    actual, _ = make_pair(cell, case)
    actual.train()
    x = torch.randn(case.seq_len, case.batch, INPUT_SIZE, dtype=torch.float64)
    torch.testing.assert_close(actual(x)[0], actual(x * 3 + 1)[0], rtol=0, atol=0)


def test_packed_output_keeps_sorting_indices():
    lstm = fusedrnn.LSTM(INPUT_SIZE, HIDDEN_SIZE, dtype=torch.float64, backend="reference")
    x = torch.randn(5, 4, INPUT_SIZE, dtype=torch.float64)
    packed = pack_padded_sequence(x, torch.tensor(PACKED_LENGTHS), enforce_sorted=False)
    output, (h_n, c_n) = lstm(packed)
    assert torch.equal(output.batch_sizes, packed.batch_sizes)
    assert torch.equal(output.sorted_indices, packed.sorted_indices)
    assert torch.equal(output.unsorted_indices, packed.unsorted_indices)
    assert h_n.shape == c_n.shape == (1, 4, HIDDEN_SIZE)


@pytest.mark.parametrize("cell", CELLS, ids=[c[0] for c in CELLS])
def test_state_dict_loads_both_ways(cell):
    _, fused_cls, torch_cls, extra = cell
    kwargs = dict(input_size=4, hidden_size=6, num_layers=2, bidirectional=True, **extra)
    torch_module, fused_module = torch_cls(**kwargs), fused_cls(**kwargs)
    assert list(torch_module.state_dict()) == list(fused_module.state_dict())
    assert [p.shape for p in torch_module.parameters()] == [p.shape for p in fused_module.parameters()]
    fused_module.load_state_dict(torch_module.state_dict())
    torch_module.load_state_dict(fused_module.state_dict())
    for (name, a), (_, b) in zip(torch_module.state_dict().items(), fused_module.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("cell", CELLS, ids=[c[0] for c in CELLS])
def test_initialisation_matches_torch_nn(cell):
    """Same RNG draws in the same order: a seeded fusedrnn module starts from torch.nn's weights."""
    _, fused_cls, torch_cls, extra = cell
    torch.manual_seed(7)
    expected = torch_cls(3, 8, 2, **extra).state_dict()
    torch.manual_seed(7)
    actual = fused_cls(3, 8, 2, **extra).state_dict()
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name


def test_repr_mentions_a_forced_backend():
    assert "backend='reference'" in repr(fusedrnn.GRU(3, 4, backend="reference"))
    assert repr(fusedrnn.GRU(3, 4)) == "GRU(3, 4)"


def test_rnn_nonlinearity_is_fourth_positional():
    rnn = fusedrnn.RNN(3, 4, 2, "relu", False)
    assert rnn.mode == "RNN_RELU" and rnn.bias is False and rnn.num_layers == 2


@pytest.mark.gpu
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_torch_backend_keeps_what_backward_needs_without_dropout(training, monkeypatch):
    """ATen's `train` flag is what lets cuDNN run a backward ("cudnn RNN backward can only be called in training
    mode"): on CUDA the `torch` backend must set it whenever autograd is on, without dropout and in eval mode too,
    and only then; on CPU only dropout sets it. The flag is observed at the call; on CUDA the backward runs."""
    from fusedrnn.backends import torch_native

    flags = []
    gru = torch_native._FUNCTIONS["GRU"]
    monkeypatch.setitem(torch_native._FUNCTIONS, "GRU", lambda *args: (flags.append(args[6]), gru(*args))[1])
    device = DEVICE
    module = fusedrnn.GRU(INPUT_SIZE, HIDDEN_SIZE, 2, device=device, backend="torch").train(training)
    x = torch.randn(4, 3, INPUT_SIZE, device=device, requires_grad=True)
    module(x)[0].sum().backward()
    assert x.grad is not None
    with torch.no_grad():
        module(x)
    assert flags == ([True, False] if device == "cuda" else [False, False])


def test_aten_train_flag():
    from fusedrnn.backends.torch_native import aten_train_flag
    from fusedrnn.registry import RNNCall

    cuda = RNNCall(mode="GRU", device_type="cuda", dtype=torch.float32, input_size=2, hidden_size=3, needs_grad=True)
    cpu = dataclasses.replace(cuda, device_type="cpu")
    assert aten_train_flag(cuda, 0.0) and not aten_train_flag(dataclasses.replace(cuda, needs_grad=False), 0.0)
    assert not aten_train_flag(cpu, 0.0) and aten_train_flag(cpu, 0.5)
