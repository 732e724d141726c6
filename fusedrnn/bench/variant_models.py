"""The variants preset's models: issue 15's variants as a plain PyTorch loop (the baseline) and as fusedrnn layers.

Each variant is one fusedrnn layer (LayerNormLSTM, LayerNormGRU, IndRNN, LSTM with zoneout or weight_dropout) and
the same model as `variant_peers.LoopRNN`, with the same parameter names: a row loads the baseline loop's
state_dict, so every row computes the same function and is checked against the loop, output by output and gradient
by gradient. Rows that draw masks (zoneout, DropConnect in training) reseed torch's RNG before every call, so the
loop and each fused layer draw the same masks (they draw them with the same calls in the same order).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

import fusedrnn

from .configs import VARIANTS, BenchConfig
from .runnable import Runnable, Unsupported, module_runnable
from .variant_peers import LoopRNN, WeightDropLSTM

#: Zoneout probability of the benchmark: Krueger et al. (2016) found 0.05-0.15 on h best for language models.
ZONEOUT = 0.1
#: DropConnect probability on W_hh: AWD-LSTM's `wdrop` (Merity et al. 2017).
WEIGHT_DROPOUT = 0.5
#: Seed of torch's RNG at the start of every call of a variant row (the masks); any fixed value works.
MASK_SEED = 1234


@dataclasses.dataclass(frozen=True)
class Variant:
    """How one variant is built: LoopRNN's cell and options, and the fusedrnn class that computes the same."""

    cell: str  # LoopRNN's: "lstm" | "gru" | "indrnn"
    fused_class: str  # an attribute of the fusedrnn package
    layer_norm: bool = False
    zoneout: float = 0.0
    weight_dropout: float = 0.0

    def options(self) -> dict[str, float]:
        """The regularisers, as keyword arguments of both the loop and the fusedrnn layer (only those in use)."""
        chosen = {"zoneout": self.zoneout, "weight_dropout": self.weight_dropout}
        return {name: p for name, p in chosen.items() if p}


MODELS = {
    "ln_lstm": Variant("lstm", "LayerNormLSTM", layer_norm=True),
    "ln_gru": Variant("gru", "LayerNormGRU", layer_norm=True),
    "indrnn": Variant("indrnn", "IndRNN"),
    "lstm_zoneout": Variant("lstm", "LSTM", zoneout=ZONEOUT),
    "lstm_weight_dropout": Variant("lstm", "LSTM", weight_dropout=WEIGHT_DROPOUT),
}
assert MODELS.keys() == VARIANTS.keys(), "configs.VARIANTS names the variants the CLI accepts; build each one here"


def loop_module(config: BenchConfig, device: torch.device, seed: int) -> LoopRNN:
    """The baseline: the variant as a plain PyTorch step loop, with seeded weights that every other row copies."""
    variant, s = MODELS[config.cell], config.shape
    torch.manual_seed(seed)
    return LoopRNN(variant.cell, s.input_size, s.hidden_size, layer_norm=variant.layer_norm, **variant.options(),
                   device=device, dtype=config.torch_dtype)  # fmt: skip


def seeded(runnable: Runnable) -> Runnable:
    """The same runnable, reseeding torch's RNG before each call: every row draws the same masks."""

    def forward(x, h0, c0):
        torch.manual_seed(MASK_SEED)
        return runnable.forward(x, h0, c0)

    return Runnable(forward, runnable.params)


def _same_weights(module: nn.Module, baseline: nn.Module, config: BenchConfig) -> nn.Module:
    module.load_state_dict(baseline.state_dict())
    return module.train(config.training)


def fused_variant(config: BenchConfig, baseline: nn.Module, backend: str) -> Runnable:
    """The fusedrnn layer of the variant on `backend` ("auto" or a backend name), with the baseline's weights."""
    variant, s = MODELS[config.cell], config.shape
    weight = next(baseline.parameters())
    cls = getattr(fusedrnn, variant.fused_class)
    module = cls(s.input_size, s.hidden_size, **variant.options(), backend=backend, device=weight.device,
                 dtype=weight.dtype)  # fmt: skip
    return seeded(module_runnable(_same_weights(module, baseline, config)))


def _loop_twin(config: BenchConfig, baseline: nn.Module) -> LoopRNN:
    variant, s = MODELS[config.cell], config.shape
    weight = next(baseline.parameters())
    twin = LoopRNN(variant.cell, s.input_size, s.hidden_size, layer_norm=variant.layer_norm, **variant.options(),
                   device=weight.device, dtype=weight.dtype)  # fmt: skip
    return _same_weights(twin, baseline, config)


def compiled_step(config: BenchConfig, baseline: nn.Module) -> Runnable:
    """The loop with its step compiled (torch.compile(cell step)): one small graph, reused at every time step.

    The masks and the dropped W_hh are drawn outside the compiled step, so they are eager torch's draws."""
    twin = _loop_twin(config, baseline)
    twin.step = torch.compile(twin.step, dynamic=False)
    return seeded(module_runnable(twin))


def compiled_loop(config: BenchConfig, baseline: nn.Module) -> Runnable:
    """torch.compile of the whole loop module; Dynamo unrolls all T steps into one graph.

    fallback_random: the compiled graph draws masks with eager torch's generator (Inductor's own generator would
    draw other masks than the baseline, and the row could not be checked)."""
    twin = _loop_twin(config, baseline)
    compiled = torch.compile(twin, dynamic=False, options={"fallback_random": True})
    return seeded(Runnable(module_runnable(compiled).forward, dict(twin.named_parameters())))


def weight_drop_lstm(config: BenchConfig, baseline: nn.Module) -> Runnable:
    """torch.nn's fused LSTM on a DropConnect copy of W_hh (AWD-LSTM's WeightDrop): lstm_weight_dropout only."""
    variant, s = MODELS[config.cell], config.shape
    if variant != Variant("lstm", "LSTM", weight_dropout=variant.weight_dropout) or not variant.weight_dropout:
        raise Unsupported("torch.nn's LSTM with a dropped W_hh computes only the lstm_weight_dropout variant")
    weight = next(baseline.parameters())
    module = WeightDropLSTM(s.input_size, s.hidden_size, variant.weight_dropout, device=weight.device,
                            dtype=weight.dtype)  # fmt: skip
    return seeded(module_runnable(_same_weights(module, baseline, config)))
