"""xLSTM's sLSTM on the `cpu` backend (csrc/slstm_loop.cpp: one C++ time loop per layer direction, a GEMM per head
per step and the pointwise pass of csrc/cell_math.h) against the reference backend: every output and every gradient
in float64, float32 against the float64 truth, float16/bfloat16 no further from that truth than twice the reference
run in the same dtype; gradcheck of the op at tiny sizes; bad input."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
from fusedrnn import _extension, registry
from fusedrnn.reference_slstm import SLSTMState, slstm_layer
from parity import (TOLERANCES, assert_all_close, assert_as_close_to_float64, assert_compiles_to_the_same,
                    forward_backward)

CPU_REASON = registry.availability()["cpu"]
pytestmark = pytest.mark.skipif(CPU_REASON is not None, reason=f"cpu backend unavailable: {CPU_REASON}")
T, N, I, H = 4, 3, 3, 6
LENGTHS = torch.tensor([4, 2, 1])

CASES = {
    "one_head": dict(num_heads=1),
    "heads_odd_head_size": dict(num_heads=2),  # d = 3: one partial vector lane per head
    "head_size_one": dict(num_heads=6),  # d = 1: [N, 1] x [1, 4] GEMMs
    "tirex_big_forget": dict(num_heads=3, formulation="tirex", forget_bias=18.0),
    "no_bias_batch_first": dict(num_heads=2, bias=False, batch_first=True),
    "stacked_bidirectional_state": dict(num_heads=2, num_layers=2, bidirectional=True, state=True),
    "packed_bidirectional": dict(num_heads=2, bidirectional=True, packed=True),
    # n_0 = 0 with c_0 != 0: xlstm's first-step rule and its cap on f' decide the result; reversed and packed, the
    # rule holds on every step before the longest row's first.
    "packed_reverse_zero_state_c": dict(num_heads=2, bidirectional=True, packed=True, c_only=True),
    "tirex_stacked_packed_state": dict(num_heads=3, num_layers=2, formulation="tirex", packed=True, state=True),
}


def modules_and_inputs(case: dict, dtype: torch.dtype):
    """The case's sLSTM on `cpu` in `dtype`, twins on `reference` in `dtype` and in float64 (the truth; all with the
    cpu module's weights), and make_inputs(dtype) for forward_backward."""
    case = dict(case)
    packed, with_state, c_only = case.pop("packed", False), case.pop("state", False), case.pop("c_only", False)
    forget_bias = case.pop("forget_bias", None)
    torch.manual_seed(0)
    cpu = fusedrnn.sLSTM(I, H, backend="cpu", dtype=dtype, **case)
    with torch.no_grad():
        if forget_bias is not None:  # past TiRex's clamp at 15
            cpu.bias_hh_l0[H : 2 * H] = forget_bias
    twins = []
    for twin_dtype in (dtype, torch.float64):
        twin = fusedrnn.sLSTM(I, H, backend="reference", dtype=twin_dtype, **case)
        twin.load_state_dict(cpu.state_dict())
        twins.append(twin)
    reference, truth = twins
    LD = reference.num_layers * (2 if reference.bidirectional else 1)

    def make_inputs(dt):
        def make():
            g = torch.Generator().manual_seed(1)
            x = torch.randn(T, N, I, generator=g, dtype=torch.float64).to(dt).requires_grad_()
            leaves = {"x": x}
            state = None
            if with_state or c_only:
                h, c, m = (torch.randn(LD, N, H, generator=g, dtype=torch.float64) for _ in range(3))
                n = torch.rand(LD, N, H, generator=g, dtype=torch.float64) + 0.5
                if c_only:
                    h, n, m = torch.zeros_like(h), torch.zeros_like(n), torch.zeros_like(m)
                state = tuple(s.to(dt).requires_grad_() for s in (h, c, n, m))
                leaves.update(zip("hcnm", state))
            inp = pack_padded_sequence(x, LENGTHS) if packed else (x.transpose(0, 1) if cpu.batch_first else x)
            return ((inp,) if state is None else (inp, state)), leaves

        return make

    return cpu, reference, truth, make_inputs


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_cpu_matches_reference_float64(case):
    cpu, reference, _, make_inputs = modules_and_inputs(case, torch.float64)
    expected = forward_backward(reference, make_inputs(torch.float64))
    actual = forward_backward(cpu, make_inputs(torch.float64))
    assert_all_close(actual, expected, torch.float64)
    if "forget_bias" in case:  # past the clamp the forget gate's gradient is exactly zero (not sigmoid(-15) small)
        clamped = expected["grad bias_hh_l0"][H : 2 * H] == 0
        assert clamped.any() and torch.equal(actual["grad bias_hh_l0"][H : 2 * H] == 0, clamped)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_cpu_float32_against_float64_truth(case):
    cpu, _, truth_module, make_inputs = modules_and_inputs(case, torch.float32)
    truth = forward_backward(truth_module, make_inputs(torch.float64))
    ours = forward_backward(cpu, make_inputs(torch.float32))
    assert_all_close({k: v if v is None else v.double() for k, v in ours.items()}, truth, torch.float32)


