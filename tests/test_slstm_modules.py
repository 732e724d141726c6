"""fusedrnn.sLSTM / sLSTMCell (torch.nn's contract around the sLSTM oracle), their errors and refusals, and
replace_slstm / restore_slstm against xlstm's own sLSTMLayer (the `xlstm` extra; skipped without it)."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fusedrnn
from fusedrnn import registry
from fusedrnn.reference_slstm import SLSTMState, slstm_layer
from parity import TOLERANCES, assert_all_close, forward_backward

T, N, I, H, K = 3, 3, 3, 4, 2
LENGTHS = torch.tensor([3, 2, 1])


def random_state(L, D, dtype=torch.float64, seed=1, unbatched=False):
    g = torch.Generator().manual_seed(seed)
    shape = (L * D, H) if unbatched else (L * D, N, H)
    h, c, m = (torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype) for _ in range(3))
    n = (torch.rand(*shape, generator=g, dtype=torch.float64) + 0.5).to(dtype)
    return h, c, n, m


def expected_stack(module, x, state, lengths=None):
    """The module's forward composed by hand from the oracle (no dropout): layer by layer, direction by direction."""
    D = 2 if module.bidirectional else 1
    finals, layer_input = [], x
    for layer in range(module.num_layers):
        outputs = []
        for direction in range(D):
            suffix = f"_l{layer}{'_reverse' if direction else ''}"
            weights = [getattr(module, f"{name}{suffix}", None) for name in ("weight_ih", "weight_hh", "bias_ih",
                                                                              "bias_hh")]  # fmt: skip
            k = layer * D + direction
            initial = None if state is None else SLSTMState(*(s[k] for s in state))
            y, final = slstm_layer(layer_input, initial, *weights, direction == 1, lengths,
                                   formulation=module.formulation)  # fmt: skip
            outputs.append(y)
            finals.append(final)
        layer_input = torch.cat(outputs, dim=-1)
    return layer_input, tuple(torch.stack(parts) for parts in zip(*finals))


