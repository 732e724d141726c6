"""`fusedrnn-bench --preset heads` (issue #21): xLSTM's sLSTM at TiRex's shape (hidden 512, 4 heads of 128, T=100,
small batches), forward + backward, against xlstm's and TiRex's own sLSTM loops and a plain LSTM of the same size.

Rows, each timed as one training step (forward, then backward of random upstream gradients through the output):
  xlstm:vanilla            xlstm's `sLSTMCell_vanilla` (its Python step loop) on the projected gate input [N, T, 4H]
  compile(xlstm:vanilla)   the same loop under torch.compile (only with --compile; its first call, compile included,
                           is reported apart). Dynamo breaks the graph 5 times per call at xlstm's data-dependent
                           branches, so the loop runs as small compiled pieces between eager steps (torch 2.14: 3-5 s
                           to compile, about the eager loop's speed)
  fusedrnn:<backend>       the same cell object after `fusedrnn.replace_slstm(cell, backend)`: its recurrence on
                           fusedrnn
  tirex:torch              TiRex's own `sLSTMCell` (tirex.models.slstm.cell) on its torch path: a Python step loop that
                           rounds R and the states to bfloat16 every step
  tirex:fusedrnn:<backend> that cell after `replace_slstm`: formulation="tirex" on fusedrnn, in the input's dtype
  sLSTM:<backend>          `fusedrnn.sLSTM(H, H, num_heads=K)` on [T, N, H], its input projection included (also on
                           `reference`, the Python loop `auto` ranks the compiled backends against)
  LSTM(num_heads):<b>      `fusedrnn.LSTM(H, H, num_heads=K)`: a multi-head LSTM (block-diagonal W_hh), same input
  flashrnn:LSTM(num_heads) FlashRNN's multi-head LSTM (K heads of H/K) on that layer's weights: CUDA only, when
                           flashrnn is installed
  torch.nn.LSTM            `torch.nn.LSTM(H, H)` on the same input: the plain LSTM of the same size
Checked before timing, output and every gradient, on the same weights (the table says how close; a mismatch fails
the run, exit status 1): fusedrnn:<backend> and compile(xlstm:vanilla) against xlstm:vanilla at the dtype's
tolerance (fusedrnn.bench.check); tirex:fusedrnn:<backend> against tirex:torch at bfloat16's tolerance (TiRex's own
rounding), where a tensor outside it passes if it is no further than TRUTH_ERROR_FACTOR x tirex:torch from TiRex's own
loop run in float64; flashrnn:LSTM(num_heads) against LSTM(num_heads):<backend>.

Everything runs on one device (the CLI's --device: CUDA when present), timed with synchronisation there; `--backends
NAME` picks the fusedrnn backend of the fused rows (`auto` by default; on CUDA `auto` does not rank `triton` first
for sLSTM, so name it). Timings are medians of interleaved repetitions (fusedrnn.bench.timing), on torch's threads
(`--threads 1` for the issue's one-thread target). Rows whose library is not installed are skipped with the reason.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..modules import LSTM
from ..replace_slstm import replace_slstm
from ..slstm import sLSTM
from . import environment, timing
from .check import TRUTH_ERROR_FACTOR, Check, compare
from .peers import flashrnn_lstm_heads

PRESET = "heads"
SUMMARY = ("sLSTM at TiRex's shape (H=512, 4 heads, T=100, N=1 and 4) vs xlstm's and TiRex's loops, a multi-head "
           "LSTM (and FlashRNN's, on CUDA) and a plain LSTM")  # fmt: skip


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
COMPILE_XLSTM_ROW = f"compile({XLSTM_ROW})"
TIREX_ROW = "tirex:torch"
HEADS_LSTM_ROW = "LSTM(num_heads)"
FLASHRNN_ROW = f"flashrnn:{HEADS_LSTM_ROW}"
REFERENCE = "reference"
LSTM_ROW = "torch.nn.LSTM"
#: TiRex's torch path rounds R and the states to bfloat16 at every step, whatever the input's dtype: its replacement
#: (in the input's dtype) is compared with it at bfloat16's tolerance, whatever the run's dtype.
TIREX_DTYPE = torch.bfloat16


@dataclasses.dataclass
class Row:
    name: str
    step: Callable[[], object]


def fused_name(backend: str) -> str:
    return f"fusedrnn:{backend}"


def tirex_fused_name(backend: str) -> str:
    return f"tirex:fusedrnn:{backend}"


def random_parameters(module: nn.Module, hidden: int, seed: int = 0) -> nn.Module:
    """Seeded random weights of scale 1/sqrt(hidden), the same in every run: xlstm initialises R to zero (which would
    skip its product) and TiRex leaves its parameters uninitialised (its checkpoints fill them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g).to(p.dtype) / hidden**0.5)
    return module


