"""`fusedrnn-bench` (also `python -m fusedrnn.bench`): speed, memory and correctness of every backend vs torch.nn.

Issue 15's variants (`--preset variants`, or their names given to --cell) have no torch.nn layer: their baseline is
the same model as a plain PyTorch step loop, and their rows add torch.compile of that loop and fusedrnn's `auto`.
Exit status: 0 when every row that ran matched its baseline, 1 when some row's outputs or gradients did not (the
table shows which), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import shlex
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .. import registry
from . import environment, heads, report, timing
from .check import TOLERANCES, TRUTH_ERROR_FACTOR
from .configs import (CELLS, DEFAULT_DTYPE, DEFAULT_PRESET, DTYPES, MODES, PRESETS, VARIANTS, build_configs,
                      validate_shape)  # fmt: skip
from .rows import BASELINE, COMPILE_LOOP_ROW, COMPILE_ROW, LOOP_BASELINE, all_rows
from .runners import FAILED, MISMATCH, run_config

#: (warm-up, timed repetitions) per device type: a GPU step is cheap and noisy, a CPU step is slow and steadier.
DEFAULT_REPEATS = {"cpu": (2, 10), "cuda": (10, 30)}
WIDE_OUTPUT = 150
SHAPE_FLAGS = ("seq_len", "batch", "input_size", "hidden_size", "layers", "proj_size")


def _int_at_least(minimum: int, name: str):
    """An argparse type: an integer >= minimum, else a usage error naming what was expected."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {name}, got {value}")
        return value

    return parse


_positive = _int_at_least(1, "a positive integer")
_non_negative = _int_at_least(0, "an integer >= 0")


def build_parser() -> argparse.ArgumentParser:
    presets = "; ".join([*(f"{name}: {p.summary}" for name, p in PRESETS.items()), f"{heads.PRESET}: {heads.SUMMARY}"])
    parser = argparse.ArgumentParser(
        prog="fusedrnn-bench",
        description="Benchmark every available fusedrnn backend against torch.nn (cuDNN on GPU, ATen on CPU): "
        "outputs and gradients are checked against torch.nn on the same weights before timing.",
        epilog="Variants (--preset variants; cells " + ", ".join(VARIANTS) + ") are compared with a plain PyTorch "
        "step loop instead of torch.nn. Exit status: 0 all rows matched their baseline, 1 some row mismatched, "
        "2 usage error.",
    )
    shape = parser.add_argument_group("what to run")
    shape.add_argument("--preset", choices=[*PRESETS, heads.PRESET], default=DEFAULT_PRESET,
                       help=f"shapes and cells ({presets})")  # fmt: skip
    shape.add_argument("--cell", nargs="+", choices=[*CELLS, *VARIANTS, "all"],
                       help="cells or variants (default: the preset's; all: torch.nn's cells)")  # fmt: skip
    shape.add_argument("--seq-len", type=_positive, help="time steps T (overrides the preset)")
    shape.add_argument("--batch", type=_positive, help="batch size N")
    shape.add_argument("--input-size", type=_positive, help="input features I")
    shape.add_argument("--hidden-size", type=_positive, help="hidden size H")
    shape.add_argument("--layers", type=_positive, help="stacked layers")
    shape.add_argument("--bidirectional", action="store_true", default=None, help="two directions")
    shape.add_argument("--proj-size", type=_non_negative, help="LSTM projection size (0 = none)")
    shape.add_argument("--dtype", choices=DTYPES,
                       help=f"default: the preset's on this device (variants on CUDA: bfloat16 and float32), else "
                       f"{DEFAULT_DTYPE}")  # fmt: skip
    shape.add_argument("--mode", choices=[*MODES, "both"], default="both", help="no-grad forward, fwd+bwd, or both")
    shape.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: cuda if present")
    shape.add_argument("--backends", help=f"comma-separated rows to run (see --list); the baseline ({BASELINE}, or "
                       f"{LOOP_BASELINE} for a variant) always runs; --preset {heads.PRESET}: the one fusedrnn "
                       "backend of its fused rows")  # fmt: skip
    shape.add_argument("--compile", action="store_true",
                       help=f"include the {COMPILE_ROW} / {COMPILE_LOOP_ROW} rows (--preset {heads.PRESET}: "
                       f"{heads.COMPILE_XLSTM_ROW}) (slow to compile)")  # fmt: skip
    measure = parser.add_argument_group("measurement")
    measure.add_argument("--warmup", type=_non_negative, help="untimed runs per row (default: cpu 2, cuda 10)")
    measure.add_argument("--repeat", type=_positive, help="timed runs per row (default: cpu 10, cuda 30)")
    measure.add_argument("--seed", type=int, default=0, help="seed of weights and inputs")
    measure.add_argument("--threads", type=_positive, help="torch CPU threads (default: torch's)")
    output = parser.add_argument_group("output")
    output.add_argument("--json", type=Path, metavar="PATH", help="write every result, config and version here")
    output.add_argument("--csv", type=Path, metavar="PATH", help="the same, one line per (config, row)")
    output.add_argument("--markdown", type=Path, metavar="PATH", help="the table as markdown")
    output.add_argument("--plot", type=Path, metavar="PATH", help="PNG: time vs batch/hidden, speedup bars")
    output.add_argument("--list", action="store_true", help="list the rows and their availability, then exit")
    output.add_argument("--dry-run", action="store_true",
                        help="print what would be measured (configs and rows), then exit; --device cuda needs no "
                        "GPU")  # fmt: skip
    return parser


