"""CPU speed of the `cpu` backend (fusedrnn._C) against torch.nn, one layer: inference and forward+backward.

    python bench/native_cpu_speed.py [--repeats 5] [--csv out.csv] [--threads N] [--dtype float32,bfloat16]
                                     [--shapes 100x64x512x512,...] [--cells LSTM,GRU]
    python bench/native_cpu_speed.py --table     # issue #14's table -> bench/results/<device>/cpu-table.{md,json}
    python bench/native_cpu_speed.py --table --processes 3 --repeats 7   # -> cpu-table-processes.{md,json}

Prints a markdown table of the median wall times (ms) over the repeats and the speed-up torch.nn time / fusedrnn
time. The two implementations run alternately, one call each, so load from other processes hits both alike; the
median is robust to the odd stalled call (a 2-thread OpenMP region that lost a core), which the minimum would hide
and the mean would magnify. `--table` runs T=100, I=H=512, N in {64, 4}, LSTM and GRU, every dtype the `cpu` backend
accepts of float32/bfloat16, with torch's default threads, and writes the markdown table and a JSON (every
repetition, the machine, the load average before and after) next to the other results. `--processes K` runs each
implementation alone in processes of its own instead (K of each per row, alternating): a program that uses only one
of them has malloc's state to itself, and whether large tensors come back with fresh pages differs from the shared
process (measure_in_processes).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

import fusedrnn
from fusedrnn.bench.environment import describe

#: (T, N, I, H): PyTorch's own RNN benchmark shape, then small batches where a step is latency-bound.
SHAPES = [(100, 64, 512, 512), (100, 4, 512, 512), (100, 1, 512, 512), (100, 1, 256, 256), (100, 4, 256, 256)]
#: Issue #14's table: the benchmark shape and a latency-bound batch.
TABLE_SHAPES = [(100, 64, 512, 512), (100, 4, 512, 512)]
TABLE_CELLS = "LSTM,GRU"
TABLE_DTYPES = "float32,bfloat16"
#: Interleaved calls per implementation in --table: the median of 15 is stable to a few percent on a quiet machine,
#: and the whole table (8 cells x 2 dtypes) stays within a few minutes.
TABLE_REPEATS = 15
CELLS = {"LSTM": (nn.LSTM, fusedrnn.LSTM), "GRU": (nn.GRU, fusedrnn.GRU), "RNN": (nn.RNN, fusedrnn.RNN)}
WARMUP = 2
RESULTS = Path(__file__).parent / "results"


def run_call(module: nn.Module, x: torch.Tensor, train: bool) -> None:
    """One call: forward and backward (train), or inference."""
    if train:
        y, _ = module(x)
        y.backward(torch.ones_like(y))
    else:
        with torch.inference_mode():
            module(x)


def run_once(module: nn.Module, x: torch.Tensor, train: bool) -> float:
    start = time.perf_counter()
    run_call(module, x, train)
    return time.perf_counter() - start


def setup(cell: str, shape, train: bool, dtype: torch.dtype) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    """torch.nn's layer, fusedrnn's on the same weights (backend `cpu`), and an input of shape (T, N, I, H)."""
    T, N, I, H = shape
    torch_cls, fused_cls = CELLS[cell]
    torch.manual_seed(0)
    reference = torch_cls(I, H, dtype=dtype)
    fused = fused_cls(I, H, backend="cpu", dtype=dtype)
    fused.load_state_dict(reference.state_dict())
    return reference, fused, torch.randn(T, N, I, dtype=dtype, requires_grad=train)


def measure(cell: str, shape, train: bool, repeats: int, dtype: torch.dtype) -> dict[str, list[float]]:
    """Wall times (ms) of `repeats` alternating calls of torch.nn and fusedrnn's `cpu` backend, after a warm-up."""
    reference, fused, x = setup(cell, shape, train, dtype)
    times: dict[str, list[float]] = {"torch": [], "fused": []}
    for i in range(WARMUP + repeats):
        for name, module in (("torch", reference), ("fused", fused)):
            elapsed = run_once(module, x, train)
            if i >= WARMUP:
                times[name].append(elapsed * 1e3)
    return times


