"""Compile guards for the CUDA kernels (no GPU needed): every instantiation compiles for each GPU of the default arch
list, and ptxas's resource report shows no spills, no stack frame, at most 255 registers and only the kernels' few
bytes of static shared memory (the persistent kernels' dynamic part is the planner's, bounded in test_cuda_plan.py).

Compiles csrc/persistent_{forward,backward}.cu (CUDA headers, no torch: ~10-30 s per arch on two cores),
csrc/pointwise_cuda.cu, the per-step kernels (element kernel; layer norm's row kernel), and csrc/indrnn_cuda.cu,
IndRNN's whole-sequence kernels, with torch's headers."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from fusedrnn import _build

CSRC = Path(__file__).resolve().parent.parent / "csrc"
#: The cubins built by default (fusedrnn/_build.py: DEFAULT_CUDA_ARCH_LIST "8.0;9.0+PTX").
ARCHES = ["sm_80", "sm_90"]
#: Instantiations per file: LSTM/GRU/RNN_TANH/RNN_RELU x fp16/bf16/fp32/fp64 (x grid/cluster path for the forward).
#: The per-step path launches the grid path's instantiations (a step range is a kernel argument): none of its own.
INSTANTIATIONS = {"persistent_forward.cu": 4 * 4 * 2, "persistent_backward.cu": 4 * 4}
STATIC_SMEM_BYTES = 32  # csrc/persistent_plan.h: kStaticSmemBytes
MAX_REGISTERS = 255
#: torch's nvcc flags that change what compiles (cpp_extension adds them to every .cu of the extension).
TORCH_NVCC_DEFINES = ["-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
                      "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__"]  # fmt: skip
KERNEL = re.compile(r"Compiling entry function '(\w+)' for '(sm_\w+)'")
USAGE = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
REGISTERS = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")  # no smem part when there is none


def nvcc() -> Path:
    if _build.env_flag(_build.SKIP_CUDA_ENV):
        pytest.skip(f"{_build.SKIP_CUDA_ENV} is set")
    root = _build.find_cuda_home()
    if root is None:
        pytest.skip("no CUDA toolkit (nvcc) here")
    return Path(root) / "bin" / "nvcc"


def test_every_persistent_source_is_checked():
    assert set(INSTANTIATIONS) == set(_build.PERSISTENT_KERNEL_SOURCES)


def resource_report(source: str, arch: str, tmp_path: Path, extra: tuple[str, ...] = ("-std=c++17",)
                    ) -> dict[str, dict[str, int]]:  # fmt: skip
    """{kernel: {stack, spill_stores, spill_loads, registers, smem}} from `nvcc -Xptxas -v` for one arch."""
    command = [str(nvcc()), "-O3", f"-arch={arch}", "-cubin", "-Xptxas", "-v", *TORCH_NVCC_DEFINES, *extra,
               "-I", str(CSRC), "-o", str(tmp_path / f"{source}.{arch}.cubin"), str(CSRC / source)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    report, kernel = {}, None
    for line in result.stderr.splitlines():
        if match := KERNEL.search(line):
            kernel = match.group(1) if match.group(2) == arch else None
        elif kernel and (match := USAGE.search(line)):
            stack, stores, loads = map(int, match.groups())
            report[kernel] = {"stack": stack, "spill_stores": stores, "spill_loads": loads}
        elif kernel and (match := REGISTERS.search(line)):
            report[kernel].update(registers=int(match.group(1)), smem=int(match.group(2) or 0))
            kernel = None
    return report


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("source", _build.PERSISTENT_KERNEL_SOURCES)
def test_persistent_kernels_have_no_spills_and_fit(source, arch, tmp_path):
    report = resource_report(source, arch, tmp_path)
    kernels = {name: usage for name, usage in report.items() if "kernel_impl" in name}
    assert len(kernels) == INSTANTIATIONS[source], sorted(report)
    for name, usage in kernels.items():
        assert usage["stack"] == 0 and usage["spill_stores"] == 0 and usage["spill_loads"] == 0, (name, usage)
        assert usage["registers"] <= MAX_REGISTERS, (name, usage)
        assert usage["smem"] <= STATIC_SMEM_BYTES, (name, usage)


#: pointwise_cuda.cu: {element, row} kernel x {forward, backward} x fp16/bf16/fp32/fp64.
POINTWISE_INSTANTIATIONS = 2 * 2 * 4
#: The row kernel's block reduction: one partial per warp (pointwise_cuda.cu: kRowWarps = 8) of at most 8 bytes.
POINTWISE_SMEM_BYTES = 8 * 8


def torch_nvcc_flags() -> tuple[str, ...]:
    """What torch's cpp_extension gives every .cu of the extension (its headers need C++20 and relaxed constexpr)."""
    from torch.utils import cpp_extension

    includes = [f"-I{path}" for path in cpp_extension.include_paths()]
    return ("-std=c++20", "--expt-relaxed-constexpr", "-DFUSEDRNN_WITH_CUDA", *includes)