LOW_PRECISION_CASES = {name: CASES[name] for name in ("heads_odd_head_size", "stacked_bidirectional_state",
                                                      "packed_reverse_zero_state_c", "tirex_big_forget")}  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", LOW_PRECISION_CASES.values(), ids=LOW_PRECISION_CASES.keys())
def test_cpu_low_precision_against_float64_truth(case, dtype):
    """float16/bfloat16 storage, computed in float32 (states included, as the reference): every output and gradient
    no further from the float64 truth than twice the reference backend's run in the same dtype."""
    cpu, low_reference, truth_module, make_inputs = modules_and_inputs(case, dtype)
    truth = forward_backward(truth_module, make_inputs(torch.float64))
    ours, theirs = forward_backward(cpu, make_inputs(dtype)), forward_backward(low_reference, make_inputs(dtype))
    assert_as_close_to_float64(ours, theirs, truth, dtype, relative_floor=True)


def op_inputs(projected: bool, bias: bool, n0_zero: bool = False, seed: int = 0):
    """slstm_forward's tensors at a tiny size, float64 leaves: x, h0, c0, n0, m0, w_ih, w_hh, b_ih, b_hh."""
    g = torch.Generator().manual_seed(seed)
    K, d = 2, 2
    Hs, Is = K * d, 3

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).requires_grad_()

    x = randn(T, N, Is) if projected else randn(T, N, 4 * Hs)
    h0, c0, m0 = randn(N, Hs), randn(N, Hs), randn(N, Hs)
    # n_0 = 0 is where xlstm's first-step rule switches (any perturbation of n_0 turns it off): a constant there.
    n0 = torch.zeros(N, Hs, dtype=torch.float64) if n0_zero else (
        (torch.rand(N, Hs, generator=g, dtype=torch.float64) + 0.5).requires_grad_())  # fmt: skip
    w_ih = randn(4 * Hs, Is) if projected else None
    biases = (randn(4 * Hs), randn(4 * Hs)) if bias else (None, None)
    return x, h0, c0, n0, m0, w_ih, randn(K, 4 * d, d), *biases


OP_CASES = {
    "projected_bias": dict(projected=True, bias=True),
    "preactivations_reverse_lengths": dict(projected=False, bias=True, reverse=True, lengths=True),
    "no_bias_tirex_zero_n": dict(projected=True, bias=False, tirex=True, n0_zero=True),
    "tirex_reverse_lengths_zero_n": dict(projected=True, bias=True, tirex=True, reverse=True, lengths=True,
                                         n0_zero=True),
}


def _op_args(case):
    case = dict(case)
    reverse, tirex = case.pop("reverse", False), case.pop("tirex", False)
    lengths = torch.tensor([4, 3, 1]) if case.pop("lengths", False) else None
    return op_inputs(**case), reverse, tirex, lengths


@pytest.mark.parametrize("case", OP_CASES.values(), ids=OP_CASES.keys())
def test_gradcheck_and_gradgradcheck_float64(case):
    tensors, reverse, tirex, lengths = _op_args(case)
    present = [t for t in tensors if t is not None and t.requires_grad]

    def op(*values):
        it = iter(values)
        full = [t if t is None or not t.requires_grad else next(it) for t in tensors]
        y, *final, _ = _extension.slstm_forward(*full, reverse, tirex, True, lengths)
        return (y, *final)

    assert torch.autograd.gradcheck(op, present)
    # Double backward runs the reference's differentiable backward (fusedrnn.autograd_paths).
    assert torch.autograd.gradgradcheck(op, present, fast_mode=True)


