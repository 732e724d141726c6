"""Shared plumbing of the examples: argument parsing, seeding, the training loop, batching, plots, reporting.

Nothing here knows about any task's data; each example script builds its own data and model and calls these.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

import fusedrnn
from fusedrnn import registry
from fusedrnn.registry import RNNCall


def parser(description: str) -> argparse.ArgumentParser:
    """The flags every example shares; scripts add their own to the returned parser."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backend", default="auto", help=f"fusedrnn backend ({', '.join(fusedrnn.available_backends())})")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test taking seconds (CI)")
    p.add_argument("--plots", metavar="DIR", help="save PNG plots into DIR")
    p.add_argument("--seed", type=int, default=0)
    # These models are small (hidden <= 128): one op's work is too little to split across threads, and on a busy
    # machine torch's spinning worker threads made training ~10x slower in our measurements.
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (0: torch's default)")
    return p


def setup(args: argparse.Namespace) -> torch.device:
    """Seed every RNG and return the device; call once at the start of main()."""
    random.seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.plots:
        os.makedirs(args.plots, exist_ok=True)
    return torch.device(args.device)


def backend_name(rnn: nn.Module, batch_size: int, seq_len: int, device: torch.device) -> str:
    """The backend the registry picks for a training call of `rnn` (a fusedrnn layer or cell) of this shape."""
    call = RNNCall(
        mode=rnn.mode,
        device_type=device.type,
        dtype=rnn.weight_ih_l0.dtype if hasattr(rnn, "weight_ih_l0") else rnn.weight_ih.dtype,
        input_size=rnn.input_size,
        hidden_size=rnn.hidden_size,
        num_layers=getattr(rnn, "num_layers", 1),
        bidirectional=getattr(rnn, "bidirectional", False),
        batch_size=batch_size,
        seq_len=seq_len,
        needs_grad=True,
        # The variants (fusedrnn.LayerNormLSTM, zoneout=, weight_dropout=) are served by fewer backends.
        layer_norm=getattr(rnn, "layer_norm", False),
        zoneout=getattr(rnn, "zoneout", 0.0) != 0.0,
        weight_dropout=getattr(rnn, "weight_dropout", 0.0) != 0.0,
        # Multi-head layers and sLSTM (issue 21).
        num_heads=getattr(rnn, "num_heads", 1),
        formulation=getattr(rnn, "formulation", None),
    )
    return registry.select(rnn.backend, call).name


def minibatches(n: int, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Tensor]:
    """Index tensors covering range(n) once, in a random order: one epoch of minibatches."""
    order = torch.randperm(n, generator=generator)
    yield from order.split(batch_size)


def train(
    model: nn.Module,
    loss_of_batch: Callable[[object], Tensor],
    batches: Iterator,
    lr: float,
    clip: float | None = None,
    log_every: int = 0,
    optimizer: str = "adam",
) -> tuple[list[float], list[float]]:
    """Adam (or SGD with momentum) over `batches` (anything `loss_of_batch` accepts) -> per-step losses, grad norms.

    The gradient norm is measured before clipping, so a run with `clip` still shows how large the raw gradients were.
    """
    params = model.parameters()
    optimizer = torch.optim.Adam(params, lr=lr) if optimizer == "adam" else torch.optim.SGD(params, lr, momentum=0.9)
    losses, grad_norms = [], []
    model.train()
    start = time.time()
    for step, batch in enumerate(batches, 1):
        loss = loss_of_batch(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # With max_norm=inf this only measures; otherwise it rescales the gradient to norm <= clip.
        norm = nn.utils.clip_grad_norm_(model.parameters(), clip if clip else math.inf)
        optimizer.step()
        losses.append(loss.item())
        grad_norms.append(norm.item())
        if log_every and step % log_every == 0:
            recent = losses[-log_every:]
            print(f"  step {step:5d}  loss {sum(recent) / len(recent):.4f}  ({time.time() - start:.0f}s)", flush=True)
    model.eval()
    return losses, grad_norms


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Running mean over the last `window` values (learning curves are noisy per step)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (6.0, 4.0)):
    """A matplotlib figure on the non-interactive backend (examples run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    return fig, axes


def save(fig, plots_dir: str | None, name: str) -> None:
    """Write `fig` as DIR/name.png when --plots was given, then release it."""
    import matplotlib.pyplot as plt

    if plots_dir:
        path = os.path.join(plots_dir, f"{name}.png")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        print(f"saved {path}")
    plt.close(fig)


def report(task: str, metric: str, value: float, baseline: float, backend: str, seconds: float) -> None:
    """One greppable result line per task (tests and the README read this)."""
    print(f"RESULT {task}: {metric} = {value:.4g} (baseline {baseline:.4g}) backend={backend} time={seconds:.0f}s")


class Vocab:
    """Characters <-> indices, with padding (0), start (1) and end (2) symbols for sequence outputs."""

    PAD, START, END = 0, 1, 2

    def __init__(self, texts: Sequence[str]) -> None:
        self.chars = ["<pad>", "<s>", "</s>"] + sorted(set("".join(texts)))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, texts: Sequence[str], length: int, start: bool = False, end: bool = False) -> Tensor:
        """texts -> [N, length] long, padded with PAD, optionally framed by START / END."""
        out = torch.full((len(texts), length), self.PAD, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.START] * start + [self.index[c] for c in text] + [self.END] * end
            out[row, : len(ids)] = torch.tensor(ids[:length])
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """Indices -> text, stopping at END and skipping PAD/START."""
        chars = []
        for i in ids:
            if i == self.END:
                break
            if i > self.END:
                chars.append(self.chars[i])
        return "".join(chars)
