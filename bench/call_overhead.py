"""Per-call cost of one small call, torch.nn vs fusedrnn (`auto`), interleaved (issue 24): LSTMCell, GRUCell and a
1-step LSTM / GRU layer call, inference or a training step (forward and backward of the outputs' sum).

    python bench/call_overhead.py [--hidden H] [--batch N] [--training] [--rounds R] [--keep-type]

With --keep-type the fusedrnn row is a torch.nn module after `fusedrnn.replace_rnns(model)` (keep_type=True, the
default: the layer keeps its class and its forward is routed to fusedrnn's).

Thread CPU time per call (time.thread_time: on a shared machine it counts this process's work, not the waits),
one torch thread, over R rounds in which every row runs once in turn: torch.nn, fusedrnn and torch.nn's twin (a
second torch.nn module), in that order in even rounds and reversed in odd ones. Reported per row: the median over
the rounds and, in brackets, the minimum (each round averages many calls, so the least disturbed round is the
closest to the call's own cost).

The difference is fusedrnn's cost over torch.nn's: the median of the rounds' differences (a round's rows run back to
back, so slow drift cancels), with a 95% confidence interval for it that assumes nothing about the noise's
distribution (`median_interval`); more rounds narrow it. The twin's difference from torch.nn is the run's
resolution: a fusedrnn difference of that size is no difference. At a tiny hidden size (the default, H=4) the
difference is the Python per call; at decoder sizes it also holds the kernels' difference.

In training, a second table times the forward alone (each forward timed, the backward after it not): where both
modules run the same op, as the cells do under `auto`, their backward graphs are the same nodes, so the whole
difference is in the forward, and the forward's time is free of the backward's noise (a training call at H=256 varies
by +-15 us from round to round, its forward by a few). Report the load average (`uptime`) with the numbers.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

import fusedrnn

#: Calls per round: enough that a round lasts ~0.1 s at the smallest sizes, scaled down with the work per call.
CALLS_AT_TINY_SIZE = {"inference": 20000, "training": 2000}


def per_call_us(function, calls: int) -> tuple[float, float]:
    """(thread CPU us per call, of which the forwards') over `calls` calls of `function`."""
    start = time.thread_time_ns()
    forward_ns = sum(function() for _ in range(calls))
    return (time.thread_time_ns() - start) / calls / 1e3, forward_ns / calls / 1e3


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(median, low, high) of `values`, with [low, high] a distribution-free confidence interval for the median: the
    order statistics k and n + 1 - k, k the largest with P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2 (each value
    falls below the median with probability 1/2). Fewer than 6 values have no such k at 95%: the range is returned."""
    ordered, n = sorted(values), len(values)
    below, k = 0.0, 0  # below: P(Binomial(n, 1/2) < k + 1)
    while k < n // 2:
        below += math.comb(n, k) / 2**n
        if below > (1 - confidence) / 2:
            break
        k += 1
    k = max(k, 1)
    return statistics.median(ordered), ordered[k - 1], ordered[n - k]


def row(module, cls: str, hidden: int, batch: int, training: bool):
    """A no-argument call of `module` (one step), with backward of its outputs' sum when `training`; it returns the
    forward's thread CPU ns."""
    cell = cls.endswith("Cell")
    shape = (batch, hidden) if cell else (1, batch, hidden)
    x, h = torch.randn(*shape, requires_grad=training), torch.zeros(*shape)
    hx = (h, h) if cls.startswith("LSTM") else h

    def call() -> int:
        start = time.thread_time_ns()
        out = module(x, hx)
        forward_ns = time.thread_time_ns() - start
        if training:
            out = out if cell else out[1]
            (sum(o.sum() for o in out) if isinstance(out, tuple) else out.sum()).backward()
        return forward_ns

    return call


def print_table(title: str, times: dict) -> None:
    """times: row name -> (torch.nn's, fusedrnn's, the twin's) per-round us."""
    print(title)
    print("| call | torch.nn | fusedrnn auto | difference [95% CI] (of minima) | torch.nn's twin - torch.nn "
          "(resolution) |")  # fmt: skip
    print("|---|---|---|---|---|")
    for cls, (a, b, c) in times.items():
        cells = []
        for other in (b, c):
            middle, low, high = median_interval([y - x for x, y in zip(a, other)])
            cells.append(f"{middle:+.1f} [{low:+.1f}, {high:+.1f}] ({min(other) - min(a):+.1f})")
        print(f"| {cls} | {statistics.median(a):.1f} ({min(a):.1f}) | {statistics.median(b):.1f} ({min(b):.1f}) | "
              f"{cells[0]} | {cells[1]} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--training", action="store_true")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--keep-type", action="store_true", help="fusedrnn row: torch.nn's class after replace_rnns")
    args = parser.parse_args()
    torch.set_num_threads(1)
    mode = "training" if args.training else "inference"
    calls = max(20, int(CALLS_AT_TINY_SIZE[mode] / (1 + args.hidden * args.hidden * args.batch / 2000)))
    rows = {}
    for cls in ("LSTMCell", "GRUCell", "LSTM", "GRU"):
        reference = getattr(torch.nn, cls)(args.hidden, args.hidden)
        # torch.nn's twin, the same module again: its difference from torch.nn is what this run can resolve.
        twin = getattr(torch.nn, cls)(args.hidden, args.hidden)
        if args.keep_type:
            holder = torch.nn.Sequential(getattr(torch.nn, cls)(args.hidden, args.hidden))
            fusedrnn.replace_rnns(holder)  # keep_type=True: the layer stays torch.nn's, routed to fusedrnn
            fused = holder[0]
        else:
            fused = getattr(fusedrnn, cls)(args.hidden, args.hidden)
        for module in (twin, fused):
            module.load_state_dict(reference.state_dict())
        rows[cls] = [row(m, cls, args.hidden, args.batch, args.training) for m in (reference, fused, twin)]
    times = {cls: ([], [], []) for cls in rows}
    forward_times = {cls: ([], [], []) for cls in rows}
    with torch.enable_grad() if args.training else torch.no_grad():
        for functions in rows.values():
            for function in functions:
                per_call_us(function, 50)  # warm-up
        for round_index in range(args.rounds):
            for cls, functions in rows.items():
                # The order alternates (ABC, CBA): whichever runs second in a round measured 5-7 us per training call
                # slower at H=4 than when it ran first (it pays for releasing the other's autograd graphs), which a
                # fixed order charged to fusedrnn every round.
                order = list(zip(functions, times[cls], forward_times[cls]))
                for function, record, forward_record in order if round_index % 2 == 0 else reversed(order):
                    total, forward = per_call_us(function, calls)
                    record.append(total)
                    forward_record.append(forward)
    what = f"thread CPU us per call over {args.rounds} interleaved rounds of {calls} calls, median (minimum)"
    if args.keep_type:
        what += "; fusedrnn: replace_rnns(keep_type=True)"
    print_table(f"H={args.hidden} N={args.batch} {mode}: {what}", times)
    if args.training:
        print()
        print_table(f"H={args.hidden} N={args.batch} training, the forward alone: {what}", forward_times)


if __name__ == "__main__":
    main()
