"""Character-level language model: does LayerNorm-LSTM or zoneout beat a plain LSTM on the same budget?

The text is Python's own documentation: the help topics every CPython ships in `pydoc_data.topics` (~465k
characters of English prose and code about Python; nothing is downloaded). The first 90 % trains, the last 10 %
validates. A model reads characters through an embedding, one recurrent layer and a linear head, and predicts each
next character; the metric is the validation loss in bits per character (bpc), the trivial baseline the entropy of
the training text's character frequencies (a model that ignores context).

Every model gets the same budget: the same steps, batch, window length, learning rate, hidden size and seeds, and
almost the same parameter count (layer norm adds 10 gains/biases per hidden unit, <1 % here). Compared:
  LSTM           fusedrnn.LSTM, the plain cell;
  LN-LSTM        fusedrnn.LayerNormLSTM: layer norm on the input and recurrent pre-activations and on the cell state
                 (Ba et al. 2016; haste's formulation);
  LSTM+zoneout   fusedrnn.LSTM(zoneout=...): in training each unit keeps its previous h and c with probability p
                 (Krueger et al. 2016), a regulariser.

    python examples/char_lm_variants.py                 # 3 models x 3 seeds, ~10 minutes on a 2-core CPU
"""

from __future__ import annotations

import math
import statistics
import sys
import time

import pydoc_data.topics
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import fusedrnn
from common import backend_name, figure, parser, report, save, setup, smooth, train

#: Name -> (layer class, keyword options); all three get the same hidden size and training budget.
MODELS = {
    "LSTM": (fusedrnn.LSTM, {}),
    "LN-LSTM": (fusedrnn.LayerNormLSTM, {}),
    "LSTM+zoneout": (fusedrnn.LSTM, {"zoneout": "args"}),  # the rate comes from --zoneout
}
VALIDATION_SHARE = 0.1
#: Characters outside printable ASCII (a few accented letters and symbols) are mapped to one "other" symbol.
OTHER = "\x00"
PRINTABLE = {chr(c) for c in range(32, 127)} | {"\n"}


def corpus() -> str:
    """Python's help topics, concatenated in a fixed (sorted) order."""
    topics = pydoc_data.topics.topics
    text = "\n\n".join(topics[name] for name in sorted(topics))
    return "".join(c if c in PRINTABLE else OTHER for c in text)


def encode(text: str) -> tuple[Tensor, list[str]]:
    alphabet = sorted(set(text))
    index = {c: i for i, c in enumerate(alphabet)}
    return torch.tensor([index[c] for c in text], dtype=torch.long), alphabet


def unigram_bpc(train: Tensor, valid: Tensor, vocab: int) -> float:
    """Bits per character of the training text's character frequencies (add-one smoothed) on the validation text."""
    counts = torch.bincount(train, minlength=vocab).double() + 1
    log2p = (counts / counts.sum()).log2()
    return -log2p[valid].mean().item()


class CharModel(nn.Module):
    """ids [N, L] -> next-character logits [N, L, vocab]: embedding, one fusedrnn layer, linear head."""

    def __init__(self, name: str, vocab: int, embedding: int, hidden: int, zoneout: float, backend: str) -> None:
        super().__init__()
        cls, options = MODELS[name]
        options = {key: zoneout if value == "args" else value for key, value in options.items()}
        self.embed = nn.Embedding(vocab, embedding)
        self.rnn = cls(embedding, hidden, batch_first=True, backend=backend, **options)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids: Tensor) -> Tensor:
        y, _ = self.rnn(self.embed(ids))
        return self.head(y)


def windows(data: Tensor, length: int) -> Tensor:
    """Non-overlapping windows of length + 1 characters (input and shifted target) -> [count, length + 1]."""
    count = (len(data) - 1) // length
    return torch.stack([data[i * length : i * length + length + 1] for i in range(count)])


def random_batches(data: Tensor, steps: int, batch: int, length: int, generator: torch.Generator, device):
    """`steps` batches of `batch` windows of length + 1 at random offsets of the training text."""
    for _ in range(steps):
        starts = torch.randint(0, len(data) - length - 1, (batch,), generator=generator)
        yield torch.stack([data[s : s + length + 1] for s in starts.tolist()]).to(device)


