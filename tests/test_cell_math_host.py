"""csrc/cell_math.h's formulas with ScalarMath, the primitives the CUDA kernels (pointwise and persistent) use, on the
host: no other CPU test runs ScalarMath (the CPU pass instantiates the same formulas with vector primitives), so the
GPU kernels' own math is checked here before any GPU run, against an independent truth: float64 autograd of the cells
written out in plain PyTorch. tests/host/cell_math_host.cpp is compiled with the system C++ compiler (the extension's
build needs one too: a missing compiler is a failure, not a skip)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fusedrnn.reference_slstm import SLSTMState, slstm_step
from parity import TOLERANCES

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
#: Values per function: enough to reach both signs, saturation (|a| ~ 4) and relu's kink side by side.
COUNT = 64
#: The C++ Mode enum's values (csrc/cell_math.h: LSTM, GRU, RNN_TANH, RNN_RELU, INDRNN_TANH, INDRNN_RELU).
MODES = {"RNN_TANH": 2, "RNN_RELU": 3, "INDRNN_TANH": 4, "INDRNN_RELU": 5}
TYPES = {"float": torch.float32, "double": torch.float64}


@pytest.fixture(scope="module")
def host_binary(tmp_path_factory):
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    assert compiler, "no C++ compiler (c++ / g++ / $CXX): the extension's build needs one too"
    binary = tmp_path_factory.mktemp("cell_math") / "cell_math_host"
    source = TESTS / "host" / "cell_math_host.cpp"
    command = [compiler, "-std=c++17", "-O1", "-Wall", "-Werror", f"-I{ROOT / 'csrc'}", str(source), "-o", str(binary)]
    subprocess.run(command, check=True, timeout=300)
    return binary


def call(binary, ctype: str, function: str, inputs: torch.Tensor) -> torch.Tensor:
    """Run `function` once per row of `inputs` [rows, arity] in C++ type `ctype`: outputs [rows, outputs] (float64)."""
    lines = "".join(f"{function} " + " ".join(repr(v) for v in row) + "\n" for row in inputs.tolist())
    result = subprocess.run([str(binary), ctype], input=lines, capture_output=True, text=True, timeout=60, check=True)
    return torch.tensor([[float(v) for v in line.split()] for line in result.stdout.splitlines()], dtype=torch.float64)


def randn(*shape, seed, scale=2.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def rounded(t: torch.Tensor, ctype: str) -> torch.Tensor:
    """The inputs as the C++ side sees them (rounded to its type), back in float64 for the truth."""
    return t.to(TYPES[ctype]).double()


def assert_matches(actual, expected, ctype, what):
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    torch.testing.assert_close(actual, expected, **TOLERANCES[TYPES[ctype]], msg=lambda m: f"{what} ({ctype}): {m}")


def grads(outputs, inputs, upstream):
    return torch.stack(torch.autograd.grad(outputs, inputs, upstream), dim=1)


CTYPES = list(TYPES)


@pytest.mark.parametrize("ctype", CTYPES)
def test_primitives(host_binary, ctype):
    a = rounded(randn(COUNT, seed=0), ctype)
    a[:4] = torch.tensor([0.0, -0.0, 30.0, -30.0])  # relu at zero, saturation
    for name, truth in (("sigmoid", torch.sigmoid), ("tanh", torch.tanh), ("relu", torch.relu)):
        assert_matches(call(host_binary, ctype, name, a[:, None])[:, 0], truth(a), ctype, name)
    y, dy = rounded(torch.relu(randn(COUNT, seed=1)), ctype), rounded(randn(COUNT, seed=2), ctype)
    assert_matches(call(host_binary, ctype, "relu_backward", torch.stack([y, dy], 1))[:, 0],
                   torch.where(y > 0, dy, 0.0), ctype, "relu_backward")  # fmt: skip


def lstm_truth(ai, af, ag, ao, c_prev):
    i, f, g, o = torch.sigmoid(ai), torch.sigmoid(af), torch.tanh(ag), torch.sigmoid(ao)
    c = f * c_prev + i * g
    return i, f, g, o, c, o * torch.tanh(c)


@pytest.mark.parametrize("ctype", CTYPES)
def test_lstm_forward_and_backward(host_binary, ctype):
    """Forward: the gates, c and h; backward: the gradients of the four pre-activations and of c_prev given the
    gradients of h and of c (from the next step), against autograd of h . dh + c . dc."""
    inputs = [rounded(randn(COUNT, seed=10 + k), ctype).requires_grad_() for k in range(5)]
    truth = lstm_truth(*inputs)
    actual = call(host_binary, ctype, "lstm_forward", torch.stack(inputs, 1).detach())
    assert_matches(actual, torch.stack(truth, 1).detach(), ctype, "lstm_forward i f g o c h")
    dh, dc = rounded(randn(COUNT, seed=20), ctype), rounded(randn(COUNT, seed=21), ctype)
    expected = grads([truth[5], truth[4]], inputs, [dh, dc])  # d ai, d af, d ag, d ao, d c_prev
    saved = [rounded(t.detach(), ctype) for t in truth[:5]]  # i f g o c as the kernels store them
    actual = call(host_binary, ctype, "lstm_backward", torch.stack([*saved, inputs[4].detach(), dh, dc], 1))
    assert_matches(actual, expected, ctype, "lstm_backward dai daf dag dao dc_prev")


@pytest.mark.parametrize("ctype", CTYPES)
def test_gru_forward_and_backward(host_binary, ctype):
    """PyTorch's GRU: n = tanh(a_in + r * hn); the backward's gradients of a_r, a_z, a_in, hn and h_prev's direct
    part (z * dh), against autograd of h . dh."""
    ar, az, a_in, hn, h_prev = (rounded(randn(COUNT, seed=30 + k), ctype).requires_grad_() for k in range(5))
    r, z = torch.sigmoid(ar), torch.sigmoid(az)
    n = torch.tanh(a_in + r * hn)
    h = (1 - z) * n + z * h_prev
    actual = call(host_binary, ctype, "gru_forward", torch.stack([ar, az, a_in, hn, h_prev], 1).detach())
    assert_matches(actual, torch.stack([r, z, n, h], 1).detach(), ctype, "gru_forward r z n h")
    dh = rounded(randn(COUNT, seed=40), ctype)
    expected = grads([h], [ar, az, a_in, hn, h_prev], [dh])
    saved = [rounded(t.detach(), ctype) for t in (r, z, n)]
    actual = call(host_binary, ctype, "gru_backward", torch.stack([*saved, hn.detach(), h_prev.detach(), dh], 1))
    assert_matches(actual, expected, ctype, "gru_backward dar daz da_in dhn dh_prev_direct")


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("ctype", CTYPES)
def test_elman_forward_and_backward(host_binary, ctype, mode):
    a = rounded(randn(COUNT, seed=50), ctype).requires_grad_()
    h = torch.tanh(a) if mode.endswith("TANH") else torch.relu(a)
    code = torch.full((COUNT,), float(MODES[mode]), dtype=torch.float64)
    actual = call(host_binary, ctype, "rnn_forward", torch.stack([code, a.detach(), torch.zeros(COUNT)], 1))[:, 0]
    assert_matches(actual, h.detach(), ctype, f"rnn_forward {mode}")
    dh = rounded(randn(COUNT, seed=51), ctype)
    (expected,) = torch.autograd.grad(h, a, dh)
    saved = rounded(h.detach(), ctype)
    actual = call(host_binary, ctype, "rnn_backward", torch.stack([code, saved, dh], 1))[:, 0]
    assert_matches(actual, expected, ctype, f"rnn_backward {mode}")


@pytest.mark.parametrize("ctype", CTYPES)
def test_zoneout_and_layer_norm_backward(host_binary, ctype):
    """zoneout(m, prev, fresh) = m prev + (1 - m) fresh; the per-element part of layer norm's backward, given the
    row's statistics, against autograd of F.layer_norm over whole rows (width 13)."""
    m = torch.tensor([0.0, 1.0, 0.35, 0.6]).repeat(COUNT // 4).double()
    prev, fresh = (rounded(randn(COUNT, seed=60 + k), ctype) for k in range(2))
    actual = call(host_binary, ctype, "zoneout", torch.stack([m, prev, fresh], 1))[:, 0]
    assert_matches(actual, m * prev + (1 - m) * fresh, ctype, "zoneout")

    rows, width, eps = 8, 13, 1e-5  # eps: csrc/cell_math.h kLayerNormEps, F.layer_norm's default
    v = (rounded(randn(rows, width, seed=62), ctype) + 0.5).requires_grad_()
    dn = rounded(randn(rows, width, seed=63), ctype)
    (expected,) = torch.autograd.grad(F.layer_norm(v, (width,), eps=eps), v, dn)
    mean = v.detach().mean(1, keepdim=True)
    rstd = torch.rsqrt(v.detach().var(1, unbiased=False, keepdim=True) + eps)
    nhat = (v.detach() - mean) * rstd
    columns = [dn, nhat, rstd.expand(rows, width), dn.mean(1, keepdim=True).expand(rows, width),
               (dn * nhat).mean(1, keepdim=True).expand(rows, width)]  # fmt: skip
    actual = call(host_binary, ctype, "layer_norm_backward", torch.stack([rounded(c, ctype).reshape(-1) for c in
                                                                          columns], 1))  # fmt: skip
    assert_matches(actual[:, 0].reshape(rows, width), expected, ctype, "layer_norm_backward")


@pytest.mark.parametrize("ctype", CTYPES)
def test_layer_norm_rstd(host_binary, ctype):
    """1 / sqrt(var + eps) with F.layer_norm's eps (csrc/cell_math.h kLayerNormEps), down to a zero variance (a
    constant row: the norm outputs zeros, rstd stays finite)."""
    var = rounded(randn(COUNT, seed=64).abs(), ctype)
    var[:2] = torch.tensor([0.0, 1e-7])
    actual = call(host_binary, ctype, "layer_norm_rstd", var[:, None])[:, 0]
    assert_matches(actual, torch.rsqrt(var + 1e-5), ctype, "layer_norm_rstd")


@pytest.mark.parametrize("first", [False, True], ids=["running", "first_step"])
@pytest.mark.parametrize("formulation", ["xlstm", "tirex"])
@pytest.mark.parametrize("ctype", CTYPES)
def test_slstm_forward_and_backward(host_binary, ctype, formulation, first):
    """xLSTM's sLSTM step (cell_math.h: slstm_forward / slstm_backward) against its oracle,
    fusedrnn.reference_slstm.slstm_step, and autograd of it: one unit per row (H = 1), the first-step rule given as
    a flag here (the oracle's: the whole n state zero), f~ past TiRex's clamp on some rows."""
    a = rounded(randn(COUNT, 4, seed=70), ctype)
    a[:4, 1] = 20.0  # f~ past TiRex's clamp at 15
    a.requires_grad_()
    c, m = (rounded(randn(COUNT, 1, seed=71 + k), ctype).requires_grad_() for k in range(2))
    n = torch.zeros(COUNT, 1, dtype=torch.float64) if first else rounded(randn(COUNT, 1, seed=73).abs() + 0.5, ctype)
    n.requires_grad_()
    truth = slstm_step(a, SLSTMState(torch.zeros_like(c), c, n, m), formulation)
    flags = torch.tensor([float(first), float(formulation == "tirex")], dtype=torch.float64).expand(COUNT, 2)
    inputs = torch.cat([a, c, n, m, flags], 1).detach()
    actual = call(host_binary, ctype, "slstm_forward", inputs)
    expected = torch.cat([truth.c, truth.n, truth.m, truth.h], 1).detach()
    assert_matches(actual, expected, ctype, f"slstm_forward c n m h ({formulation})")
    upstream = [rounded(randn(COUNT, 1, seed=80 + k), ctype) for k in range(4)]  # dh dc dn dm
    expected = torch.cat(torch.autograd.grad([truth.h, truth.c, truth.n, truth.m], [a, c, n, m], upstream), 1)
    actual = call(host_binary, ctype, "slstm_backward", torch.cat([inputs, *upstream], 1))
    assert_matches(actual, expected, ctype, f"slstm_backward dai daf daz dao dc dn dm ({formulation})")