def measure_alone(implementation: str, cell: str, shape, train: bool, repeats: int, dtype: torch.dtype) -> list[float]:
    """Wall times (ms) of `repeats` calls of one implementation ("torch" or "fused"), after a warm-up, in a process
    that runs nothing else (--processes)."""
    reference, fused, x = setup(cell, shape, train, dtype)
    module = reference if implementation == "torch" else fused
    times = [run_once(module, x, train) * 1e3 for _ in range(WARMUP + repeats)]
    return times[WARMUP:]


def measure_in_processes(cell: str, shape, train: bool, repeats: int, dtype: torch.dtype, processes: int,
                         threads: int | None) -> dict[str, list[float]]:
    """measure's times with each implementation alone in its own process, `processes` of each, alternating: what a
    program that uses one of them sees. Sharing a process, the two share malloc's state, which decides whether a
    large tensor comes back with fresh pages (2-3 us a page fault under KVM, 4-8 ms a call at N=64)."""
    times: dict[str, list[float]] = {"torch": [], "fused": []}
    spec = dict(cell=cell, shape=list(shape), train=train, repeats=repeats, dtype=str(dtype).removeprefix("torch."),
                threads=threads)  # fmt: skip
    for _ in range(processes):
        for name in times:
            command = [sys.executable, __file__, "--alone", json.dumps(dict(spec, implementation=name))]
            times[name] += json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    return times


def run_alone(spec: str) -> None:
    """--alone: one measure_alone, its times as JSON on stdout."""
    s = json.loads(spec)
    if s["threads"]:
        torch.set_num_threads(s["threads"])
    dtype = getattr(torch, s["dtype"])
    print(json.dumps(measure_alone(s["implementation"], s["cell"], tuple(s["shape"]), s["train"], s["repeats"], dtype)))


def supported(dtype: torch.dtype) -> bool:
    """Whether the `cpu` backend runs this dtype (bf16 arrives with issue #14's first item)."""
    try:
        fusedrnn.LSTM(4, 4, backend="cpu", dtype=dtype)(torch.zeros(1, 1, 4, dtype=dtype))
    except (RuntimeError, ValueError, TypeError):
        return False
    return True


def write_table(rows: list[dict], args: argparse.Namespace, started: dict) -> None:
    folder = RESULTS / started["device_slug"]
    folder.mkdir(parents=True, exist_ok=True)
    load_after = list(os.getloadavg())
    lines = [
        f"# `cpu` backend vs torch.nn: T=100, I=H=512, one layer ({started['cpu']}, {started['torch_threads']} "
        f"threads)",
        "",
        f"{method(args)}; speed-up = torch.nn median / fusedrnn median. torch "
        f"{started['torch']}, commit {started['git_commit']}{' (dirty)' if started['git_dirty'] else ''}; load "
        f"average {started['load_average_at_start'][0]:.2f} at start, {load_after[0]:.2f} at the end.",
        "",
        "| cell | dtype | N | mode | torch.nn ms | fusedrnn cpu ms | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['cell']} | {r['dtype']} | {r['N']} | {r['mode']} | {r['torch_ms']:.2f} | "
                     f"{r['fused_ms']:.2f} | {r['speedup']:.2f}x |")  # fmt: skip
    lines.append("")
    for dtype in dict.fromkeys(r["dtype"] for r in rows):
        ratios = [r["speedup"] for r in rows if r["dtype"] == dtype]
        geomean = math.exp(sum(map(math.log, ratios)) / len(ratios))
        lines.append(f"{dtype}: geometric mean {geomean:.2f}x, worst {min(ratios):.2f}x.")
    text = "\n".join(lines) + "\n"
    stem = "cpu-table-processes" if args.processes else "cpu-table"
    (folder / f"{stem}.md").write_text(text)
    command = "python bench/native_cpu_speed.py --table" + (f" --processes {args.processes}" if args.processes else "")
    document = {"environment": started, "load_average_at_end": load_after, "repeats": args.repeats,
                "processes": args.processes, "command": command, "rows": rows}  # fmt: skip
    (folder / f"{stem}.json").write_text(json.dumps(document, indent=1) + "\n")
    print(text + f"written to {folder}/{stem}.md and .json")


