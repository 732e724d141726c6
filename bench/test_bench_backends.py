"""pytest-benchmark functions: every row of `fusedrnn-bench` (torch.nn and each available fusedrnn backend) per cell
and mode, at a small shape, so runs can be saved and compared:

    pytest bench/ --benchmark-only --benchmark-autosave          # saves .benchmarks/<machine>/0001_*.json
    pytest bench/ --benchmark-only --benchmark-compare           # against the latest saved run

Each benchmark first checks the row's outputs (and gradients, in training) against torch.nn on the same weights,
so a wrong kernel never produces a number. New backends appear here once registered and available.
bench/ is not in the pytest testpaths: the test suite and CI do not run these.
"""

from __future__ import annotations

import pytest
import torch

from fusedrnn.bench.check import compare
from fusedrnn.bench.configs import CELLS, MODES, BenchConfig, Shape
from fusedrnn.bench.rows import all_rows, baseline_module, module_runnable
from fusedrnn.bench.runners import make_inputs, step
from fusedrnn.registry import BackendError

#: Small enough that the whole grid runs in about a minute on 2 CPU cores, large enough that a step is not pure
#: Python overhead: T=32 steps of a batch of 8 with 64 features.
SHAPE = Shape(seq_len=32, batch=8, input_size=64, hidden_size=64)
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SEED = 0

ROWS = [row for row in all_rows(include_compile=False) if row.unavailable is None]


@pytest.mark.parametrize("mode", MODES, ids=MODES)
@pytest.mark.parametrize("cell", CELLS, ids=list(CELLS))
@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_step(benchmark, row, cell, mode):
    config = BenchConfig(cell, SHAPE, "float32", mode)
    baseline = baseline_module(config, DEVICE, SEED).train(config.training)
    inputs = make_inputs(config, DEVICE, SEED)
    try:
        runnable = row.build(config, baseline)
        actual = step(runnable, inputs, config.training)
    except BackendError as error:
        pytest.skip(str(error))
    expected = step(module_runnable(baseline), inputs, config.training)
    check = compare(actual, expected, config.torch_dtype)
    assert check.passed, check.summary()

    def run():
        step(runnable, inputs, config.training)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    benchmark.group = f"{cell} {mode}"
    benchmark.extra_info.update(row=row.name, **config.as_dict(), device=DEVICE.type)
    benchmark(run)
