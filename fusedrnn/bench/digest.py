"""Several `fusedrnn-bench --json` files as one: a merged JSON, a markdown table, and a compact table on stdout.

`python -m fusedrnn.bench.digest FILE... [--json MERGED] [--markdown TABLE]` (scripts/gpu_check.sh). Each line of the
tables is one fused row on one config, with torch.nn's time on the same config beside it. A file from a run that was
stopped part-way is still read: the benchmark rewrites its JSON after every config ("complete": false until the end).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .rows import BASELINE

_MIB = 2**20


def verdict(result: dict) -> str:
    """ok / MISMATCH (with the worst error) / the row's status and why, from one result record."""
    check = result["check"]
    if result["status"] in ("ok", "mismatch") and check:
        return "ok" if check["passed"] else f"MISMATCH (max err {check['max_abs_err']:.1e} in {check['worst']})"
    return f"{result['status']}: {result['note']}"


def row_records(doc: dict) -> list[dict]:
    """One record per fused row and config of a bench document, with the baseline's median on that config."""
    baseline = {r["label"]: r for r in doc["results"] if r["row"] == BASELINE}
    records = []
    for result in doc["results"]:
        if result["row"] == BASELINE:
            continue
        base_time = (baseline.get(result["label"]) or {}).get("time_ms") or {}
        check = result["check"] or {}
        records.append({
            "config": result["label"],
            "row": result["row"],
            "status": result["status"],
            "note": result["note"],
            "result": verdict(result),
            "median_ms": (result["time_ms"] or {}).get("median"),
            "torch_ms": base_time.get("median"),
            "speedup_vs_torch": result["speedup_vs_torch"],
            "max_abs_err": check.get("max_abs_err"),
            "peak_mib": None if result["peak_memory_bytes"] is None else result["peak_memory_bytes"] / _MIB,
        })  # fmt: skip
    return records


def number(value, spec: str = ".3f") -> str:
    """A table cell: the value formatted, or "-" where there is none."""
    return "-" if value is None else format(value, spec)


def table(runs: list[tuple[str, dict]]) -> str:
    lines = [
        "| run | config | row | result | median ms | torch.nn ms | speedup | peak MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, doc in runs:
        run = name + ("" if doc.get("complete", True) else " (stopped)")
        for item in doc["skipped_rows"]:  # asked for, but this machine cannot run it at all
            lines.append(f"| {run} | - | {item['row']} | unavailable: {item['reason'][:60]} | - | - | - | - |")
        for r in row_records(doc):
            result = r["result"] if len(r["result"]) <= 60 else r["result"][:57] + "..."
            lines.append(
                f"| {run} | {r['config']} | {r['row']} | {result.replace('|', '/')} | {number(r['median_ms'])} "
                f"| {number(r['torch_ms'])} | {number(r['speedup_vs_torch'], '.2f')} | {number(r['peak_mib'], '.1f')} |"
            )
    return "\n".join(lines) + "\n"


def compact(runs: list[tuple[str, dict]]) -> str:
    """The fused rows only, one short line each (what fits the GPU tool's short reply): config, row, result (ok or
    what went wrong, cut to 24 characters), median ms, torch.nn's, and torch.nn / row."""
    lines = ["| config | row | result | ms | torch.nn ms | x torch |", "|---|---|---|---|---|---|"]
    for name, doc in runs:
        for r in row_records(doc):
            result = r["result"] if len(r["result"]) <= 24 else r["result"][:21] + "..."
            stopped = "" if doc.get("complete", True) else f" ({name} stopped)"
            row = r["row"].removeprefix("fusedrnn:")
            times = f"{number(r['median_ms'])} | {number(r['torch_ms'])} | {number(r['speedup_vs_torch'], '.2f')}"
            lines.append(f"| {r['config']}{stopped} | {row} | {result.replace('|', '/')} | {times} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="fusedrnn-bench --json files")
    parser.add_argument("--json", type=Path, help="write all runs here, merged")
    parser.add_argument("--markdown", type=Path, help="write the table here too")
    parser.add_argument("--compact", action="store_true", help="print the short table (fused rows) instead")
    args = parser.parse_args(argv)
    runs = [(path.stem, json.loads(path.read_text())) for path in args.files if path.exists()]
    text = table(runs)
    if args.json:
        merged = {"schema": "fusedrnn-bench-runs/1", "runs": [{"run": name, **doc} for name, doc in runs]}
        args.json.write_text(json.dumps(merged, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(text)
    print(compact(runs) if args.compact else text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
