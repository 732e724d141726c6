"""xLSTM's sLSTM on the `triton` backend (fusedrnn.kernels.slstm's forward and backward kernels) against the
reference backend: every output and every gradient, float32; the layer op in float16 against a float64 truth; double
backward and torch.compile. Without a GPU it runs under Triton's interpreter; on a GPU (the `gpu` marker) the same
tests run there, where the kernels have never run yet: unverified. The planner's limits are tested in
tests/test_triton_plan.py, the sm_90 builds in tests/test_triton_compile.py."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
from fusedrnn import registry
from fusedrnn.kernels import plan
from devices import DEVICE
from parity import TOLERANCES, assert_all_close, assert_as_close_to_float64, forward_backward

TRITON_REASON = registry.availability()["triton"]
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(TRITON_REASON is not None, reason=f"triton backend unavailable: {TRITON_REASON}")]
DTYPE = torch.float32
T, N, I, H = 3, 3, 3, 6
LENGTHS = torch.tensor([3, 2, 1])

CASES = {
    "one_head": dict(num_heads=1),
    "heads_odd_head_size": dict(num_heads=2),  # d = 3: padded to the dot's 16
    "tirex_big_forget": dict(num_heads=3, formulation="tirex", forget_bias=18.0),
    "stacked_bidirectional_state": dict(num_heads=2, num_layers=2, bidirectional=True, state=True),
    "packed_bidirectional": dict(num_heads=2, bidirectional=True, packed=True),
    "packed_reverse_zero_state_c": dict(num_heads=2, bidirectional=True, packed=True, c_only=True),
    # TiRex's head size, d = 128: two output tiles (of 64) and four reduction chunks (of 32) per gate
    "tirex_head_128": dict(num_heads=1, hidden=128, formulation="tirex", state=True),
    # d = 40, not a multiple of 16: one output tile of 64 (24 lanes padding), reduction chunks 32 + 8 of 32
    "head_40_packed_bidirectional": dict(num_heads=2, hidden=80, bidirectional=True, packed=True, c_only=True),
    # 18 rows: two batch tiles of 16, the second partial
    "two_batch_tiles_packed_state": dict(num_heads=2, batch=18, packed=True, state=True),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_triton_matches_reference(case):
    case = dict(case)
    packed, with_state, c_only = case.pop("packed", False), case.pop("state", False), case.pop("c_only", False)
    forget_bias, hidden, batch = case.pop("forget_bias", None), case.pop("hidden", H), case.pop("batch", N)
    torch.manual_seed(0)
    modules = {name: fusedrnn.sLSTM(I, hidden, backend=name, device=DEVICE, **case) for name in ("reference", "triton")}
    with torch.no_grad():
        if forget_bias is not None:  # past TiRex's clamp at 15
            modules["reference"].bias_hh_l0[hidden : 2 * hidden] = forget_bias
        for p_triton, p_reference in zip(modules["triton"].parameters(), modules["reference"].parameters()):
            p_triton.copy_(p_reference)
    # Descending lengths from T down to 1 (3, 2, 1 at the default batch)
    lengths = torch.linspace(T, 1, batch).round().long()
    D = 2 if modules["reference"].bidirectional else 1
    LD = modules["reference"].num_layers * D

    def make_inputs():
        g = torch.Generator().manual_seed(1)
        x = torch.randn(T, batch, I, generator=g).to(DEVICE).requires_grad_()
        leaves = {"x": x}
        state = None
        if with_state or c_only:
            h, c, m = (torch.randn(LD, batch, hidden, generator=g).to(DEVICE) for _ in range(3))
            n = (torch.rand(LD, batch, hidden, generator=g) + 0.5).to(DEVICE)
            if c_only:  # n_0 = 0 with c_0 != 0: xlstm's first-step rule and its cap on f' decide the result
                h, n, m = torch.zeros_like(h), torch.zeros_like(n), torch.zeros_like(m)
            state = tuple(s.requires_grad_() for s in (h, c, n, m))
            leaves.update(zip("hcnm", state))
        inp = pack_padded_sequence(x, lengths) if packed else x
        return ((inp,) if state is None else (inp, state)), leaves

    expected = forward_backward(modules["reference"], make_inputs)
    actual = forward_backward(modules["triton"], make_inputs)
    assert_all_close(actual, expected, DTYPE)
    if forget_bias is not None:  # past the clamp the forget gate's gradient is exactly zero (not sigmoid(-15) small)
        clamped = expected["grad bias_hh_l0"][hidden : 2 * hidden] == 0
        assert clamped.any() and torch.equal(actual["grad bias_hh_l0"][hidden : 2 * hidden] == 0, clamped)


def test_selection_and_refusals():
    backend = registry.get_backend("triton")
    tirex = registry.RNNCall("SLSTM", DEVICE, torch.float32, I, 512, num_heads=4, formulation="tirex")
    assert backend.unsupported_reason(tirex) is None  # TiRex's shape: d = 128
    compiling = registry.RNNCall("SLSTM", DEVICE, torch.float32, I, H, num_heads=2, formulation="xlstm",
                                 compiling=True)  # fmt: skip
    assert backend.unsupported_reason(compiling) is None  # torch.library ops (test_compile_forward_and_backward)
    wide = registry.RNNCall("SLSTM", DEVICE, torch.float32, I, 2 * (plan.MAX_HEAD_DIM + 1), num_heads=2,
                            formulation="xlstm")  # fmt: skip
    assert f"sLSTM kernels: head size {plan.MAX_HEAD_DIM + 1} > {plan.MAX_HEAD_DIM}" in backend.unsupported_reason(wide)
    double = registry.RNNCall("SLSTM", DEVICE, torch.float64, I, H, num_heads=2, formulation="xlstm")
    assert "dtype torch.float64 is not supported" in backend.unsupported_reason(double)
    for dtype in (torch.float16, torch.bfloat16):  # 16-bit storage, fp32 state: served on CUDA
        half = registry.RNNCall("SLSTM", "cuda", dtype, I, 512, num_heads=4, formulation="tirex")
        assert backend.unsupported_reason(half) is None
    call = registry.RNNCall("LSTM", DEVICE, torch.float32, I, H, num_heads=2)
    assert backend.unsupported_reason(call) is None  # multi-head LSTM: its own kernels (tests/test_heads_triton.py)
    # never timed on a GPU: only by name
    assert backend.preference(registry.RNNCall("SLSTM", "cuda", torch.float32, I, H, formulation="xlstm")) == 0


def test_projected_input_layer_matches_reference():
    """The layer op on already projected input (w_ih None, one bias: xlstm's cell, as replace_slstm runs it)."""
    from fusedrnn import triton_slstm_ops
    from fusedrnn.reference_slstm import slstm_layer

    g = torch.Generator().manual_seed(5)
    leaves = [torch.randn(*shape, generator=g).to(DEVICE).requires_grad_() for shape in ((T, N, 4 * H), (2, 12, 3),
                                                                                        (4 * H,))]  # fmt: skip
    upstream = [torch.randn(T, N, H, generator=g).to(DEVICE)] + [torch.randn(N, H, generator=g).to(DEVICE)] * 4
    results = []
    for layer in (triton_slstm_ops.slstm_layer, slstm_layer):
        x, w_hh, b = leaves
        y, final = layer(x, None, None, w_hh, None, b, formulation="tirex")
        outputs = (y, *final)
        grads = torch.autograd.grad(outputs, leaves, upstream)
        results.append([o.detach() for o in outputs] + list(grads))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, **TOLERANCES[DTYPE])


