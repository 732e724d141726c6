"""xLSTM's sLSTM on the `triton` backend (fusedrnn.kernels.slstm's forward and backward kernels) against the
reference backend: every output and every gradient, float32. Without a GPU it runs under Triton's interpreter; on a
GPU (the `gpu` marker) the same tests run there, where the kernels have never run yet: unverified."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
from fusedrnn import registry
from devices import DEVICE
from parity import TOLERANCES, assert_all_close, forward_backward

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
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_triton_matches_reference(case):
    case = dict(case)
    packed, with_state, c_only = case.pop("packed", False), case.pop("state", False), case.pop("c_only", False)
    forget_bias = case.pop("forget_bias", None)
    torch.manual_seed(0)
    modules = {name: fusedrnn.sLSTM(I, H, backend=name, device=DEVICE, **case) for name in ("reference", "triton")}
    with torch.no_grad():
        if forget_bias is not None:  # past TiRex's clamp at 15
            modules["reference"].bias_hh_l0[H : 2 * H] = forget_bias
        for p_triton, p_reference in zip(modules["triton"].parameters(), modules["reference"].parameters()):
            p_triton.copy_(p_reference)
    D = 2 if modules["reference"].bidirectional else 1
    LD = modules["reference"].num_layers * D

    def make_inputs():
        g = torch.Generator().manual_seed(1)
        x = torch.randn(T, N, I, generator=g).to(DEVICE).requires_grad_()
        leaves = {"x": x}
        state = None
        if with_state or c_only:
            h, c, m = (torch.randn(LD, N, H, generator=g).to(DEVICE) for _ in range(3))
            n = (torch.rand(LD, N, H, generator=g) + 0.5).to(DEVICE)
            if c_only:  # n_0 = 0 with c_0 != 0: xlstm's first-step rule and its cap on f' decide the result
                h, n, m = torch.zeros_like(h), torch.zeros_like(n), torch.zeros_like(m)
            state = tuple(s.requires_grad_() for s in (h, c, n, m))
            leaves.update(zip("hcnm", state))
        inp = pack_padded_sequence(x, LENGTHS) if packed else x
        return ((inp,) if state is None else (inp, state)), leaves

    expected = forward_backward(modules["reference"], make_inputs)
    actual = forward_backward(modules["triton"], make_inputs)
    assert_all_close(actual, expected, DTYPE)
    if forget_bias is not None:  # past the clamp the forget gate's gradient is exactly zero (not sigmoid(-15) small)
        clamped = expected["grad bias_hh_l0"][H : 2 * H] == 0
        assert clamped.any() and torch.equal(actual["grad bias_hh_l0"][H : 2 * H] == 0, clamped)


def test_refusals():
    backend = registry.get_backend("triton")
    call = registry.RNNCall("SLSTM", "cpu", torch.float64, I, H, num_heads=2, formulation="xlstm")
    assert "float32 only" in backend.unsupported_reason(call)
    call = registry.RNNCall("SLSTM", "cpu", torch.float32, I, 66, num_heads=2, formulation="xlstm")
    assert "head size 33 > 32" in backend.unsupported_reason(call)
    call = registry.RNNCall("SLSTM", "cpu", torch.float32, I, H, num_heads=2, formulation="xlstm", compiling=True)
    assert "torch.compile" in backend.unsupported_reason(call)
    call = registry.RNNCall("LSTM", DEVICE, torch.float32, I, H, num_heads=2)
    assert backend.unsupported_reason(call) is None  # multi-head LSTM: its own kernels (tests/test_heads_triton.py)
    assert backend.preference(registry.RNNCall("SLSTM", "cuda", torch.float32, I, H, formulation="xlstm")) == 0


#: Builds the kernel to a cubin for sm_90 without a GPU (Triton ships ptxas): the interpreter accepts programs a GPU
#: compile rejects (a non-constexpr global did). Both kernels, every optional piece on, at the smallest head tile (the
#: largest, MAX_SLSTM_HEAD_DIM = 32, compiles too, at twice the time: 18 KB / 64 KB shared, checked by hand).
SM90_BUILD = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from fusedrnn.kernels.slstm import slstm_backward_kernel, slstm_forward_kernel
from fusedrnn.backends.triton import MAX_SLSTM_HEAD_DIM
constexprs = {"BLOCK_N": 16, "BLOCK_D": 16, "REVERSE": True, "HAS_LENGTHS": True, "TIREX": True,
              "FORGET_CLAMP": 15.0}
pointers = {"lengths_ptr": "*i64", "n0_zero_ptr": "*i1", "max_len_ptr": "*i64"}
for kernel, extra in ((slstm_forward_kernel, {"SAVE": True}), (slstm_backward_kernel, {})):
    options = {**constexprs, **extra}
    signature = {name: "constexpr" if name in options else
                 pointers.get(name, "*fp32" if name.endswith("_ptr") else "i32") for name in kernel.arg_names}
    source = ASTSource(kernel, signature, constexprs={(kernel.arg_names.index(n),): v for n, v in options.items()})
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    print("shared", compiled.metadata.shared)
"""


def test_kernel_compiles_for_sm90():
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", SM90_BUILD], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    shared = [int(line.split()[-1]) for line in result.stdout.splitlines() if line.startswith("shared")]
    assert len(shared) == 2 and max(shared) <= 228 * 1024  # an H100's shared memory per block


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
