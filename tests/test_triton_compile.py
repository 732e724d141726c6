"""Compile-time guards for the Triton kernels on an H100 (sm_90), built on the CPU without a GPU.

Triton's compiler and ptxas run here (fusedrnn.kernels.compile_check, in a child process because the test session
runs Triton's interpreter). For the key configurations (compile_check.KEY_SHAPES: the issue's target shapes) the
hot kernels must compile to code that can be fast: no register spills and no local memory, shared memory within
an H100's 227 KB per block and within the planner's estimate (which decides what fits), 16-byte global loads —
in the persistent kernels for every per-step exchange load — and tensor-core MMAs for 16-bit inputs. Whether they are
fast is a GPU measurement; this only keeps regressions that are visible in the code out of CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fusedrnn import registry
from fusedrnn.kernels import plan

TRITON_REASON = registry.availability()["triton"]
pytestmark = [
    pytest.mark.skipif(TRITON_REASON is not None, reason=f"triton backend unavailable: {TRITON_REASON}"),
    pytest.mark.skipif(not plan.interpreter_enabled(), reason="on a GPU the kernels are compiled and run for real"),
]
#: Cold (empty Triton cache) the key configurations take ~30 s on 2 cores, every bf16 specialisation ~1 min.
COMPILE_TIMEOUT_S = 300


def _compile_check(*args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-m", "fusedrnn.kernels.compile_check", *args], env=env,
                            capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def key_reports() -> dict[str, dict]:
    """compile_check --key --json: one report per key configuration, by label and size."""
    lines = _compile_check("--key", "--json").stdout.splitlines()
    reports = [json.loads(line) for line in lines if line.startswith("{")]
    return {f"{r['label']} N={r['batch']} H={r['hidden']}": r for r in reports}


def _key_ids() -> list[str]:
    from fusedrnn.kernels.compile_check import KEY_SHAPES

    return [f"{label} N={batch} H={hidden}" for batch, hidden, labels in KEY_SHAPES for label in labels]


def test_every_key_configuration_was_built(key_reports):
    assert sorted(key_reports) == sorted(_key_ids())


@pytest.mark.parametrize("key", _key_ids())
def test_no_spills_no_local_memory(key_reports, key):
    r = key_reports[key]
    assert (r["spill_bytes"], r["stack_bytes"], r["local_in_ptx"]) == (0, 0, False), r


@pytest.mark.parametrize("key", _key_ids())
def test_shared_memory_fits_an_h100_and_the_plan(key_reports, key):
    r = key_reports[key]
    assert r["shared_bytes"] <= plan.H100_SHARED_BYTES, r
    if r["planned_shared_bytes"] is not None:  # the planner must not under-estimate what it lets through
        assert r["shared_bytes"] <= r["planned_shared_bytes"], r


@pytest.mark.parametrize("key", _key_ids())
def test_vector_loads_and_tensor_cores(key_reports, key):
    r = key_reports[key]
    assert r["vector_loads"] > 0, r
    if key.startswith("persistent"):  # every per-step exchange load (h / dgates of all programs) is 16 bytes wide
        assert r["exchange_loads"] > 0 and r["exchange_vector_loads"] == r["exchange_loads"], r
    assert r["mma"] + r["wgmma"] > 0, r  # 16-bit and TF32 dots on tensor cores


@pytest.mark.parametrize("key", [key for key in _key_ids() if key.startswith("persistent")])
def test_persistent_barrier_spins_in_one_thread(key_reports, key):
    """The grid barrier's wait is thread 0's PTX loop (kernels/persistent.py: _spin_until), not a Triton-level poll
    (a block barrier and a shared-memory broadcast per poll)."""
    assert key_reports[key]["barrier_polls"] == 1, key_reports[key]


def test_every_bf16_specialisation_compiles():
    """Every kernel specialisation (cells x optional pieces, tiled and persistent) compiles to an sm_90 cubin: the
    interpreter would accept code a GPU rejects."""
    result = _compile_check("--only", "bf16")
    assert result.stdout.count(": ok in") >= 20, result.stdout + result.stderr


@pytest.fixture(scope="module")
def variant_reports() -> dict[str, dict]:
    """compile_check --variants --key --json: the variant kernels (fusedrnn.kernels.variants) at their key shapes."""
    lines = _compile_check("--variants", "--key", "--json").stdout.splitlines()
    reports = [json.loads(line) for line in lines if line.startswith("{")]
    return {f"{r['label']} N={r['batch']} H={r['hidden']}": r for r in reports}


def _variant_ids() -> list[str]:
    from fusedrnn.kernels.compile_check import VARIANT_KEY_SHAPES, VARIANTS

    def kernel(mode: int, norm: bool, hidden: int) -> str:
        if mode >= 4:
            return "elementwise"
        if not norm:
            return "tiled"
        return "rowwise" if hidden <= plan.MAX_NORM_HIDDEN else "chunked"

    return [f"variant {name} mode={mode} {dtype} {kernel(mode, norm, hidden)} {direction} N={batch} H={hidden}"
            for batch, hidden, labels in VARIANT_KEY_SHAPES for name, mode, norm, *_ in VARIANTS if name in labels
            for dtype in ("bf16", "fp32") for direction in ("forward", "backward")]  # fmt: skip


def test_every_variant_key_configuration_was_built(variant_reports):
    assert sorted(variant_reports) == sorted(_variant_ids())


@pytest.mark.parametrize("key", _variant_ids())
def test_variant_kernels_no_spills_and_fit(variant_reports, key):
    """No spills or local memory, shared memory within an H100's, tensor cores for the recurrent matmul (IndRNN has
    none: its recurrence is elementwise)."""
    r = variant_reports[key]
    assert (r["spill_bytes"], r["stack_bytes"], r["local_in_ptx"]) == (0, 0, False), r
    assert r["shared_bytes"] <= plan.H100_SHARED_BYTES, r
    assert r["vector_loads"] > 0, r
    assert (r["mma"] + r["wgmma"] > 0) == ("indrnn" not in key), r


@pytest.fixture(scope="module")
def slstm_reports() -> dict[str, dict]:
    """compile_check --slstm --key --json: xLSTM's sLSTM kernels (fusedrnn.kernels.slstm) at their key shapes."""
    lines = _compile_check("--slstm", "--key", "--json").stdout.splitlines()
    reports = [json.loads(line) for line in lines if line.startswith("{")]
    return {f"{r['label']} N={r['batch']} H={r['hidden']}": r for r in reports}


def _slstm_ids() -> list[str]:
    from fusedrnn.kernels.compile_check import slstm_key_labels

    return slstm_key_labels()


def test_every_slstm_key_configuration_was_built(slstm_reports):
    assert sorted(slstm_reports) == sorted(_slstm_ids())


@pytest.mark.parametrize("key", _slstm_ids())
def test_slstm_kernels_no_spills_and_fit(slstm_reports, key):
    """No spills or local memory, shared memory within an H100's, and tensor-core MMAs for the per-step dots in
    16-bit and TF32 (exact fp32 dots are FMA loops)."""
    r = slstm_reports[key]
    assert (r["spill_bytes"], r["stack_bytes"], r["local_in_ptx"]) == (0, 0, False), r
    assert r["shared_bytes"] <= plan.H100_SHARED_BYTES, r
    if "ieee" not in key:
        assert r["mma"] + r["wgmma"] > 0, r