def test_replace_slstm_on_triton_matches_xlstm_vanilla():
    layer_module = pytest.importorskip("xlstm.blocks.slstm.layer")
    torch.manual_seed(0)
    config = layer_module.sLSTMLayerConfig(embedding_dim=H, num_heads=2, backend="vanilla", conv1d_kernel_size=2)
    layer = layer_module.sLSTMLayer(config).to(DEVICE)
    with torch.no_grad():  # xlstm initialises R to zero: random everything
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * 0.5)

    def make_inputs():
        x = torch.randn(N, T, H, generator=torch.Generator().manual_seed(3)).to(DEVICE).requires_grad_()
        return (x,), {"x": x}

    expected = forward_backward(layer, make_inputs)
    fusedrnn.replace_slstm(layer, backend="triton")
    assert_all_close(forward_backward(layer, make_inputs), expected, DTYPE)


def test_empty_batch():
    module = fusedrnn.sLSTM(I, H, num_heads=2, backend="triton", device=DEVICE)
    x = torch.randn(T, 0, I, device=DEVICE, requires_grad=True)
    y, state = module(x)
    (y.sum() + sum(s.sum() for s in state)).backward()
    assert y.shape == (T, 0, H) and all(s.shape == (1, 0, H) for s in state) and x.grad.shape == x.shape


def test_layer_op_gradients_and_double_backward():
    """The layer op alone (reverse, lengths, an initial state with n_0 = 0: the first-step rule over the padded steps),
    against the reference's slstm_layer: first order from the kernels; second order (create_graph) through the
    reference's differentiable recompute (fusedrnn.reference_slstm.slstm_vjp)."""
    from fusedrnn import triton_slstm_ops
    from fusedrnn.reference_slstm import SLSTMState, slstm_layer

    g = torch.Generator().manual_seed(3)
    K, d = 2, 3
    shapes = ((T, N, I), (N, K * d), (N, K * d), (4 * K * d, I), (K, 4 * d, d), (4 * K * d,), (4 * K * d,))
    leaves = [torch.randn(*s, generator=g).to(DEVICE).requires_grad_() for s in shapes]
    zeros = torch.zeros(N, K * d, device=DEVICE)
    lengths = LENGTHS.to(DEVICE)
    upstream = [torch.randn(T, N, K * d, generator=g).to(DEVICE)] + [
        torch.randn(N, K * d, generator=g).to(DEVICE) for _ in range(4)]  # fmt: skip
    results = []
    for layer in (triton_slstm_ops.slstm_layer, slstm_layer):
        x, h0, c0, w_ih, w_hh, b_ih, b_hh = leaves
        y, final = layer(x, SLSTMState(h0, c0, zeros, zeros), w_ih, w_hh, b_ih, b_hh, reverse=True, lengths=lengths)
        outputs = (y, *final)
        grads = torch.autograd.grad(outputs, leaves, upstream, create_graph=True)
        second = torch.autograd.grad(sum(gr.square().sum() for gr in grads), leaves)
        results.append([o.detach() for o in outputs] + [gr.detach() for gr in grads] + list(second))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, **TOLERANCES[DTYPE])


