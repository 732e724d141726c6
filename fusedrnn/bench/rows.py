"""The rows of the table: which implementations are benchmarked, and how each is built on the baseline's weights.

Every row turns the baseline module (which owns the shared, seeded weights) into a `Runnable`: a callable
`(x, h0, c0) -> [y, h_n, c_n?]` plus the parameters whose gradients are compared with the baseline's by name.
The baseline is torch.nn's layer for torch.nn's cells, and for issue 15's variants (which torch.nn lacks) the same
model written as a plain PyTorch step loop (fusedrnn.bench.variant_models). fusedrnn backends are picked up
generically from the registry, so a backend registered later appears by itself.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor, nn

from .. import cells, modules, registry
from . import peers, variant_models
from .configs import BenchConfig
from .runnable import RowSpec, Runnable, module_runnable

BASELINE = "torch.nn"
COMPILE_ROW = "compile:reference"
FUSED_PREFIX = "fusedrnn:"
#: The variants' rows: their baseline (a plain PyTorch loop), torch.compile of it, and fusedrnn's layer under `auto`.
LOOP_BASELINE = "loop"
COMPILE_STEP_ROW = "compile:step"
COMPILE_LOOP_ROW = "compile:loop"
WEIGHT_DROP_ROW = "torch.nn+weight_drop"
AUTO_ROW = FUSED_PREFIX + registry.AUTO
#: How long torch.compile may take to unroll and compile the loop of a variant before its row is given up: it took
#: 163 s for the LayerNorm-LSTM's training step at T=100 H=256 on the 2-core CPU (loaded), the step alone 7 s.
COMPILE_LOOP_LIMIT_S = 300.0


class CellLoop(nn.Module):
    """One layer run one step at a time through `cell`, as pytorch/examples does; called like the layer it stands for:
    (x [T, N, I], h0 [1, N, H] or (h0, c0)) -> (y [T, N, H], h_n [1, N, H] or (h_n, c_n))."""

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: Tensor, hx):
        lstm = isinstance(hx, tuple)
        state = (hx[0][0], hx[1][0]) if lstm else hx[0]
        outputs = []
        for x_t in x:
            state = self.cell(x_t, state)
            outputs.append(state[0] if lstm else state)
        final = (state[0].unsqueeze(0), state[1].unsqueeze(0)) if lstm else state.unsqueeze(0)
        return torch.stack(outputs), final


class DecoderLoop(nn.Module):
    """An autoregressive decoder's recurrence (Tacotron 2: two LSTMCells; issue 24): per step, `cell1` reads x_t and
    `cell2` reads cell1's h; both start from the given state. Called like a layer: (x [T, N, I], h0 [1, N, H] or
    (h0, c0)) -> (y [T, N, H]: cell2's h per step, cell2's final state [1, N, H] (or the pair))."""

    def __init__(self, cell1: nn.Module, cell2: nn.Module) -> None:
        super().__init__()
        self.cell1, self.cell2 = cell1, cell2

    def forward(self, x: Tensor, hx):
        lstm = isinstance(hx, tuple)
        state1 = state2 = (hx[0][0], hx[1][0]) if lstm else hx[0]
        outputs = []
        for x_t in x:
            state1 = self.cell1(x_t, state1)
            state2 = self.cell2(state1[0] if lstm else state1, state2)
            outputs.append(state2[0] if lstm else state2)
        final = (state2[0].unsqueeze(0), state2[1].unsqueeze(0)) if lstm else state2.unsqueeze(0)
        return torch.stack(outputs), final


def _cell_class(config: BenchConfig, namespace):
    """(namespace's cell class for the config, its extra keyword arguments)."""
    if config.torch_mode == "LSTM":
        return namespace.LSTMCell, {}
    if config.torch_mode == "GRU":
        return namespace.GRUCell, {}
    return namespace.RNNCell, {"nonlinearity": config.cell.removeprefix("rnn_")}


def _decoder(config: BenchConfig, namespace, **kwargs) -> nn.Module:
    """DecoderLoop of two of `namespace`'s (torch.nn's or fusedrnn.cells') cells for the config."""
    s = config.shape
    cls, extra = _cell_class(config, namespace)
    return DecoderLoop(cls(s.input_size, s.hidden_size, **extra, **kwargs),
                       cls(s.hidden_size, s.hidden_size, **extra, **kwargs))  # fmt: skip


def _cell_loop(config: BenchConfig, namespace, **kwargs) -> nn.Module:
    """CellLoop around `namespace`'s (torch.nn's or fusedrnn.cells') cell for the config."""
    s = config.shape
    if config.torch_mode == "LSTM":
        return CellLoop(namespace.LSTMCell(s.input_size, s.hidden_size, **kwargs))
    if config.torch_mode == "GRU":
        return CellLoop(namespace.GRUCell(s.input_size, s.hidden_size, **kwargs))
    return CellLoop(namespace.RNNCell(s.input_size, s.hidden_size, nonlinearity=config.cell.removeprefix("rnn_"),
                                      **kwargs))  # fmt: skip


def baseline_module(config: BenchConfig, device: torch.device, seed: int) -> nn.Module:
    """The module whose seeded weights every row copies: torch.nn's (cuDNN on GPU, ATen on CPU), or for a variant
    its plain PyTorch loop."""
    if config.variant:
        return variant_models.loop_module(config, device, seed)
    s = config.shape
    torch.manual_seed(seed)
    if s.decoder:
        return _decoder(config, nn, device=device, dtype=config.torch_dtype)
    if s.step_by_step:
        return _cell_loop(config, nn, device=device, dtype=config.torch_dtype)
    kwargs = {"num_layers": s.layers, "bidirectional": s.bidirectional, "device": device, "dtype": config.torch_dtype}
    if config.torch_mode == "LSTM":
        return nn.LSTM(s.input_size, s.hidden_size, proj_size=s.proj_size, **kwargs)
    if config.torch_mode == "GRU":
        return nn.GRU(s.input_size, s.hidden_size, **kwargs)
    return nn.RNN(s.input_size, s.hidden_size, nonlinearity=config.cell.removeprefix("rnn_"), **kwargs)


def fused_twin(config: BenchConfig, baseline: nn.Module, backend: str) -> nn.Module:
    """A fusedrnn module with the baseline's configuration and weights, running on `backend`."""
    s = config.shape
    weight = next(baseline.parameters())
    kwargs = {"num_layers": s.layers, "bidirectional": s.bidirectional, "backend": backend}
    kwargs.update(device=weight.device, dtype=weight.dtype)
    if s.decoder:
        module = _decoder(config, cells, backend=backend, device=weight.device, dtype=weight.dtype)
    elif s.step_by_step:
        module = _cell_loop(config, cells, backend=backend, device=weight.device, dtype=weight.dtype)
    elif config.torch_mode == "LSTM":
        module = modules.LSTM(s.input_size, s.hidden_size, proj_size=s.proj_size, **kwargs)
    elif config.torch_mode == "GRU":
        module = modules.GRU(s.input_size, s.hidden_size, **kwargs)
    else:
        module = modules.RNN(s.input_size, s.hidden_size, nonlinearity=config.cell.removeprefix("rnn_"), **kwargs)
    module.load_state_dict(baseline.state_dict())
    return module.train(config.training)


def _fused_row(name: str, unavailable: str | None, variant: bool = False) -> RowSpec:
    backend = registry.get_backend(name) if unavailable is None else None
    summary = getattr(backend, "summary", "") or f"fusedrnn backend {name!r}"
    if variant:
        build = lambda config, baseline: variant_models.fused_variant(config, baseline, name)  # noqa: E731
        return RowSpec(FUSED_PREFIX + name, summary, build, unavailable)
    return RowSpec(
        FUSED_PREFIX + name,
        summary,
        lambda config, baseline: module_runnable(fused_twin(config, baseline, name)),
        unavailable,
    )


def _compiled_reference(config: BenchConfig, baseline: nn.Module) -> Runnable:
    # dynamic=False: the benchmark reuses one shape, and a static graph is what a user of a fixed shape would get.
    module = fused_twin(config, baseline, "reference")
    runnable = module_runnable(module)
    compiled = torch.compile(module, dynamic=False)
    return Runnable(module_runnable(compiled).forward, runnable.params)


def _peer_row(name: str, package: str, summary: str, build) -> RowSpec:
    missing = None if importlib.util.find_spec(package) is not None else f"{package} is not installed"
    return RowSpec(name, summary, build, missing)


def all_rows(include_compile: bool, variant: bool = False) -> list[RowSpec]:
    """Every row this machine knows of, available or not, in table order: the baseline first. `variant`: the rows
    of issue 15's variants instead of torch.nn's cells."""
    if variant:
        return _variant_rows(include_compile)
    rows = [
        RowSpec(BASELINE, "plain torch.nn module: cuDNN on GPU, ATen/oneDNN on CPU", lambda c, b: module_runnable(b))
    ]
    # What a user gets without naming a backend: the row a drop-in replacement is judged by.
    rows.append(RowSpec(AUTO_ROW, "fusedrnn's module, backend picked by auto",
                        lambda config, baseline: module_runnable(fused_twin(config, baseline, registry.AUTO))))
    rows += [_fused_row(name, reason) for name, reason in registry.availability().items()]
    compile_note = (
        None
        if include_compile
        else ("not requested (--compile): Dynamo unrolls all T steps, compiling took ~90 s at T=50 on a 2-core CPU")
    )
    rows.append(
        RowSpec(COMPILE_ROW, "torch.compile of the reference loop", _compiled_reference, compile_note, compiles=True)
    )
    rows.append(_peer_row("flashrnn", "flashrnn", "FlashRNN (NX-AI), fused CUDA kernels", peers.flashrnn_runnable))
    rows.append(_peer_row("haste", "haste_pytorch", "haste (LMNT), CUDA kernels", peers.haste_runnable))
    return rows


def _variant_rows(include_compile: bool) -> list[RowSpec]:
    loop = lambda config, baseline: variant_models.seeded(module_runnable(baseline))  # noqa: E731
    auto = lambda config, baseline: variant_models.fused_variant(config, baseline, registry.AUTO)  # noqa: E731
    rows = [
        RowSpec(LOOP_BASELINE, "the same model as a plain PyTorch step loop (what users write today)", loop),
        RowSpec(COMPILE_STEP_ROW, "that loop with torch.compile of its step", variant_models.compiled_step,
                compiles=True),
        RowSpec(WEIGHT_DROP_ROW, "torch.nn's LSTM on a dropped copy of W_hh (AWD-LSTM's WeightDrop)",
                variant_models.weight_drop_lstm),
        RowSpec(AUTO_ROW, "fusedrnn's layer, backend picked by auto", auto),
    ]  # fmt: skip
    rows += [_fused_row(name, reason, variant=True) for name, reason in registry.availability().items()]
    compile_note = None if include_compile else (
        f"not requested (--compile): Dynamo unrolls all T steps, compiling took 163 s for LayerNorm-LSTM training at "
        f"T=100 H=256 on a 2-core CPU (limit {COMPILE_LOOP_LIMIT_S:.0f} s when requested)"
    )  # fmt: skip
    rows.append(RowSpec(COMPILE_LOOP_ROW, "torch.compile of the whole loop", variant_models.compiled_loop,
                        compile_note, compiles=True, first_call_limit_s=COMPILE_LOOP_LIMIT_S))  # fmt: skip
    return rows