@pytest.mark.parametrize("case", OP_CASES.values(), ids=OP_CASES.keys())
def test_opcheck_slstm_ops(case):
    tensors, reverse, tirex, lengths = _op_args(case)
    torch.library.opcheck(torch.ops.fusedrnn.slstm_forward.default, (*tensors, reverse, tirex, True, lengths))


def test_preactivation_input_matches_reference():
    """The layer on already projected input (w_ih None, one bias: xlstm's cell, as replace_slstm runs it)."""
    g = torch.Generator().manual_seed(5)
    leaves = [torch.randn(*shape, generator=g).requires_grad_() for shape in ((T, N, 4 * H), (2, 12, 3), (4 * H,))]
    upstream = [torch.randn(T, N, H, generator=g)] + [torch.randn(N, H, generator=g) for _ in range(4)]
    cpu = registry.get_backend("cpu")
    results = []
    for layer in (lambda x, w, b: cpu.slstm_layer(x, None, registry.LayerWeights(None, w, None, b, None), False, None,
                                                  "tirex"),
                  lambda x, w, b: slstm_layer(x, None, None, w, None, b, formulation="tirex")):  # fmt: skip
        y, final = layer(*leaves)
        outputs = (y, *final)
        results.append([o.detach() for o in outputs] + list(torch.autograd.grad(outputs, leaves, upstream)))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, **TOLERANCES[torch.float32])


def test_replace_slstm_on_cpu_matches_xlstm_vanilla():
    layer_module = pytest.importorskip("xlstm.blocks.slstm.layer")
    torch.manual_seed(0)
    config = layer_module.sLSTMLayerConfig(embedding_dim=H, num_heads=2, backend="vanilla", conv1d_kernel_size=2)
    layer = layer_module.sLSTMLayer(config).double()
    with torch.no_grad():  # xlstm initialises R to zero: random everything
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * 0.5)

    def make_inputs():
        x = torch.randn(N, T, H, generator=torch.Generator().manual_seed(3), dtype=torch.float64).requires_grad_()
        return (x,), {"x": x}

    expected = forward_backward(layer, make_inputs)
    fusedrnn.replace_slstm(layer, backend="cpu")
    assert_all_close(forward_backward(layer, make_inputs), expected, torch.float64)


def test_inference_saves_nothing_and_matches():
    cpu, _, _, make_inputs = modules_and_inputs(CASES["stacked_bidirectional_state"], torch.float64)
    args, _ = make_inputs(torch.float64)()
    expected = cpu(*args)
    with torch.no_grad():
        actual = cpu(*args)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_empty_batch():
    module = fusedrnn.sLSTM(I, H, num_heads=2, backend="cpu")
    x = torch.randn(T, 0, I, requires_grad=True)
    y, state = module(x)
    (y.sum() + sum(s.sum() for s in state)).backward()
    assert y.shape == (T, 0, H) and all(s.shape == (1, 0, H) for s in state) and x.grad.shape == x.shape


def test_auto_picks_cpu_for_slstm_on_cpu_and_cuda_still_refuses():
    call = registry.RNNCall("SLSTM", "cpu", torch.float32, I, H, num_heads=2, formulation="xlstm", seq_len=T,
                            batch_size=N)  # fmt: skip
    assert registry.select("auto", call).name == "cpu"
    assert registry.get_backend("cpu").unsupported_reason(call) is None
    cuda = registry._load("cuda")
    if not isinstance(cuda, str):
        assert "issue #21" in cuda.unsupported_reason(registry.RNNCall("SLSTM", "cuda", torch.float32, I, H,
                                                                       formulation="xlstm"))  # fmt: skip


BAD_INPUTS = {
    # id: (argument index in op_inputs' tuple, how to break it, exception type, message)
    "half_dtype": (None, lambda t: t.half(), NotImplementedError, "float32, float64"),
    "x_2d": (0, lambda t: t[0], RuntimeError, "3-D"),
    "empty_sequence": (0, lambda t: t[:0], RuntimeError, "empty sequence"),
    "w_hh_not_4d_rows": (6, lambda t: t[:, :-1].contiguous(), RuntimeError, r"\[heads, 4 \* head_dim, head_dim\]"),
    "w_ih_wrong_shape": (5, lambda t: t[:-1].contiguous(), RuntimeError, "w_ih has shape"),
    "n0_wrong_shape": (3, lambda t: t[:, :-1].contiguous(), RuntimeError, "n0 has shape"),
    "b_hh_wrong_shape": (8, lambda t: t[:-1].contiguous(), RuntimeError, "b_hh has shape"),
    "mixed_dtype": (4, lambda t: t.float(), RuntimeError, "same dtype"),
    "non_contiguous": (6, lambda t: t.transpose(1, 2).contiguous().transpose(1, 2), RuntimeError, "contiguous"),
    "device_mix": (1, lambda t: t.to("meta"), RuntimeError, "same device"),
}