def xlstm_cell(hidden: int, heads: int, dtype: torch.dtype, seed: int = 0) -> nn.Module:
    """xlstm's vanilla sLSTM cell with random weights (random_parameters)."""
    from xlstm.blocks.slstm.cell import sLSTMCell, sLSTMCellConfig  # noqa: PLC0415 - the optional peer

    cell = sLSTMCell(sLSTMCellConfig(hidden_size=hidden, num_heads=heads, backend="vanilla"))
    return random_parameters(cell.to(dtype), hidden, seed)


def tirex_cell(hidden: int, heads: int, dtype: torch.dtype) -> nn.Module:
    """TiRex's sLSTM cell on its torch path, with random weights."""
    from tirex.models.slstm.cell import sLSTMBlockConfig, sLSTMCell  # noqa: PLC0415 - the optional peer

    cell = sLSTMCell(sLSTMBlockConfig(embedding_dim=hidden, num_heads=heads), "torch")
    return random_parameters(cell.to(dtype), hidden)


def training_step(output: Callable[[], Tensor], leaves: Sequence[Tensor], seed: int) -> Callable[[], list[Tensor]]:
    """output(), then the backward of random upstream gradients (seeded, drawn once in the output's shape) through it
    to `leaves`; returns the output and every leaf's gradient."""
    upstream: list[Tensor] = []

    def step() -> list[Tensor]:
        y = output()
        if not upstream:
            drawn = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))
            upstream.append(drawn.to(y.device, y.dtype))
        return [y.detach(), *torch.autograd.grad(y, leaves, upstream[0])]

    return step


def module_step(module: nn.Module, x: Tensor, seed: int) -> Callable[[], list[Tensor]]:
    """training_step of module(x)[0] (a layer's output sequence, a cell's output) to x and every parameter."""
    return training_step(lambda: module(x)[0], [x, *module.parameters()], seed)


def named(module: nn.Module, values: Sequence[Tensor]) -> dict[str, Tensor]:
    """A step's results by name, for fusedrnn.bench.check.compare: the output, then x's and each parameter's grad."""
    return dict(zip(["output", "grad input", *(f"grad {name}" for name, _ in module.named_parameters())], values))


def check_record(batch: int, row: str, against: str, result: Check, note: str | None = None) -> dict:
    return {"batch": batch, "row": row, "against": against, "max_abs_error": result.max_abs_err,
            "passed": result.passed, "summary": result.summary(), **result.tolerance, "note": note,
            "judged_by_truth": result.judged_by_truth}  # fmt: skip


def failing_step(error: Exception) -> Callable[[], object]:
    """A step that raises `error`: measure_interleaved reports it in the row (a row that failed before timing)."""

    def step() -> object:
        raise error

    return step


def first_call(step: Callable[[], list[Tensor]]) -> tuple[list[Tensor] | None, Exception | None]:
    """(the step's results, None), or (None, the error it raised): a row whose check run fails (a backend that can't
    serve this configuration, a peer that refuses it) is reported as a failed row, not a crashed run."""
    try:
        return step(), None
    except Exception as error:  # noqa: BLE001 - reported in the row
        return None, error


