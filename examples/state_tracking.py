"""State tracking: sLSTM vs LSTM on a running sum modulo m, where memory mixing is what solves the task.

Each sequence is a stream of random digits in {0, ..., m-1}; at every step the model must output the running sum of
the digits so far modulo m (m = 2 is parity). The answer depends on the whole prefix, and no fixed window of recent
inputs gives it: a model has to carry an exact m-state counter in its hidden state and update it at every step,
which needs the recurrent matrix to mix hidden units (the new state of one unit depends on the others). xLSTM (Beck et
al. 2024) keeps that "memory mixing" in sLSTM, unlike its parallelisable mLSTM, and reports it solving such formal-
language tasks. Compared, with the same hidden size, training budget and seeds:
  LSTM             fusedrnn.LSTM;
  sLSTM            fusedrnn.sLSTM, one head (W_hh mixes every unit);
  sLSTM, no mixing fusedrnn.sLSTM(num_heads=hidden): heads of one unit, so W_hh is diagonal and a unit only ever sees
                   its own past (the control: the gates still see the input, and every other part is the same).
Training uses sequences of --train-len steps; the test reports per-step accuracy at that length and at 4x it (does
the counter generalise to longer streams?). The trivial baseline is 1/m (guessing; the classes are uniform).

    python examples/state_tracking.py                     # 3 models x 2 seeds, a few minutes on a 2-core CPU
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import fusedrnn
from common import backend_name, figure, parser, report, save, setup, smooth, train

#: Name -> (layer class, keyword options given the hidden size).
MODELS = {
    "LSTM": lambda hidden: (fusedrnn.LSTM, {}),
    "sLSTM": lambda hidden: (fusedrnn.sLSTM, {}),
    "sLSTM, no mixing": lambda hidden: (fusedrnn.sLSTM, {"num_heads": hidden}),
}
#: Test length as a multiple of the training length.
LONGER = 4


def sequences(count: int, length: int, modulus: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """digits [count, length] in {0..m-1} and targets [count, length]: the running sums modulo m."""
    digits = torch.randint(modulus, (count, length), generator=generator)
    return digits, digits.cumsum(1) % modulus


class Tracker(nn.Module):
    """digits [N, L] -> logits [N, L, m] of the running sum mod m: one-hot input, one recurrent layer, linear head."""

    def __init__(self, name: str, modulus: int, hidden: int, backend: str) -> None:
        super().__init__()
        cls, options = MODELS[name](hidden)
        self.modulus = modulus
        self.rnn = cls(modulus, hidden, batch_first=True, backend=backend, **options)
        self.head = nn.Linear(hidden, modulus)

    def forward(self, digits: Tensor) -> Tensor:
        y, _ = self.rnn(F.one_hot(digits, self.modulus).float())
        return self.head(y)


@torch.no_grad()
def accuracy(model: Tracker, digits: Tensor, targets: Tensor) -> float:
    return (model(digits).argmax(2) == targets).float().mean().item()


def main(argv=None) -> dict[str, float]:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--modulus", type=int, default=3, help="m: the counter's number of states (2: parity)")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--train-len", type=int, default=24)
    p.add_argument("--steps", type=int, default=1500, help="Adam steps per model")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seeds", type=int, default=2)
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.hidden, args.train_len, args.seeds = 20, 8, 8, 1
    device = setup(args)
    generator = torch.Generator().manual_seed(args.seed)
    tests = {length: sequences(512, length, args.modulus, generator)
             for length in (args.train_len, LONGER * args.train_len)}  # fmt: skip
    baseline = 1 / args.modulus
    results, curves = {}, {}
    for name in MODELS:
        scores = {length: [] for length in tests}
        for seed in range(args.seed, args.seed + args.seeds):
            torch.manual_seed(seed)
            model = Tracker(name, args.modulus, args.hidden, args.backend).to(device)
            backend = backend_name(model.rnn, args.batch, args.train_len, device)
            batches = (sequences(args.batch, args.train_len, args.modulus, generator) for _ in range(args.steps))

            def loss_of(batch: tuple[Tensor, Tensor]) -> Tensor:
                digits, targets = (t.to(device) for t in batch)
                return F.cross_entropy(model(digits).flatten(0, 1), targets.flatten())

            start = time.time()
            losses, _ = train(model, loss_of, batches, args.lr, clip=1.0)
            seconds = time.time() - start
            curves.setdefault(name, losses)
            for length, (digits, targets) in tests.items():
                scores[length].append(accuracy(model, digits.to(device), targets.to(device)))
        for length, values in scores.items():
            mean = statistics.fmean(values)
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            print(f"  {name}: length {length}: accuracy {mean:.3f}{spread} ({', '.join(f'{v:.3f}' for v in values)})")
            report(f"running sum mod {args.modulus}, length {length} ({name})", "per-step accuracy", mean, baseline,
                   backend, seconds)  # fmt: skip
            results[f"{name} T={length}"] = mean
    if args.plots:
        fig, axes = figure()
        for name, losses in curves.items():
            axes[0][0].plot(smooth(losses, 50), label=name)
        axes[0][0].set(xlabel="Adam step", ylabel="training loss (nats)", yscale="log",
                       title=f"running sum mod {args.modulus}, T={args.train_len}, H={args.hidden} (first seed)")
        axes[0][0].legend()
        save(fig, args.plots, "state_tracking_learning_curves")
    return results


if __name__ == "__main__":
    main()
