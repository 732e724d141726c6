"""Presenting results: the terminal table (rich), and --json, --csv, --markdown files. Plots are in plot.py.

Each config's table is checked against and compared with its baseline, its first row: torch.nn for torch.nn's cells,
the plain PyTorch loop for the variants. (The JSON's `speedup_vs_torch` keeps its name: both baselines are plain
PyTorch, and files written before the variants existed read the same.)
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .runners import FAILED, MISMATCH, OK, UNCHECKED, UNSUPPORTED, Result

SCHEMA = "fusedrnn-bench/1"
_MIB = 2**20
#: A 1-minute load average above this per core means other processes compete with torch's threads for the CPU.
BUSY_LOAD_PER_CORE = 0.75
_NOTE_WIDTH = 70  # the table shows the first characters of a failure; the JSON keeps the whole message
_STATUS_STYLE = {OK: "green", MISMATCH: "bold red", FAILED: "red", UNSUPPORTED: "yellow", UNCHECKED: "yellow"}


def status_text(result: Result) -> str:
    if result.status in (OK, MISMATCH):
        return result.check.summary()
    note = result.note if len(result.note) <= _NOTE_WIDTH else result.note[: _NOTE_WIDTH - 3] + "..."
    return f"{result.status}: {note}"


def _cells(result: Result) -> list[str]:
    """The table's value columns for one result (shared by the rich and markdown tables)."""
    t = result.timing
    return [
        result.row,
        status_text(result),
        f"{t.median:.3f}" if t else "-",
        f"{t.min:.3f} / {t.max:.3f}" if t else "-",
        f"{result.throughput / 1e3:,.1f}" if t else "-",
        f"{result.peak_bytes / _MIB:.1f}" if result.peak_bytes is not None else "-",
        f"{result.speedup:.2f}x" if result.speedup is not None else "-",
    ]


HEADERS = [
    "config",
    "backend",
    "check vs baseline (max abs err)",
    "median ms",
    "min / max ms",
    "k elem/s",
    "peak MiB",
    "speedup",
]


def _grouped(results: list[Result]) -> list[list[Result]]:
    groups: dict[object, list[Result]] = {}
    for result in results:
        groups.setdefault(result.config, []).append(result)
    return list(groups.values())


def print_table(results: list[Result], env: dict, settings: dict, skipped: list[dict], console: Console) -> None:
    """One table per config (rows = backends), then the measurement notes and the skipped rows."""
    console.print(
        f"[bold]fusedrnn-bench[/] on {env['device_name']} — torch {env['torch']}, triton {env['triton']}, "
        f"CUDA {env['cuda']}"
    )
    for group in _grouped(results):
        table = Table(title=f"{group[0].config.label()} (baseline: {group[0].baseline})", title_justify="left")
        for header in HEADERS[1:]:
            table.add_column(header, justify="left" if header in HEADERS[1:3] else "right")
        for result in group:
            values = _cells(result)
            values[1] = f"[{_STATUS_STYLE[result.status]}]{values[1]}[/]"
            table.add_row(*values)
        console.print(table)
    console.print(
        f"warm-up {settings['warmup']}, {settings['repeat']} timed runs per row ({settings['timer']}); "
        "elem = time steps x batch rows; speedup = baseline median / row median (the baseline is each table's first "
        "row).\n"
        f"peak MiB: {settings['memory_method']}."
    )
    for item in skipped:
        console.print(f"[dim]skipped {item['row']}: {item['reason']}[/]")
    load = env.get("load_average_at_start")
    if env["device"] == "cpu" and load and load[0] > BUSY_LOAD_PER_CORE * (env["cpu_count"] or 1):
        console.print(
            f"[yellow]warning: the machine was busy (load {load[0]:.1f} on {env['cpu_count']} cores) when this run "
            "started; CPU timings are unreliable (try a quiet machine, or --threads 1 for steadier numbers)[/]"
        )


def markdown_table(results: list[Result], env: dict, settings: dict) -> str:
    lines = [
        (
            f"Device: {env['device_name']}; torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}; "
            f"{settings['created_utc']}."
        ),
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join("---" for _ in HEADERS) + "|",
    ]
    for group in _grouped(results):
        for i, result in enumerate(group):
            values = [group[0].config.label() if i == 0 else "", *_cells(result)]
            lines.append("| " + " | ".join(v.replace("|", "/") for v in values) + " |")
    return "\n".join(lines) + "\n"


def result_record(result: Result) -> dict:
    t = result.timing
    return {
        "config": result.config.as_dict(),
        "label": result.config.label(),
        "row": result.row,
        "baseline": result.baseline,
        "status": result.status,
        "note": result.note,
        "check": result.check.as_dict() if result.check else None,
        "time_ms": {"median": t.median, "min": t.min, "max": t.max, "all": t.times_ms} if t else None,
        "throughput_per_s": result.throughput,
        "peak_memory_bytes": result.peak_bytes,
        "rss_growth_bytes": result.rss_growth_bytes,
        "speedup_vs_torch": result.speedup,
    }


def document(results: list[Result], env: dict, settings: dict, skipped: list[dict], complete: bool = True) -> dict:
    """The --json document (schema SCHEMA); `complete` is False while the run is still going (or was stopped)."""
    return {
        "schema": SCHEMA,
        "complete": complete,
        "created_utc": settings["created_utc"],
        "command": settings["command"],
        "settings": settings,
        "environment": env,
        "skipped_rows": skipped,
        "results": [result_record(r) for r in results],
    }


def write_json(path: Path, doc: dict) -> None:
    """Write through a temporary file and a rename, so a run killed while writing leaves the previous version whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(doc, indent=2) + "\n")
    partial.replace(path)


CSV_FIELDS = [
    "created_utc", "command", "device", "device_name", "torch", "triton", "cuda",
    "cell", "seq_len", "batch", "input_size", "hidden_size", "layers", "bidirectional", "proj_size", "step_by_step",
    "decoder", "dtype", "mode",
    "row", "status", "check_passed", "check_max_abs_err", "check_failed", "median_ms", "min_ms", "max_ms",
    "throughput_per_s", "peak_memory_bytes", "rss_growth_bytes", "speedup_vs_torch", "note",
]  # fmt: skip


def write_csv(path: Path, doc: dict) -> None:
    """One line per (config, row); the run's device, versions and command are repeated on every line."""
    env = doc["environment"]
    common = {"created_utc": doc["created_utc"], "command": doc["command"]}
    common.update({k: env[k] for k in ("device", "device_name", "torch", "triton", "cuda")})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for record in doc["results"]:
            check, t = record["check"], record["time_ms"]
            writer.writerow({
                **common,
                **record["config"],
                "row": record["row"],
                "status": record["status"],
                "check_passed": check["passed"] if check else "",
                "check_max_abs_err": check["max_abs_err"] if check else "",
                "check_failed": ";".join(check["failed"]) if check else "",
                "median_ms": t["median"] if t else "",
                "min_ms": t["min"] if t else "",
                "max_ms": t["max"] if t else "",
                "throughput_per_s": record["throughput_per_s"] or "",
                "peak_memory_bytes": "" if record["peak_memory_bytes"] is None else record["peak_memory_bytes"],
                "rss_growth_bytes": "" if record["rss_growth_bytes"] is None else record["rss_growth_bytes"],
                "speedup_vs_torch": record["speedup_vs_torch"] or "",
                "note": record["note"],
            })  # fmt: skip
