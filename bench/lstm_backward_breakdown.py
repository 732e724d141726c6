"""Where the `cpu` backend's LSTM training time goes at a large batch (issue 23): its backward against torch.nn's,
and the part of it that is not the three whole-sequence GEMMs (dW_hh, dW_ih, dx), i.e. the recurrence (dh = dg W_hh
per step, K = 4H) with the cell's backward, as a rate of its useful flops.

    python bench/lstm_backward_breakdown.py [--batch N] [--hidden H] [--seq-len T] [--threads K] [--rounds R]

Wall time (perf_counter) of each row, medians over R rounds in which the rows run in turn (the order reversed in odd
rounds): our layer backward op on a saved forward, torch.nn's backward (autograd.grad with retain_graph, same
shapes), three GEMMs of the backward's shapes, our forward with its saved activations. Set FUSEDRNN_CPU_LSTM=fused
or =loop to pick our path. Report the load average (`uptime`) with the numbers.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fusedrnn import _extension


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    T, N, H = args.seq_len, args.batch, args.hidden
    _extension.load()  # registers torch.ops.fusedrnn (built ahead of time, or now)
    op = torch.ops.fusedrnn
    x, h0, c0 = torch.randn(T, N, H), torch.zeros(N, H), torch.zeros(N, H)
    w_ih, w_hh, bias = torch.randn(4 * H, H) * 0.05, torch.randn(4 * H, H) * 0.05, torch.zeros(4 * H)
    y, _, _, saved = op.layer_forward("LSTM", x, h0, c0, w_ih, w_hh, bias, bias, None, False, True)
    grad_y, zeros = torch.randn(T, N, H), torch.zeros(N, H)
    reference = torch.nn.LSTM(H, H)
    x_ref = x.clone().requires_grad_(True)
    y_ref, _ = reference(x_ref)
    dg, h_prev = torch.randn(T * N, 4 * H), torch.randn(T * N, H)

    rows = {
        "our backward": lambda: op.layer_backward("LSTM", grad_y, zeros, zeros, x, h0, c0, w_ih, w_hh, None, y, saved,
                                                  False, True),  # fmt: skip
        "torch.nn backward": lambda: torch.autograd.grad(y_ref, [x_ref, *reference.parameters()], grad_y,
                                                         retain_graph=True),  # fmt: skip
        "its 3 GEMMs": lambda: (torch.mm(dg.t(), h_prev), torch.mm(dg.t(), h_prev), torch.mm(dg, w_hh)),
        "our forward, saving": lambda: op.layer_forward("LSTM", x, h0, c0, w_ih, w_hh, bias, bias, None, False, True),
    }
    times = {name: [] for name in rows}
    for function in rows.values():
        function()  # warm-up
    for round_index in range(args.rounds):
        order = list(rows.items())
        for name, function in order if round_index % 2 == 0 else reversed(order):
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    gemm_flops = 2 * T * N * 4 * H * H  # one of the GEMMs, and the recurrence's dg W_hh over the sequence
    print(f"T={T} N={N} I=H={H}, {args.threads} threads: wall ms, median of {args.rounds} interleaved rounds")
    for name, value in median.items():
        print(f"  {name}: {value * 1e3:.1f}")
    recurrence = median["our backward"] - median["its 3 GEMMs"]
    print(f"  recurrence (our backward - its 3 GEMMs): {recurrence * 1e3:.1f} ms, {gemm_flops / recurrence / 1e9:.0f} "
          f"GFLOP/s; the GEMMs {3 * gemm_flops / median['its 3 GEMMs'] / 1e9:.0f} GFLOP/s; torch.nn / ours backward "
          f"{median['torch.nn backward'] / median['our backward']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