CASES = {
    "one_layer": dict(),
    "stacked_bidirectional": dict(num_layers=2, bidirectional=True),
    "heads_tirex_state": dict(num_heads=K, formulation="tirex", state=True),
    "batch_first_no_bias": dict(batch_first=True, bias=False, num_heads=K),
    "packed_bidirectional_state": dict(packed=True, bidirectional=True, state=True, num_heads=K),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_module_matches_the_oracle(case):
    case = dict(case)
    packed, with_state = case.pop("packed", False), case.pop("state", False)
    torch.manual_seed(0)
    module = fusedrnn.sLSTM(I, H, dtype=torch.float64, **case)
    D = 2 if module.bidirectional else 1

    def make_inputs():
        x = torch.randn(T, N, I, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
        state = tuple(s.requires_grad_() for s in random_state(module.num_layers, D)) if with_state else None
        leaves = {"x": x, **({} if state is None else dict(zip(SLSTMState._fields, state)))}
        inp = x.transpose(0, 1) if module.batch_first else x
        if packed:
            inp = pack_padded_sequence(x, LENGTHS)
        return ((inp,) if state is None else (inp, state)), leaves

    actual = forward_backward(module, make_inputs)

    class Oracle(torch.nn.Module):  # the same parameters, the hand-composed forward
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, inp, state=None):
            if packed:
                x, lengths = pad_packed_sequence(inp)
                y, final = expected_stack(module, x, state, lengths)
                return pack_padded_sequence(y, lengths), final
            x = inp.transpose(0, 1) if module.batch_first else inp
            y, final = expected_stack(module, x, state)
            return (y.transpose(0, 1) if module.batch_first else y), final

    expected = forward_backward(Oracle(), make_inputs)
    expected = {key.replace("inner.", ""): value for key, value in expected.items()}
    assert_all_close(actual, expected, torch.float64)


def test_unbatched_and_cell_agree_with_the_module():
    torch.manual_seed(0)
    module = fusedrnn.sLSTM(I, H, num_heads=K, dtype=torch.float64)
    cell = fusedrnn.sLSTMCell(I, H, num_heads=K, dtype=torch.float64)
    cell.load_state_dict({name.removesuffix("_l0"): p for name, p in module.state_dict().items()})
    x = torch.randn(T, I, dtype=torch.float64)
    state = random_state(1, 1, unbatched=True)
    y, final = module(x, state)
    step = tuple(s[0] for s in state)
    for t in range(T):
        step = cell(x[t], step)
        torch.testing.assert_close(y[t], step[0], **TOLERANCES[torch.float64])
    for got, want in zip(final, step):
        torch.testing.assert_close(got[0], want, **TOLERANCES[torch.float64])


def test_parameters_and_repr():
    module = fusedrnn.sLSTM(I, H, num_layers=2, bidirectional=True, num_heads=K)
    shapes = {name: tuple(p.shape) for name, p in module.named_parameters()}
    assert list(shapes)[:4] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    assert shapes["weight_hh_l1_reverse"] == (K, 4 * H // K, H // K)
    assert shapes["weight_ih_l1"] == (4 * H, 2 * H)
    assert repr(module) == "sLSTM(3, 4, num_layers=2, bidirectional=True, num_heads=2)"
    assert "formulation='tirex'" in repr(fusedrnn.sLSTMCell(I, H, formulation="tirex"))
    clone = pickle.loads(pickle.dumps(module))
    assert all(torch.equal(a, b) for a, b in zip(clone.parameters(), module.parameters()))


ERRORS = {
    "heads_not_dividing": (dict(num_heads=3), ValueError, "divisible by num_heads"),
    "heads_zero": (dict(num_heads=0), ValueError, "num_heads must be greater than zero"),
    "heads_float": (dict(num_heads=2.0), TypeError, "num_heads should be of type int"),
    "formulation": (dict(formulation="flashrnn"), ValueError, "formulation should be one of"),
    "dropout": (dict(dropout=1.5), ValueError, "dropout should be a number in range"),
    "hidden_float": (dict(hidden_size=4.0), TypeError, "hidden_size should be of type int"),
    "backend": (dict(backend="nope"), ValueError, "unknown fusedrnn backend"),
}


@pytest.mark.parametrize("kwargs, error, text", ERRORS.values(), ids=ERRORS.keys())
def test_constructor_errors(kwargs, error, text):
    kwargs = {"input_size": I, "hidden_size": H, **kwargs}
    with pytest.raises(error, match=text):
        fusedrnn.sLSTM(**kwargs)


def test_forward_errors():
    module = fusedrnn.sLSTM(I, H)
    x = torch.randn(T, N, I)
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h_0, c_0, n_0, m_0\)"):
        module(x, random_state(1, 1, torch.float32)[:2])
    with pytest.raises(RuntimeError, match="Expected hidden n size"):
        h, c, n, m = random_state(1, 1, torch.float32)
        module(x, (h, c, n[:, :2], m))
    with pytest.raises(RuntimeError, match="input.size\\(-1\\) must be equal to input_size"):
        module(torch.randn(T, N, I + 1))
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h, c, n, m\)"):
        fusedrnn.sLSTMCell(I, H)(torch.randn(N, I), torch.zeros(N, H))


# triton's sLSTM kernel: tests/test_slstm_triton.py; cpu's: tests/test_slstm_cpu.py
@pytest.mark.parametrize("backend", ["torch", "cuda"])
def test_other_backends_refuse_with_a_reason(backend):
    call = registry.RNNCall("SLSTM", "cpu", torch.float32, I, H, num_heads=K, formulation="xlstm")
    loaded = registry._load(backend)  # the instance, or why its module did not import (then nothing to ask)
    if isinstance(loaded, str):
        pytest.skip(loaded)
    assert "no sLSTM and multi-head kernels yet" in loaded.unsupported_reason(call)
    if registry.availability()[backend] is None:
        with pytest.raises(registry.BackendError, match="issue #21"):
            fusedrnn.sLSTM(I, H, backend=backend)(torch.randn(T, N, I))
    assert registry.select("auto", call).name == ("reference" if registry.availability()["cpu"] else "cpu")


# ----------------------------------------------------------------------------------------------------------------
# replace_slstm against xlstm's own layer (pip install 'fusedrnn[xlstm]').


def xlstm_layer(dtype, backend="vanilla"):
    layer_module = pytest.importorskip("xlstm.blocks.slstm.layer")
    torch.manual_seed(0)
    config = layer_module.sLSTMLayerConfig(embedding_dim=H, num_heads=K, backend="vanilla", conv1d_kernel_size=2)
    layer = layer_module.sLSTMLayer(config).to(dtype)
    with torch.no_grad():  # xlstm initialises R to zero: random everything, so every path is exercised
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return layer


