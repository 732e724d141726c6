"""`fusedrnn-bench --preset heads` (issue #21): xLSTM's sLSTM at TiRex's shape (hidden 512, 4 heads of 128, T=100,
small batches), forward + backward, against xlstm's own vanilla sLSTM loop and a plain LSTM of the same size.

Rows, each timed as one training step (forward, then backward of random upstream gradients through the output):
  xlstm:vanilla        xlstm's `sLSTMCell_vanilla` (its Python step loop) on the projected gate input [N, T, 4H]
  fusedrnn:<backend>   the same cell object after `fusedrnn.replace_slstm(cell, backend)`: the recurrence on fusedrnn
  sLSTM:<backend>      `fusedrnn.sLSTM(H, H, num_heads=K)` on [T, N, H], its input projection included (also on
                       `reference`, the Python loop `auto` ranks the compiled backends against)
  LSTM(num_heads):<b>  `fusedrnn.LSTM(H, H, num_heads=K)`: a multi-head LSTM (block-diagonal W_hh), same input
  torch.nn.LSTM        `torch.nn.LSTM(H, H)` on the same input: the plain LSTM of the same size
The first two compute the same function on the same weights: the replaced cell's output and gradients are checked
against xlstm's (the table says how close; a mismatch fails the run, exit status 1). Timings are medians of interleaved repetitions (fusedrnn.bench.timing), on torch's
threads (`--threads 1` for the issue's one-thread target). Skipped with the reason when xlstm is not installed.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from ..modules import LSTM
from ..replace_slstm import replace_slstm
from ..slstm import sLSTM
from . import environment, timing
from .check import TOLERANCES

PRESET = "heads"
SUMMARY = "sLSTM at TiRex's shape (H=512, 4 heads, T=100, N=1 and 4) vs xlstm's vanilla loop and a plain LSTM"


@dataclasses.dataclass(frozen=True)
class HeadsShape:
    hidden: int
    heads: int
    seq_len: int
    batches: tuple[int, ...]


#: TiRex's sLSTM blocks: embedding 512 in 4 heads; its patched context gives on the order of 100 steps.
TIREX_SHAPE = HeadsShape(hidden=512, heads=4, seq_len=100, batches=(1, 4))
#: xlstm's vanilla loop is slow: few repetitions keep the run to a few minutes on 2 cores.
WARMUP, REPEAT = 1, 5
XLSTM_ROW = "xlstm:vanilla"
HEADS_LSTM_ROW = "LSTM(num_heads)"
REFERENCE = "reference"
LSTM_ROW = "torch.nn.LSTM"


@dataclasses.dataclass
class Row:
    name: str
    step: Callable[[], object]


def xlstm_cell(hidden: int, heads: int, dtype: torch.dtype) -> nn.Module:
    """xlstm's vanilla sLSTM cell with random weights (xlstm initialises R to zero, which would skip its product)."""
    from xlstm.blocks.slstm.cell import sLSTMCell, sLSTMCellConfig  # noqa: PLC0415 - the optional peer

    cell = sLSTMCell(sLSTMCellConfig(hidden_size=hidden, num_heads=heads, backend="vanilla")).to(dtype)
    with torch.no_grad():
        for p in cell.parameters():
            p.copy_(torch.randn_like(p) / hidden**0.5)
    return cell


def training_step(module: nn.Module, x: Tensor, seed: int) -> Callable[[], list[Tensor]]:
    """forward(x), backward of random upstream gradients (seeded, drawn once in the output's shape) through the
    output; returns the output and every gradient."""
    leaves = [x, *module.parameters()]
    upstream: list[Tensor] = []

    def step() -> list[Tensor]:
        y = module(x)[0]
        if not upstream:
            upstream.append(torch.randn(y.shape, generator=torch.Generator().manual_seed(seed)).to(y.dtype))
        return [y.detach(), *torch.autograd.grad(y, leaves, upstream[0])]

    return step


def checked_cell_rows(shape: HeadsShape, batch: int, dtype: torch.dtype, backend: str) -> tuple[list[Row], dict]:
    """xlstm's cell and its fusedrnn replacement on the same weights and input, and the check of the replacement's
    output and gradients against xlstm's at the benchmark's tolerance for the dtype (fusedrnn.bench.check)."""
    cell = xlstm_cell(shape.hidden, shape.heads, dtype)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, shape.seq_len, 4 * shape.hidden, generator=g).to(dtype).requires_grad_()
    original = training_step(cell, x, seed=2)
    expected = original()
    replaced = replace_slstm(copy.deepcopy(cell), backend=backend)  # in place: a copy, so xlstm's row stays xlstm's
    fused = training_step(replaced, x, seed=2)
    actual = fused()
    tolerance = TOLERANCES[dtype]
    passed = all(torch.allclose(a, e, **tolerance) for a, e in zip(actual, expected))
    error = max((a.double() - e.double()).abs().max().item() for a, e in zip(actual, expected))
    check = {"batch": batch, "row": f"fusedrnn:{backend}", "against": XLSTM_ROW, "max_abs_error": error,
             "passed": passed, **tolerance}  # fmt: skip
    return [Row(XLSTM_ROW, original), Row(f"fusedrnn:{backend}", fused)], check


