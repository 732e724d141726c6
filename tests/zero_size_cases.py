"""Zero sizes (hidden_size=0 cells, input_size=0, batch 0, an empty sequence) on torch.nn and on fusedrnn.

Run as a script, `python zero_size_cases.py BACKEND DTYPE [DEVICE]` (e.g. `cpu float64`), it runs every case on torch.nn and
on fusedrnn with BACKEND in DTYPE and
prints one JSON line per case: {"case": id, "problem": null or what differs, "unsupported": why the forced
backend refuses this configuration at any size, if it does}. test_dropin.py runs it in a child process,
so a case that crashes the process (e.g. SIGFPE from a division by zero) fails those tests instead of killing pytest.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

import fusedrnn
from parity import TOLERANCES, forward_backward, leaf

#: id -> (fusedrnn class, torch.nn class, extra constructor arguments)
CLASSES = {
    "lstm_cell": (fusedrnn.LSTMCell, nn.LSTMCell, {}),
    "gru_cell": (fusedrnn.GRUCell, nn.GRUCell, {}),
    "rnn_cell": (fusedrnn.RNNCell, nn.RNNCell, {}),
    "lstm": (fusedrnn.LSTM, nn.LSTM, {}),
    "lstm_proj": (fusedrnn.LSTM, nn.LSTM, {"proj_size": 2}),
    "gru": (fusedrnn.GRU, nn.GRU, {}),
    "rnn_relu": (fusedrnn.RNN, nn.RNN, {"nonlinearity": "relu"}),
}
CELL_CLASSES = ("lstm_cell", "gru_cell", "rnn_cell")


@dataclass(frozen=True)
class Sizes:
    input_size: int = 3
    hidden_size: int = 4
    batch: int = 2  # -1: unbatched input
    seq_len: int = 3  # layers only
    with_state: bool = True
    layer_args: dict = field(default_factory=dict)  # num_layers, bidirectional, batch_first (layers only)


CELL_SIZES = {
    "hidden0": Sizes(hidden_size=0),
    "hidden0_no_state": Sizes(hidden_size=0, with_state=False),
    "hidden0_unbatched": Sizes(hidden_size=0, batch=-1),
    "input0": Sizes(input_size=0),
    "batch0": Sizes(batch=0),
    "batch0_no_state": Sizes(batch=0, with_state=False),
}
LAYER_SIZES = {
    "batch0": Sizes(batch=0),
    "batch0_no_state": Sizes(batch=0, with_state=False),
    "batch0_2layers_bidir": Sizes(batch=0, layer_args={"num_layers": 2, "bidirectional": True}),
    "batch0_batch_first": Sizes(batch=0, layer_args={"batch_first": True}),
    "seq0": Sizes(seq_len=0),
    "hidden0": Sizes(hidden_size=0),  # torch.nn's constructor refuses it
    "input0": Sizes(input_size=0),
}
CASES = {
    f"{name}-{size_id}": (name, sizes)
    for name in CLASSES
    for size_id, sizes in (CELL_SIZES if name in CELL_CLASSES else LAYER_SIZES).items()
}


def make_inputs(name: str, sizes: Sizes, dtype: torch.dtype, device: str = "cpu") -> Callable:
    is_cell = name in CELL_CLASSES
    is_lstm = name.startswith("lstm")
    out_size = CLASSES[name][2].get("proj_size") or sizes.hidden_size
    generator = torch.Generator().manual_seed(0)
    batch = () if sizes.batch < 0 else (sizes.batch,)
    if is_cell:
        x_shape, h_shape, c_shape = (*batch, sizes.input_size), (*batch, out_size), (*batch, sizes.hidden_size)
    else:
        layers = sizes.layer_args.get("num_layers", 1) * (2 if sizes.layer_args.get("bidirectional") else 1)
        time_batch = (*batch, sizes.seq_len) if sizes.layer_args.get("batch_first") else (sizes.seq_len, *batch)
        x_shape = (*time_batch, sizes.input_size)
        h_shape, c_shape = (layers, *batch, out_size), (layers, *batch, sizes.hidden_size)
    values = [torch.randn(shape, generator=generator, dtype=dtype).to(device) for shape in (x_shape, h_shape, c_shape)]

    def inputs():
        x, h, c = (leaf(v) for v in values)
        leaves = {"input": x}
        if not sizes.with_state:
            return (x,), leaves
        leaves["h"] = h
        if is_lstm:
            leaves["c"] = c
        return (x, (h, c) if is_lstm else h), leaves

    return inputs


class Unsupported(Exception):
    """The forced backend does not serve this configuration at any size (fusedrnn.BackendError says why)."""


def outcome(build: Callable[[], nn.Module], inputs: Callable) -> dict | str:
    """Every output and gradient of a forward and backward, or the exception's type name."""
    try:
        return forward_backward(build(), inputs)
    except fusedrnn.BackendError as error:
        raise Unsupported(str(error)) from error
    except Exception as error:  # noqa: BLE001 - the exception type is the outcome compared with torch.nn's
        return type(error).__name__


def compare(actual: dict | str, expected: dict | str, dtype: torch.dtype) -> str | None:
    if isinstance(expected, str) or isinstance(actual, str):
        return None if actual == expected else f"fusedrnn gave {_show(actual)}, torch.nn {_show(expected)}"
    if actual.keys() != expected.keys():
        return f"different results: {sorted(actual)} vs {sorted(expected)}"
    for key, e in expected.items():
        a = actual[key]
        if (a is None) != (e is None):
            return f"{key}: present in only one of the two runs"
        if e is None:
            continue
        try:
            torch.testing.assert_close(a, e, **TOLERANCES[dtype])
        except AssertionError as error:
            return f"{key}: {error}"
    return None


def _show(result: dict | str) -> str:
    return result if isinstance(result, str) else "results of shapes " + str(
        {k: None if v is None else tuple(v.shape) for k, v in result.items()}
    )


def run_case(case_id: str, backend: str, dtype: torch.dtype, device: str = "cpu") -> str | None:
    """None when fusedrnn has torch.nn's outcome (both on `device`), else what differs; raises Unsupported."""
    name, sizes = CASES[case_id]
    fused_cls, torch_cls, extra = CLASSES[name]
    kwargs = dict(extra, dtype=dtype, **({} if name in CELL_CLASSES else sizes.layer_args))
    args = (sizes.input_size, sizes.hidden_size)

    def build_torch():
        torch.manual_seed(0)
        return torch_cls(*args, **kwargs).to(device)

    def build_fused():
        module = fused_cls(*args, **kwargs, backend=backend).to(device)
        module.load_state_dict(build_torch().state_dict())
        return module

    inputs = make_inputs(name, sizes, dtype, device)
    return compare(outcome(build_fused, inputs), outcome(build_torch, inputs), dtype)


if __name__ == "__main__":
    backend, dtype = sys.argv[1], getattr(torch, sys.argv[2])
    device = sys.argv[3] if len(sys.argv) > 3 else "cpu"
    for case in CASES:
        try:
            report = {"case": case, "problem": run_case(case, backend, dtype, device)}
        except Unsupported as error:
            report = {"case": case, "problem": None, "unsupported": str(error)}
        print(json.dumps(report), flush=True)
