"""Two more RNN shapes: many-to-many synchronized (one output per input step) and one-to-many (one vector in,
a sequence out).

synced: tag every character of a generated string like "a(b(c)d)(e" with its bracket nesting depth after that
  character. The answer depends on the whole prefix, so a memoryless tagger (the best tag for each character on its
  own, the baseline) cannot do it, while a recurrent one counts. The strings have different lengths and are fed
  as a PackedSequence, so padding is never computed on.
one-to-many: spell the class of a scikit-learn digits image (offline) as characters: the 64 pixels set the initial
  state of a character-level fusedrnn decoder, which writes e.g. "seven" — a tiny image-captioning analogue.
  The metric is the fraction of test images whose word is exactly right; the baseline always writes the most
  common training class.

    python examples/synced_and_one_to_many.py --plots out/
"""

from __future__ import annotations

import random
import time

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fusedrnn
from common import Vocab, backend_name, figure, minibatches, parser, report, save, setup, smooth, train

LAYERS = {"lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU, "rnn": fusedrnn.RNN}
LETTERS = "abcde"
MAX_DEPTH = 8  # tags 0..MAX_DEPTH; the generator never nests deeper
IGNORE = -100  # cross_entropy's ignore_index: the tag of a padding position
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PIXEL_MAX = 16.0


# ---------------------------------------------------------------------------------------------------------------
# many-to-many, synchronized


def bracket_strings(n: int, min_len: int, max_len: int, rng: random.Random) -> tuple[list[str], list[list[int]]]:
    """n random strings of letters and brackets (closing only what is open) and each character's depth after it."""
    texts, tags = [], []
    for _ in range(n):
        depth, text, depths = 0, [], []
        for _ in range(rng.randint(min_len, max_len)):
            choice = rng.random()
            if choice < 0.3 and depth < MAX_DEPTH:
                depth += 1
                text.append("(")
            elif choice < 0.6 and depth > 0:
                depth -= 1
                text.append(")")
            else:
                text.append(rng.choice(LETTERS))
            depths.append(depth)
        texts.append("".join(text))
        tags.append(depths)
    return texts, tags


class Tagger(nn.Module):
    """ids [N, T] (padded) and lengths [N] -> tag logits [N, T, MAX_DEPTH + 1]."""

    def __init__(self, layer: str, vocab_size: int, hidden: int, backend: str) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, 16)
        self.rnn = LAYERS[layer](16, hidden, batch_first=True, backend=backend)
        self.head = nn.Linear(hidden, MAX_DEPTH + 1)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        packed = pack_padded_sequence(self.embed(ids), lengths.cpu(), batch_first=True, enforce_sorted=False)
        y, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=ids.size(1))
        return self.head(y)


def synced(args, device) -> dict[str, float]:
    rng = random.Random(args.seed)
    size, test_size = (256, 64) if args.quick else (args.train_size, 1000)
    texts, tags = bracket_strings(size + test_size, 10, args.max_len, rng)
    vocab = Vocab(texts)
    ids = vocab.encode(texts, args.max_len).to(device)
    lengths = torch.tensor([len(t) for t in texts])
    targets = torch.full((len(texts), args.max_len), IGNORE, dtype=torch.long)
    for row, depths in enumerate(tags):
        targets[row, : len(depths)] = torch.tensor(depths)
    targets = targets.to(device)
    train_rows, test_rows = torch.arange(size), torch.arange(size, size + test_size)
    print(f"synced: e.g. {texts[0]!r} -> depths {tags[0]}")

    model = Tagger(args.layer, len(vocab), args.hidden, args.backend).to(device)
    backend = backend_name(model.rnn, args.batch, args.max_len, device)
    tag_loss = lambda rows: nn.functional.cross_entropy(  # noqa: E731
        model(ids[rows], lengths[rows]).flatten(0, 1), targets[rows].flatten(), ignore_index=IGNORE)
    generator = torch.Generator().manual_seed(args.seed)
    steps = (train_rows[i].to(device) for _ in range(args.epochs) for i in minibatches(size, args.batch, generator))
    start = time.time()
    losses, _ = train(model, tag_loss, steps, args.lr, log_every=0 if args.quick else 500)

    test_targets = targets[test_rows]
    real = test_targets != IGNORE
    with torch.no_grad():
        predicted = model(ids[test_rows], lengths[test_rows]).argmax(2)
    accuracy = (predicted == test_targets)[real].float().mean().item()
    # Baseline: the best tagger that sees one character at a time: the most common training tag per character.
    counts = torch.zeros(len(vocab), MAX_DEPTH + 1, dtype=torch.long, device=device)
    train_real = targets[train_rows] != IGNORE
    counts.index_put_((ids[train_rows][train_real], targets[train_rows][train_real]),
                      torch.ones((), dtype=torch.long, device=device), accumulate=True)  # fmt: skip
    baseline = (counts.argmax(1)[ids[test_rows]] == test_targets)[real].float().mean().item()
    report(f"bracket depth tagging ({args.layer})", "per-character accuracy", accuracy, baseline, backend,
           time.time() - start)  # fmt: skip
    return {"synced_accuracy": accuracy, "synced_baseline": baseline, "synced_losses": losses}


