"""Time-series forecasting: yearly sunspot numbers 1700-2008 (statsmodels' sunspots dataset, offline) with an LSTM.

A fusedrnn LSTM reads the last --window years and predicts the next one. It is trained on the years before --split
and tested on the rest, in two ways: next-step (every forecast sees the true history) and multi-step (from each
test year, forecast --horizon years ahead by feeding the model its own predictions). The baseline is the naive
forecast "same as the last known year"; the seasonal naive forecast "same as one solar cycle (11 years) earlier" is
printed as a stronger reference.

    python examples/forecasting.py --plots out/
"""

from __future__ import annotations

import time

import torch
from statsmodels.datasets import sunspots
from torch import Tensor, nn

import fusedrnn
from common import backend_name, figure, minibatches, parser, report, save, setup, train

CYCLE = 11  # years in a solar cycle, the seasonal-naive lag


class Forecaster(nn.Module):
    """windows [N, W] (standardised values) -> next value [N]."""

    def __init__(self, hidden: int, layers: int, backend: str) -> None:
        super().__init__()
        self.rnn = fusedrnn.LSTM(1, hidden, num_layers=layers, batch_first=True, backend=backend)
        self.head = nn.Linear(hidden, 1)

    def forward(self, windows: Tensor) -> Tensor:
        y, _ = self.rnn(windows.unsqueeze(2))
        return self.head(y[:, -1]).squeeze(1)

    @torch.no_grad()
    def rollout(self, windows: Tensor, horizon: int) -> Tensor:
        """[N, W] -> [N, horizon]: each forecast becomes the newest input of the next."""
        out = []
        for _ in range(horizon):
            step = self(windows)
            out.append(step)
            windows = torch.cat([windows[:, 1:], step.unsqueeze(1)], 1)
        return torch.stack(out, 1)


def rmse(a: Tensor, b: Tensor) -> float:
    return (a - b).pow(2).mean().sqrt().item()


def main(argv=None) -> dict[str, float]:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--window", type=int, default=24, help="years of history per forecast")
    p.add_argument("--horizon", type=int, default=CYCLE, help="years ahead for the multi-step forecast")
    p.add_argument("--split", type=int, default=1930, help="first test year")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.hidden = 2, 8
    device = setup(args)

    data = sunspots.load_pandas().data
    years = data["YEAR"].astype(int).tolist()
    series = torch.tensor(data["SUNACTIVITY"].values, dtype=torch.float32)
    split = years.index(args.split)
    mean, std = series[:split].mean(), series[:split].std()  # statistics of the training years only
    z = ((series - mean) / std).to(device)
    # Window i covers years [i, i + W) and is labelled with year i + W.
    windows = z.unfold(0, args.window, 1)[:-1]
    targets = z[args.window :]
    first_test = split - args.window  # the first window whose label is a test year
    x_train, y_train = windows[:first_test], targets[:first_test]
    x_test, y_test = windows[first_test:], targets[first_test:]
    print(f"sunspots: {len(years)} years; train {years[0]}-{args.split - 1}, test {args.split}-{years[-1]}")

    model = Forecaster(args.hidden, args.layers, args.backend).to(device)
    backend = backend_name(model.rnn, args.batch, args.window, device)
    mse = lambda idx: (model(x_train[idx]) - y_train[idx]).pow(2).mean()  # noqa: E731
    generator = torch.Generator().manual_seed(args.seed)
    steps = (i.to(device) for _ in range(args.epochs) for i in minibatches(len(x_train), args.batch, generator))
    start = time.time()
    train(model, mse, steps, args.lr, log_every=0 if args.quick else 1000)
    seconds = time.time() - start

    unscale = lambda v: v * std.to(v.device) + mean.to(v.device)  # noqa: E731
    truth = unscale(y_test)
    with torch.no_grad():
        next_step = unscale(model(x_test))
    naive = unscale(x_test[:, -1])
    seasonal = unscale(z[split - CYCLE : len(z) - CYCLE])
    print(f"next-step RMSE: LSTM {rmse(next_step, truth):.1f}, naive {rmse(naive, truth):.1f}, "
          f"seasonal naive {rmse(seasonal, truth):.1f}")  # fmt: skip
    report("sunspots next-step", "RMSE", rmse(next_step, truth), rmse(naive, truth), backend, seconds)

    # Multi-step: from every test origin with a full horizon of truth after it.
    origins = len(x_test) - args.horizon + 1
    future = torch.stack([y_test[i : i + args.horizon] for i in range(origins)])
    rolled = model.rollout(x_test[:origins], args.horizon)
    flat = x_test[:origins, -1:].expand(-1, args.horizon)
    lstm_multi, naive_multi = rmse(unscale(rolled), unscale(future)), rmse(unscale(flat), unscale(future))
    print(f"{args.horizon}-step RMSE (mean over horizons 1..{args.horizon}): "
          f"LSTM {lstm_multi:.1f}, naive {naive_multi:.1f}")  # fmt: skip
    report(f"sunspots {args.horizon}-step", "RMSE", lstm_multi, naive_multi, backend, seconds)

    if args.plots:
        test_years = years[args.split - years[0] :]
        fig, axes = figure(size=(10, 4))
        ax = axes[0, 0]
        ax.plot(years, series, color="gray", lw=1, label="observed")
        ax.plot(test_years, next_step.cpu(), color="C0", label=f"LSTM next-step (RMSE {rmse(next_step, truth):.1f})")
        for i, origin in enumerate(range(0, origins, 2 * args.horizon)):
            ax.plot(test_years[origin : origin + args.horizon], unscale(rolled[origin]).cpu(), color="C3",
                    label=f"LSTM {args.horizon}-step (RMSE {lstm_multi:.1f})" if i == 0 else None)  # fmt: skip
        ax.axvline(args.split, color="k", linestyle=":", lw=1)
        ax.set(xlabel="year", ylabel="sunspot number", xlim=(args.split - 60, years[-1] + 1),
               title=f"yearly sunspots; naive RMSE: next-step {rmse(naive, truth):.1f}, "
                     f"{args.horizon}-step {naive_multi:.1f}")  # fmt: skip
        ax.legend(loc="upper left", fontsize=8)
        save(fig, args.plots, "sunspots_forecast")
    return {"next_step_rmse": rmse(next_step, truth), "naive_rmse": rmse(naive, truth),
            "multi_step_rmse": lstm_multi, "naive_multi_step_rmse": naive_multi}  # fmt: skip


if __name__ == "__main__":
    main()
