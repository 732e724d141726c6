"""Encoder-decoder (seq2seq): rewrite dates written in words, e.g. "thursday 5 march 1998", as ISO "1998-03-05".

The script generates the data: random dates in six styles (day as a number or an ordinal word, month names full or
abbreviated, an optional weekday as a distractor). A character-level fusedrnn encoder reads the text; its final
state starts a decoder of the same kind that writes the ISO date one character at a time (teacher forcing in
training, greedy decoding at test time). The metric is exact-match accuracy on dates never seen in training; the
trivial baseline, answering the most common training date, is almost never right.

    python examples/seq2seq_dates.py --plots out/
"""

from __future__ import annotations

import collections
import datetime
import random
import time

import torch
from torch import Tensor, nn

import fusedrnn
from common import Vocab, backend_name, figure, minibatches, parser, report, save, setup, smooth, train

LAYERS = {"lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU}
MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december"]  # fmt: skip
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
UNITS = ["", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
         "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth", "eighteenth",
         "nineteenth"]  # fmt: skip
FIRST_DAY, DAYS = datetime.date(1900, 1, 1), 200 * 365  # dates from 1900 to ~2099
ISO_LENGTH = len("1998-03-05")


def ordinal(day: int) -> str:
    """5 -> "fifth", 23 -> "twenty-third", 30 -> "thirtieth"."""
    if day < 20:
        return UNITS[day]
    tens = {2: "twent", 3: "thirt"}[day // 10]
    return f"{tens}ieth" if day % 10 == 0 else f"{tens}y-{UNITS[day % 10]}"


def in_words(date: datetime.date, rng: random.Random) -> str:
    month, weekday = MONTHS[date.month - 1], WEEKDAYS[date.weekday()]
    styles = [
        f"{date.day} {month} {date.year}",
        f"{month} {date.day}, {date.year}",
        f"the {ordinal(date.day)} of {month} {date.year}",
        f"{weekday} {date.day} {month[:3]} {date.year}",
        f"{weekday}, {month} {ordinal(date.day)}, {date.year}",
        f"{month[:3]} {date.day:02d} {date.year}",
    ]
    return rng.choice(styles)


def make_data(n_train: int, n_test: int, seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(words, iso) pairs; the test dates are disjoint from the training dates."""
    rng = random.Random(seed)
    days = rng.sample(range(DAYS), n_train + n_test)
    dates = [FIRST_DAY + datetime.timedelta(days=d) for d in days]
    pairs = [(in_words(d, rng), d.isoformat()) for d in dates]
    return pairs[:n_train], pairs[n_train:]


class Seq2Seq(nn.Module):
    """source ids [N, S] -> (logits [N, T, V] with teacher forcing on target ids [N, T]) or greedy ids [N, T]."""

    def __init__(self, layer: str, vocab_size: int, embed: int, hidden: int, backend: str) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed, padding_idx=Vocab.PAD)
        self.encoder = LAYERS[layer](embed, hidden, batch_first=True, backend=backend)
        self.decoder = LAYERS[layer](embed, hidden, batch_first=True, backend=backend)
        self.head = nn.Linear(hidden, vocab_size)

    def encode(self, source: Tensor):
        # Padding is at the end and the encoder runs over it, which is fine here: the network learns that trailing
        # padding carries nothing (a PackedSequence would skip it; see synced_and_one_to_many.py).
        _, state = self.encoder(self.embed(source))
        return state

    def forward(self, source: Tensor, decoder_input: Tensor) -> Tensor:
        y, _ = self.decoder(self.embed(decoder_input), self.encode(source))
        return self.head(y)

    @torch.no_grad()
    def translate(self, source: Tensor, length: int) -> Tensor:
        state = self.encode(source)
        token = torch.full((source.size(0), 1), Vocab.START, dtype=torch.long, device=source.device)
        out = []
        for _ in range(length):
            y, state = self.decoder(self.embed(token), state)
            token = self.head(y).argmax(2)
            out.append(token)
        return torch.cat(out, 1)


def main(argv=None) -> dict[str, float]:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--layer", choices=list(LAYERS), default="gru")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--embed", type=int, default=32)
    p.add_argument("--train-size", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    args = p.parse_args(argv)
    if args.quick:
        args.train_size, args.epochs, args.hidden = 256, 1, 16
    device = setup(args)

    train_pairs, test_pairs = make_data(args.train_size, 1000 if not args.quick else 64, args.seed)
    vocab = Vocab([w for w, _ in train_pairs + test_pairs] + ["0123456789-"])
    source_length = max(len(w) for w, _ in train_pairs + test_pairs)
    encode = lambda pairs: (vocab.encode([w for w, _ in pairs], source_length),  # noqa: E731
                            vocab.encode([d for _, d in pairs], ISO_LENGTH + 1, start=True))  # fmt: skip
    (src_train, tgt_train), (src_test, _) = encode(train_pairs), encode(test_pairs)
    src_train, tgt_train, src_test = src_train.to(device), tgt_train.to(device), src_test.to(device)
    print(f"{len(train_pairs)} training pairs, e.g. {train_pairs[0][0]!r} -> {train_pairs[0][1]!r}")

    model = Seq2Seq(args.layer, len(vocab), args.embed, args.hidden, args.backend).to(device)
    backend = backend_name(model.encoder, args.batch, source_length, device)

    def loss(idx: Tensor) -> Tensor:
        # Teacher forcing: the decoder reads "<s>1998-03-0" and must predict "1998-03-05".
        target = tgt_train[idx]
        logits = model(src_train[idx], target[:, :-1])
        return nn.functional.cross_entropy(logits.flatten(0, 1), target[:, 1:].flatten())

    generator = torch.Generator().manual_seed(args.seed)
    epochs = (idx.to(device) for _ in range(args.epochs) for idx in minibatches(len(src_train), args.batch, generator))
    start = time.time()
    losses, _ = train(model, loss, epochs, args.lr, log_every=0 if args.quick else 500)

    predicted = [vocab.decode(ids) for ids in model.translate(src_test, ISO_LENGTH).tolist()]
    truth = [d for _, d in test_pairs]
    accuracy = sum(p == t for p, t in zip(predicted, truth)) / len(truth)
    most_common = collections.Counter(d for _, d in train_pairs).most_common(1)[0][0]
    baseline = sum(t == most_common for t in truth) / len(truth)
    for (words, iso), guess in list(zip(test_pairs, predicted))[:6]:
        print(f"  {words:38s} -> {guess}  {'ok' if guess == iso else 'WRONG, expected ' + iso}")
    report(f"dates seq2seq ({args.layer})", "exact-match accuracy", accuracy, baseline, backend, time.time() - start)

    if args.plots:
        fig, axes = figure()
        axes[0, 0].plot(smooth(losses, 50))
        axes[0, 0].set(yscale="log", xlabel="step", ylabel="training cross-entropy per character",
                       title=f"dates -> ISO, {args.layer.upper()} encoder-decoder: {accuracy:.1%} exact")  # fmt: skip
        save(fig, args.plots, "dates_learning_curve")
    return {"accuracy": accuracy, "baseline": baseline}


if __name__ == "__main__":
    main()