@pytest.mark.parametrize("arch", ARCHES)
def test_pointwise_kernels_have_no_spills(arch, tmp_path):
    """The per-step kernels, the layer-norm row kernel among them (whose row loops and block reductions are step.h's
    forward_row / backward_row, shared with the CPU pass)."""
    report = resource_report("pointwise_cuda.cu", arch, tmp_path, torch_nvcc_flags())
    kernels = {name: usage for name, usage in report.items() if "step_kernel" in name or "row_kernel" in name}
    assert len(kernels) == POINTWISE_INSTANTIATIONS, sorted(report)
    assert sum("row_kernel" in name for name in kernels) == POINTWISE_INSTANTIATIONS // 2
    for name, usage in kernels.items():
        assert usage["stack"] == 0 and usage["spill_stores"] == 0 and usage["spill_loads"] == 0, (name, usage)
        assert usage["registers"] <= MAX_REGISTERS, (name, usage)
        assert usage["smem"] <= POINTWISE_SMEM_BYTES, (name, usage)


#: The .cu files the tests above compile: every one the extension builds (fusedrnn/_build.py: CUDA_SOURCES).
CHECKED_CUDA_SOURCES = {*_build.PERSISTENT_KERNEL_SOURCES, "pointwise_cuda.cu", "indrnn_cuda.cu"}


def test_every_cuda_source_is_checked():
    assert CHECKED_CUDA_SOURCES == {name for name in _build.CUDA_SOURCES if name.endswith(".cu")}


#: indrnn_cuda.cu: {forward, backward} x fp16/bf16/fp32/fp64.
INDRNN_INSTANTIATIONS = 2 * 4
#: The sequence kernels hide memory latency with the loads of a chunk of steps in flight (csrc/indrnn_sequence.h:
#: kStepsInFlight) and with resident warps; at most 128 registers keeps two 256-thread blocks per SM (64K registers).
INDRNN_MAX_REGISTERS = 128


@pytest.mark.parametrize("arch", ARCHES)
def test_indrnn_sequence_kernels_have_no_spills(arch, tmp_path):
    """IndRNN's whole-sequence kernels (one thread per (row, unit) over every step: csrc/indrnn_sequence.h's loops):
    no spills, no stack, no shared memory (nothing is exchanged between threads)."""
    report = resource_report("indrnn_cuda.cu", arch, tmp_path, torch_nvcc_flags())
    kernels = {name: usage for name, usage in report.items() if "sequence_kernel" in name}
    assert len(kernels) == INDRNN_INSTANTIATIONS, sorted(report)
    for name, usage in kernels.items():
        assert usage["stack"] == 0 and usage["spill_stores"] == 0 and usage["spill_loads"] == 0, (name, usage)
        assert usage["registers"] <= INDRNN_MAX_REGISTERS, (name, usage)
        assert usage["smem"] == 0, (name, usage)
