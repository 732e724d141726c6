"""The `cuda` backend's IndRNN planner (csrc/indrnn_plan.h through torch.ops.fusedrnn.cuda_indrnn_plan), on the CPU:
which IndRNN layer directions run as one whole-sequence kernel, and a reason for every refusal."""

from __future__ import annotations

import pytest

from fusedrnn import registry
from fusedrnn.backends.native import cuda_indrnn_plan

pytestmark = pytest.mark.skipif(
    registry.get_backend("cpu").unavailable_reason() is not None, reason="the compiled extension is not available"
)

#: csrc/indrnn_plan.h's launch limits, restated: threads per block and the grid's x dimension.
THREADS, MAX_BLOCKS = 256, 2**31 - 1


@pytest.mark.parametrize("mode", ["INDRNN_TANH", "INDRNN_RELU"])
@pytest.mark.parametrize("batch, hidden", [(1, 1), (3, 37), (64, 512), (4096, 4096), (1, MAX_BLOCKS * THREADS)])
def test_indrnn_runs_as_one_sequence_kernel(mode, batch, hidden):
    plan = cuda_indrnn_plan(mode, batch, hidden)
    assert plan.sequence and plan.path == "sequence" and plan.reason == "", plan


#: (id, arguments, keyword arguments, words of the reason)
REFUSED = [
    ("lstm", ("LSTM", 16, 256), {}, "not IndRNN"),
    ("gru", ("GRU", 16, 256), {}, "not IndRNN"),
    ("elman", ("RNN_TANH", 16, 256), {}, "not IndRNN"),
    ("forced_loop", ("INDRNN_RELU", 16, 256), {"tune": "path=loop"}, "path=loop"),
    ("empty_batch", ("INDRNN_TANH", 0, 256), {}, "nothing to launch"),
    ("empty_hidden", ("INDRNN_TANH", 16, 0), {}, "nothing to launch"),
    ("grid_too_big", ("INDRNN_TANH", 1, MAX_BLOCKS * THREADS + 1), {}, "blocks of 256"),
    ("grid_too_big_product", ("INDRNN_TANH", 2**31, 2**10), {}, "blocks of 256"),
]


@pytest.mark.parametrize(("name", "args", "kwargs", "words"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refusals_say_why(name, args, kwargs, words):
    plan = cuda_indrnn_plan(*args, **kwargs)
    assert plan.path == "loop" and not plan.sequence
    assert words in plan.reason, plan.reason


@pytest.mark.parametrize("tune", ["path=persistent", "path=step", "ctas=8,threads=128"])
def test_other_tuning_leaves_indrnn_on_the_sequence_kernel(tune):
    """Only path=loop concerns IndRNN: the persistent kernels' settings have nothing to tune here."""
    assert cuda_indrnn_plan("INDRNN_RELU", 8, 64, tune=tune).sequence


def test_bad_tuning_is_a_value_error():
    with pytest.raises(ValueError, match="path=sideways"):
        cuda_indrnn_plan("INDRNN_RELU", 8, 64, tune="path=sideways")


def test_unknown_mode_is_a_value_error():
    with pytest.raises(ValueError, match="unknown mode"):
        cuda_indrnn_plan("INDRNN_SIGMOID", 8, 64)


def test_plans_are_pure():
    assert cuda_indrnn_plan("INDRNN_TANH", 5, 9) == cuda_indrnn_plan("INDRNN_TANH", 5, 9)