def layer_rows(shape: HeadsShape, batch: int, dtype: torch.dtype, backend: str) -> list[Row]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape.seq_len, batch, shape.hidden, generator=g).to(dtype).requires_grad_()
    rows = []
    for name in dict.fromkeys((backend, REFERENCE)):  # the reference's loop: what `auto` ranks the others against
        slstm = sLSTM(shape.hidden, shape.hidden, num_heads=shape.heads, dtype=dtype, backend=name)
        rows.append(Row(f"sLSTM:{name}", training_step(slstm, x, seed=3)))
    for name in dict.fromkeys((backend, REFERENCE)):
        heads = LSTM(shape.hidden, shape.hidden, num_heads=shape.heads, dtype=dtype, backend=name)
        rows.append(Row(f"{HEADS_LSTM_ROW}:{name}", training_step(heads, x, seed=3)))
    lstm = nn.LSTM(shape.hidden, shape.hidden, dtype=dtype)
    return [*rows, Row(LSTM_ROW, training_step(lstm, x, seed=3))]


def run(backend: str = "auto", *, dtype: torch.dtype = torch.float32, shape: HeadsShape = TIREX_SHAPE,
        repeat: int = REPEAT) -> dict:
    """Every row at every batch: {"env": ..., "rows": [{batch, row, median_ms, min_ms, max_ms}], "skipped": ...}."""
    env = environment.describe(torch.device("cpu"))  # first: its load average is the one at the start
    records, checks, skipped = [], [], None
    for batch in shape.batches:
        rows = layer_rows(shape, batch, dtype, backend)
        if importlib.util.find_spec("xlstm") is not None:
            cell_rows, check = checked_cell_rows(shape, batch, dtype, backend)
            rows, checks = cell_rows + rows, [*checks, check]
        else:
            skipped = "xlstm is not installed (pip install 'fusedrnn[xlstm]'): its rows are skipped"
        timings = timing.measure_interleaved({row.name: row.step for row in rows}, torch.device("cpu"), WARMUP, repeat)
        for name, result in timings.items():
            record = {"batch": batch, "row": name}
            if isinstance(result, Exception):
                record["error"] = f"{type(result).__name__}: {result}"
            else:
                record.update(median_ms=result.median, min_ms=result.min, max_ms=result.max)
            records.append(record)
    settings = {**dataclasses.asdict(shape), "dtype": str(dtype).removeprefix("torch."), "warmup": WARMUP,
                "repeat": repeat, "backend": backend}  # fmt: skip
    return {"preset": PRESET, "shape": settings, "env": env, "rows": records, "checks": checks,
            "skipped": skipped}  # fmt: skip


def markdown(doc: dict) -> str:
    """The table: per batch, each row's median ms and the speed of the fused rows against xlstm's loop and the LSTM."""
    env, shape = doc["env"], doc["shape"]
    lines = [f"sLSTM H={shape['hidden']} heads={shape['heads']} T={shape['seq_len']} {shape['dtype']}, forward + "
             f"backward, {env['cpu']}, {env['torch_threads']} thread(s), load at start "
             f"{', '.join(f'{v:.2f}' for v in env['load_average_at_start'] or [])}; medians of {shape['repeat']}",
             "", "| N | row | median ms | vs xlstm:vanilla | vs torch.nn.LSTM |", "|---|---|---|---|---|"]  # fmt: skip
    for batch in dict.fromkeys(r["batch"] for r in doc["rows"]):
        rows = {r["row"]: r for r in doc["rows"] if r["batch"] == batch}
        base = {name: rows[name].get("median_ms") for name in (XLSTM_ROW, LSTM_ROW) if name in rows}
        for name, record in rows.items():
            if "median_ms" not in record:
                lines.append(f"| {batch} | {name} | {record['error']} | | |")
                continue
            ms = record["median_ms"]
            ratios = [f"{base[b] / ms:.2f}x" if base.get(b) else "" for b in (XLSTM_ROW, LSTM_ROW)]
            lines.append(f"| {batch} | {name} | {ms:.1f} | {ratios[0]} | {ratios[1]} |")
    lines.append("")
    for check in doc["checks"]:
        verdict = "ok" if check["passed"] else f"MISMATCH (rtol {check['rtol']}, atol {check['atol']})"
        lines.append(f"N={check['batch']}: {check['row']} vs {check['against']}, output and every gradient: max abs "
                     f"error {check['max_abs_error']:.1e}, {verdict}")  # fmt: skip
    if doc["skipped"]:
        lines += ["", doc["skipped"]]
    return "\n".join(lines) + "\n"


def main(dtype: torch.dtype, json_path: Path | None, markdown_path: Path | None, console) -> int:
    doc = run(dtype=dtype)
    table = markdown(doc)
    console.print(table, markup=False, highlight=False)
    for path, text in ((json_path, json.dumps(doc, indent=2)), (markdown_path, table)):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            console.print(f"wrote {path}")
    # As fusedrnn-bench's own table: a wrong or crashed row fails the run.
    return 1 if any("error" in r for r in doc["rows"]) or not all(c["passed"] for c in doc["checks"]) else 0
