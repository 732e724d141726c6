"""Per-call cost of one small call, torch.nn vs fusedrnn (`auto`), interleaved (issue 24): LSTMCell, GRUCell and a
1-step LSTM / GRU layer call, inference or a training step (forward and backward of the outputs' sum).

    python bench/call_overhead.py [--hidden H] [--batch N] [--training] [--rounds R]

Thread CPU time per call (time.thread_time: on a shared machine it counts this process's work, not the waits),
one torch thread, over R rounds in which every row runs once in turn: torch.nn, fusedrnn and torch.nn's twin (a
second torch.nn module), in that order in even rounds and reversed in odd ones. Reported: the median, and the
minimum (each round averages
many calls, so the least disturbed round is the closest to the call's own cost: on a loaded machine, where cache and
core sharing still inflate CPU time, the minimum is the steadier of the two). The difference is fusedrnn's cost over
torch.nn's. At a tiny hidden size (the default, H=4) that difference is the Python per call; at decoder sizes
it also holds the kernels' difference. The twin's difference from torch.nn is the run's resolution: a fusedrnn
difference of that size is no difference. Report the load average (`uptime`) with the numbers.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import fusedrnn

#: Calls per round: enough that a round lasts ~0.1 s at the smallest sizes, scaled down with the work per call.
CALLS_AT_TINY_SIZE = {"inference": 20000, "training": 2000}


def per_call_us(function, calls: int) -> float:
    start = time.thread_time()
    for _ in range(calls):
        function()
    return (time.thread_time() - start) / calls * 1e6


def row(module, cls: str, hidden: int, batch: int, training: bool):
    """A no-argument call of `module` (one step), with backward of its outputs' sum when `training`."""
    cell = cls.endswith("Cell")
    shape = (batch, hidden) if cell else (1, batch, hidden)
    x, h = torch.randn(*shape, requires_grad=training), torch.zeros(*shape)
    hx = (h, h) if cls.startswith("LSTM") else h

    def call():
        out = module(x, hx)
        if training:
            out = out if cell else out[1]
            (sum(o.sum() for o in out) if isinstance(out, tuple) else out.sum()).backward()

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--training", action="store_true")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    mode = "training" if args.training else "inference"
    calls = max(20, int(CALLS_AT_TINY_SIZE[mode] / (1 + args.hidden * args.hidden * args.batch / 2000)))
    rows = {}
    for cls in ("LSTMCell", "GRUCell", "LSTM", "GRU"):
        reference = getattr(torch.nn, cls)(args.hidden, args.hidden)
        # torch.nn's twin, the same module again: its difference from torch.nn is what this run can resolve.
        twin = getattr(torch.nn, cls)(args.hidden, args.hidden)
        fused = getattr(fusedrnn, cls)(args.hidden, args.hidden)
        for module in (twin, fused):
            module.load_state_dict(reference.state_dict())
        rows[cls] = [row(m, cls, args.hidden, args.batch, args.training) for m in (reference, fused, twin)]
    times = {cls: ([], [], []) for cls in rows}
    with torch.enable_grad() if args.training else torch.no_grad():
        for functions in rows.values():
            for function in functions:
                per_call_us(function, 50)  # warm-up
        for round_index in range(args.rounds):
            for cls, functions in rows.items():
                # The order alternates (ABC, CBA): whichever runs second in a round measured 5-7 us per training call
                # slower at H=4 than when it ran first (it pays for releasing the other's autograd graphs), which a
                # fixed order charged to fusedrnn every round.
                order = list(zip(functions, times[cls]))
                for function, record in order if round_index % 2 == 0 else reversed(order):
                    record.append(per_call_us(function, calls))
    print(f"H={args.hidden} N={args.batch} {mode}: thread CPU us per call over {args.rounds} interleaved rounds "
          f"of {calls} calls, median (minimum)")  # fmt: skip
    print("| call | torch.nn | fusedrnn auto | difference | torch.nn's twin - torch.nn (resolution) |")
    print("|---|---|---|---|---|")
    for cls, series in times.items():
        (a, b, c), (low_a, low_b, low_c) = map(statistics.median, series), map(min, series)
        print(f"| {cls} | {a:.1f} ({low_a:.1f}) | {b:.1f} ({low_b:.1f}) | {b - a:+.1f} ({low_b - low_a:+.1f}) | "
              f"{c - a:+.1f} ({low_c - low_a:+.1f}) |")  # fmt: skip


if __name__ == "__main__":
    main()
