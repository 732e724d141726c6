"""Multi-head LSTM / GRU / Elman RNN on the `triton` backend (fusedrnn.kernels.heads' forward and backward kernels,
issue #21) against the reference backend: every output and every gradient, float32. Without a GPU it runs under
Triton's interpreter; on a GPU (the `gpu` marker) the same tests run there, where the kernels have never run yet:
unverified. The planner's limits are tested in tests/test_triton_plan.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
from fusedrnn import registry
from fusedrnn.backends.triton import UNMEASURED_GPU_PREFERENCE
from fusedrnn.kernels import plan
from devices import DEVICE
from parity import assert_all_close, assert_as_close_to_float64, forward_backward, output_tensors

TRITON_REASON = registry.availability()["triton"]
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(TRITON_REASON is not None, reason=f"triton backend unavailable: {TRITON_REASON}")]
DTYPE = torch.float32
T, I = 3, 3
CELLS = {"LSTM": (fusedrnn.LSTM, {}), "GRU": (fusedrnn.GRU, {}), "RNN_TANH": (fusedrnn.RNN, {}),
         "RNN_RELU": (fusedrnn.RNN, {"nonlinearity": "relu"})}  # fmt: skip

CASES = {
    "one_layer": dict(hidden=32, num_heads=2),  # d = 16: one [16, 16] tile, as a GPU dot needs at least
    "odd_head_size": dict(hidden=15, num_heads=3),  # d = 5: padded to the dot's 16
    # d = 80: two output tiles (64 + 16 of 64) and three reduction chunks (32 + 32 + 16 of 32) per gate
    "wide_head_tiles": dict(hidden=160, num_heads=2, batch=2, seq_len=2),
    "stacked_bidirectional_state": dict(hidden=6, num_heads=2, num_layers=2, bidirectional=True, state=True),
    # 18 rows: two batch tiles of 16, the second partial
    "packed_bidirectional": dict(hidden=6, num_heads=3, bidirectional=True, packed=True, batch=18),
    "no_bias": dict(hidden=6, num_heads=2, bias=False),
}


def _split(case: dict) -> tuple[dict, dict]:
    """(module kwargs, run options)."""
    case = dict(case)
    run = {key: case.pop(key, default) for key, default in (("hidden", 6), ("batch", 3), ("seq_len", T),
                                                            ("packed", False), ("state", False))}  # fmt: skip
    return case, run


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("cell", CELLS, ids=CELLS.keys())
def test_triton_matches_reference(cell, case):
    kwargs, run = _split(case)
    cls, extra = CELLS[cell]
    H, N, steps = run["hidden"], run["batch"], run["seq_len"]
    torch.manual_seed(0)
    modules = {name: cls(I, H, backend=name, device=DEVICE, **extra, **kwargs) for name in ("reference", "triton")}
    modules["triton"].load_state_dict(modules["reference"].state_dict())
    reference = modules["reference"]
    LD = reference.num_layers * (2 if reference.bidirectional else 1)
    # Descending, distinct lengths down to 1, every row shorter than the sequence but the first.
    lengths = torch.linspace(steps, 1, N).round().long()

    def make_inputs():
        g = torch.Generator().manual_seed(1)
        x = torch.randn(steps, N, I, generator=g).to(DEVICE).requires_grad_()
        leaves = {"x": x}
        state = None
        if run["state"]:
            h0 = torch.randn(LD, N, H, generator=g).to(DEVICE).requires_grad_()
            leaves["h0"] = h0
            state = h0
            if cell == "LSTM":
                c0 = torch.randn(LD, N, H, generator=g).to(DEVICE).requires_grad_()
                leaves["c0"] = c0
                state = (h0, c0)
        inp = pack_padded_sequence(x, lengths) if run["packed"] else x
        return ((inp,) if state is None else (inp, state)), leaves

    expected = forward_backward(reference, make_inputs)
    actual = forward_backward(modules["triton"], make_inputs)
    assert_all_close(actual, expected, DTYPE)


def test_layer_op_gradients_and_double_backward():
    """The layer op alone (reverse, lengths, initial state), against the reference's rnn_layer: first order from the
    kernels; second order (create_graph) through the reference's differentiable recompute."""
    from fusedrnn import triton_heads_ops
    from fusedrnn.reference import rnn_layer

    g = torch.Generator().manual_seed(3)
    K, d, N = 2, 3, 3
    shapes = ((T, N, I), (N, K * d), (N, K * d), (4 * K * d, I), (K, 4 * d, d), (4 * K * d,), (4 * K * d,))
    leaves = [torch.randn(*s, generator=g).to(DEVICE).requires_grad_() for s in shapes]
    lengths = torch.tensor([3, 2, 1], device=DEVICE)
    upstream = [torch.randn(T, N, K * d, generator=g).to(DEVICE), torch.randn(N, K * d, generator=g).to(DEVICE),
                torch.randn(N, K * d, generator=g).to(DEVICE)]  # fmt: skip
    results = []
    for layer in (triton_heads_ops.rnn_layer, rnn_layer):
        outputs = layer("LSTM", *leaves, reverse=True, lengths=lengths)
        grads = torch.autograd.grad(outputs, leaves, upstream, create_graph=True)
        second = torch.autograd.grad(sum(gr.square().sum() for gr in grads), leaves)
        results.append([o.detach() for o in outputs] + [gr.detach() for gr in grads] + list(second))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_inference_without_saving(cell):
    """Without autograd the forward keeps two state slots, not the sequence (SAVE off): the same outputs."""
    cls, extra = CELLS[cell]
    torch.manual_seed(0)
    modules = [cls(I, 6, num_heads=2, bidirectional=True, backend=name, device=DEVICE, **extra)
               for name in ("reference", "triton")]  # fmt: skip
    modules[1].load_state_dict(modules[0].state_dict())
    x = torch.randn(4, 3, I, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    with torch.no_grad():
        outputs = [output_tensors(m(pack_padded_sequence(x, torch.tensor([4, 2, 1])))) for m in modules]
    for expected, actual in zip(*outputs):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN_TANH"])
def test_layer_op_in_float16(cell):
    """The layer op in float16 (dots on float16 operands, state and gate math in float32, as on CUDA; the backend
    serves only float32 under the interpreter, so the op is called directly): every output and gradient at most
    twice as far from the float64 truth as the reference run in float16."""
    from fusedrnn import triton_heads_ops
    from fusedrnn.reference import GATES, rnn_layer

    g = torch.Generator().manual_seed(4)
    K, d, N, G = 2, 24, 3, GATES[cell]
    shapes = {"x": (4, N, I), "h0": (N, K * d), "c0": (N, K * d) if cell == "LSTM" else None, "w_ih": (G * K * d, I),
              "w_hh": (K, G * d, d), "b_ih": (G * K * d,), "b_hh": (G * K * d,)}  # fmt: skip
    base = {name: torch.randn(*shape, generator=g) * 0.5 for name, shape in shapes.items() if shape is not None}
    lengths = torch.tensor([4, 2, 1], device=DEVICE)

    def run(layer, dtype):
        leaves = {name: value.to(DEVICE, dtype).requires_grad_() for name, value in base.items()}
        outputs = [o for o in layer(cell, *(leaves.get(name) for name in shapes), reverse=True, lengths=lengths)
                   if o is not None]  # fmt: skip
        upstream = [torch.randn(o.shape, generator=torch.Generator().manual_seed(5)).to(o) for o in outputs]
        grads = torch.autograd.grad(outputs, list(leaves.values()), upstream)
        return {**{f"output[{i}]": o.detach() for i, o in enumerate(outputs)},
                **{f"grad {name}": grad for name, grad in zip(leaves, grads)}}  # fmt: skip

    ours = run(triton_heads_ops.rnn_layer, torch.float16)
    assert_as_close_to_float64(ours, run(rnn_layer, torch.float16), run(rnn_layer, torch.float64), torch.float16,
                               relative_floor=True)  # fmt: skip


def test_compile_forward_and_backward():
    """The ops are torch.library ops: torch.compile traces a multi-head layer on triton without graph breaks."""
    torch._dynamo.reset()
    module = fusedrnn.GRU(4, 6, num_heads=2, backend="triton", device=DEVICE)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    x = torch.randn(3, 2, 4, device=DEVICE, requires_grad=True)
    outputs = [fn(x)[0] for fn in (compiled, module)]
    grads = [torch.autograd.grad(y.square().sum(), [x, *module.parameters()]) for y in outputs]
    torch.testing.assert_close(outputs[0], outputs[1])
    torch.testing.assert_close(grads[0], grads[1])
    torch._dynamo.reset()


def test_empty_batch():
    module = fusedrnn.LSTM(I, 6, num_heads=2, backend="triton", device=DEVICE)
    x = torch.randn(T, 0, I, device=DEVICE, requires_grad=True)
    y, (h, c) = module(x)
    (y.sum() + h.sum() + c.sum()).backward()
    assert y.shape == (T, 0, 6) and h.shape == c.shape == (1, 0, 6) and x.grad.shape == x.shape
    assert all(p.grad is not None and not p.grad.any() for p in module.parameters())


def test_selection_and_refusals():
    backend = registry.get_backend("triton")
    call = registry.RNNCall("LSTM", DEVICE, torch.float32, I, 512, num_heads=4)
    assert backend.unsupported_reason(call) is None  # TiRex-like: d = 128
    # CPU: the interpreter, never `auto`'s choice; CUDA: never timed on a GPU, ranked as the plain kernels
    assert backend.preference(call) == (UNMEASURED_GPU_PREFERENCE if DEVICE == "cuda" else 0)
    zoneout = registry.RNNCall("GRU", DEVICE, torch.float32, I, 8, num_heads=2, zoneout=True)
    assert "heads with zoneout" in backend.unsupported_reason(zoneout)
    wide = registry.RNNCall("RNN_TANH", DEVICE, torch.float32, I, 2 * (plan.MAX_HEAD_DIM + 1), num_heads=2)
    assert f"head size {plan.MAX_HEAD_DIM + 1} > {plan.MAX_HEAD_DIM}" in backend.unsupported_reason(wide)
    double = registry.RNNCall("LSTM", DEVICE, torch.float64, I, 8, num_heads=2)
    assert "dtype torch.float64 is not supported" in backend.unsupported_reason(double)


def test_refuses_zoneout_with_heads_by_name():
    module = fusedrnn.GRU(I, 6, num_heads=2, zoneout=0.2, backend="triton", device=DEVICE)
    with pytest.raises(registry.BackendError, match="heads with zoneout"):
        module(torch.randn(T, 2, I, device=DEVICE))


#: compile_check's multi-head reports (sm_90, built on the CPU in a child process: the session runs the interpreter).
COMPILE_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def heads_reports() -> dict[str, dict]:
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-m", "fusedrnn.kernels.compile_check", "--heads", "--key", "--json"],
                            env=env, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {f"{r['label']} N={r['batch']} H={r['hidden']}": r for r in reports}


def _heads_key_labels() -> list[str]:
    from fusedrnn.kernels.compile_check import heads_key_labels

    return heads_key_labels()


needs_compiler = pytest.mark.skipif(not plan.interpreter_enabled(),
                                    reason="on a GPU the kernels are compiled and run for real")  # fmt: skip


@needs_compiler
def test_every_heads_key_configuration_was_built(heads_reports):
    assert sorted(heads_reports) == sorted(_heads_key_labels())


@needs_compiler
@pytest.mark.parametrize("label", _heads_key_labels())
def test_heads_kernels_compile_for_sm90_without_spills(heads_reports, label):
    """No spills or local memory, shared memory within an H100's, and tensor-core MMAs for the per-step dots
    wherever the head has 16 units or more (16-bit or TF32 operands; exact fp32 dots are FMA loops)."""
    r = heads_reports[label]
    assert (r["spill_bytes"], r["stack_bytes"], r["local_in_ptx"]) == (0, 0, False), r
    assert r["shared_bytes"] <= plan.H100_SHARED_BYTES, r
    if "ieee" not in label and r["head_dim"] >= plan.MIN_DOT:
        assert r["mma"] + r["wgmma"] > 0, r
