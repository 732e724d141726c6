"""The CUDA layer-norm row kernel's partition and barriers, on the host (no GPU): tests/host/step_rows_host.cpp runs
csrc/step.h's forward_row / backward_row on a "block" of host threads that split each row as pointwise_cuda.cu's
BlockLanes does (thread k: elements k, k + P, ...), with a barrier for __syncthreads and per-thread partial sums for
the block reduction. Built with ThreadSanitizer: a missing lanes.sync() where a loop over the G*H gate columns hands
over to one over the H hidden units (another thread owns the element) is a reported data race, and the results must
equal the one-thread run's to rounding. (The formulas themselves are tested by the CPU pass, tests/test_variants_cpu.py,
which runs the same row functions.)"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
#: Emulated threads per block: more than one per element of neither loop width divides evenly (H = 37 in the driver).
THREADS = [2, 4]


def _compiler() -> str:
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    assert compiler, "no C++ compiler (c++ / g++ / $CXX): the extension's build needs one too"
    return compiler


def _sanitizer_works(compiler: str, folder: Path) -> bool:
    """Whether this toolchain links and runs a ThreadSanitizer binary (libtsan may be missing)."""
    source, binary = folder / "probe.cpp", folder / "probe"
    source.write_text("int main() { return 0; }\n")
    built = subprocess.run([compiler, "-fsanitize=thread", str(source), "-o", str(binary)], capture_output=True)
    return built.returncode == 0 and subprocess.run([str(binary)], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def row_binary(tmp_path_factory) -> tuple[Path, bool]:
    """(the driver, whether it runs under ThreadSanitizer)."""
    compiler = _compiler()
    folder = tmp_path_factory.mktemp("step_rows")
    sanitized = _sanitizer_works(compiler, folder)
    binary = folder / "step_rows_host"
    command = [compiler, "-std=c++20", "-O1", "-Wall", "-Werror", "-pthread", f"-I{ROOT / 'csrc'}",
               str(TESTS / "host" / "step_rows_host.cpp"), "-o", str(binary)]  # fmt: skip
    if sanitized:
        command.insert(1, "-fsanitize=thread")
    subprocess.run(command, check=True, timeout=300)
    return binary, sanitized


@pytest.mark.parametrize("threads", THREADS)
def test_row_functions_on_a_block_of_threads(row_binary, threads):
    binary, sanitized = row_binary
    result = subprocess.run([str(binary), str(threads)], capture_output=True, text=True, timeout=120)
    assert "ThreadSanitizer" not in result.stderr, result.stderr[-4000:]
    assert result.returncode == 0 and result.stdout.startswith("ok"), result.stdout + result.stderr[-2000:]
    if not sanitized:
        pytest.skip("results match; races unchecked: this toolchain has no ThreadSanitizer")
