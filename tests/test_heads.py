"""num_heads on fusedrnn.LSTM / GRU / RNN (issue #21): a multi-head layer is torch.nn's layer with a block-diagonal
W_hh, so torch.nn itself, given that matrix written out with zero off-diagonal blocks, is the oracle; num_heads=1 is
torch.nn's layer unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
from fusedrnn import registry
from fusedrnn.reference import rnn_layer
from parity import assert_all_close, assert_as_close_to_float64, forward_backward

T, N, I, H, K = 3, 3, 3, 4, 2
d = H // K
LENGTHS = torch.tensor([3, 2, 1])
CLASSES = {"LSTM": (fusedrnn.LSTM, nn.LSTM, {}), "GRU": (fusedrnn.GRU, nn.GRU, {}),
           "RNN_RELU": (fusedrnn.RNN, nn.RNN, {"nonlinearity": "relu"})}  # fmt: skip


def dense(blocks: torch.Tensor) -> torch.Tensor:
    """[K, G*d, d] -> the [G*H, H] matrix torch.nn would hold: gate g's rows of head k at g*H + k*d."""
    K_, Gd, d_ = blocks.shape
    G, H_ = Gd // d_, K_ * d_
    out = blocks.new_zeros(G * H_, H_)
    for k in range(K_):
        for g in range(G):
            out[g * H_ + k * d_ : g * H_ + (k + 1) * d_, k * d_ : (k + 1) * d_] = blocks[k, g * d_ : (g + 1) * d_]
    return out


def block_diagonal_part(full: torch.Tensor, K_: int) -> torch.Tensor:
    """The inverse of `dense` on the blocks (the gradient of the blocks is the dense gradient's blocks)."""
    GH, H_ = full.shape
    d_, G = H_ // K_, GH // H_
    return torch.stack([torch.cat([full[g * H_ + k * d_ : g * H_ + (k + 1) * d_, k * d_ : (k + 1) * d_]
                                   for g in range(G)]) for k in range(K_)])  # fmt: skip