def gate_input(shape: HeadsShape, batch: int, dtype: torch.dtype, device: torch.device, seed: int) -> Tensor:
    """The projected gate pre-activations [N, T, 4H] both cells take, drawn on the CPU (the same on every device)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, shape.seq_len, 4 * shape.hidden, generator=g).to(device, dtype).requires_grad_()


def xlstm_rows(shape: HeadsShape, batch: int, dtype: torch.dtype, device: torch.device, backend: str,
               compile: bool) -> tuple[list[Row], list[dict], list[dict]]:  # fmt: skip
    """xlstm's cell, optionally under torch.compile, and its fusedrnn replacement, on the same weights and input; the
    checks of the others against xlstm's output and gradients at the dtype's tolerance; the compile time."""
    cell = xlstm_cell(shape.hidden, shape.heads, dtype).to(device)
    x = gate_input(shape, batch, dtype, device, seed=0)
    original = module_step(cell, x, seed=2)
    expected = named(cell, original())
    rows, checks, compile_times = [Row(XLSTM_ROW, original)], [], []
    if compile:
        # Its first call compiles (forward and backward) and runs one step: timed apart, and checked, here; the
        # timed rotation's warm-up then finds it compiled.
        compiled: list[Callable[[], list[Tensor]]] = []

        def compile_and_run() -> list[Tensor]:
            compiled.append(module_step(torch.compile(cell), x, seed=2))
            return compiled[0]()

        start = time.perf_counter()
        first, error = first_call(compile_and_run)  # e.g. no C++ compiler
        if error is not None:
            rows.append(Row(COMPILE_XLSTM_ROW, failing_step(error)))
        else:
            timing.synchronize(device)
            seconds = time.perf_counter() - start
            compile_times.append({"batch": batch, "row": COMPILE_XLSTM_ROW, "first_call_s": seconds})
            result = compare(named(cell, first), expected, dtype)
            checks.append(check_record(batch, COMPILE_XLSTM_ROW, XLSTM_ROW, result))
            rows.append(Row(COMPILE_XLSTM_ROW, compiled[0]))
    replaced = replace_slstm(copy.deepcopy(cell), backend=backend)  # in place: a copy, so xlstm's row stays xlstm's
    fused = module_step(replaced, x, seed=2)
    values, error = first_call(fused)
    if error is not None:
        return [*rows, Row(fused_name(backend), failing_step(error))], checks, compile_times
    result = compare(named(replaced, values), expected, dtype)
    checks.append(check_record(batch, fused_name(backend), XLSTM_ROW, result))
    return [*rows, Row(fused_name(backend), fused)], checks, compile_times


def module_step_tirex(cell: nn.Module, x: Tensor, seed: int) -> Callable[[], list[Tensor]]:
    """module_step for TiRex's cell, whose forward takes the state positionally (None: zeros); output [N, K, T, d]."""
    return training_step(lambda: cell(x, None)[0], [x, *cell.parameters()], seed)


def tirex_truth(cell: nn.Module, x: Tensor, seed: int) -> dict[str, Tensor]:
    """TiRex's own loop and pointwise step (sLSTMCellTorch.slstm_forward) in float64 on the cell's weights and input:
    what its torch path computes, without its bfloat16 rounding. The layout steps are TiRex's own (_get_input,
    _get_state, _permute_output, the bias permutation of _impl_torch)."""
    from tirex.models.slstm.cell import sLSTMCellTorch  # noqa: PLC0415 - the optional peer

    config = cell.config
    x64, recurrent, bias = (t.detach().double().requires_grad_() for t in (x, cell._recurrent_kernel_, cell._bias_))

    def output() -> Tensor:
        gates = cell._get_input(x64)  # [T, N, G, K, d]
        gates = gates.view(gates.shape[0], gates.shape[1], -1)
        state = cell._get_state(gates, None)
        b = bias.reshape(config.num_heads, config.num_gates, config.head_dim).permute(1, 0, 2).reshape(-1)
        y, _ = sLSTMCellTorch.slstm_forward(gates, state, recurrent, b)
        return cell._permute_output(y)

    values = training_step(output, [x64, recurrent, bias], seed)()
    return dict(zip(["output", "grad input", "grad _recurrent_kernel_", "grad _bias_"], values))


def tirex_rows(shape: HeadsShape, batch: int, dtype: torch.dtype, device: torch.device,
               backend: str) -> tuple[list[Row], list[dict]]:  # fmt: skip
    """TiRex's cell on its torch path and its fusedrnn replacement on the same weights and input, and the check of the
    replacement against it (TIREX_DTYPE's tolerance; TiRex's own loop in float64 as the truth outside it)."""
    cell = tirex_cell(shape.hidden, shape.heads, dtype).to(device)
    x = gate_input(shape, batch, dtype, device, seed=4)
    upstream_seed = 5  # the same upstream gradients for TiRex's cell, its replacement and the float64 truth
    original = module_step_tirex(cell, x, upstream_seed)
    replaced = replace_slstm(copy.deepcopy(cell), backend=backend)  # a copy, so TiRex's row stays TiRex's
    fused = module_step_tirex(replaced, x, upstream_seed)
    values, error = first_call(fused)
    if error is not None:
        return [Row(TIREX_ROW, original), Row(tirex_fused_name(backend), failing_step(error))], []
    truth = tirex_truth(cell, x, upstream_seed)
    result = compare(named(replaced, values), named(cell, original()), TIREX_DTYPE, truth=truth)
    note = (f"at bfloat16's tolerance (TiRex's torch path rounds R and the states to bfloat16 every step); a tensor "
            f"outside it passes within {TRUTH_ERROR_FACTOR:g}x tirex:torch's error against TiRex's own loop in float64")
    check = check_record(batch, tirex_fused_name(backend), TIREX_ROW, result, note)
    return [Row(TIREX_ROW, original), Row(tirex_fused_name(backend), fused)], [check]