# ---------------------------------------------------------------------------------------------------------------
# one-to-many


class Speller(nn.Module):
    """image [N, 64] -> initial state; with teacher-forcing input ids [N, T] -> logits [N, T, V]."""

    def __init__(self, layer: str, vocab_size: int, hidden: int, backend: str) -> None:
        super().__init__()
        self.layer = layer
        self.embed = nn.Embedding(vocab_size, 16)
        self.rnn = LAYERS[layer](16, hidden, batch_first=True, backend=backend)
        self.init_state = nn.Linear(64, hidden * (2 if layer == "lstm" else 1))
        self.head = nn.Linear(hidden, vocab_size)

    def start(self, image: Tensor):
        state = torch.tanh(self.init_state(image)).unsqueeze(0)  # [1, N, H or 2H]: one layer
        return tuple(state.chunk(2, dim=2)) if self.layer == "lstm" else state

    def forward(self, image: Tensor, input_ids: Tensor) -> Tensor:
        y, _ = self.rnn(self.embed(input_ids), self.start(image))
        return self.head(y)

    @torch.no_grad()
    def spell(self, image: Tensor, length: int) -> Tensor:
        state = self.start(image)
        token = torch.full((image.size(0), 1), Vocab.START, dtype=torch.long, device=image.device)
        out = []
        for _ in range(length):
            y, state = self.rnn(self.embed(token), state)
            token = self.head(y).argmax(2)
            out.append(token)
        return torch.cat(out, 1)


def one_to_many(args, device) -> dict[str, float]:
    digits = load_digits()
    images = torch.tensor(digits.data, dtype=torch.float32) / PIXEL_MAX
    labels = torch.tensor(digits.target)
    x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=0.25, random_state=args.seed,
                                                        stratify=labels)  # fmt: skip
    if args.quick:
        x_train, y_train = x_train[:128], y_train[:128]
    vocab = Vocab(NAMES)
    length = max(map(len, NAMES)) + 2  # <s> word </s>
    words = vocab.encode([NAMES[i] for i in y_train], length, start=True, end=True).to(device)
    x_train, x_test = x_train.to(device), x_test.to(device)

    model = Speller(args.layer, len(vocab), args.hidden, args.backend).to(device)
    backend = backend_name(model.rnn, args.batch, length - 1, device)

    def spell_loss(rows: Tensor) -> Tensor:
        logits = model(x_train[rows], words[rows, :-1])
        return nn.functional.cross_entropy(logits.flatten(0, 1), words[rows, 1:].flatten(), ignore_index=Vocab.PAD)

    generator = torch.Generator().manual_seed(args.seed)
    steps = (i.to(device) for _ in range(args.epochs) for i in minibatches(len(x_train), args.batch, generator))
    start = time.time()
    losses, _ = train(model, spell_loss, steps, args.lr, log_every=0 if args.quick else 500)

    spelled = [vocab.decode(ids) for ids in model.spell(x_test, length - 1).tolist()]
    truth = [NAMES[i] for i in y_test]
    accuracy = sum(s == t for s, t in zip(spelled, truth)) / len(truth)
    baseline = (y_test == torch.bincount(y_train).argmax()).float().mean().item()
    print("  " + ", ".join(f"{t}->{s}" for s, t in list(zip(spelled, truth))[:8]))
    report(f"spell digit class ({args.layer})", "exact-word accuracy", accuracy, baseline, backend,
           time.time() - start)  # fmt: skip
    return {"spell_accuracy": accuracy, "spell_baseline": baseline, "spell_losses": losses}


def main(argv=None) -> dict[str, float]:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=["synced", "one-to-many", "both"], default="both")
    p.add_argument("--layer", choices=list(LAYERS), default="lstm")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--train-size", type=int, default=2000, help="synced task: training strings")
    p.add_argument("--max-len", type=int, default=40, help="synced task: longest string")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.hidden, args.max_len = 1, 16, 16
    device = setup(args)

    results = {}
    if args.task in ("synced", "both"):
        results.update(synced(args, device))
    if args.task in ("one-to-many", "both"):
        results.update(one_to_many(args, device))
    if args.plots:
        curves = [(k, v) for k, v in results.items() if k.endswith("_losses")]
        fig, axes = figure(1, len(curves))
        for ax, (name, losses) in zip(axes[0], curves):
            ax.plot(smooth(losses, 40))
            ax.set(yscale="log", xlabel="step", ylabel="training cross-entropy", title=name.replace("_losses", ""))
        save(fig, args.plots, "synced_and_one_to_many_learning_curves")
    return {k: v for k, v in results.items() if not k.endswith("_losses")}


if __name__ == "__main__":
    main()
