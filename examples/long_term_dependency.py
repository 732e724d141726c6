"""Long-term dependencies: why LSTM and GRU exist. The adding problem (Hochreiter & Schmidhuber, 1997).

Each sequence has T steps of two features: a random value in [0, 1) and a marker that is 1 at exactly two steps (one
in each half of the sequence). The target is the sum of the two marked values, read out after the last step, so the
network must keep a value for up to T steps. Predicting the mean (1.0) scores MSE 1/6, the trivial baseline.

fusedrnn.RNN, LSTM and GRU get the same parameter budget and are trained at several lengths T. Expected: all three
solve short sequences; the plain RNN fails at long ones while LSTM and GRU still solve them. The reason is visible
in ||dL/dh_t||, the gradient of the loss with respect to the hidden state at step t: for the RNN it shrinks
geometrically as t moves away from the end (vanishes), or with a large recurrent init (--rnn-gain 3) grows
geometrically (explodes), while the gated cells' additive state updates carry it across the whole sequence.
--clip rescales the gradient to a maximum norm, which tames exploding gradients (but cannot cure vanishing ones).
Adam already bounds each parameter's step whatever the gradient's size, so clipping matters most with plain SGD
(--optimizer sgd), where one exploded gradient throws the weights far away.

    python examples/long_term_dependency.py --plots out/            # ~2 minutes on a 2-core CPU
    python examples/long_term_dependency.py --rnn-gain 3 --clip 1 --optimizer sgd --cells RNN --plots out/
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor, nn

import fusedrnn
from common import backend_name, figure, parser, report, save, setup, smooth, train

CELLS = {"RNN": (fusedrnn.RNN, fusedrnn.RNNCell), "LSTM": (fusedrnn.LSTM, fusedrnn.LSTMCell),
         "GRU": (fusedrnn.GRU, fusedrnn.GRUCell)}  # fmt: skip
GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}
FEATURES = 2  # value, marker
BASELINE_MSE = 1 / 6  # Var(U1 + U2) for U ~ Uniform(0, 1): the MSE of always answering the mean, 1.0
SOLVED_MSE = 0.01  # a commonly used "solved" threshold for the adding problem
TEST_SIZE = 1000


def adding_problem(n: int, length: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """n sequences -> x [n, length, 2] (value, marker), y [n] (sum of the two marked values)."""
    values = torch.rand(n, length, generator=generator)
    half = length // 2
    first = torch.randint(0, half, (n,), generator=generator)
    second = torch.randint(half, length, (n,), generator=generator)
    markers = torch.zeros(n, length)
    rows = torch.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    return torch.stack([values, markers], dim=2), (values * markers).sum(1)


def hidden_size_for(cell: str, budget: int) -> int:
    """The hidden size whose layer + linear head has about `budget` parameters.

    A layer has gates * (H*I + H*H + 2H) parameters (two bias vectors), the head H + 1; solve the quadratic for H.
    """
    a, b, c = GATES[cell], GATES[cell] * (FEATURES + 2) + 1, 1 - budget
    return round((-b + math.sqrt(b * b - 4 * a * c)) / (2 * a))


class Regressor(nn.Module):
    """A one-layer recurrence read out by a linear head after the last step: x [N, T, 2] -> y [N]."""

    def __init__(self, cell: str, hidden: int, backend: str, rnn_gain: float | None) -> None:
        super().__init__()
        self.cell = cell
        self.rnn = CELLS[cell][0](FEATURES, hidden, batch_first=True, backend=backend)
        self.head = nn.Linear(hidden, 1)
        if cell == "RNN" and rnn_gain is not None:
            # An orthogonal matrix times `gain` has every singular value equal to `gain`: below 1 the linearised
            # backward pass shrinks the gradient each step, above 1 it grows it.
            nn.init.orthogonal_(self.rnn.weight_hh_l0, gain=rnn_gain)

    def forward(self, x: Tensor) -> Tensor:
        y, _ = self.rnn(x)
        return self.head(y[:, -1]).squeeze(1)

    def hidden_grad_norms(self, x: Tensor, y: Tensor) -> Tensor:
        """||dL/dh_t|| for t = 1..T, averaged over the batch -> [T].

        The sequence layer runs all steps inside one fused call, so its intermediate hidden states are not autograd
        nodes we could ask for a gradient (the layer's output y_t receives only the *direct* gradient from the
        head, not the total one through later steps). So we replay the sequence one step at a time with the
        matching fusedrnn cell, which shares this layer's Parameter objects, and keep every h_t's gradient.
        The loss is summed over the batch so each sample's gradient is not scaled by 1/N.
        """
        if not all(p.isfinite().all() for p in self.parameters()):
            return x.new_full((x.size(1),), math.nan)  # training diverged: no gradient to speak of
        cell = CELLS[self.cell][1](FEATURES, self.rnn.hidden_size, backend=self.rnn.backend)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            setattr(cell, name, getattr(self.rnn, f"{name}_l0"))  # share, not copy
        h = x.new_zeros(x.size(0), self.rnn.hidden_size)
        state = (h, h) if self.cell == "LSTM" else h
        hiddens = []
        for t in range(x.size(1)):
            state = cell(x[:, t], state)
            h = state[0] if self.cell == "LSTM" else state
            h.retain_grad()
            hiddens.append(h)
        # The replay must agree with the fused layer, or the gradients below would describe a different network.
        with torch.no_grad():
            torch.testing.assert_close(h, self.rnn(x)[0][:, -1], rtol=1e-4, atol=1e-5)
        loss = (self.head(h).squeeze(1) - y).pow(2).sum()
        loss.backward()
        self.zero_grad(set_to_none=True)  # only the h_t gradients were wanted
        return torch.stack([h.grad.norm(dim=1).mean() for h in hiddens]).detach()


def batches(steps: int, batch_size: int, length: int, generator: torch.Generator, device: torch.device):
    for _ in range(steps):
        x, y = adding_problem(batch_size, length, generator)
        yield x.to(device), y.to(device)


def run(cell, length, args, device, clip):
    """Train one cell at one length; returns the model, test MSE, learning curve, gradient norms, grad norms at init."""
    generator = torch.Generator().manual_seed(args.seed + length)  # same data for every cell at a given length
    model = Regressor(cell, hidden_size_for(cell, args.budget), args.backend, args.rnn_gain).to(device)
    x_test, y_test = (t.to(device) for t in adding_problem(TEST_SIZE if not args.quick else 64, length, generator))
    probe = (x_test[: args.probe], y_test[: args.probe])
    at_init = model.hidden_grad_norms(*probe)
    mse = lambda batch: (model(batch[0]) - batch[1]).pow(2).mean()  # noqa: E731
    data = batches(args.steps, args.batch, length, generator, device)
    losses, grad_norms = train(model, mse, data, args.lr, clip, optimizer=args.optimizer)
    with torch.no_grad():
        test_mse = mse((x_test, y_test)).item()
    return model, test_mse, losses, grad_norms, at_init, model.hidden_grad_norms(*probe)


def main(argv=None) -> dict[str, float]:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[10, 50, 100], help="sequence lengths T")
    p.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    p.add_argument("--budget", type=int, default=4800, help="parameters per model (hidden 67 RNN, 38 GRU, 33 LSTM)")
    p.add_argument("--steps", type=int, default=1500, help="training steps per (cell, length)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    p.add_argument("--probe", type=int, default=256, help="sequences used to measure ||dL/dh_t||")
    p.add_argument("--rnn-gain", type=float, help="init the RNN's recurrent matrix as gain * orthogonal "
                   "(>1: exploding gradients); default: torch.nn's uniform init")  # fmt: skip
    p.add_argument("--clip", type=float, help="clip the gradient norm to this; the RNN at the longest length is "
                   "then also trained unclipped, for comparison")  # fmt: skip
    args = p.parse_args(argv)
    if args.quick:
        args.lengths, args.steps, args.probe = [5, 12], 5, 8
    device = setup(args)

    results, curves, grads = {}, {}, {}
    for length in args.lengths:
        for cell in args.cells:
            start = time.time()
            model, test_mse, losses, norms, at_init, trained = run(cell, length, args, device, args.clip)
            backend = backend_name(model.rnn, args.batch, length, device)
            params = sum(p.numel() for p in model.parameters())
            print(f"{cell:4s} T={length:3d} hidden={model.rnn.hidden_size} params={params}: test MSE {test_mse:.4f}")
            report(f"adding T={length} {cell}", "test MSE", test_mse, BASELINE_MSE, backend, time.time() - start)
            results[f"{cell} T={length}"] = test_mse
            curves[cell, length] = (losses, norms)
            grads[cell, length] = (at_init, trained)

    print(f"\ntest MSE (baseline {BASELINE_MSE:.3f}; solved below {SOLVED_MSE})")
    print("cell  " + "".join(f"T={length:<8d}" for length in args.lengths))
    for cell in args.cells:
        print(f"{cell:5s} " + "".join(f"{results[f'{cell} T={length}']:<10.4f}" for length in args.lengths))
    longest = args.lengths[-1]
    for cell in args.cells:
        at_init, trained = grads[cell, longest]
        print(f"{cell:4s} T={longest}: ||dL/dh_1|| / ||dL/dh_T|| = {at_init[0] / at_init[-1]:.2e} at init, "
              f"{trained[0] / trained[-1]:.2e} trained")  # fmt: skip

    if args.clip:
        start = time.time()
        _, unclipped_mse, unclipped, unclipped_norms, _, _ = run("RNN", longest, args, device, clip=None)
        print(f"RNN T={longest} without clipping: test MSE {unclipped_mse:.4f} (with --clip {args.clip}: "
              f"{results[f'RNN T={longest}']:.4f}); largest gradient norm {max(unclipped_norms):.3g}")  # fmt: skip
        report(f"adding T={longest} RNN unclipped", "test MSE", unclipped_mse, BASELINE_MSE,
               backend, time.time() - start)  # fmt: skip

    if args.plots:
        plot(args, curves, grads, longest)
        if args.clip:
            fig, axes = figure(1, 2)
            for label, (losses, norms) in (("no clipping", (unclipped, unclipped_norms)),
                                           (f"clip {args.clip}", curves["RNN", longest])):  # fmt: skip
                axes[0, 0].plot(smooth(losses, 50), label=label)
                axes[0, 1].plot(norms, label=label, alpha=0.7)
            axes[0, 0].set(yscale="log", xlabel="step", ylabel="training MSE", title=f"RNN, T={longest}")
            axes[0, 1].axhline(args.clip, color="gray", linestyle=":", label="clipping threshold")
            axes[0, 1].set(yscale="log", xlabel="step", ylabel="gradient norm before clipping")
            axes[0, 0].legend()
            axes[0, 1].legend()
            save(fig, args.plots, "adding_clipping")
    return results


def plot(args, curves, grads, longest) -> None:
    fig, axes = figure(1, len(args.lengths), size=(4.5, 3.5))
    for ax, length in zip(axes[0], args.lengths):
        for cell in args.cells:
            ax.plot(smooth(curves[cell, length][0], 50), label=cell)
        ax.axhline(BASELINE_MSE, color="gray", linestyle=":", label="predict mean")
        ax.set(yscale="log", xlabel="step", ylabel="training MSE", title=f"adding problem, T={length}")
    axes[0, 0].legend()
    save(fig, args.plots, "adding_learning_curves")

    fig, axes = figure(size=(6.5, 4.5))
    ax = axes[0, 0]
    for color, cell in zip(("C0", "C1", "C2"), args.cells):
        at_init, trained = grads[cell, longest]
        steps = range(1, longest + 1)
        ax.plot(steps, at_init.cpu(), color=color, linestyle="--", label=f"{cell} at init")
        ax.plot(steps, trained.cpu(), color=color, label=f"{cell} trained")
    ax.set(yscale="log", xlabel="step t", ylabel="mean ||dL/dh_t||", title=f"gradient reaching h_t, T={longest}")
    ax.legend(fontsize=8)
    save(fig, args.plots, "adding_hidden_grad_norms")


if __name__ == "__main__":
    main()
