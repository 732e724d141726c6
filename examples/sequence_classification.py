"""Many-to-one: classify handwritten digits read row by row as an 8-step sequence (scikit-learn's digits, offline).

Each 8x8 image becomes a sequence of 8 rows of 8 pixels; a fusedrnn layer reads it top to bottom and a linear head
classifies its last hidden state into 0-9. LSTM, GRU and the plain RNN are trained in turn (8 steps are short, so
all three should do well). The trivial baseline is always answering the most common training class.

    python examples/sequence_classification.py --plots out/
"""

from __future__ import annotations

import time

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor, nn

import fusedrnn
from common import backend_name, figure, minibatches, parser, report, save, setup, smooth, train

LAYERS = {"lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU, "rnn": fusedrnn.RNN}
ROWS = COLUMNS = 8
PIXEL_MAX = 16.0  # the digits' pixels are integers 0..16
CLASSES = 10


class RowReader(nn.Module):
    """x [N, 8, 8] (rows as steps) -> class logits [N, 10] from the last step's hidden state."""

    def __init__(self, layer: str, hidden: int, layers: int, backend: str) -> None:
        super().__init__()
        self.rnn = LAYERS[layer](COLUMNS, hidden, num_layers=layers, batch_first=True, backend=backend)
        self.head = nn.Linear(hidden, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        y, _ = self.rnn(x)
        return self.head(y[:, -1])


def main(argv=None) -> dict[str, float]:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--cells", nargs="+", choices=list(LAYERS), default=list(LAYERS))
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--num-layers", type=int, default=1)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.hidden = 1, 16
    device = setup(args)

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / PIXEL_MAX  # [N, 8, 8]
    labels = torch.tensor(digits.target)
    x_train, x_test, y_train, y_test = (
        t.to(device) for t in train_test_split(images, labels, test_size=0.25, random_state=args.seed,
                                               stratify=labels)  # fmt: skip
    )
    print(f"digits: {len(x_train)} train / {len(x_test)} test sequences of {ROWS} rows x {COLUMNS} pixels")

    majority = torch.bincount(y_train).argmax()
    baseline = (y_test == majority).float().mean().item()
    results, curves = {}, {}
    for cell in args.cells:
        model = RowReader(cell, args.hidden, args.num_layers, args.backend).to(device)
        backend = backend_name(model.rnn, args.batch, ROWS, device)
        generator = torch.Generator().manual_seed(args.seed)
        epochs = (i.to(device) for _ in range(args.epochs) for i in minibatches(len(x_train), args.batch, generator))
        cross_entropy = lambda idx: nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])  # noqa: E731
        start = time.time()
        curves[cell], _ = train(model, cross_entropy, epochs, args.lr, log_every=0 if args.quick else 1000)
        with torch.no_grad():
            results[cell] = (model(x_test).argmax(1) == y_test).float().mean().item()
        report(f"digits row by row ({cell})", "test accuracy", results[cell], baseline, backend, time.time() - start)

    if args.plots:
        fig, axes = figure()
        for cell, losses in curves.items():
            axes[0, 0].plot(smooth(losses, 45), label=f"{cell.upper()}: test accuracy {results[cell]:.1%}")
        axes[0, 0].set(yscale="log", xlabel="step", ylabel="training cross-entropy", title="digits read row by row")
        axes[0, 0].legend()
        save(fig, args.plots, "digits_learning_curve")
    return {**results, "baseline": baseline}


if __name__ == "__main__":
    main()
