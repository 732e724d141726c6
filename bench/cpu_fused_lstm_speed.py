"""The `cpu` backend's fused LSTM kernels (issue 23) against its per-step loop and torch.nn, float32, one layer.

    python bench/cpu_fused_lstm_speed.py [--repeats 7] [--threads 1,2] [--shapes 100x4x512x512,...] [--write]

Three implementations on the same weights, called in turn (torch.nn, `cpu` forced to its loop, `cpu` forced to the
fused kernels: FUSEDRNN_CPU_LSTM), so load from other processes hits all alike; per call the calling thread's CPU
time (time.thread_time: robust to being descheduled on a shared machine, but blind to the second thread's work) and
the wall time; medians over the repeats. Inference (inference mode) and training (forward + backward, both fused on
the fused path). --write records the table and every repetition in
bench/results/<device>/cpu-fused-lstm-t<threads>.{md,json} (threads as given, e.g. t1-2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn

import fusedrnn
from fusedrnn.bench.environment import describe
from native_cpu_speed import run_call  # this folder (sys.path[0] when run as a script)

#: (T, N, I, H): issue 23's shape at batches from latency-bound to compute-bound, and a narrower layer whose W_hh
#: (1 MB) fits the L2 caches.
SHAPES = [(100, n, h, h) for h in (512, 256) for n in (1, 4, 16, 64)]
WARMUP = 2
FORCE_ENV = "FUSEDRNN_CPU_LSTM"
RESULTS = Path(__file__).parent / "results"
IMPLEMENTATIONS = ("torch", "loop", "fused")


def call(module: nn.Module, x: torch.Tensor, train: bool) -> tuple[float, float]:
    """(thread CPU ms, wall ms) of one call."""
    wall, cpu = time.perf_counter(), time.thread_time()
    run_call(module, x, train)
    return (time.thread_time() - cpu) * 1e3, (time.perf_counter() - wall) * 1e3


def measure(shape, train: bool, repeats: int) -> dict[str, dict[str, list[float]]]:
    T, N, I, H = shape
    torch.manual_seed(0)
    reference = nn.LSTM(I, H)
    ours = fusedrnn.LSTM(I, H, backend="cpu")
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(T, N, I, requires_grad=train)
    modules = {"torch": reference, "loop": ours, "fused": ours}
    times = {name: {"cpu_ms": [], "wall_ms": []} for name in IMPLEMENTATIONS}
    for repeat in range(WARMUP + repeats):
        for name in IMPLEMENTATIONS:
            os.environ[FORCE_ENV] = name if name != "torch" else "auto"
            cpu_ms, wall_ms = call(modules[name], x, train)
            if repeat >= WARMUP:
                times[name]["cpu_ms"].append(round(cpu_ms, 3))
                times[name]["wall_ms"].append(round(wall_ms, 3))
    os.environ.pop(FORCE_ENV, None)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", default="1,2", help="torch.set_num_threads values, comma-separated")
    parser.add_argument("--shapes", help="TxNxIxH,... (default: T=100, N=1/4/16/64, I=H=512 and 256)")
    parser.add_argument("--suffix", default="", help="appended to the result files' name (e.g. -avx2 for a run under "
                        "ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2)")  # fmt: skip
    parser.add_argument("--write", action="store_true",
                        help="write bench/results/<device>/cpu-fused-lstm-t<threads>.{md,json}")
    args = parser.parse_args()
    shapes = [tuple(map(int, s.split("x"))) for s in args.shapes.split(",")] if args.shapes else SHAPES
    started = describe(torch.device("cpu"))
    rows = []
    header = ("| threads | T | N | I | H | mode | torch.nn cpu ms | loop cpu ms | fused cpu ms | fused/torch.nn | "
              "fused/loop | torch.nn wall ms | fused wall ms |")  # fmt: skip
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    print(f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, fusedrnn variant "
          f"{torch.ops.fusedrnn.cpu_capability()}, load {os.getloadavg()[0]:.2f}")  # fmt: skip
    print("\n".join(lines), flush=True)
    for threads in map(int, args.threads.split(",")):
        torch.set_num_threads(threads)
        for shape in shapes:
            for train in (False, True):
                times = measure(shape, train, args.repeats)
                med = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}
                mode = "training" if train else "inference"
                row = dict(threads=threads, T=shape[0], N=shape[1], I=shape[2], H=shape[3], mode=mode,
                           **{f"{name}_{k}": round(v, 3) for name, m in med.items() for k, v in m.items()},
                           speedup_vs_torch=round(med["torch"]["cpu_ms"] / med["fused"]["cpu_ms"], 3),
                           speedup_vs_loop=round(med["loop"]["cpu_ms"] / med["fused"]["cpu_ms"], 3),
                           load_average=os.getloadavg()[0], times=times)  # fmt: skip
                rows.append(row)
                cells = [threads, *shape, mode, *(f"{med[name]['cpu_ms']:.2f}" for name in IMPLEMENTATIONS),
                         f"{row['speedup_vs_torch']:.2f}x", f"{row['speedup_vs_loop']:.2f}x",
                         f"{med['torch']['wall_ms']:.2f}", f"{med['fused']['wall_ms']:.2f}"]  # fmt: skip
                line = "| " + " | ".join(map(str, cells)) + " |"
                lines.append(line)
                print(line, flush=True)
    if not args.write:
        return
    folder = RESULTS / started["device_slug"]
    folder.mkdir(parents=True, exist_ok=True)
    load_after = os.getloadavg()
    command = f"python bench/cpu_fused_lstm_speed.py --threads {args.threads} --suffix '{args.suffix}' --write"
    limits = ", ".join(f"{k}={os.environ.get(k, '')}" for k in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS"))
    dirty = " (dirty)" if started["git_dirty"] else ""
    intro = [
        f"# `cpu` fused LSTM kernels vs its loop and torch.nn, float32 ({started['cpu']})",
        "",
        f"`{command}`: medians of {args.repeats} interleaved calls each, thread CPU time of the calling thread (ms) and "
        f"wall time; ratio = torch.nn (or loop) median / fused median. torch {started['torch']}, commit "
        f"{started['git_commit']}{dirty}; ATen capability {torch.backends.cpu.get_cpu_capability()} ({limits}). The "
        f"machine was shared with other jobs (load average {started['load_average_at_start'][0]:.2f} at start, "
        f"{load_after[0]:.2f} at the end).",
        "",
    ]
    name = f"cpu-fused-lstm-t{args.threads.replace(',', '-')}{args.suffix}"
    (folder / f"{name}.md").write_text("\n".join(intro + lines) + "\n")
    document = {"environment": started, "load_average_at_end": list(load_after), "repeats": args.repeats,
                "command": command, "rows": rows}  # fmt: skip
    (folder / f"{name}.json").write_text(json.dumps(document, indent=1) + "\n")
    print(f"written to {folder}/{name}.md and .json")


if __name__ == "__main__":
    main()
