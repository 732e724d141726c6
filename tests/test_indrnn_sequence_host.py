"""csrc/indrnn_sequence.h's whole-sequence IndRNN loops, which the `cuda` backend's IndRNN kernels run
(csrc/indrnn_cuda.cu: one thread per (row, unit)), on the host: tests/host/indrnn_sequence_host.cpp runs them for every
(row, unit) and the host part around them (indrnn_host.cpp's GEMMs: dx = da W_ih, dW_ih = da^T x, db = sum da,
du = sum over rows of du_rows) is restated here in float64. Every output and gradient against float64 autograd of the
oracle, fusedrnn.reference.rnn_layer: tanh and relu, reverse, lengths (a padded packed batch), h0, zoneout (0/1 draws
and a rate). The driver is compiled with the system C++ compiler (the extension's build needs one too: a missing
compiler is a failure, not a skip)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from fusedrnn.reference import ZoneoutMasks, rnn_layer
from parity import TOLERANCES

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
#: The C++ Mode enum's values (csrc/cell_math.h).
MODES = {"INDRNN_TANH": 4, "INDRNN_RELU": 5}
TYPES = {"float": torch.float32, "double": torch.float64}
#: H = 5 and N = 4: rows and units small enough to read a failure, several of each.
N, I, H = 4, 3, 5
#: Steps: fewer than one chunk of loads in flight (csrc/indrnn_sequence.h: kStepsInFlight = 8), and two chunks and a
#: part. Per T, lengths unsorted, with a full row, a row that stops after one step, and (T = 19) one that ends in the
#: middle of a chunk.
STEPS = [7, 19]
LENGTHS = {7: [7, 2, 5, 1], 19: [19, 2, 12, 1]}


@pytest.fixture(scope="module")
def host_binary(tmp_path_factory):
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    assert compiler, "no C++ compiler (c++ / g++ / $CXX): the extension's build needs one too"
    binary = tmp_path_factory.mktemp("indrnn_sequence") / "indrnn_sequence_host"
    source = TESTS / "host" / "indrnn_sequence_host.cpp"
    command = [compiler, "-std=c++17", "-O1", "-Wall", "-Werror", f"-I{ROOT / 'csrc'}", str(source), "-o", str(binary)]
    subprocess.run(command, check=True, timeout=300)
    return binary


def numbers(t: torch.Tensor) -> str:
    return " ".join(repr(v) for v in t.reshape(-1).tolist())


def run_host(binary, ctype, mode, reverse, gi, u, h0, lengths, zoneout, grad_y, grad_h_n):
    """(y, h_n, da, dh0, du_rows) from the driver, float64, shaped [T, N, H] / [N, H]."""
    T = gi.shape[0]
    header = [MODES[mode], T, N, H, int(reverse), int(lengths is not None), int(zoneout is not None)]
    parts = [" ".join(map(str, header)), numbers(gi), numbers(u), numbers(h0)]
    parts += [] if lengths is None else [numbers(lengths.double())]
    parts += [] if zoneout is None else [numbers(zoneout)]
    parts += [numbers(grad_y), numbers(grad_h_n)]
    result = subprocess.run([str(binary), ctype], input="\n".join(parts) + "\n", capture_output=True, text=True,
                            timeout=60, check=True)  # fmt: skip
    lines = [torch.tensor([float(v) for v in line.split()], dtype=torch.float64) for line in result.stdout.splitlines()]
    y, h_n, da, dh0, du_rows = lines
    return y.view(T, N, H), h_n.view(N, H), da.view(T, N, H), dh0.view(N, H), du_rows.view(N, H)


def randn(*shape, generator, scale=1.0):
    return torch.randn(*shape, generator=generator, dtype=torch.float64) * scale


@pytest.mark.parametrize("zoneout", [None, "draws", "rate"])
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("T", STEPS)
@pytest.mark.parametrize("ctype", list(TYPES))
def test_sequence_loops_match_the_oracle(host_binary, ctype, T, mode, reverse, lengths, zoneout):
    g = torch.Generator().manual_seed(0)

    def leaf(*shape, scale=0.5):  # rounded to the driver's type, so both sides start from the same values
        return randn(*shape, generator=g, scale=scale).to(TYPES[ctype]).double().requires_grad_()

    x, h0, w_ih, b_ih, b_hh = leaf(T, N, I, scale=1.0), leaf(N, H), leaf(H, I), leaf(H), leaf(H)
    u = leaf(H, scale=0.6)
    masks = None
    if zoneout == "draws":
        masks = ZoneoutMasks(torch.bernoulli(torch.full((T, N, H), 0.4, dtype=torch.float64), generator=g))
    elif zoneout == "rate":
        masks = ZoneoutMasks(torch.full((T, N, H), 0.3, dtype=torch.float64).to(TYPES[ctype]).double())
    lengths_t = torch.tensor(LENGTHS[T]) if lengths else None
    y_ref, h_n_ref, _ = rnn_layer(mode, x, h0, None, w_ih, u, b_ih, b_hh, None, reverse, lengths_t, zoneout=masks)
    valid = torch.ones(T, N, 1, dtype=torch.bool) if lengths_t is None else (
        torch.arange(T).unsqueeze(1) < lengths_t.unsqueeze(0)).unsqueeze(2)  # fmt: skip
    # The op sees the upstream gradient of the masked output (fusedrnn.backends.native zeroes y past each length).
    grad_y = torch.where(valid, randn(T, N, H, generator=g), 0.0).to(TYPES[ctype]).double()
    grad_h_n = randn(N, H, generator=g).to(TYPES[ctype]).double()
    truth = torch.autograd.grad([y_ref, h_n_ref], [x, h0, w_ih, b_ih, b_hh, u], [grad_y, grad_h_n])

    gi = (x @ w_ih.T + b_ih + b_hh).detach().to(TYPES[ctype]).double()  # the host's projection GEMM
    y, h_n, da, dh0, du_rows = run_host(host_binary, ctype, mode, reverse, gi, u.detach(), h0.detach(), lengths_t,
                                        None if masks is None else masks.h, grad_y, grad_h_n)  # fmt: skip
    # Past its length a row's y carries its state (the caller zeroes the output): the last state in the forward
    # direction, h0 in reverse (those steps come before the row's first).
    carried = (h0 if reverse else h_n_ref).detach().expand(T, N, H)
    actual = {
        "y": torch.where(valid, y, 0.0), "y carried": torch.where(valid, 0.0, y), "h_n": h_n,
        "grad x": da @ w_ih.detach(), "grad h0": dh0, "grad w_ih": torch.einsum("tnh,tni->hi", da, x.detach()),
        "grad b_ih": da.sum((0, 1)), "grad b_hh": da.sum((0, 1)), "grad u": du_rows.sum(0),
    }  # fmt: skip
    expected = {
        "y": y_ref.detach(), "y carried": torch.where(valid, 0.0, carried), "h_n": h_n_ref.detach(),
        "grad x": truth[0], "grad h0": truth[1], "grad w_ih": truth[2], "grad b_ih": truth[3], "grad b_hh": truth[4],
        "grad u": truth[5],
    }  # fmt: skip
    for key, e in expected.items():
        torch.testing.assert_close(actual[key], e, **TOLERANCES[TYPES[ctype]], msg=lambda m, key=key: f"{key}: {m}")
    if mode == "INDRNN_RELU" and zoneout is None:  # a relu that never switches would leave its zero side untested
        assert (torch.where(valid, y, 1.0) == 0).any() and (y > 0).any()