@pytest.mark.parametrize(("index", "breaker", "error", "match"), BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_a_clear_error(index, breaker, error, match):
    args = [t.detach() if t is not None else None for t in op_inputs(projected=True, bias=True)]
    args = [breaker(t) if t is not None and index in (None, i) else t for i, t in enumerate(args)]
    with pytest.raises(error, match=match):
        torch.ops.fusedrnn.slstm_forward(*args, False, False)


def test_preactivations_of_the_wrong_width_and_bad_lengths():
    args = [t.detach() if t is not None else None for t in op_inputs(projected=False, bias=True)]
    with pytest.raises(RuntimeError, match="gate pre-activations"):
        torch.ops.fusedrnn.slstm_forward(args[0][..., :-1].contiguous(), *args[1:], False, False)
    with pytest.raises(RuntimeError, match="int64"):
        torch.ops.fusedrnn.slstm_forward(*args, False, False, True, torch.tensor([4, 3, 1], dtype=torch.int32))
    with pytest.raises(RuntimeError, match="save_workspace=True"):
        y, h, c, n, m, workspace = torch.ops.fusedrnn.slstm_forward(*args, False, False, False)
        torch.ops.fusedrnn.slstm_backward(y, h, c, n, m, args[0], *args[1:5], None, args[6], y, workspace, False,
                                          False, True)  # fmt: skip


def test_torch_compile_fullgraph_through_the_module():
    torch.manual_seed(0)
    module = fusedrnn.sLSTM(I, H, num_heads=2, bidirectional=True, backend="cpu")
    assert_compiles_to_the_same(module, torch.randn(T, N, I, requires_grad=True))


#: Sizes that reach the loop's other paths: several projection chunks (kGemmRows = 1024 rows: 3 steps of 300 rows
#: per chunk), R^T copied contiguous (T >= kMinStepsToTransposeWeights = 16), and two threads splitting the heads'
#: GEMMs (>= 2**20 multiply-adds per head) and the pointwise rows (16384 elements per task).
SIZES = {
    "chunked": dict(T=7, N=300, I=3, H=4, K=2, threads=1),
    "long_contiguous_weights": dict(T=17, N=2, I=3, H=6, K=3, threads=1),
    "two_threads": dict(T=5, N=64, I=8, H=128, K=2, threads=2),
}


@pytest.fixture
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("sizes, threads", [(s, s["threads"]) for s in SIZES.values()], ids=SIZES.keys(),
                         indirect=["threads"])  # fmt: skip
def test_layer_paths_match_reference(sizes, threads, reverse):
    g = torch.Generator().manual_seed(7)
    T_, N_, I_, H_, K_ = (sizes[key] for key in ("T", "N", "I", "H", "K"))
    d_ = H_ // K_
    shapes = [(T_, N_, I_), (N_, H_), (N_, H_), (N_, H_), (N_, H_), (4 * H_, I_), (K_, 4 * d_, d_), (4 * H_,),
              (4 * H_,)]  # fmt: skip
    values = [torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes]
    values[3] = values[3].abs() + 0.5  # n_0 > 0
    lengths = torch.randint(1, T_ + 1, (N_,), generator=g)
    cpu = registry.get_backend("cpu")
    results = []
    for layer in (lambda x, state, *w: cpu.slstm_layer(x, state, registry.LayerWeights(*w, None), reverse, lengths,
                                                       "xlstm"),
                  lambda x, state, *w: slstm_layer(x, state, *w, reverse, lengths)):  # fmt: skip
        leaves = [v.clone().requires_grad_() for v in values]
        y, final = layer(leaves[0], SLSTMState(*leaves[1:5]), *leaves[5:])
        outputs = (y, *final)
        upstream = [torch.randn(o.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
                    for o in outputs]  # fmt: skip
        results.append([o.detach() for o in outputs] + list(torch.autograd.grad(outputs, leaves, upstream)))
    for index, (got, want) in enumerate(zip(*results)):
        torch.testing.assert_close(got, want, **TOLERANCES[torch.float64], msg=lambda m, i=index: f"[{i}] {m}")
