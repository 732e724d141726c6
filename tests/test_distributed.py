"""Distributed training on the CPU: DistributedDataParallel and FSDP2 (`fully_shard`) over gloo, 2 processes.

One spawn runs every scenario (a torch.nn model, then the same model swapped to fusedrnn under `auto` and under
each backend forced) for a few SGD steps on rank-specific data; the tests then compare each fusedrnn run with the
torch.nn run in the same dtype: losses, final parameters and last gradients, and that both ranks hold the same
parameters.
"""

from __future__ import annotations

import datetime
import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from cpu_backends import cpu_backends
from parity import TOLERANCES
from torch import nn

import fusedrnn

WORLD_SIZE = 2
STEPS = 3
SPAWN_TIMEOUT_S = 300  # every scenario, both processes, under the Triton interpreter too; ~30 s on a quiet machine
COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=120)  # a lost peer raises instead of hanging
INPUT_SIZE, HIDDEN_SIZE, SEQ_LEN, BATCH = 3, 5, 4, 2
TORCH_NN = "torch.nn"


def fsdp2_unavailable_reason() -> str | None:
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError as error:
        return f"this torch has no FSDP2 (torch.distributed.fsdp.fully_shard): {error}"
    return None


WRAPPERS = ["ddp"] + (["fsdp2"] if fsdp2_unavailable_reason() is None else [])


class Net(nn.Module):
    def __init__(self, dtype):
        super().__init__()
        self.lstm = nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, batch_first=True, dtype=dtype)
        self.cell = nn.GRUCell(HIDDEN_SIZE, HIDDEN_SIZE, dtype=dtype)
        self.head = nn.Linear(HIDDEN_SIZE, 1, dtype=dtype)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.head(self.cell(y[:, -1]))


def wrap(model: Net, wrapper: str) -> nn.Module:
    if wrapper == "ddp":
        return nn.parallel.DistributedDataParallel(model)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (WORLD_SIZE,))
    for layer in (model.lstm, model.cell):
        fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor: FSDP2 keeps a DTensor shard on each rank."""
    return (tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor).detach().clone()


def train(wrapper: str, kind: str, dtype: torch.dtype, rank: int) -> dict:
    torch.manual_seed(0)  # the same initial weights on every rank and for every kind
    model = Net(dtype)
    if kind != TORCH_NN:
        fusedrnn.replace_rnns(model, backend=kind)
    model = wrap(model, wrapper)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for step in range(STEPS):
        generator = torch.Generator().manual_seed(1000 * rank + step)  # each rank its own data
        x = torch.randn(BATCH, SEQ_LEN, INPUT_SIZE, generator=generator, dtype=dtype)
        target = torch.randn(BATCH, 1, generator=generator, dtype=dtype)
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    named = list(model.named_parameters())
    return {
        "losses": torch.stack(losses),
        "params": {name.removeprefix("module."): full(p) for name, p in named},
        "grads": {name.removeprefix("module."): full(p.grad) for name, p in named},
    }


def scenarios() -> list[tuple[str, str, torch.dtype]]:
    """(wrapper, torch.nn or backend name, dtype): torch.nn in every dtype a backend is compared in."""
    backends = [(name, dtype) for name, dtype, reason in cpu_backends() if reason is None]
    dtypes = sorted({dtype for _, dtype in backends}, key=str)
    kinds = [(TORCH_NN, dtype) for dtype in dtypes] + backends
    return [(wrapper, kind, dtype) for wrapper in WRAPPERS for kind, dtype in kinds]


def worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)  # two processes on a shared 2-core machine
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE, timeout=COLLECTIVE_TIMEOUT
    )
    try:
        results = {scenario: train(*scenario, rank) for scenario in scenarios()}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> list[dict]:
    """Every scenario's results per rank, from one spawn of WORLD_SIZE processes."""
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available in this torch build")
    out_dir = tmp_path_factory.mktemp("distributed")
    context = mp.start_processes(
        worker, args=(str(out_dir / "init"), str(out_dir)), nprocs=WORLD_SIZE, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    while not context.join(timeout=max(deadline - time.monotonic(), 0)):  # raises if a worker failed
        if time.monotonic() >= deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"distributed workers did not finish within {SPAWN_TIMEOUT_S} s")
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]


def compared(wrapper: str):
    return [
        pytest.param(wrapper, kind, dtype, id=f"{wrapper}-{kind}")
        for scenario_wrapper, kind, dtype in scenarios()
        if scenario_wrapper == wrapper and kind != TORCH_NN
    ]


def check_against_torch_nn(results: list[dict], wrapper: str, backend: str, dtype: torch.dtype) -> None:
    for rank, by_scenario in enumerate(results):
        actual, expected = by_scenario[(wrapper, backend, dtype)], by_scenario[(wrapper, TORCH_NN, dtype)]
        for what in ("losses", "params", "grads"):
            torch.testing.assert_close(
                actual[what], expected[what], **TOLERANCES[dtype], msg=lambda m, w=what, r=rank: f"rank {r} {w}: {m}"
            )
    # Data differ per rank but the replicas must agree: the gradients were averaged across ranks.
    first, second = (by_scenario[(wrapper, backend, dtype)] for by_scenario in results)
    torch.testing.assert_close(first["params"], second["params"], rtol=0, atol=0)
    assert not torch.equal(first["losses"], second["losses"]), "the ranks must have seen different data"


@pytest.mark.parametrize(("wrapper", "backend", "dtype"), compared("ddp"))
def test_ddp_over_gloo_trains_like_torch_nn(results, wrapper, backend, dtype):
    check_against_torch_nn(results, wrapper, backend, dtype)


@pytest.mark.skipif(fsdp2_unavailable_reason() is not None, reason=str(fsdp2_unavailable_reason()))
@pytest.mark.parametrize(("wrapper", "backend", "dtype"), compared("fsdp2"))
def test_fsdp2_fully_shard_over_gloo_trains_like_torch_nn(results, wrapper, backend, dtype):
    check_against_torch_nn(results, wrapper, backend, dtype)