def bits_per_char(model: CharModel, batch: Tensor) -> Tensor:
    """Mean next-character cross-entropy of windows [N, L + 1], in bits."""
    logits = model(batch[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()) / math.log(2)


@torch.no_grad()
def evaluate(model: CharModel, valid_windows: Tensor, batch: int) -> float:
    """Validation bpc over all windows (eval mode: zoneout uses its expectation), each from a zero state."""
    model.eval()
    total = sum(bits_per_char(model, chunk).item() * len(chunk) for chunk in valid_windows.split(batch))
    return total / len(valid_windows)


def main(argv=None) -> dict[str, float]:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--seeds", type=int, default=3, help="training runs per model (seeds seed .. seed + n - 1)")
    p.add_argument("--steps", type=int, default=600, help="training steps per run")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=100, help="characters per training window (backprop through time)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--embedding", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clipping, as usual for character LMs")
    p.add_argument("--zoneout", type=float, default=0.1, help="LSTM+zoneout's rate for h and c")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.batch, args.length, args.hidden, args.embedding = 1, 3, 4, 12, 8, 4
    device = setup(args)

    data, alphabet = encode(corpus()[: 20_000 if args.quick else None])
    split = int(len(data) * (1 - VALIDATION_SHARE))
    train_data, valid_data = data[:split], data[split:]
    valid_windows = windows(valid_data, args.length).to(device)
    baseline = unigram_bpc(train_data, valid_data, len(alphabet))
    print(f"text: {len(data):,} characters ({len(alphabet)} symbols), Python {sys.version.split()[0]}'s pydoc topics; "
          f"{len(valid_windows)} validation windows; unigram baseline {baseline:.3f} bpc")  # fmt: skip

    results: dict[str, list[float]] = {name: [] for name in args.models}
    curves: dict[str, list[list[float]]] = {name: [] for name in args.models}
    for seed in range(args.seed, args.seed + args.seeds):
        for name in args.models:  # interleaved per seed: a load change on the machine hits every model alike
            start = time.time()
            torch.manual_seed(seed)  # the same initial embedding and head for every model of this seed
            model = CharModel(name, len(alphabet), args.embedding, args.hidden, args.zoneout, args.backend).to(device)
            generator = torch.Generator().manual_seed(seed)  # the same training batches for every model
            batches = random_batches(train_data, args.steps, args.batch, args.length, generator, device)
            losses, _ = train(model, lambda b, m=model: bits_per_char(m, b), batches, args.lr, args.clip)
            bpc = evaluate(model, valid_windows, args.batch)
            results[name].append(bpc)
            curves[name].append(losses)
            params = sum(p.numel() for p in model.parameters())
            backend = backend_name(model.rnn, args.batch, args.length, device)
            report(f"char LM {name} seed {seed}", "validation bpc", bpc, baseline, backend, time.time() - start)
            print(f"  {params:,} parameters; final training loss {statistics.fmean(losses[-50:]):.3f} bpc")

    print(f"\nvalidation bits per character after {args.steps} steps (unigram baseline {baseline:.3f}), "
          f"{args.seeds} seed(s):")  # fmt: skip
    summary = {}
    for name, values in results.items():
        spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
        print(f"  {name:13s} {statistics.fmean(values):.3f}{spread}   ({', '.join(f'{v:.3f}' for v in values)})")
        summary[name] = statistics.fmean(values)
    if args.plots:
        fig, axes = figure()
        ax = axes[0, 0]
        for color, (name, runs) in zip(("C0", "C1", "C2"), curves.items()):
            for i, losses in enumerate(runs):
                ax.plot(smooth(losses, 25), color=color, alpha=0.8, label=name if i == 0 else None)
        ax.axhline(baseline, color="gray", linestyle=":", label="unigram")
        ax.set(xlabel="step", ylabel="training loss (bpc)", title="character LM on pydoc topics")
        ax.legend()
        save(fig, args.plots, "char_lm_learning_curves")
    return summary


if __name__ == "__main__":
    main()
