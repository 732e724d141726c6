"""How the compiled extension is built: sources and flags, shared by setup.py (ahead of time) and
fusedrnn._extension (just in time). Imports nothing but the standard library, so setup.py can load it by path even
where torch is missing.
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

#: Sources of fusedrnn._C, relative to the csrc folder. CUDA_SOURCES are built only with a CUDA toolkit: the .cu files
#: by nvcc (the persistent kernels' templates split in two files, so MAX_JOBS=2 builds them side by side), the .cpp
#: host code of the persistent path by the C++ compiler.
#: The CPU pointwise pass is one source (pointwise_cpu_kernels.h) compiled per CPU capability by the variant files,
#: each enabling its instruction set with `#pragma GCC target`, so one set of compiler flags builds them all.
CPU_POINTWISE_VARIANTS = ["pointwise_cpu_default.cpp", "pointwise_cpu_avx2.cpp", "pointwise_cpu_avx512.cpp"]
#: indrnn_host.cpp is in both builds: on CPU it runs the IndRNN kernels' loops on the host (a test hook).
CPP_SOURCES = ["ops.cpp", "rnn_loop.cpp", "pointwise_cpu.cpp", "gemm_cpu.cpp", "slstm_ops.cpp", "slstm_loop.cpp",
               "lstm_cpu_fused.cpp", "lstm_cpu_fused_bf16.cpp", "indrnn_host.cpp", "cpu_buffers.cpp",
               *CPU_POINTWISE_VARIANTS]
CUDA_SOURCES = ["pointwise_cuda.cu", "persistent_forward.cu", "persistent_backward.cu", "persistent_host.cpp",
                "indrnn_cuda.cu"]
#: The persistent kernels, which tests/test_cuda_kernels_compile.py checks in ptxas's resource report.
PERSISTENT_KERNEL_SOURCES = ["persistent_forward.cu", "persistent_backward.cu"]

#: GPUs the CUDA code is compiled for when TORCH_CUDA_ARCH_LIST is unset: A100 (sm_80), H100/H200 (sm_90) and PTX
#: for newer ones. Chosen here, never by looking at the build machine's GPU.
DEFAULT_CUDA_ARCH_LIST = "8.0;9.0+PTX"

SKIP_CUDA_ENV = "FUSEDRNN_SKIP_CUDA_BUILD"
FORCE_BUILD_ENV = "FUSEDRNN_FORCE_BUILD"


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def cxx_flags() -> list[str]:
    # Baseline instruction set: the CPU pointwise variants switch AVX2/AVX-512 on in their own files (see
    # CPU_POINTWISE_VARIANTS) and one is picked at load time. -fopenmp: at::parallel_for is inline OpenMP code in
    # ATen's headers and runs serially in a translation unit compiled without it (the GOMP symbols resolve to the
    # libgomp libtorch_cpu already loaded).
    return ["-O3", "-fopenmp"]


def nvcc_flags() -> list[str]:
    return ["-O3", "-lineinfo"]


def cuda_define() -> list[str]:
    return ["-DFUSEDRNN_WITH_CUDA"]


def is_toolkit(root: Path) -> bool:
    return (root / "bin" / "nvcc").exists() and (root / "include" / "cuda_runtime.h").exists()


def find_cuda_home() -> str | None:
    """The CUDA toolkit root: $CUDA_HOME / $CUDA_PATH, else the toolkit of the `nvcc` on PATH (symlinks resolved;
    a wrapper script such as /usr/local/bin/nvcc is skipped, it does not sit in a toolkit), else /usr/local/cuda."""
    for name in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(name):
            return os.environ[name]
    nvcc = shutil.which("nvcc")
    candidates = [Path(nvcc).resolve().parent.parent] if nvcc else []
    candidates.append(Path("/usr/local/cuda"))
    return next((str(root) for root in candidates if is_toolkit(root)), None)


def prepare_cuda_environment() -> str | None:
    """Export CUDA_HOME (before torch.utils.cpp_extension is imported, which reads it once) and the default arch
    list; returns the toolkit root or None."""
    cuda_home = find_cuda_home()
    if cuda_home:
        os.environ.setdefault("CUDA_HOME", cuda_home)
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCH_LIST)
    return cuda_home