def resolve_device(parser: argparse.ArgumentParser, name: str, dry_run: bool = False) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available() and not dry_run:
        parser.error("--device cuda: no CUDA device is available here")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def select_rows(parser: argparse.ArgumentParser, args: argparse.Namespace, families: list[bool]):
    """({family: rows to run}, skipped rows with the reason), from --backends / --compile and what this machine has.

    A family is False for torch.nn's cells and True for the variants (`all_rows(variant=...)`), each with its own
    baseline first; `families` are those the run's configs need."""
    wanted = None if args.backends is None else [n.strip() for n in args.backends.split(",") if n.strip()]
    include_compile = args.compile or (wanted is not None and bool({COMPILE_ROW, COMPILE_LOOP_ROW} & set(wanted)))
    rows = {variant: all_rows(include_compile, variant) for variant in families}
    if wanted is not None:
        known = list(dict.fromkeys(row.name for family in rows.values() for row in family))
        unknown = sorted(set(wanted) - set(known))
        if unknown:
            parser.error(f"--backends: unknown row(s) {', '.join(unknown)}; known: {', '.join(known)}")
        rows = {variant: [family[0], *(r for r in family[1:] if r.name in wanted)] for variant, family in rows.items()}
    skipped = list({row.name: {"row": row.name, "reason": row.unavailable}
                    for family in rows.values() for row in family if row.unavailable}.values())  # fmt: skip
    return {variant: [row for row in family if not row.unavailable] for variant, family in rows.items()}, skipped


def heads_backend(parser: argparse.ArgumentParser, backends: str | None) -> str:
    """--preset heads: --backends names the one fusedrnn backend its fused rows run on (default auto)."""
    if backends is None:
        return registry.AUTO
    name = backends.strip()
    known = [registry.AUTO, *registry.backend_names()]
    if name not in known:
        parser.error(f"--preset {heads.PRESET}: --backends takes one fusedrnn backend ({', '.join(known)}), got "
                     f"{backends!r}")  # fmt: skip
    return name


def _settings(args: argparse.Namespace, argv: list[str] | None, device: torch.device, rows, modes, dtypes) -> dict:
    """How the run was made, recorded in --json (with the exact command line); `rows`: every row that may run."""
    warmup, repeat = DEFAULT_REPEATS[device.type]
    return {
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["fusedrnn-bench", *(sys.argv[1:] if argv is None else argv)]),
        "preset": args.preset,
        "device": device.type,
        "dtype": ",".join(dtypes),
        "modes": modes,
        "warmup": warmup if args.warmup is None else args.warmup,
        "repeat": repeat if args.repeat is None else args.repeat,
        "seed": args.seed,
        "rows": [row.name for row in rows],
        "timer": "cuda events" if device.type == "cuda" else "time.perf_counter",
        "memory_method": timing.memory_method(device),
        "tolerances": {str(dtype).removeprefix("torch."): tol for dtype, tol in TOLERANCES.items()},
        "low_precision_truth_factor": TRUTH_ERROR_FACTOR,
        # Kernel choices and tuning overrides (FUSEDRNN_TRITON_KERNEL, FUSEDRNN_TRITON_TUNE, ...) change what a row runs.
        "fusedrnn_environment": {k: v for k, v in sorted(os.environ.items()) if k.startswith("FUSEDRNN_")},
        # Whether fp32 matmuls may use TF32, for torch.nn (cuBLAS / cuDNN) and for the Triton kernels (which follow
        # torch's float32 matmul precision).
        "tf32": {
            "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        },
    }


