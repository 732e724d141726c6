"""What a benchmark run measures: cells, shapes, dtypes and modes, from presets or from flags.

A `BenchConfig` is one measured point (one cell, one shape, one dtype, one mode); every row (backend) of the table is
run on every config. Presets give the shapes; flags given on the command line override the matching field of every
shape of the preset (so `--preset sweep --seq-len 20` sweeps with T=20).
"""

from __future__ import annotations

import dataclasses
import itertools

import torch

#: Command-line cell name -> torch.nn mode string (fusedrnn.registry.RNNCall.mode).
CELLS = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN_TANH", "rnn_relu": "RNN_RELU"}
#: The recurrent variants of issue 15 (LayerNorm cells, IndRNN, the regularisers) -> their cell's mode. torch.nn has
#: none of them: their baseline is the same model written as a plain PyTorch step loop (fusedrnn.bench.variant_models).
VARIANTS = {
    "ln_lstm": "LSTM",
    "ln_gru": "GRU",
    "indrnn": "INDRNN_TANH",
    "lstm_zoneout": "LSTM",
    "lstm_weight_dropout": "LSTM",
}
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: --dtype when neither it nor the preset (on this device) names one.
DEFAULT_DTYPE = "float32"
MODES = ("inference", "training")


@dataclasses.dataclass(frozen=True)
class Shape:
    """Sizes of one layer stack: x [seq_len, batch, input_size], hidden [layers*D, batch, proj_size or hidden]."""

    seq_len: int
    batch: int
    input_size: int
    hidden_size: int
    layers: int = 1
    bidirectional: bool = False
    proj_size: int = 0
    #: One step at a time through torch.nn's LSTMCell/GRUCell/RNNCell and fusedrnn's (a pytorch/examples-style loop:
    #: per-call overhead is what it measures) instead of one layer call for the whole sequence.
    step_by_step: bool = False
    #: An autoregressive decoder (Tacotron 2's): two cells of `hidden_size` units stepped `seq_len` times, the first
    #: fed x_t [N, input_size], the second the first's h; its outputs are the second's h. Per-call overhead of a cell
    #: is what it measures (fusedrnn.bench.rows.DecoderLoop).
    decoder: bool = False


@dataclasses.dataclass(frozen=True)
class Preset:
    shapes: tuple[Shape, ...]
    cells: tuple[str, ...]
    summary: str
    #: On a CUDA device, where given: the shapes and dtypes measured there instead (a GPU step is cheap enough for a
    #: grid); the shape flags and --dtype still override them.
    gpu_shapes: tuple[Shape, ...] = ()
    gpu_dtypes: tuple[str, ...] = ()

    def shapes_on(self, device_type: str) -> tuple[Shape, ...]:
        return self.gpu_shapes if device_type == "cuda" and self.gpu_shapes else self.shapes

    def dtypes_on(self, device_type: str) -> tuple[str, ...]:
        return self.gpu_dtypes if device_type == "cuda" and self.gpu_dtypes else (DEFAULT_DTYPE,)


def _grid(batches: tuple[int, ...], hiddens: tuple[int, ...], seq_len: int) -> tuple[Shape, ...]:
    return tuple(Shape(seq_len, n, h, h) for h, n in itertools.product(hiddens, batches))


FASTRNNS = Shape(100, 64, 512, 512)
FLASHRNN = Shape(1024, 16, 768, 768)
LATENCY = Shape(1000, 1, 256, 256)