def method(args: argparse.Namespace) -> str:
    if args.processes:
        return (f"Each implementation alone in its own process, {args.processes} processes of each alternating, "
                f"{args.repeats} calls in each; medians over all calls")
    return f"Medians of {args.repeats} interleaved calls each"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="store_true", help="issue #14's table, written to bench/results/")
    parser.add_argument("--repeats", type=int, help=f"interleaved calls each (default 5, --table {TABLE_REPEATS})")
    parser.add_argument("--csv", help="also write the rows to this CSV file")
    parser.add_argument("--cells", help=f"default LSTM,GRU,RNN; --table {TABLE_CELLS}")
    parser.add_argument("--dtype", help=f"comma-separated; default float32, --table {TABLE_DTYPES} (those the "
                        "backend runs)")  # fmt: skip
    default_shapes = ",".join("x".join(map(str, shape)) for shape in SHAPES)
    parser.add_argument("--shapes", help=f"TxNxIxH,... (default {default_shapes}; --table: 100, N=64/4, 512)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--processes", type=int, help="run each implementation alone in its own processes, this "
                        "many of each per row, alternating (--repeats calls each); --table writes cpu-table-processes")
    parser.add_argument("--alone", help=argparse.SUPPRESS)  # internal: one process of --processes
    args = parser.parse_args()
    if args.alone:
        return run_alone(args.alone)
    args.repeats = args.repeats or (TABLE_REPEATS if args.table else 5)
    cells = (args.cells or (TABLE_CELLS if args.table else ",".join(CELLS))).split(",")
    dtypes = [getattr(torch, d) for d in (args.dtype or (TABLE_DTYPES if args.table else "float32")).split(",")]
    shapes = [tuple(map(int, s.split("x"))) for s in args.shapes.split(",")] if args.shapes else None
    dtypes = [d for d in dtypes if supported(d) or print(f"skipped {d}: not supported by the cpu backend")]
    if args.threads:
        torch.set_num_threads(args.threads)
    started = describe(torch.device("cpu"))
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}, "
          f"fusedrnn pointwise {torch.ops.fusedrnn.cpu_capability()}, load {os.getloadavg()[0]:.2f}")  # fmt: skip
    print("| cell | dtype | T | N | I | H | mode | torch.nn ms | fusedrnn cpu ms | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for cell in cells:
        for dtype in dtypes:
            for shape in shapes or (TABLE_SHAPES if args.table else SHAPES):
                for train in (False, True):
                    times = (measure_in_processes(cell, shape, train, args.repeats, dtype, args.processes,
                                                  args.threads) if args.processes
                             else measure(cell, shape, train, args.repeats, dtype))  # fmt: skip
                    torch_ms, fused_ms = statistics.median(times["torch"]), statistics.median(times["fused"])
                    mode = "training" if train else "inference"
                    name = str(dtype).removeprefix("torch.")
                    rows.append(dict(cell=cell, dtype=name, T=shape[0], N=shape[1], I=shape[2], H=shape[3], mode=mode,
                                     torch_ms=round(torch_ms, 3), fused_ms=round(fused_ms, 3),
                                     speedup=round(torch_ms / fused_ms, 3), times_ms=times))  # fmt: skip
                    print(f"| {cell} | {name} | {' | '.join(map(str, shape))} | {mode} | {torch_ms:.2f} | "
                          f"{fused_ms:.2f} | {torch_ms / fused_ms:.2f}x |", flush=True)  # fmt: skip
    if args.table:
        write_table(rows, args, started)
    if args.csv:
        with open(args.csv, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=[k for k in rows[0] if k != "times_ms"], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