def _write_outputs(args: argparse.Namespace, results, env: dict, settings: dict, skipped, console: Console) -> None:
    doc = report.document(results, env, settings, skipped)
    if args.json:
        report.write_json(args.json, doc)
    if args.csv:
        report.write_csv(args.csv, doc)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(report.markdown_table(results, env, settings))
    if args.plot:
        from .plot import plot

        plot(doc, args.plot)
    for path in (args.json, args.csv, args.markdown, args.plot):
        if path:
            console.print(f"wrote {path}")


def print_plan(configs, rows, skipped, device: torch.device, console: Console) -> None:
    """--dry-run: one line per config with the rows it would run (rows this machine lacks are listed once, after)."""
    console.print(f"{len(configs)} configs on {device.type}", soft_wrap=True)
    for config in configs:
        console.print(f"  {config.label()}: " + ", ".join(row.name for row in rows[config.variant]), soft_wrap=True)
    for entry in skipped:
        console.print(f"  skipped {entry['row']}: {entry['reason']}", soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # No emoji codes: a row name such as "compile:loop" followed by ":" would print as an emoji.
    console = Console(emoji=False)
    if not console.is_terminal:
        console = Console(width=WIDE_OUTPUT, emoji=False)  # piped or captured: don't squeeze the table into 80 columns
    if args.list:
        for variant, title in ((False, "torch.nn's cells"), (True, "variants (" + ", ".join(VARIANTS) + ")")):
            console.print(f"[bold]rows for {title}[/]")
            for row in all_rows(include_compile=True, variant=variant):
                state = "available" if row.unavailable is None else f"unavailable: {row.unavailable}"
                console.print(f"  {row.name:22} {row.summary} [dim]({state})[/]")
        return 0
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib: pip install 'fusedrnn[plot]'")
    device = resolve_device(parser, args.device, args.dry_run)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.preset == heads.PRESET:  # its own rows (xlstm's and TiRex's loops, sLSTM, LSTMs) and table
        return heads.main(DTYPES[args.dtype or DEFAULT_DTYPE], args.json, args.markdown, console, device=device,
                          backend=heads_backend(parser, args.backends), compile=args.compile)  # fmt: skip
    cells = list(CELLS) if args.cell and "all" in args.cell else args.cell
    modes = list(MODES) if args.mode == "both" else [args.mode]
    overrides = {flag: getattr(args, flag) for flag in (*SHAPE_FLAGS, "bidirectional")}
    configs = build_configs(args.preset, cells, modes, args.dtype, overrides, device.type)
    for config in configs:
        problem = validate_shape(config.shape, config.cell)
        if problem:
            parser.error(problem)
    rows, skipped = select_rows(parser, args, list(dict.fromkeys(config.variant for config in configs)))
    if args.dry_run:
        print_plan(configs, rows, skipped, device, console)
        return 0
    settings = _settings(args, argv, device, list({r.name: r for family in rows.values() for r in family}.values()),
                         modes, list(dict.fromkeys(config.dtype for config in configs)))  # fmt: skip
    env = environment.describe(device)

    results = []
    if args.json:  # written again after every config, so a run stopped part-way keeps what it measured
        report.write_json(args.json, report.document(results, env, settings, skipped, complete=False))
    progress_columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*progress_columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("benchmark", total=sum(len(rows[config.variant]) for config in configs))
        for config in configs:

            def advance(row: str, config=config) -> None:
                progress.update(task, description=f"{config.label()} · {row}", advance=1)

            results += run_config(
                config, rows[config.variant], device, settings["warmup"], settings["repeat"], args.seed, advance
            )
            if args.json:
                report.write_json(args.json, report.document(results, env, settings, skipped, complete=False))

    report.print_table(results, env, settings, skipped, console)
    _write_outputs(args, results, env, settings, skipped, console)
    # A wrong result or a crashed row fails the run (scripts and CI read the exit status); a declined one does not.
    return 1 if any(result.status in (MISMATCH, FAILED) for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