#: The shapes of the published comparisons (REFERENCE.md §3) plus a quick default and a sweep.
PRESETS = {
    # Small enough that the default run (2 cells x 2 modes x every row) finishes in well under a minute on 2 CPU cores.
    "quick": Preset((Shape(50, 16, 128, 128),), ("lstm", "gru"), "T=50 N=16 I=H=128: the quick default"),
    "fastrnns": Preset((FASTRNNS,), ("lstm",), "T=100 N=64 I=H=512: PyTorch's own RNN benchmark"),
    "flashrnn": Preset((FLASHRNN,), ("lstm",), "T=1024 N=16 I=H=768: FlashRNN's comparison"),
    "latency": Preset((LATENCY,), ("lstm", "gru"), "T=1000 N=1 I=H=256: batch-1 latency"),
    # The kernel-tuning sweep's shapes (fusedrnn.bench.sweep, scripts/gpu_check.sh --sweep).
    "targets": Preset((FLASHRNN, FASTRNNS, LATENCY), ("lstm",), "flashrnn, fastrnns and latency shapes together"),
    "sweep": Preset(_grid((1, 4, 16, 64), (128, 256, 512), 100), ("lstm",), "T=100, N in 1..64 x H in 128..512"),
    # pytorch/examples' time_sequence_prediction (LSTMCell, N=97, H=51, float64 there: add --dtype float64).
    "cells": Preset((Shape(100, 97, 51, 51, step_by_step=True),), ("lstm", "gru"), "cells stepped T=100 N=97 I=H=51"),
    # Issue 24: a Tacotron-2-like decoder, 2 LSTMCells of 1024 units fed 768 features per step (prenet 256 + attention
    # context 512), 200 steps; batch 1 (synthesis) and 8. GRUCell too: the seq2seq attention decoder's cell.
    "decode": Preset(tuple(Shape(200, n, 768, 1024, decoder=True) for n in (1, 8)), ("lstm", "gru"),
                     "Tacotron-2-like decoder: 2 cells of H=1024 stepped T=200, I=768, N=1 and 8"),
    # Issue 15's target shape: the fused CPU layers should be >= 3x the plain step loop there. On a GPU (issue 22) the
    # hidden sizes people train, in bf16 and fp32; the target: LayerNorm-LSTM training >= 10x the loop at H=512 N=64.
    "variants": Preset((Shape(100, 16, 256, 256),), tuple(VARIANTS), "LayerNorm/IndRNN/zoneout/DropConnect vs a "
                       "plain PyTorch step loop, T=100 N=16 I=H=256 (CUDA: T=100, N in 16, 64 x I=H in 256, 512, 1024, "
                       "bfloat16 and float32)", gpu_shapes=_grid((16, 64), (256, 512, 1024), 100),
                       gpu_dtypes=("bfloat16", "float32")),  # fmt: skip
}
DEFAULT_PRESET = "quick"


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One measured point: a cell on a shape in a dtype, run for inference or for a training step."""

    cell: str  # a key of CELLS or of VARIANTS
    shape: Shape
    dtype: str  # a key of DTYPES
    mode: str  # "inference" | "training"

    @property
    def torch_mode(self) -> str:
        return CELLS[self.cell] if self.cell in CELLS else VARIANTS[self.cell]

    @property
    def variant(self) -> bool:
        """One of issue 15's variants (compared with a plain PyTorch loop), not one of torch.nn's cells."""
        return self.cell in VARIANTS

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def training(self) -> bool:
        return self.mode == "training"

    def label(self) -> str:
        """Short human-readable description, e.g. 'lstm T=50 N=16 I=128 H=128 float32 training'."""
        s = self.shape
        parts = [self.cell, f"T={s.seq_len}", f"N={s.batch}", f"I={s.input_size}", f"H={s.hidden_size}"]
        if s.layers > 1:
            parts.append(f"L={s.layers}")
        if s.bidirectional:
            parts.append("bidir")
        if s.proj_size:
            parts.append(f"P={s.proj_size}")
        if s.step_by_step:
            parts.append("cells")
        if s.decoder:
            parts.append("decoder")
        return " ".join([*parts, self.dtype, self.mode])

    def as_dict(self) -> dict:
        return {"cell": self.cell, **dataclasses.asdict(self.shape), "dtype": self.dtype, "mode": self.mode}


def build_configs(preset: str, cells: list[str] | None, modes: list[str], dtype: str | None,
                  overrides: dict[str, object], device_type: str = "cpu") -> list[BenchConfig]:  # fmt: skip
    """Every (cell, shape, dtype, mode) of the preset on `device_type`, with `overrides` (Shape field -> value, None =
    keep) applied; `dtype` None: the preset's dtypes on that device (Preset.dtypes_on)."""
    chosen = PRESETS[preset]
    changes = {field: value for field, value in overrides.items() if value is not None}
    shapes = list(dict.fromkeys(dataclasses.replace(shape, **changes) for shape in chosen.shapes_on(device_type)))
    dtypes = (dtype,) if dtype is not None else chosen.dtypes_on(device_type)
    return [BenchConfig(cell, shape, name, mode) for cell in (cells or chosen.cells) for shape in shapes
            for name in dtypes for mode in modes]  # fmt: skip


def validate_shape(shape: Shape, cell: str) -> str | None:
    """None if torch.nn accepts this shape for `cell`, else the reason (used to give a usage error up front)."""
    for field in ("seq_len", "batch", "input_size", "hidden_size", "layers"):
        if getattr(shape, field) < 1:
            return f"--{field.replace('_', '-')} must be >= 1, got {getattr(shape, field)}"
    if shape.proj_size < 0:
        return f"--proj-size must be >= 0, got {shape.proj_size}"
    if shape.proj_size and cell != "lstm":
        return f"--proj-size is only supported for lstm, not {cell}"
    if cell in VARIANTS and (shape.layers > 1 or shape.bidirectional or shape.step_by_step):
        return f"{cell}: the variants' plain-loop baselines run one unidirectional layer (no --layers, --bidirectional)"
    if shape.step_by_step and (shape.layers > 1 or shape.bidirectional or shape.proj_size):
        return "the cells preset steps one unidirectional layer without projection"
    if shape.decoder and (cell in VARIANTS or shape.layers > 1 or shape.bidirectional or shape.proj_size
                          or shape.step_by_step):  # fmt: skip
        return "the decode preset steps its own two cells of torch.nn's kinds (no --layers, --bidirectional, " \
               "--proj-size)"
    if shape.proj_size >= shape.hidden_size:
        return f"--proj-size ({shape.proj_size}) must be smaller than --hidden-size ({shape.hidden_size})"
    return None
