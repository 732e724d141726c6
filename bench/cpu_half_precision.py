"""bfloat16/float16 on the CPU: torch.nn against the `cpu` backend with both of its 16-bit compute modes
(fusedrnn/backends/cpu_precision.py: `float32`, weights upcast once per call; `storage`, GEMMs in the 16-bit dtype),
and against `auto` (whatever it picks on this CPU; issue 23's rule: never slower than torch.nn).

    python bench/cpu_half_precision.py [--shape 50x16x256] [--repeats 3] [--cells GRU,LSTM,RNN] [--threads 1]
                                       [--dtypes bfloat16,float16]

An AVX2-only CPU can be approximated on an AVX-512 one (same cores, narrower kernels): ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 (the table's header names the capability ATen ran with).

One layer, I = H. Prints a markdown table of medians over interleaved calls (one of each implementation per round,
so load from other processes hits them alike) of the calling thread's CPU time, which a shared machine disturbs less
than wall time; with one torch thread that is all of the call's work (tests/test_native_backend.py checks it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

import fusedrnn
from fusedrnn import registry
from fusedrnn.backends import cpu_precision
from fusedrnn.bench.environment import cpu_name



def call(module: nn.Module, x: torch.Tensor, training: bool) -> None:
    if training:
        y, _ = module(x.detach().requires_grad_())
        y.float().sum().backward()
    else:
        with torch.no_grad():
            module(x)


def time_rounds(runs: dict, repeats: int) -> dict[str, float]:
    """Median milliseconds of thread CPU time per run, the runs interleaved round by round after one warm-up each."""
    for run in runs.values():
        run()
    samples = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.thread_time()
            run()
            samples[name].append((time.thread_time() - start) * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def with_compute(mode: str, module: nn.Module, x: torch.Tensor, training: bool):
    """A run of `module` with FUSEDRNN_CPU_HALF_COMPUTE=mode (read at every call)."""

    def run() -> None:
        os.environ[cpu_precision.ENV_VAR] = mode
        try:
            call(module, x, training)
        finally:
            del os.environ[cpu_precision.ENV_VAR]

    return run


def auto_pick(module: nn.Module, x: torch.Tensor, training: bool) -> str:
    """The backend `auto` selects for module(x), as the module's own call selects it."""
    with torch.set_grad_enabled(training):
        fields = module._call_fields(x, x.shape[1], x.shape[0], False, 0.0, False, False)
        backend, _ = registry.select_call(module.backend, fields)
    return f"({backend.name})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="50x16x256", help="TxNxH (I = H)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cells", default="GRU,LSTM,RNN")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtypes", default="bfloat16,float16", help="float32 too: then only `auto` vs torch.nn matters")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    T, N, H = (int(v) for v in args.shape.split("x"))
    native = ", ".join(str(d).removeprefix("torch.") for d in cpu_precision.native_half_dtypes()) or "none"
    print(f"{cpu_name()}; ATen capability {torch.backends.cpu.get_cpu_capability()}; native 16-bit dot products: "
          f"{native}; {args.threads} thread(s); T={T} N={N} I=H={H}; thread CPU time, median of {args.repeats} "
          "interleaved calls, ms\n")  # fmt: skip
    print("| cell | dtype | mode | torch.nn | `cpu` float32 compute | `cpu` storage-dtype GEMMs | `auto` (its pick) "
          "| speed-up (float32 compute) | speed-up (`auto`) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for cell in args.cells.split(","):
        for dtype in (getattr(torch, name) for name in args.dtypes.split(",")):
            torch.manual_seed(0)
            theirs = getattr(nn, cell)(H, H, dtype=dtype)
            ours = getattr(fusedrnn, cell)(H, H, dtype=dtype, backend="cpu")
            auto = getattr(fusedrnn, cell)(H, H, dtype=dtype)
            ours.load_state_dict(theirs.state_dict())
            auto.load_state_dict(theirs.state_dict())
            x = torch.randn(T, N, H, dtype=dtype)
            for training in (False, True):
                runs = {"torch": lambda: call(theirs, x, training),
                        "float32": with_compute("float32", ours, x, training),
                        "storage": with_compute("storage", ours, x, training),
                        "auto": lambda: call(auto, x, training)}  # fmt: skip
                ms = time_rounds(runs, args.repeats)
                picked = auto_pick(auto, x, training)
                print(f"| {cell} | {str(dtype).removeprefix('torch.')} | {'training' if training else 'inference'} | "
                      f"{ms['torch']:.1f} | {ms['float32']:.1f} | {ms['storage']:.1f} | {ms['auto']:.1f} {picked} | "
                      f"{ms['torch'] / ms['float32']:.2f}x | {ms['torch'] / ms['auto']:.2f}x |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
