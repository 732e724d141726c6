"""The GPU round's first stage: one small forward and backward per backend x path x cell x dtype, each judged against
an independent truth, so the cheapest evidence comes first and a hang or a sticky CUDA error costs only what follows.

    python -m fusedrnn.bench.smoke --group {triton,cuda,compile} --out FILE.jsonl [--device cuda|cpu]
    python -m fusedrnn.bench.smoke --summarize FILE.jsonl ...

Each check writes one JSON line as soon as it ends (a stage killed at its limit keeps what it did):
{"group", "check", "backend", "path", "cell", "dtype", "status": "ok" | "MISMATCH" | "error" | "skipped", "err",
"torch_err", "worst", "seconds", "note"}.

The truth is torch.nn in float64 on the CPU with the same (rounded) weights and inputs: it shares no code with fusedrnn.
A check passes when, for every output and gradient, fusedrnn's max abs error against it is at most
TRUTH_ERROR_FACTOR x torch.nn's own error on the device in the same dtype (cuDNN on a GPU) plus FLOOR[dtype], the
rounding noise of one step at magnitude 1 (torch.nn can be exact on a tensor where any other order of sums is not).

Groups (scripts/gpu_check.sh runs them as parallel processes):
  triton   the triton backend, the planner's kernels (every cell x dtype), then the persistent kernels forced (bf16).
  cuda     the cuda backend's paths in order of risk: per step (no barrier), the grid path (a cooperative launch and a
           counter barrier, FUSEDRNN_CUDA_BARRIER_TIMEOUT_MS short), the grid path on one CTA, the cluster path.
  compile  torch.compile of a triton module (forward and backward): on a GPU the ops are triton_ops that Inductor
           traces into (`wrap_triton`), a path the CPU's interpreter never takes (it registers opaque custom ops).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

import fusedrnn

#: fusedrnn's error may be this multiple of torch.nn's (on the device, same dtype) against the float64 truth.
TRUTH_ERROR_FACTOR = 2.0
#: Rounding noise of one step at magnitude 1 in each dtype (a few ulps): the allowance where torch.nn is exact.
FLOOR = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
#: A small shape with partial tiles (H not a multiple of 16, N odd) that still spans several hidden tiles.
SEQ_LEN, BATCH, INPUT_SIZE, HIDDEN_SIZE = 5, 3, 8, 40
#: (cell id, fusedrnn class, torch.nn class, extra constructor arguments)
CELLS = [
    ("lstm", fusedrnn.LSTM, nn.LSTM, {}),
    ("gru", fusedrnn.GRU, nn.GRU, {}),
    ("rnn_tanh", fusedrnn.RNN, nn.RNN, {"nonlinearity": "tanh"}),
    ("rnn_relu", fusedrnn.RNN, nn.RNN, {"nonlinearity": "relu"}),
]
LOW_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
CUDA_TUNE_ENV = "FUSEDRNN_CUDA_TUNE"
TRITON_KERNEL_ENV = "FUSEDRNN_TRITON_KERNEL"


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables for the block (the extension and the Triton planner read them on every call)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def run_module(module: nn.Module, x: Tensor, h0: Tensor, c0: Tensor | None, upstream: list[Tensor]) -> dict:
    """Every output and gradient (x, h0, c0, parameters) of one forward and backward with fixed upstream gradients."""
    module.zero_grad(set_to_none=True)
    x, h0 = x.detach().requires_grad_(), h0.detach().requires_grad_()
    state = h0 if c0 is None else (h0, c0.detach().requires_grad_())
    y, h_n = module(x, state)
    outputs = [y, *(h_n if isinstance(h_n, tuple) else (h_n,))]
    torch.autograd.backward(outputs, [g.to(o) for o, g in zip(outputs, upstream)])
    result = {f"output[{i}]": o.detach() for i, o in enumerate(outputs)}
    result["grad x"], result["grad h0"] = x.grad, h0.grad
    if c0 is not None:
        result["grad c0"] = state[1].grad
    result.update({f"grad {name}": p.grad for name, p in module.named_parameters()})
    return result


def max_error(a: Tensor | None, b: Tensor | None) -> float:
    if a is None or b is None:
        return 0.0 if a is None and b is None else float("inf")
    diff = (a.detach().double().cpu() - b.detach().double().cpu()).abs()
    return float(diff.max()) if diff.numel() else 0.0  # NaN where any element is NaN


def judge(ours: dict, theirs: dict, truth: dict, dtype: torch.dtype) -> dict:
    """status ok/MISMATCH, the worst tensor by its excess over the bound, and the errors there."""
    worst, excess, worst_errors = "", -float("inf"), (0.0, 0.0)
    failed = []
    for key, t in truth.items():
        err, torch_err = max_error(ours.get(key), t), max_error(theirs.get(key), t)
        bound = TRUTH_ERROR_FACTOR * torch_err + FLOOR[dtype]
        over = err - bound if err == err else float("inf")  # NaN fails
        if over > 0:
            failed.append(key)
        if over > excess:
            worst, excess, worst_errors = key, over, (err, torch_err)
    return {"status": "MISMATCH" if failed else "ok", "worst": worst, "err": worst_errors[0],
            "torch_err": worst_errors[1], "note": ", ".join(failed[:3])}  # fmt: skip


def check_layer(cell: tuple, dtype: torch.dtype, device: str, backend: str) -> dict:
    """fusedrnn's `backend` against torch.nn on `device` in `dtype`, both judged against torch.nn in float64 on CPU."""
    _, fused_cls, torch_cls, extra = cell
    torch.manual_seed(0)
    exact = torch_cls(INPUT_SIZE, HIDDEN_SIZE, **extra).double()
    with torch.no_grad():  # round the weights to dtype first, so all three runs share them exactly
        for p in exact.parameters():
            p.copy_(p.to(dtype).double())
    theirs_module = torch_cls(INPUT_SIZE, HIDDEN_SIZE, **extra).to(device, dtype)
    theirs_module.load_state_dict(exact.state_dict())
    ours_module = fused_cls(INPUT_SIZE, HIDDEN_SIZE, **extra, backend=backend).to(device, dtype)
    ours_module.load_state_dict(exact.state_dict())
    generator = torch.Generator().manual_seed(1)
    x, h0, c0 = (torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype).double() for shape in (
        (SEQ_LEN, BATCH, INPUT_SIZE), (1, BATCH, HIDDEN_SIZE), (1, BATCH, HIDDEN_SIZE)))  # fmt: skip
    c0 = c0 if torch_cls is nn.LSTM else None
    shapes = [(SEQ_LEN, BATCH, HIDDEN_SIZE), (1, BATCH, HIDDEN_SIZE), (1, BATCH, HIDDEN_SIZE)][: 2 + (c0 is not None)]
    upstream = [torch.randn(s, generator=generator, dtype=torch.float64).to(dtype).double() for s in shapes]

    def on(t, where, dt):
        return None if t is None else t.to(where, dt)

    truth = run_module(exact, x, h0, c0, upstream)
    theirs = run_module(theirs_module, on(x, device, dtype), on(h0, device, dtype), on(c0, device, dtype), upstream)
    ours = run_module(ours_module, on(x, device, dtype), on(h0, device, dtype), on(c0, device, dtype), upstream)
    if device == "cuda":
        torch.cuda.synchronize()
    return judge(ours, theirs, truth, dtype)


