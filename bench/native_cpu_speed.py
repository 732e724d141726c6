"""CPU speed of the `cpu` backend (fusedrnn._C) against torch.nn, one layer: inference and forward+backward.

    python bench/native_cpu_speed.py [--repeats 5] [--csv out.csv] [--dtype bfloat16] [--shapes 100x64x512x512,...]

The pointwise variant is ATen's CPU capability: run once per ATEN_CPU_CAPABILITY=avx2|avx512 to compare them (that
also switches torch.nn's own kernels, so compare the fusedrnn column).

Prints a markdown table of the best (minimum) wall times (ms) over the repeats and the speed-up torch.nn time / fusedrnn time. Interleaves the
two implementations so that load from other processes hits both alike; the minimum is the least disturbed run.
"""

from __future__ import annotations

import argparse
import csv
import os
import time

import torch
from torch import nn

import fusedrnn

#: (T, N, I, H): PyTorch's own RNN benchmark shape, then small batches where a step is latency-bound.
SHAPES = [(100, 64, 512, 512), (100, 4, 512, 512), (100, 1, 512, 512), (100, 1, 256, 256), (100, 4, 256, 256)]
CELLS = {"LSTM": (nn.LSTM, fusedrnn.LSTM), "GRU": (nn.GRU, fusedrnn.GRU), "RNN": (nn.RNN, fusedrnn.RNN)}
WARMUP = 2


def run_once(module: nn.Module, x: torch.Tensor, train: bool) -> float:
    start = time.perf_counter()
    if train:
        y, _ = module(x)
        y.backward(torch.ones_like(y))
    else:
        with torch.inference_mode():
            module(x)
    return time.perf_counter() - start


def measure(cell: str, shape, train: bool, repeats: int, dtype: torch.dtype) -> tuple[float, float]:
    T, N, I, H = shape
    torch_cls, fused_cls = CELLS[cell]
    torch.manual_seed(0)
    reference = torch_cls(I, H, dtype=dtype)
    fused = fused_cls(I, H, backend="cpu", dtype=dtype)
    fused.load_state_dict(reference.state_dict())
    x = torch.randn(T, N, I, dtype=dtype, requires_grad=train)
    times: dict[str, list[float]] = {"torch": [], "fused": []}
    for i in range(WARMUP + repeats):
        for name, module in (("torch", reference), ("fused", fused)):
            elapsed = run_once(module, x, train)
            if i >= WARMUP:
                times[name].append(elapsed)
    return min(times["torch"]) * 1e3, min(times["fused"]) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--csv", help="also write the rows to this CSV file")
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"])
    parser.add_argument("--shapes", help="TxNxIxH,... (default: " + ",".join("x".join(map(str, s)) for s in SHAPES) + ")")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    shapes = [tuple(map(int, s.split("x"))) for s in args.shapes.split(",")] if args.shapes else SHAPES
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    fusedrnn.registry.availability()  # loads the extension
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}, ATen "
          f"{torch.backends.cpu.get_cpu_capability()}, fusedrnn pointwise {torch.ops.fusedrnn.cpu_capability()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| cell | T | N | I | H | mode | torch.nn ms | fusedrnn cpu ms | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for cell in args.cells.split(","):
        for shape in shapes:
            for train in (False, True):
                torch_ms, fused_ms = measure(cell, shape, train, args.repeats, dtype)
                mode = "fwd+bwd" if train else "inference"
                rows.append(dict(cell=cell, dtype=args.dtype, T=shape[0], N=shape[1], I=shape[2], H=shape[3], mode=mode,
                                 torch_ms=round(torch_ms, 3), fused_ms=round(fused_ms, 3)))  # fmt: skip
                print(f"| {cell} | {' | '.join(map(str, shape))} | {mode} | {torch_ms:.2f} | {fused_ms:.2f} | "
                      f"{torch_ms / fused_ms:.2f}x |", flush=True)  # fmt: skip
    if args.csv:
        with open(args.csv, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