@pytest.mark.parametrize("formulation", ["xlstm", "tirex"])
def test_layer_op_in_float16(formulation):
    """The layer op in float16 (dots on float16 operands, the state and the pointwise math in float32, as on CUDA; the
    backend serves only float32 under the interpreter, so the op is called directly): every output and gradient at
    most twice as far from the float64 truth as the reference run in float16. d = 24: one 32-wide tile, padded.
    Not bfloat16: the interpreter misreads it (the multi-head op's LSTM is off by O(1) there too); its sm_90 build is
    checked in tests/test_triton_compile.py."""
    from fusedrnn import triton_slstm_ops
    from fusedrnn.reference_slstm import SLSTMState, slstm_layer

    g = torch.Generator().manual_seed(4)
    K, d = 2, 24
    shapes = {"x": (4, N, I), "h0": (N, K * d), "c0": (N, K * d), "n0": (N, K * d), "m0": (N, K * d),
              "w_ih": (4 * K * d, I), "w_hh": (K, 4 * d, d), "b_ih": (4 * K * d,), "b_hh": (4 * K * d,)}  # fmt: skip
    base = {name: torch.randn(*shape, generator=g) * 0.5 for name, shape in shapes.items()}
    base["n0"] = base["n0"].abs() + 0.5  # a normaliser is positive
    lengths = torch.tensor([4, 2, 1], device=DEVICE)

    def run(layer, dtype):
        leaves = {name: value.to(DEVICE, dtype).requires_grad_() for name, value in base.items()}
        state = SLSTMState(*(leaves[name] for name in ("h0", "c0", "n0", "m0")))
        y, final = layer(leaves["x"], state, leaves["w_ih"], leaves["w_hh"], leaves["b_ih"], leaves["b_hh"],
                         reverse=True, lengths=lengths, formulation=formulation)  # fmt: skip
        outputs = [y, *final]
        upstream = [torch.randn(o.shape, generator=torch.Generator().manual_seed(5)).to(o) for o in outputs]
        grads = torch.autograd.grad(outputs, list(leaves.values()), upstream)
        return {**{f"output[{i}]": o.detach() for i, o in enumerate(outputs)},
                **{f"grad {name}": grad for name, grad in zip(leaves, grads)}}  # fmt: skip

    ours = run(triton_slstm_ops.slstm_layer, torch.float16)
    assert_as_close_to_float64(ours, run(slstm_layer, torch.float16), run(slstm_layer, torch.float64), torch.float16,
                               relative_floor=True)  # fmt: skip


def test_compile_forward_and_backward():
    """The ops are torch.library ops: torch.compile traces an sLSTM on triton without graph breaks."""
    torch._dynamo.reset()
    module = fusedrnn.sLSTM(4, 6, num_heads=2, backend="triton", device=DEVICE)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    x = torch.randn(3, 2, 4, device=DEVICE, requires_grad=True)
    outputs = [fn(x)[0] for fn in (compiled, module)]
    grads = [torch.autograd.grad(y.square().sum(), [x, *module.parameters()]) for y in outputs]
    torch.testing.assert_close(outputs[0], outputs[1])
    torch.testing.assert_close(grads[0], grads[1])
    torch._dynamo.reset()


@pytest.mark.parametrize("formulation", ["xlstm", "tirex"])
def test_inference_without_saving(formulation):
    """Without autograd the forward keeps two state slots, not the sequence (SAVE off): the same outputs and state."""
    torch.manual_seed(0)
    modules = [fusedrnn.sLSTM(I, H, num_heads=2, bidirectional=True, formulation=formulation, backend=name,
                              device=DEVICE) for name in ("reference", "triton")]  # fmt: skip
    modules[1].load_state_dict(modules[0].state_dict())
    x = torch.randn(4, N, I, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    with torch.no_grad():
        outputs = [m(pack_padded_sequence(x, torch.tensor([4, 2, 1]))) for m in modules]
    (packed_ref, state_ref), (packed, state) = outputs
    torch.testing.assert_close(packed.data, packed_ref.data, **TOLERANCES[DTYPE])
    for got, want in zip(state, state_ref):
        torch.testing.assert_close(got, want, **TOLERANCES[DTYPE])