def layer_inputs(dtype):
    def make():
        x = torch.randn(N, T, H, dtype=dtype, generator=torch.Generator().manual_seed(3)).requires_grad_()
        return (x,), {"x": x}

    return make


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_replace_slstm_matches_xlstm_vanilla(dtype):
    layer = xlstm_layer(dtype)
    cell = layer.slstm_cell
    names = [name for name, _ in layer.named_parameters()]
    expected = forward_backward(layer, layer_inputs(dtype))
    assert fusedrnn.replace_slstm(layer, backend="reference") is layer
    assert type(layer.slstm_cell).__name__ == "XLSTMsLSTMCell" and layer.slstm_cell is cell
    assert [name for name, _ in layer.named_parameters()] == names
    actual = forward_backward(layer, layer_inputs(dtype))
    assert_all_close(actual, expected, dtype)
    fusedrnn.restore_slstm(layer)
    assert type(cell).__name__ == "sLSTMCell_vanilla" and "fusedrnn_backend" not in vars(cell)
    assert_all_close(forward_backward(layer, layer_inputs(dtype)), expected, torch.float64)  # bit for bit


def test_replace_slstm_keeps_the_state_format():
    layer = xlstm_layer(torch.float64)
    cell = layer.slstm_cell
    x = torch.randn(N, T, 4 * H, dtype=torch.float64)
    state = torch.stack(random_state(1, 1)).squeeze(1)  # [4, N, H]
    expected = cell(x, state)
    fusedrnn.replace_slstm(layer)
    for got, want in zip(cell(x, state), expected):
        torch.testing.assert_close(got, want, **TOLERANCES[torch.float64])


def test_replace_slstm_reads_the_cuda_class_layout():
    """xlstm's CUDA class keeps R and b in another internal layout; built without its kernel (skip_backend_init), its
    replacement reads them through xlstm's own layout methods and computes what the vanilla cell computes."""
    cell_module = pytest.importorskip("xlstm.blocks.slstm.cell")
    vanilla = xlstm_layer(torch.float64).slstm_cell
    config = cell_module.sLSTMCellConfig(hidden_size=H, num_heads=K, backend="cuda")
    cuda_cell = cell_module.sLSTMCell_cuda(config, skip_backend_init=True).double()
    with torch.no_grad():
        cuda_cell._recurrent_kernel_.copy_(cuda_cell._recurrent_kernel_ext2int(vanilla.recurrent_kernel[:]))
        cuda_cell._bias_.copy_(cuda_cell._bias_ext2int(vanilla.bias[:]))
    x = torch.randn(N, T, 4 * H, dtype=torch.float64)
    expected = vanilla(x)
    fusedrnn.replace_slstm(cuda_cell)
    for got, want in zip(cuda_cell(x), expected):
        torch.testing.assert_close(got, want, **TOLERANCES[torch.float64])
    fusedrnn.restore_slstm(cuda_cell)
    assert type(cuda_cell) is cell_module.sLSTMCell_cuda


# ----------------------------------------------------------------------------------------------------------------
# replace_slstm against TiRex's own cell (tirex-ts; skipped without it).


