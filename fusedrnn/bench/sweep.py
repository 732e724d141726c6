"""Kernel-tuning sweep: times tile / warps configurations of the fused kernels at the GPU round's target shapes.

`python -m fusedrnn.bench.sweep --out DIR` (what `scripts/gpu_check.sh --sweep` runs). For every target kernel and
every configuration of its grid, it sets only the tuning variable that kernel's planner reads, and runs
`fusedrnn-bench --preset targets` (LSTM, bf16: T=1024 N=16 H=768, T=100 N=64 H=512, T=1000 N=1 H=256; forward and
forward+backward; the tiled Triton kernels at T=100 N=64 only) in a child process with a time limit: the row is checked against torch.nn and timed next to it.
A child per configuration also keeps one configuration's crash (a CUDA error poisons the process) or hang from the
others.

Contract with the planners: `FUSEDRNN_TRITON_TUNE` / `FUSEDRNN_CUDA_TUNE` hold comma-separated key=value pairs
(Triton keys: warps, block_h, block_k, stages; fusedrnn.kernels.plan); an unknown key raises ValueError, a
configuration that does not fit is refused with a reason. Both are recorded as "refused: <reason>".

Writes DIR/sweep.json and DIR/sweep.md after every child, so a sweep stopped part-way keeps what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .digest import number, row_records

TRITON_TUNE_ENV = "FUSEDRNN_TRITON_TUNE"
CUDA_TUNE_ENV = "FUSEDRNN_CUDA_TUNE"


@dataclasses.dataclass(frozen=True)
class Target:
    """One fused kernel family to tune: its benchmark row and preset, its tuning variable, fixed variables (the kernel
    family forced), and the grid ("" = the planner's own choice, always first: the reference point of the others)."""

    row: str
    preset: str
    tune_env: str
    fixed_env: dict
    grid: tuple[str, ...]


#: Persistent Triton kernels (fusedrnn.kernels.plan): warps, and the hidden units per program (block_h: more or
#: fewer programs, each holding a smaller or larger W_hh slice). block_k and stages are the tiled kernels' keys.
PERSISTENT_GRID = ("", "warps=4", "warps=8", "warps=16", "block_h=8", "block_h=16", "block_h=32", "warps=4,block_h=16")
#: Tiled Triton kernels: every key. Timed at the fastrnns shape only (N=64): at T=1024 N=16 one program re-reads all
#: of W_hh every step, predicted >20x slower than cuDNN (REFERENCE.md 5b), which is not worth lease time per point.
TILED_GRID = ("", "warps=4", "block_h=32", "block_h=128", "block_k=64", "stages=2", "stages=3")

#: The CUDA backend's persistent kernels (csrc/persistent_plan.h, Tune): threads per CTA, K columns staged per chunk,
#: the thread-block cluster path off, and fewer CTAs (a wider hidden slice each).
CUDA_GRID = ("", "threads=256", "threads=512", "chunk=32", "chunk=128", "cluster=0", "ctas=64")

TARGETS = {
    "triton-persistent": Target(
        "fusedrnn:triton", "targets", TRITON_TUNE_ENV, {"FUSEDRNN_TRITON_KERNEL": "persistent"}, PERSISTENT_GRID
    ),
    "triton-tiled": Target(
        "fusedrnn:triton", "fastrnns", TRITON_TUNE_ENV, {"FUSEDRNN_TRITON_KERNEL": "tiled"}, TILED_GRID
    ),
    "cuda": Target("fusedrnn:cuda", "targets", CUDA_TUNE_ENV, {}, CUDA_GRID),
}

#: The bench arguments of a child: the target shapes on the GPU, or a tiny shape on CPU under the interpreter (dry run).
GPU_ARGUMENTS = ["--device", "cuda", "--dtype", "bfloat16", "--warmup", "5", "--repeat", "20"]
DRY_RUN_ARGUMENTS = ["--device", "cpu", "--dtype", "float32", "--warmup", "0", "--repeat", "1", "--seq-len", "3",
                     "--batch", "2", "--input-size", "16", "--hidden-size", "16"]  # fmt: skip
#: Seconds one configuration may take (3 shapes x 2 modes, compiling included); a child past it is stopped.
CHILD_TIMEOUT_S = 100
#: No child is started with less time than this left in the budget: it could not even import torch and compile.
MIN_CHILD_S = 10


def child_command(target: Target, json_path: Path, dry_run: bool) -> list[str]:
    arguments = DRY_RUN_ARGUMENTS if dry_run else GPU_ARGUMENTS
    return [sys.executable, "-m", "fusedrnn.bench", "--preset", target.preset, "--cell", "lstm", "--backends",
            target.row, "--json", str(json_path), *arguments]  # fmt: skip


def outcome(record: dict) -> str:
    """The sweep's verdict on one row of a child's results: ok, MISMATCH ..., refused: reason, failed: reason."""
    status, note = record["status"], record["note"]
    if status == "unsupported" or (status == "failed" and note.startswith("ValueError")):
        return f"refused: {note}"
    return record["result"]


def records_from(doc: dict, target_name: str, tune: str) -> list[dict]:
    """One record per (shape, mode) of a child's bench JSON: the target row, with torch.nn's time beside it."""
    keys = ("config", "median_ms", "torch_ms", "speedup_vs_torch", "max_abs_err")
    return [{"target": target_name, "tune": tune, "result": outcome(r), **{k: r[k] for k in keys}}
            for r in row_records(doc)]  # fmt: skip


def run_one(
    target_name: str, target: Target, tune: str, json_path: Path, dry_run: bool, timeout_s: float
) -> list[dict]:
    """Run one configuration in a child process (its bench JSON at json_path); its records, or one record saying why
    there are none."""
    env = {**os.environ, **target.fixed_env, target.tune_env: tune}
    start = time.perf_counter()
    try:
        command = child_command(target, json_path, dry_run)
        child = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
        ending = None if child.returncode in (0, 1) else f"failed: exit {child.returncode}: {_last_line(child.stderr)}"
    except subprocess.TimeoutExpired:
        ending = f"timed out after {timeout_s:.0f} s"
    doc = json.loads(json_path.read_text()) if json_path.exists() else {"results": [], "skipped_rows": []}
    records = records_from(doc, target_name, tune)
    unavailable = [item["reason"] for item in doc["skipped_rows"] if item["row"] == target.row]
    if unavailable and ending is None:  # this machine cannot run the row at all (e.g. no CUDA device in a dry run)
        ending = f"unavailable: {unavailable[0]}"
    if ending is not None or not records:
        records.append({"target": target_name, "tune": tune, "config": "(run)", "result": ending or "no results",
                        "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
    return records


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def markdown(records: list[dict]) -> str:
    lines = [
        "| target | tune | config | result | median ms | torch.nn ms | speedup | max abs err |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['target']} | {r['tune'] or '(planner default)'} | {r['config']} | {r['result'].replace('|', '/')} "
            f"| {number(r.get('median_ms'))} | {number(r.get('torch_ms'))} | {number(r.get('speedup_vs_torch'), '.2f')} "
            f"| {number(r.get('max_abs_err'), '.2e')} |"
        )
    return "\n".join(lines) + "\n"


def write(out: Path, records: list[dict], meta: dict) -> None:
    (out / "sweep.json").write_text(json.dumps({**meta, "records": records}, indent=2) + "\n")
    (out / "sweep.md").write_text(markdown(records))


def parse_grid(text: str) -> tuple[str, ...]:
    """A --grid override: configurations separated by ';' (each comma-separated key=value; empty = default)."""
    return tuple(part.strip() for part in text.split(";"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for sweep.json, sweep.md and child JSONs")
    parser.add_argument("--dry-run", action="store_true", help="tiny shape on CPU under the interpreter (CI)")
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    parser.add_argument("--grid", type=parse_grid, help="override every target's grid, e.g. 'warps=4;warps=8'")
    parser.add_argument("--budget-s", type=float, default=float("inf"), help="start no child past this many seconds")
    parser.add_argument("--child-timeout-s", type=float, default=CHILD_TIMEOUT_S)
    args = parser.parse_args(argv)
    work = args.out / "children"
    work.mkdir(parents=True, exist_ok=True)
    meta = {"schema": "fusedrnn-sweep/1", "dry_run": args.dry_run, "shapes": {name: TARGETS[name].preset for name in args.targets},
            "arguments": DRY_RUN_ARGUMENTS if args.dry_run else GPU_ARGUMENTS}  # fmt: skip
    records: list[dict] = []
    start = time.perf_counter()
    for name in args.targets:
        target = TARGETS[name]
        for index, tune in enumerate(args.grid or target.grid):
            left = args.budget_s - (time.perf_counter() - start)
            if left < min(args.child_timeout_s, MIN_CHILD_S):
                records.append({"target": name, "tune": tune, "config": "(run)", "result": "not run: out of time"})
                continue
            json_path = work / f"{name}-{index}.json"
            records += run_one(name, target, tune, json_path, args.dry_run, min(args.child_timeout_s, left))
            write(args.out, records, meta)
    write(args.out, records, meta)
    print(markdown(records), end="")
    # Refusals and mismatches are findings, not errors of the sweep; a child that crashed or hung is.
    return 1 if any(r["result"].startswith(("failed", "timed out", "no results")) for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