def check_compiled(cls: Callable, device: str, dtype: torch.dtype, compile_backend: str) -> dict:
    """torch.compile(fullgraph) of a triton-backed module, forward and backward, against the same module eager."""
    torch.manual_seed(0)
    module = cls(INPUT_SIZE, HIDDEN_SIZE, backend="triton").to(device, dtype)
    compiled = torch.compile(module, fullgraph=True, backend=compile_backend)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(SEQ_LEN, BATCH, INPUT_SIZE, generator=generator).to(device, dtype)
    results = []
    for run in (module, compiled):
        module.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_()
        y = run(xi)[0]
        y.backward(torch.ones_like(y))
        grads = {f"grad {name}": p.grad for name, p in module.named_parameters()}
        results.append({"y": y.detach(), "grad x": xi.grad, **grads})
    eager, graph = results
    errors = {key: max_error(graph[key], eager[key]) for key in eager}
    worst = max(errors, key=lambda k: (errors[k] != errors[k], errors[k]))
    # The same kernels on the same inputs: only Inductor's own ops around them may round differently.
    passed = all(err <= FLOOR[dtype] for err in errors.values())
    return {"status": "ok" if passed else "MISMATCH", "worst": worst, "err": errors[worst], "torch_err": None,
            "note": "" if passed else f"compiled differs from eager in {worst}"}  # fmt: skip


def triton_checks(device: str) -> Iterator[tuple[dict, Callable[[], dict]]]:
    dtypes = LOW_DTYPES if device == "cuda" else [torch.float32]  # the interpreter runs float32
    for kernel, kernel_dtypes in (("planned", dtypes), ("persistent", dtypes[-1:])):
        env = {} if kernel == "planned" else {TRITON_KERNEL_ENV: kernel}
        for cell in CELLS:
            for dtype in kernel_dtypes:
                meta = {"backend": "triton", "path": kernel, "cell": cell[0], "dtype": str(dtype)[6:]}
                yield meta, lambda cell=cell, dtype=dtype, env=env: _with_env(env, check_layer, cell, dtype, device,
                                                                              "triton")  # fmt: skip