def tirex_cell():
    cell_module = pytest.importorskip("tirex.models.slstm.cell")
    torch.manual_seed(0)
    cell = cell_module.sLSTMCell(cell_module.sLSTMBlockConfig(embedding_dim=H, num_heads=K), "torch")
    with torch.no_grad():  # TiRex leaves them uninitialised (its checkpoints fill them)
        cell._recurrent_kernel_.copy_(torch.randn_like(cell._recurrent_kernel_) * 0.5)
        cell._bias_.copy_(torch.randn_like(cell._bias_))
        cell._bias_.view(K, 4, H // K)[0, 1] = 20.0  # head 0's forget pre-activations past TiRex's clamp at 15
    return cell_module, cell


def test_replace_slstm_matches_tirex_in_float32():
    """TiRex's own loop and pointwise step (sLSTMCellTorch.slstm_forward) in float32, on the replaced cell's
    parameters, against the replaced cell: outputs and parameter gradients, to float32 rounding. Past the clamp the
    forget bias gets no gradient, in both (and does in xlstm's formulation)."""
    cell_module, cell = tirex_cell()
    x = torch.randn(N, T, 4 * H)
    state = torch.stack(random_state(1, 1, torch.float32)).squeeze(1)
    upstream = torch.randn(N, K, T, H // K)
    fusedrnn.replace_slstm(cell)
    assert type(cell).__name__ == "TiRexsLSTMCell"

    def outputs_and_grads(run):
        cell.zero_grad(set_to_none=True)
        output, final = run()
        torch.autograd.backward((output, final), (upstream, torch.ones_like(final)))
        return output.detach(), final.detach(), cell._recurrent_kernel_.grad, cell._bias_.grad

    def tirex_own():
        _, bias = cell.fused_weights()  # TiRex's own bias permutation is checked by the bfloat16 test below
        y, final = cell_module.sLSTMCellTorch.slstm_forward(x.transpose(0, 1), state, cell._recurrent_kernel_, bias)
        return y.view(T, N, K, H // K).permute(1, 2, 0, 3), final

    def xlstm_formulation():
        w_hh, bias = cell.fused_weights()
        y, final = slstm_layer(x.transpose(0, 1), SLSTMState(*state), None, w_hh, None, bias, formulation="xlstm")
        return y.view(T, N, K, H // K).permute(1, 2, 0, 3), torch.stack(final)

    actual = outputs_and_grads(lambda: cell(x, state))
    for got, want in zip(actual, outputs_and_grads(tirex_own)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    clamped = actual[3].view(K, 4, H // K)[0, 1]
    assert not clamped.any() and outputs_and_grads(xlstm_formulation)[3].view(K, 4, H // K)[0, 1].all()


def test_replace_slstm_matches_tirex_cell_and_restores():
    """The whole TiRex cell, whose torch path rounds R and the states to bfloat16 each step: to bfloat16's
    tolerance; then restored, its own output again."""
    cell_module, cell = tirex_cell()
    x = torch.randn(N, T, 4 * H)
    expected = cell(x, None)
    fusedrnn.replace_slstm(torch.nn.Sequential(cell))
    for got, want in zip(cell(x, None), expected):
        torch.testing.assert_close(got, want, **TOLERANCES[torch.bfloat16])
    fusedrnn.restore_slstm(cell)
    assert type(cell) is cell_module.sLSTMCell and "fusedrnn_backend" not in vars(cell) and cell.backend == "torch"
    for got, want in zip(cell(x, None), expected):
        assert torch.equal(got, want)


def test_jit_trace_and_script_refuse():
    module = fusedrnn.sLSTM(I, H)
    with pytest.raises(RuntimeError, match="cannot record fusedrnn.sLSTM"):
        torch.jit.trace(module, torch.randn(T, N, I))
    with pytest.raises(RuntimeError, match="torch.jit.script cannot compile fusedrnn.sLSTMCell"):
        torch.jit.script(fusedrnn.sLSTMCell(I, H))


def test_replace_slstm_step_and_refusals():
    cell_module = pytest.importorskip("xlstm.blocks.slstm.cell")
    layer = xlstm_layer(torch.float64)
    cell = layer.slstm_cell
    fusedrnn.replace_slstm(layer)
    x = torch.randn(N, 1, 4 * H, dtype=torch.float64)
    state = torch.stack(random_state(1, 1)).squeeze(1)
    for got, want in zip(cell.step(x, state), cell(x, state)):  # step returns the new state (xlstm's the old one)
        assert torch.equal(got, want)
    config = cell_module.sLSTMCellConfig(hidden_size=H, num_heads=K, backend="cuda", gradient_recurrent_clipval=1.0)
    clipped = cell_module.sLSTMCell_cuda(config, skip_backend_init=True)
    model = torch.nn.Sequential(xlstm_layer(torch.float64), clipped)
    with pytest.raises(ValueError, match="gradient_recurrent_clipval=1.0"):
        fusedrnn.replace_slstm(model)
    assert type(model[0].slstm_cell).__name__ == "sLSTMCell_vanilla"  # nothing changed


def test_bfloat16_module_against_float32():
    """bf16 storage: the state is computed in float32 (reference_slstm), outputs come back in bf16."""
    torch.manual_seed(0)
    module = fusedrnn.sLSTM(I, H, num_heads=K)
    x = torch.randn(T, N, I)
    y32, state32 = module(x)
    y, state = module.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and all(s.dtype == torch.bfloat16 for s in state)
    torch.testing.assert_close(y.float(), y32, **TOLERANCES[torch.bfloat16])
    for s, s32 in zip(state, state32):
        torch.testing.assert_close(s.float(), s32, **TOLERANCES[torch.bfloat16])
