"""The bounds on each cell of the CPU table (issue 23's roofline): how fast a one-layer LSTM/GRU call could be on this
CPU, and how close torch.nn and the `cpu` backend come.

    python bench/cpu_roofline.py [--table bench/results/<device>/cpu-table.json] [--write]

Two rates are measured here, with torch's threads, then applied to each row of the table (T, N, I=H, mode, dtype):
- the GEMM rate: the best of the table's whole-sequence shapes [T*N, I] x [I, G*H] in the row's dtype (the input
  projection and, in training, the weight and input gradients: GEMMs any implementation has to run);
- the streaming rate of W_hh's bytes: a float32 torch.mv over a matrix of that size, repeated, i.e. reading W_hh once
  per step from wherever it lives between steps (L3 when it does not fit the cores' L2).
Both are the best of several runs, so the bound is one the machine showed it can reach.
A step of the recurrence costs at least the larger of its multiply-adds at the GEMM rate and W_hh's bytes at the
streaming rate (both per step: a step needs the one before it); inference runs the forward's recurrence and the
input projection; training also the backward's recurrence (dh = dg W_hh, the same bytes and multiply-adds) and three
whole-sequence GEMMs. The bound is the sum; "% of bound" is bound / measured time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

GATES = {"LSTM": 4, "GRU": 3}
RESULTS = Path(__file__).parent / "results"


def best_seconds(function, repeats: int = 11) -> float:
    """The fastest of `repeats` calls after a warm-up: a bound wants the best rate the machine showed."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def gemm_rate(rows: int, inner: int, cols: int, dtype: torch.dtype) -> float:
    """Multiply-adds per second of [rows, inner] x [inner, cols]: the faster of torch.mm (MKL's BLAS, or oneDNN for
    16-bit dtypes) and oneDNN's matmul against a weight reordered once (what torch.nn's LSTM and the `cpu` backend's
    prepared GEMMs run)."""
    a, w = torch.randn(rows, inner, dtype=dtype), torch.randn(cols, inner, dtype=dtype)
    seconds = best_seconds(lambda: torch.mm(a, w.t()))
    if torch.backends.mkldnn.is_available():
        prepared = torch.ops.mkldnn._reorder_linear_weight(w, rows)
        linear = torch.ops.mkldnn._linear_pointwise
        seconds = min(seconds, best_seconds(lambda: linear(a, prepared, None, "none", [], None)))
    return rows * inner * cols / seconds


def stream_rate(nbytes: int, steps: int = 100) -> float:
    """Bytes per second read when a matrix of `nbytes` is streamed once per step: a float32 torch.mv over it, T times
    (the same bytes whatever W_hh's dtype: ATen's 16-bit mv is a slow path, not a memory rate)."""
    cols = 512
    w, v = torch.randn(nbytes // 4 // cols, cols), torch.randn(cols)

    def sequence():
        for _ in range(steps):
            torch.mv(w, v)

    return steps * w.numel() * 4 / best_seconds(sequence)


def peak_gemm(rates: dict, dtype: str) -> float:
    """The best GEMM rate measured in `dtype` over the table's shapes: the machine's compute roof for that dtype."""
    return max(value for key, value in rates.items() if key[0] == "gemm" and key[1] == dtype)


def w_hh_bytes(row: dict) -> int:
    H = row["H"]
    return GATES[row["cell"]] * H * H * torch.finfo(getattr(torch, row["dtype"])).bits // 8


def step_seconds(row: dict, rates: dict) -> tuple[float, float]:
    """A step's multiply-adds at the GEMM rate, and W_hh's bytes at the streaming rate, in seconds."""
    H = row["H"]
    macs = row["N"] * GATES[row["cell"]] * H * H
    return macs / peak_gemm(rates, row["dtype"]), w_hh_bytes(row) / rates[("stream", w_hh_bytes(row))]


def bound_ms(row: dict, rates: dict) -> float:
    T, N, I, H, G = row["T"], row["N"], row["I"], row["H"], GATES[row["cell"]]
    step = max(step_seconds(row, rates))
    training = row["mode"] == "training"
    whole_sequence_gemms = (4 if training else 1) * T * N * I * G * H / peak_gemm(rates, row["dtype"])
    return 1e3 * (whole_sequence_gemms + (2 if training else 1) * T * step)


def shown(path: Path) -> str:
    """`path` relative to the working directory where it lies under it."""
    path = path.resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, help="a cpu-table.json (default: this machine's)")
    parser.add_argument("--write", action="store_true", help="write roofline.md next to the table")
    args = parser.parse_args()
    if args.table is None:
        from fusedrnn.bench.environment import device_slug

        args.table = RESULTS / device_slug(torch.device("cpu")) / "cpu-table.json"
    table = json.loads(args.table.read_text())
    rates = {}
    for row in table["rows"]:
        T, N, I, H, G = row["T"], row["N"], row["I"], row["H"], GATES[row["cell"]]
        dtype = getattr(torch, row["dtype"])
        key = ("gemm", row["dtype"], T * N, I, G * H)
        if key not in rates:
            rates[key] = gemm_rate(T * N, I, G * H, dtype)
        key = ("stream", w_hh_bytes(row))
        if key not in rates:
            rates[key] = stream_rate(key[1])
    lines = [
        f"# Bounds on the CPU table's cells ({table['environment']['cpu']}, {torch.get_num_threads()} threads)",
        "",
        f"`python bench/cpu_roofline.py --table {shown(args.table)}` (its docstring gives the model). Rates measured"
        " here, with torch's threads:",
        "",
    ]
    for key, value in rates.items():
        if key[0] == "gemm":
            lines.append(f"- GEMM {key[1]} [{key[2]}, {key[3]}] x [{key[3]}, {key[4]}]: {2 * value / 1e9:.0f} GFLOP/s")
        else:
            lines.append(f"- {key[1] / 2**20:.1f} MB (a W_hh) streamed once per step: {value / 1e9:.1f} GB/s")
    lines += ["", "| cell | dtype | N | mode | bound ms | bound by | torch.nn ms | % of bound | cpu ms | % of bound |",
              "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in table["rows"]:
        compute, stream = step_seconds(row, rates)
        limit = "W_hh stream" if stream > compute else "GEMM rate"
        bound = bound_ms(row, rates)
        lines.append(f"| {row['cell']} | {row['dtype']} | {row['N']} | {row['mode']} | {bound:.1f} | {limit} | "
                     f"{row['torch_ms']:.1f} | {100 * bound / row['torch_ms']:.0f}% | {row['fused_ms']:.1f} | "
                     f"{100 * bound / row['fused_ms']:.0f}% |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        (args.table.parent / "roofline.md").write_text(text)


if __name__ == "__main__":
    main()
