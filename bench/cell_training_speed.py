"""Cells in a pytorch/examples-style training loop (time_sequence_prediction): torch.nn's against fusedrnn's.

    python bench/cell_training_speed.py [--cell lstm|gru] [--rounds 5] [--threads 1]

The model is the example's: two cells (1 -> 51 -> 51 hidden units) stepped over T=100 time steps of a batch of 97
series and a linear read-out, in float64, trained with LBFGS (lr 0.8: one optimizer step = up to 20 forward+backward
closures). Every round runs one optimizer step of every model in turn (interleaved) from the same weights; the
losses must agree. Times are the thread CPU time of the step (time.thread_time), which a loaded machine disturbs
far less than wall time; with --threads > 1 that misses the worker threads, so keep the default of 1 there.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import fusedrnn

SEQ_LEN, BATCH, HIDDEN = 100, 97, 51
LEARNING_RATE = 0.8  # the example's
ROWS = ("torch.nn", "auto", "cpu", "torch")


class Sequence(nn.Module):
    def __init__(self, cell_cls: type, lstm: bool, **kwargs) -> None:
        super().__init__()
        self.lstm = lstm
        self.cell1 = cell_cls(1, HIDDEN, **kwargs)
        self.cell2 = cell_cls(HIDDEN, HIDDEN, **kwargs)
        self.linear = nn.Linear(HIDDEN, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, T] -> the prediction of every next value, [N, T]."""
        h1 = c1 = h2 = c2 = x.new_zeros(x.size(0), HIDDEN)
        outputs = []
        for x_t in x.split(1, dim=1):
            if self.lstm:
                h1, c1 = self.cell1(x_t, (h1, c1))
                h2, c2 = self.cell2(h1, (h2, c2))
            else:
                h1 = self.cell1(x_t, h1)
                h2 = self.cell2(h1, h2)
            outputs.append(self.linear(h2))
        return torch.cat(outputs, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", choices=["lstm", "gru"], default="lstm")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lstm = args.cell == "lstm"
    torch_cls, fused_cls = (nn.LSTMCell, fusedrnn.LSTMCell) if lstm else (nn.GRUCell, fusedrnn.GRUCell)
    torch.manual_seed(0)
    series = torch.randn(BATCH, SEQ_LEN + 1, dtype=torch.float64).cumsum(1).sin()
    inputs, targets = series[:, :-1], series[:, 1:]
    baseline = Sequence(torch_cls, lstm).double()
    models = {"torch.nn": baseline}
    for backend in ROWS[1:]:
        models[backend] = Sequence(fused_cls, lstm, backend=backend).double()
        models[backend].load_state_dict(baseline.state_dict())
    optimizers = {row: torch.optim.LBFGS(model.parameters(), lr=LEARNING_RATE) for row, model in models.items()}
    times: dict[str, list[float]] = {row: [] for row in models}
    losses: dict[str, list[float]] = {row: [] for row in models}
    for _ in range(args.rounds):
        for row, model in models.items():
            optimizer = optimizers[row]

            def closure(model=model, optimizer=optimizer):
                optimizer.zero_grad()
                loss = nn.functional.mse_loss(model(inputs), targets)
                loss.backward()
                return loss

            start = time.thread_time()
            losses[row].append(optimizer.step(closure).item())
            times[row].append(time.thread_time() - start)
    median = {row: sorted(t)[len(t) // 2] for row, t in times.items()}
    print(f"| {args.cell} cells, float64, LBFGS, {args.threads} thread(s) | median s per step | vs torch.nn | losses |")
    print("|---|---|---|---|")
    for row in models:
        same = "same" if losses[row] == losses["torch.nn"] or torch.allclose(
            torch.tensor(losses[row]), torch.tensor(losses["torch.nn"]), rtol=1e-9, atol=0
        ) else f"DIFFER: {losses[row]}"
        print(f"| {row} | {median[row]:.3f} | {median['torch.nn'] / median[row]:.3f}x | {same} |")


if __name__ == "__main__":
    main()