#: The cuda backend's paths, least risky first (FUSEDRNN_CUDA_TUNE): no barrier, the grid barrier, the grid barrier
#: with every hidden unit on one CTA, the cluster barrier (forward passes; backward runs the grid path).
CUDA_PATHS = [
    ("step", "path=step", None),
    ("grid", "path=persistent,cluster=0", None),
    ("grid-ctas1", "path=persistent,cluster=0,ctas=1", ("lstm", "gru")),
    ("cluster", "path=persistent,cluster=4", None),
]


def cuda_checks(device: str) -> Iterator[tuple[dict, Callable[[], dict]]]:
    for path, tune, cells in CUDA_PATHS:
        for cell in CELLS:
            if cells is not None and cell[0] not in cells:
                continue
            for dtype in [*LOW_DTYPES, torch.float64]:
                meta = {"backend": "cuda", "path": path, "cell": cell[0], "dtype": str(dtype)[6:]}
                if device != "cuda":
                    yield meta, lambda: {"status": "skipped", "note": "no CUDA device"}
                    continue
                yield meta, lambda cell=cell, dtype=dtype, tune=tune: _with_env({CUDA_TUNE_ENV: tune}, check_layer,
                                                                               cell, dtype, device, "cuda")  # fmt: skip


def compile_checks(device: str) -> Iterator[tuple[dict, Callable[[], dict]]]:
    # Inductor on a GPU (the triton_op path); aot_eager on CPU, where the interpreter registers opaque custom ops.
    compile_backend = "inductor" if device == "cuda" else "aot_eager"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    for name, cls in (("lstm", fusedrnn.LSTM), ("ln_lstm", fusedrnn.LayerNormLSTM)):
        meta = {"backend": "triton", "path": f"compile-{compile_backend}", "cell": name, "dtype": str(dtype)[6:]}
        yield meta, lambda cls=cls: check_compiled(cls, device, dtype, compile_backend)


def _with_env(env: dict, fn: Callable, *args) -> dict:
    with environment(**env):
        return fn(*args)


GROUPS = {"triton": triton_checks, "cuda": cuda_checks, "compile": compile_checks}


def run_group(group: str, device: str, out: Path) -> int:
    """Run every check of `group`, appending one JSON line each to `out`; returns the number that did not pass."""
    bad = 0
    with out.open("a") as sink:
        for meta, check in GROUPS[group](device):
            start = time.perf_counter()
            try:
                result = check()
            except Exception as error:  # noqa: BLE001 - every failure is a result line, then the next check runs
                result = {"status": "error", "note": f"{type(error).__name__}: {str(error)[:300]}"}
                traceback.print_exc()
            record = {"group": group, **meta, "err": None, "torch_err": None, "worst": "", "note": "", **result,
                      "seconds": round(time.perf_counter() - start, 3)}  # fmt: skip
            bad += record["status"] not in ("ok", "skipped")
            print(json.dumps(record), file=sink, flush=True)
            print(f"{record['status']:8} {group}/{meta['backend']}/{meta['path']}/{meta['cell']}/{meta['dtype']} "
                  f"{record['note']}", flush=True)  # fmt: skip
    return bad


def summarize(files: list[Path]) -> str:
    """Counts per (group, backend, path) and every line that did not pass, compactly (the GPU reply is short)."""
    records = [json.loads(line) for f in files if f.exists() for line in f.read_text().splitlines() if line.strip()]
    counts: dict[tuple, dict[str, int]] = {}
    for r in records:
        key = (r["group"], r["backend"], r["path"])
        counts.setdefault(key, {}).setdefault(r["status"], 0)
        counts[key][r["status"]] += 1
    lines = ["| group | backend | path | results |", "|---|---|---|---|"]
    for (group, backend, path), by_status in counts.items():
        lines.append(f"| {group} | {backend} | {path} | " + ", ".join(f"{n} {s}" for s, n in by_status.items()) + " |")
    failures = [r for r in records if r["status"] not in ("ok", "skipped")]
    for r in failures[:12]:
        err = "" if r.get("err") is None else f" err {r['err']:.1e} vs torch {r.get('torch_err') or 0:.1e}"
        lines.append(f"- {r['status']} {r['backend']}/{r['path']}/{r['cell']}/{r['dtype']}{err}: {r['note'][:120]}")
    if len(failures) > 12:
        lines.append(f"- ... {len(failures) - 12} more in the JSON lines")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusedrnn.bench.smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("--group", choices=GROUPS)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, help="append the JSON lines here")
    parser.add_argument("--summarize", type=Path, nargs="+", metavar="FILE", help="print the summary of these files")
    args = parser.parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return 0
    if args.group is None or args.out is None:
        parser.error("--group and --out are required (or --summarize)")
    return 1 if run_group(args.group, args.device, args.out) else 0


if __name__ == "__main__":
    sys.exit(main())