def layer_rows(shape: HeadsShape, batch: int, dtype: torch.dtype, device: torch.device,
               backend: str) -> tuple[list[Row], list[dict], list[str]]:  # fmt: skip
    """fusedrnn's sLSTM and multi-head LSTM layers (on the backend and the reference), FlashRNN's multi-head LSTM on the
    latter's weights (checked against it) where it can run, and torch.nn.LSTM; the reasons for skipped rows."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape.seq_len, batch, shape.hidden, generator=g).to(device, dtype).requires_grad_()
    factory = {"dtype": dtype, "device": device}
    rows, checks, skipped = [], [], []
    for name in dict.fromkeys((backend, REFERENCE)):  # the reference's loop: what `auto` ranks the others against
        slstm = sLSTM(shape.hidden, shape.hidden, num_heads=shape.heads, backend=name, **factory)
        rows.append(Row(f"sLSTM:{name}", module_step(slstm, x, seed=3)))
    heads_layers = {}
    for name in dict.fromkeys((backend, REFERENCE)):
        heads_layers[name] = LSTM(shape.hidden, shape.hidden, num_heads=shape.heads, backend=name, **factory)
        rows.append(Row(f"{HEADS_LSTM_ROW}:{name}", module_step(heads_layers[name], x, seed=3)))
    if importlib.util.find_spec("flashrnn") is None:
        skipped.append(f"flashrnn is not installed: {FLASHRNN_ROW} is skipped")
    elif device.type != "cuda":
        skipped.append(f"FlashRNN runs on CUDA only: {FLASHRNN_ROW} is skipped on {device.type}")
    else:
        layer = heads_layers[backend]
        dtype_name = str(dtype).removeprefix("torch.")
        peer = training_step(lambda: flashrnn_lstm_heads(layer, x, dtype_name), [x, *layer.parameters()], seed=3)
        against = f"{HEADS_LSTM_ROW}:{backend}"
        expected, our_error = first_call(module_step(layer, x, seed=3))
        values, error = first_call(peer)  # e.g. a configuration FlashRNN does not support
        if our_error is not None:  # its own row fails in the timing with this error; this one can't be checked
            error = RuntimeError(f"not checked: {against} failed ({type(our_error).__name__}: {our_error})")
        if error is not None:
            rows.append(Row(FLASHRNN_ROW, failing_step(error)))
        else:
            result = compare(named(layer, values), named(layer, expected), dtype)
            checks.append(check_record(batch, FLASHRNN_ROW, against, result))
            rows.append(Row(FLASHRNN_ROW, peer))
    lstm = nn.LSTM(shape.hidden, shape.hidden, **factory)
    return [*rows, Row(LSTM_ROW, module_step(lstm, x, seed=3))], checks, skipped


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run(backend: str = "auto", *, dtype: torch.dtype = torch.float32, shape: HeadsShape = TIREX_SHAPE,
        repeat: int = REPEAT, device: torch.device | None = None, compile: bool = False) -> dict:
    """Every row at every batch on `device` (default: CUDA when present): {"env", "shape", "rows": [{batch, row,
    median_ms, min_ms, max_ms} or {batch, row, error}], "checks", "compile_times", "skipped": [reasons]}."""
    device = default_device() if device is None else device
    env = environment.describe(device)  # first: its load average is the one at the start
    torch.manual_seed(0)  # the layers' default initialisation: every run times and checks the same weights
    records, checks, compile_times, skipped = [], [], [], []
    for batch in shape.batches:
        rows, layer_checks, reasons = layer_rows(shape, batch, dtype, device, backend)
        cell_rows = []
        if importlib.util.find_spec("xlstm") is not None:
            xlstm, xlstm_checks, times = xlstm_rows(shape, batch, dtype, device, backend, compile)
            cell_rows, checks, compile_times = xlstm, [*checks, *xlstm_checks], [*compile_times, *times]
        else:
            reasons.append("xlstm is not installed (pip install 'fusedrnn[xlstm]'): its rows are skipped")
        if importlib.util.find_spec("tirex") is not None:
            tirex, tirex_checks = tirex_rows(shape, batch, dtype, device, backend)
            cell_rows, checks = [*cell_rows, *tirex], [*checks, *tirex_checks]
        else:
            reasons.append("tirex is not installed (pip install tirex-ts): its rows are skipped")
        rows, checks = [*cell_rows, *rows], [*checks, *layer_checks]
        skipped = list(dict.fromkeys([*skipped, *reasons]))  # the same reasons at every batch: listed once
        timings = timing.measure_interleaved({row.name: row.step for row in rows}, device, WARMUP, repeat)
        for name, result in timings.items():
            record = {"batch": batch, "row": name}
            if isinstance(result, Exception):
                record["error"] = f"{type(result).__name__}: {result}"
            else:
                record.update(median_ms=result.median, min_ms=result.min, max_ms=result.max)
            records.append(record)
    settings = {**dataclasses.asdict(shape), "dtype": str(dtype).removeprefix("torch."), "warmup": WARMUP,
                "repeat": repeat, "backend": backend, "device": device.type, "compile": compile}  # fmt: skip
    return {"preset": PRESET, "shape": settings, "env": env, "rows": records, "checks": checks,
            "compile_times": compile_times, "skipped": skipped}  # fmt: skip


#: The columns of speed ratios: each row's median against these rows' medians at the same batch.
RATIO_BASES = (XLSTM_ROW, TIREX_ROW, LSTM_ROW)


def markdown(doc: dict) -> str:
    """The table: per batch, each row's median ms and its speed against xlstm's loop, TiRex's loop and the LSTM; then
    the checks, the compile times and the skipped rows."""
    env, shape = doc["env"], doc["shape"]
    where = env["device_name"] if env["device"] == "cuda" else f"{env['cpu']}, {env['torch_threads']} thread(s)"
    header = " | ".join(f"vs {name}" for name in RATIO_BASES)
    lines = [f"sLSTM H={shape['hidden']} heads={shape['heads']} T={shape['seq_len']} {shape['dtype']}, forward + "
             f"backward, {where}, backend {shape['backend']}, load at start "
             f"{', '.join(f'{v:.2f}' for v in env['load_average_at_start'] or [])}; medians of {shape['repeat']}",
             "", f"| N | row | median ms | {header} |", "|---|---|---|" + "---|" * len(RATIO_BASES)]  # fmt: skip
    for batch in dict.fromkeys(r["batch"] for r in doc["rows"]):
        rows = {r["row"]: r for r in doc["rows"] if r["batch"] == batch}
        base = {name: rows[name].get("median_ms") for name in RATIO_BASES if name in rows}
        for name, record in rows.items():
            if "median_ms" not in record:
                lines.append(f"| {batch} | {name} | {record['error']} |" + " |" * len(RATIO_BASES))
                continue
            ms = record["median_ms"]
            ratios = [f"{base[b] / ms:.2f}x" if base.get(b) else "" for b in RATIO_BASES]
            lines.append(f"| {batch} | {name} | {ms:.1f} | {' | '.join(ratios)} |")
    lines.append("")
    for check in doc["checks"]:
        line = (f"N={check['batch']}: {check['row']} vs {check['against']}, output and every gradient: "
                f"{check['summary']}")  # fmt: skip
        lines.append(line + (f"; {check['note']}" if check.get("note") else ""))
        for tensor, (row_error, baseline_error) in check.get("judged_by_truth", {}).items():
            lines.append(f"  {tensor}: max abs error against float64 {row_error:.1e}, {check['against']}'s "
                         f"{baseline_error:.1e}")  # fmt: skip
    for entry in doc.get("compile_times", []):
        lines.append(f"N={entry['batch']}: {entry['row']}'s first call (compiling forward and backward, then one "
                     f"step): {entry['first_call_s']:.1f} s, not in its median")  # fmt: skip
    if doc["skipped"]:
        lines += ["", *doc["skipped"]]
    return "\n".join(lines) + "\n"


def main(dtype: torch.dtype, json_path: Path | None, markdown_path: Path | None, console, *,
         device: torch.device | None = None, backend: str = "auto", compile: bool = False) -> int:  # fmt: skip
    doc = run(backend, dtype=dtype, device=device, compile=compile)
    table = markdown(doc)
    console.print(table, markup=False, highlight=False)
    for path, text in ((json_path, json.dumps(doc, indent=2)), (markdown_path, table)):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            console.print(f"wrote {path}")
    # As fusedrnn-bench's own table: a wrong or crashed row fails the run.
    return 1 if any("error" in r for r in doc["rows"]) or not all(c["passed"] for c in doc["checks"]) else 0