CPU_REASON = registry.availability()["cpu"]
BACKENDS = ["reference", pytest.param("cpu", marks=pytest.mark.skipif(CPU_REASON is not None, reason=str(CPU_REASON)))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("name", CLASSES, ids=CLASSES.keys())
def test_heads_match_torch_nn_with_a_block_diagonal_matrix(name, packed, backend):
    fused_cls, torch_cls, kwargs = CLASSES[name]
    torch.manual_seed(0)
    fused = fused_cls(I, H, 2, bidirectional=True, num_heads=K, dtype=torch.float64, backend=backend, **kwargs)
    twin = torch_cls(I, H, 2, bidirectional=True, dtype=torch.float64, **kwargs)
    with torch.no_grad():
        for pname, p in fused.named_parameters():
            getattr(twin, pname).copy_(dense(p) if pname.startswith("weight_hh") else p)

    def make_inputs():
        x = torch.randn(T, N, I, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
        return ((pack_padded_sequence(x, LENGTHS) if packed else x),), {"x": x}

    actual = forward_backward(fused, make_inputs)
    expected = forward_backward(twin, make_inputs)
    for pname in [key for key in expected if key.startswith("grad weight_hh")]:
        expected[pname] = block_diagonal_part(expected[pname], K)
    assert_all_close(actual, expected, torch.float64)


def test_reference_gradcheck_with_heads():
    g = torch.Generator().manual_seed(0)
    x, w_ih, w_hh, b_hh = (torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
                           for s in ((T, N, I), (3 * H, I), (K, 3 * d, d), (3 * H,)))  # fmt: skip
    h0 = torch.randn(N, H, generator=g, dtype=torch.float64, requires_grad=True)

    def layer(*args):
        return rnn_layer("GRU", args[0], args[1], None, args[2], args[3], None, args[4], reverse=True,
                         lengths=LENGTHS)[:2]  # fmt: skip

    inputs = (x, h0, w_ih, w_hh, b_hh)
    assert torch.autograd.gradcheck(layer, inputs)
    assert torch.autograd.gradgradcheck(layer, inputs, fast_mode=True)


def test_one_head_is_torch_nn_unchanged():
    torch.manual_seed(0)
    fused = fusedrnn.LSTM(I, H, num_heads=1)
    torch.manual_seed(0)
    original = nn.LSTM(I, H)
    assert "num_heads" not in vars(fused) and repr(fused) == repr(original)
    for (name, p), (name_t, p_t) in zip(fused.named_parameters(), original.named_parameters()):
        assert name == name_t and torch.equal(p, p_t)


ERRORS = {
    "not_dividing": (dict(num_heads=3), ValueError, "divisible by num_heads"),
    "zero": (dict(num_heads=0), ValueError, "greater than zero"),
    "float": (dict(num_heads=2.0), TypeError, "num_heads should be of type int"),
    "bool": (dict(num_heads=True), TypeError, "num_heads should be of type int"),
    "proj_size": (dict(num_heads=2, proj_size=2), ValueError, "proj_size"),
}


@pytest.mark.parametrize("kwargs, error, text", ERRORS.values(), ids=ERRORS.keys())
def test_constructor_errors(kwargs, error, text):
    with pytest.raises(error, match=text):
        fusedrnn.LSTM(I, H, **kwargs)


def test_refusals():
    module = fusedrnn.GRU(I, H, num_heads=K)
    with pytest.raises(ValueError, match="no heads"):
        fusedrnn.restore_rnns(nn.Sequential(module))
    assert type(module) is fusedrnn.GRU
    with pytest.raises(RuntimeError, match="num_heads=2"):
        torch.jit.script(module)
    call = registry.RNNCall("GRU", "cpu", torch.float32, I, H, num_heads=K)
    # cpu serves heads (this file's cpu cases), and triton (tests/test_heads_triton.py)
    for name in ("torch", "cuda"):
        loaded = registry._load(name)  # the instance, or why its module did not import (then nothing to ask)
        assert isinstance(loaded, str) or "multi-head" in loaded.unsupported_reason(call)
    assert registry.select("auto", call).name == ("reference" if CPU_REASON else "cpu")
    with pytest.raises(registry.BackendError, match="issue #21"):
        fusedrnn.GRU(I, H, num_heads=K, backend="torch")(torch.randn(T, N, I))


# ----------------------------------------------------------------------------------------------------------------
# The `cpu` backend's multi-head loop (csrc/rnn_loop.cpp: one GEMM per head and gate) against the reference.

needs_cpu = pytest.mark.skipif(CPU_REASON is not None, reason=f"cpu backend unavailable: {CPU_REASON}")
#: Wider than the shared sizes: d = 5 is a partial vector lane, T = 17 > the loop's weight-copy threshold (16).
WIDE = dict(T=17, N=3, I=4, H=10, K=2)


def cpu_and_reference(name, dtype, **kwargs):
    """The layer on `cpu` in `dtype` and its twins on `reference` in `dtype` and in float64, with the same weights."""
    fused_cls, _, extra = {**CLASSES, **SMOOTH}[name]
    torch.manual_seed(0)
    kwargs.setdefault("num_heads", WIDE["K"])
    cpu = fused_cls(WIDE["I"], WIDE["H"], dtype=dtype, backend="cpu", **extra, **kwargs)
    twins = []
    for twin_dtype in (dtype, torch.float64):
        twin = fused_cls(WIDE["I"], WIDE["H"], dtype=twin_dtype, backend="reference", **extra, **kwargs)
        twin.load_state_dict(cpu.state_dict())
        twins.append(twin.train(cpu.training))
    return cpu, *twins


def wide_inputs(dtype, packed=False, lengths=(17, 9, 1)):
    def make():
        x = torch.randn(WIDE["T"], WIDE["N"], WIDE["I"], generator=torch.Generator().manual_seed(1),
                        dtype=torch.float64).to(dtype).requires_grad_()  # fmt: skip
        return ((pack_padded_sequence(x, torch.tensor(lengths)) if packed else x),), {"x": x}

    return make


CPU_CASES = {
    "stacked_bidirectional": dict(num_layers=2, bidirectional=True),
    "packed": dict(packed=True),
    "no_bias_batch_first": dict(bias=False, batch_first=True),
    "zoneout_eval": dict(zoneout=0.3, eval=True),
    # Heads of 2 units: W_hh [5, 4*2, 2] has 5 rows of blocks, which a dense LSTM kernel would misread as H = 5 / 4
    # (the fused CPU LSTM must refuse multi-head: csrc/lstm_cpu_fused_plan.h).
    "five_heads": dict(num_heads=5),
}


def _split(case):
    case = dict(case)
    return case.pop("packed", False), case.pop("eval", False), case


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("case", CPU_CASES.values(), ids=CPU_CASES.keys())
@pytest.mark.parametrize("name", CLASSES, ids=CLASSES.keys())
def test_cpu_heads_match_the_reference(name, case, dtype):
    """float64: against the reference in float64; float32: against the float64 truth at float32's tolerance."""
    packed, evaluating, kwargs = _split(case)
    cpu, _, truth = cpu_and_reference(name, dtype, **kwargs)
    if evaluating:
        cpu.eval(), truth.eval()
    ours = forward_backward(cpu, wide_inputs(dtype, packed))
    expected = forward_backward(truth, wide_inputs(torch.float64, packed))
    assert_all_close({k: v if v is None else v.double() for k, v in ours.items()}, expected, dtype)


#: The smooth cells: a ReLU RNN's bfloat16 gradients are chaotic at its kinks (measured at this shape, the dense
#: layer's grad x was ~0.2 from the float64 truth on torch.nn, the reference and cpu alike, so any one run's error
#: against another's says nothing); its float64 and float32 cases above hold it exactly.
SMOOTH = {"LSTM": CLASSES["LSTM"], "GRU": CLASSES["GRU"], "RNN_TANH": (fusedrnn.RNN, nn.RNN, {})}


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", SMOOTH, ids=SMOOTH.keys())
def test_cpu_heads_low_precision_against_float64(name, dtype):
    """Storage in float16/bfloat16, as the cpu backend's dense layers: every output and gradient no further from
    the float64 truth than twice the reference run in the same dtype."""
    cpu, low, truth = cpu_and_reference(name, dtype, num_layers=2, bidirectional=True)
    ours, theirs = forward_backward(cpu, wide_inputs(dtype)), forward_backward(low, wide_inputs(dtype))
    truth = forward_backward(truth, wide_inputs(torch.float64))
    assert_as_close_to_float64(ours, theirs, truth, dtype, relative_floor=True)


@needs_cpu
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
def test_cpu_heads_op_gradcheck(mode, reverse):
    """The op itself with a [K, G*d, d] w_hh, lengths, in float64: gradcheck and gradgradcheck, and opcheck's
    schema and fake shapes."""
    from fusedrnn import _extension
    from fusedrnn.reference import GATES

    g = torch.Generator().manual_seed(0)
    G = GATES[mode]
    shapes = [(T, N, I), (N, H), (N, H) if mode == "LSTM" else None, (G * H, I), (K, G * d, d), (G * H,), (G * H,)]
    tensors = [None if s is None else torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
               for s in shapes]  # fmt: skip
    lengths = LENGTHS.clone()

    def op(*values):
        it = iter(values)
        full = [None if t is None else next(it) for t in tensors]
        y, h_n, c_n, _ = _extension.layer_forward(mode, *full, None, reverse, True, lengths)
        return (y, h_n, c_n) if mode == "LSTM" else (y, h_n)

    present = [t for t in tensors if t is not None]
    assert torch.autograd.gradcheck(op, present)
    assert torch.autograd.gradgradcheck(op, present, fast_mode=True)  # the reference's differentiable backward
    torch.library.opcheck(torch.ops.fusedrnn.layer_forward.default, (mode, *tensors, None, reverse, True, lengths))


@needs_cpu
def test_cpu_heads_bad_weight_is_a_clear_error():
    from fusedrnn.reference import GATES

    x, h0 = torch.randn(T, N, I), torch.zeros(N, H)
    w_ih, w_hh = torch.randn(GATES["GRU"] * H, I), torch.randn(K, 2 * d, d)  # 2, not 3, gate blocks per head
    with pytest.raises(RuntimeError, match=r"multi-head w_hh must be \[heads, 3\*head_dim, head_dim\]"):
        torch.ops.fusedrnn.layer_forward("GRU", x, h0, None, w_ih, w_hh, None, None, None, False)
