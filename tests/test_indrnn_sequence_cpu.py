"""The `cuda` backend's whole-sequence IndRNN path, all but its CUDA launch, on the CPU: FUSEDRNN_CPU_INDRNN=sequence
sends the `cpu` backend's IndRNN layers through csrc/indrnn_host.cpp (the projection GEMM, the saved activations, the
weight-gradient GEMMs, the order of the twelve gradients) with indrnn_sequence.h's loops run on the host in the CUDA
kernels' accumulate type, where the GPU launches indrnn_cuda.cu. Every output and gradient against the float64 oracle
(fusedrnn.reference) through the real op and autograd, as tests/test_variants_cpu.py does for the default path; each
direction of a call on a different path (forward on one, backward on the other: the saved activations are shared)."""

from __future__ import annotations

import pytest
import torch
from parity import TOLERANCES, assert_as_close_to_float64
from test_variants_cpu import LENGTHS, assert_same, cpu_layer, in_float64, make_layer, reference_layer, run

from fusedrnn import registry

pytestmark = pytest.mark.skipif(
    registry.get_backend("cpu").unavailable_reason() is not None, reason="the compiled extension is not available"
)

HOOK = "FUSEDRNN_CPU_INDRNN"
CASES = ["indrnn_tanh", "indrnn_relu", "zoneout_indrnn_relu"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("bias, reverse", [(True, False), (False, True)], ids=["bias-fwd", "nobias-rev"])
@pytest.mark.parametrize("case", CASES)
def test_sequence_path_matches_the_oracle(case, bias, reverse, lengths, training, dtype, monkeypatch):
    if case != "zoneout_indrnn_relu" and not training:
        pytest.skip("no zoneout: training and eval are the same call")
    monkeypatch.setenv(HOOK, "sequence")
    mode, tensors, norm, zoneout = make_layer(case, dtype, bias, training)
    lengths = None if lengths is None else torch.tensor(lengths)
    actual = run(cpu_layer, mode, tensors, norm, zoneout, reverse, lengths)
    mode, ref_tensors, ref_norm, ref_zoneout = make_layer(case, torch.float64, bias, training)
    expected = run(reference_layer, mode, ref_tensors, ref_norm, ref_zoneout, reverse, lengths)
    assert_same(actual, {k: None if v is None else v.to(dtype) for k, v in expected.items()}, dtype)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("case", CASES)
def test_sequence_path_across_chunks_of_steps(case, reverse, monkeypatch):
    """19 steps: two whole chunks of loads in flight and a part (csrc/indrnn_sequence.h: kStepsInFlight = 8), a row
    that ends inside a chunk; float64 against the oracle."""
    monkeypatch.setenv(HOOK, "sequence")
    mode, tensors, norm, zoneout = make_layer(case, torch.float64, True, training=True, T=19)
    lengths = torch.tensor([19, 2, 12, 1])
    actual = run(cpu_layer, mode, tensors, norm, zoneout, reverse, lengths)
    expected = run(reference_layer, mode, tensors, norm, zoneout, reverse, lengths)
    assert_same(actual, expected, torch.float64)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", CASES)
def test_sequence_path_low_precision_against_float64(case, dtype, monkeypatch):
    """16-bit storage (the cpu backend told not to upcast), float32 state and math, lengths, reverse: no further
    from the float64 oracle than the oracle run in that dtype."""
    monkeypatch.setenv(HOOK, "sequence")
    monkeypatch.setenv("FUSEDRNN_CPU_HALF_COMPUTE", "storage")
    mode, tensors, norm, zoneout = make_layer(case, dtype, True, training=True)
    lengths = torch.tensor(LENGTHS)
    truth = run(reference_layer, mode, *in_float64(tensors, norm, zoneout), True, lengths)
    theirs = run(reference_layer, mode, tensors, norm, zoneout, True, lengths)
    ours = run(cpu_layer, mode, tensors, norm, zoneout, True, lengths)
    assert_as_close_to_float64(ours, theirs, truth, dtype, relative_floor=True)


@pytest.mark.parametrize("paths", ["sequence-then-loop", "loop-then-sequence"])
@pytest.mark.parametrize("case", CASES)
def test_directions_mix_the_paths(case, paths, monkeypatch):
    """Forward on one path, backward on the other (the hook is read per call): the loop's results, float64."""
    mode, tensors, norm, zoneout = make_layer(case, torch.float64, True, training=True)
    lengths = torch.tensor(LENGTHS)
    monkeypatch.setenv(HOOK, "loop")
    expected = run(cpu_layer, mode, tensors, norm, zoneout, True, lengths)
    forward_path, _, backward_path = paths.partition("-then-")

    def layer(*args):
        monkeypatch.setenv(HOOK, forward_path)
        outputs = cpu_layer(*args)
        monkeypatch.setenv(HOOK, backward_path)
        return outputs  # run() calls backward next

    assert_same(run(layer, mode, tensors, norm, zoneout, True, lengths), expected, torch.float64)


def test_the_hook_reaches_the_sequence_path(monkeypatch):
    """bfloat16 storage tells the paths apart: the sequence loop keeps h in float32 across steps, the per-step loop
    rounds it to bfloat16 every step, so their outputs differ in the last bits (and both stay near the truth above)."""
    monkeypatch.setenv("FUSEDRNN_CPU_HALF_COMPUTE", "storage")
    mode, tensors, norm, zoneout = make_layer("indrnn_tanh", torch.bfloat16, True, training=True, T=16)
    outputs = {}
    for path in ("loop", "sequence"):
        monkeypatch.setenv(HOOK, path)
        outputs[path] = run(cpu_layer, mode, tensors, norm, zoneout, False, None)["output[0]"]
    assert not torch.equal(outputs["loop"], outputs["sequence"])
    torch.testing.assert_close(outputs["loop"], outputs["sequence"], **TOLERANCES[torch.bfloat16])


def test_bad_hook_value_is_a_value_error(monkeypatch):
    monkeypatch.setenv(HOOK, "sideways")
    mode, tensors, norm, zoneout = make_layer("indrnn_relu", torch.float32, True, training=True)
    with pytest.raises(ValueError, match=HOOK):
        run(cpu_layer, mode, tensors, norm, zoneout, False, None)
