"""The benchmark CLI itself: argument parsing, usage errors, the JSON/CSV/markdown/plot outputs, and the correctness
gate (a deliberately wrong backend must be flagged). Tiny shapes, one repetition, no timing assertions."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from fusedrnn import registry
from fusedrnn.bench import cli, heads
from fusedrnn.bench.configs import PRESETS, Shape, build_configs, validate_shape
from fusedrnn.bench.report import CSV_FIELDS, SCHEMA
from fusedrnn.registry import Backend

#: A run small enough for a test: every row runs once after the check, on CPU.
TINY = ["--device", "cpu", "--seq-len", "3", "--batch", "2", "--input-size", "4", "--hidden-size", "5"]
FAST = ["--warmup", "0", "--repeat", "1"]
ROWS = ["--backends", "torch.nn,fusedrnn:reference"]


def run_cli(tmp_path, *args: str) -> tuple[int, dict]:
    """Run main() with `args` plus --json; return the exit status and the JSON document."""
    path = tmp_path / "run.json"
    status = cli.main([*args, "--json", str(path)])
    return status, json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------------------------
# Parsing


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_defaults_are_the_quick_preset(device_type):
    args = cli.build_parser().parse_args([])
    assert (args.preset, args.mode, args.dtype, args.device) == ("quick", "both", None, "auto")
    configs = build_configs(args.preset, None, ["inference", "training"], args.dtype, {}, device_type)
    assert {c.cell for c in configs} == set(PRESETS["quick"].cells)
    assert {c.shape for c in configs} == set(PRESETS["quick"].shapes)
    assert {c.dtype for c in configs} == {"float32"}  # --dtype's default where the preset names none
    assert len(configs) == len(PRESETS["quick"].cells) * 2


def test_flags_override_every_shape_of_a_preset():
    overrides = {"seq_len": 7, "batch": None, "bidirectional": True}
    configs = build_configs("sweep", ["gru"], ["training"], "float64", overrides)
    assert {c.shape.seq_len for c in configs} == {7}
    assert all(c.shape.bidirectional for c in configs)
    assert {c.shape.batch for c in configs} == {s.batch for s in PRESETS["sweep"].shapes}
    assert {(c.cell, c.mode, c.dtype) for c in configs} == {("gru", "training", "float64")}


def test_overrides_that_collapse_a_sweep_deduplicate_shapes():
    configs = build_configs("sweep", ["lstm"], ["inference"], "float32", {"batch": 3, "hidden_size": 8})
    assert [c.shape for c in configs] == [Shape(100, 3, 128, 8), Shape(100, 3, 256, 8), Shape(100, 3, 512, 8)]


@pytest.mark.parametrize(
    "preset, shape",
    [
        ("fastrnns", Shape(100, 64, 512, 512)),
        ("flashrnn", Shape(1024, 16, 768, 768)),
        ("latency", Shape(1000, 1, 256, 256)),
    ],
    ids=["fastrnns", "flashrnn", "latency"],
)
def test_published_presets(preset, shape):
    assert PRESETS[preset].shapes == (shape,)
    assert shape in PRESETS["targets"].shapes  # the tuning sweep's shapes


BAD_ARGUMENTS = {
    "zero-batch": ["--batch", "0"],
    "text-seq-len": ["--seq-len", "ten"],
    "negative-proj": ["--proj-size", "-1"],
    "unknown-cell": ["--cell", "transformer"],
    "unknown-dtype": ["--dtype", "int8"],
    "unknown-preset": ["--preset", "huge"],
    "unknown-mode": ["--mode", "eval"],
    "unknown-row": ["--backends", "torch.nn,nonsense"],
    "proj-on-gru": ["--cell", "gru", "--proj-size", "2"],
    "proj-not-smaller": ["--cell", "lstm", "--hidden-size", "8", "--proj-size", "8"],
    "cells-with-layers": ["--preset", "cells", "--layers", "2"],
    "unknown-flag": ["--fast"],
}


@pytest.mark.parametrize("argv", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_bad_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert "usage: fusedrnn-bench" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_a_gpu_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--device", "cuda"])
    assert exit_info.value.code == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_plot_without_matplotlib_is_a_usage_error(monkeypatch, capsys, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "matplotlib" else real_find_spec(name)
    )
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*TINY, "--plot", str(tmp_path / "p.png")])
    assert exit_info.value.code == 2
    assert "fusedrnn[plot]" in capsys.readouterr().err


def test_module_entry_point_reports_usage_errors():
    command = [sys.executable, "-m", "fusedrnn.bench", "--batch", "0"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "usage: fusedrnn-bench" in done.stderr


def test_list_shows_every_registered_backend(capsys):
    assert cli.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in [
        "torch.nn",
        "compile:reference",
        "flashrnn",
        "haste",
        *(f"fusedrnn:{n}" for n in registry.backend_names()),
    ]:
        assert name in out


# ---------------------------------------------------------------------------------------------------------------
# Outputs


def test_json_records_environment_config_and_every_row(tmp_path):
    status, doc = run_cli(tmp_path, *TINY, *FAST, *ROWS, "--cell", "lstm", "rnn_relu", "--layers", "2")
    assert status == 0
    assert doc["schema"] == SCHEMA
    assert doc["command"].startswith("fusedrnn-bench ") and "--layers 2" in doc["command"]
    env = doc["environment"]
    for key in ("device", "device_name", "torch", "triton", "cuda", "python", "backends", "torch_threads"):
        assert key in env
    assert env["device"] == "cpu" and env["torch"] == torch.__version__
    assert doc["settings"]["repeat"] == 1 and doc["settings"]["memory_method"]
    assert doc["skipped_rows"] == []  # both requested rows run everywhere
    # 2 cells x 2 modes x 2 rows, in order, each complete.
    assert len(doc["results"]) == 8
    for record in doc["results"]:
        assert record["config"]["layers"] == 2 and record["config"]["seq_len"] == 3
        assert record["status"] == "ok", record
        assert record["check"]["passed"]
        assert set(record["time_ms"]) == {"median", "min", "max", "all"} and len(record["time_ms"]["all"]) == 1
        assert record["throughput_per_s"] > 0 and record["speedup_vs_torch"] > 0
        assert record["peak_memory_bytes"] >= 0
    for record in doc["results"]:
        # y, h_n (+ c_n); when training also the gradients of x, h0 (+ c0) and of all 2 layers x 4 parameters.
        states = 2 if record["config"]["cell"] == "lstm" else 1
        compared = 1 + states + (1 + states + 8 if record["config"]["mode"] == "training" else 0)
        assert record["check"]["compared"] == compared, record["label"]


def test_cells_preset_steps_torch_nn_and_fusedrnn_cells(tmp_path):
    """--preset cells: a pytorch/examples-style loop of LSTMCell/GRUCell steps, every row checked against torch.nn's."""
    status, doc = run_cli(tmp_path, "--preset", "cells", *TINY, *FAST, "--dtype", "float64",
                          "--backends", "torch.nn,fusedrnn:reference,fusedrnn:torch")  # fmt: skip
    assert status == 0
    assert {r["config"]["cell"] for r in doc["results"]} == {"lstm", "gru"}
    for record in doc["results"]:
        assert record["config"]["step_by_step"] and record["status"] == "ok", record
        assert "cells" in record["label"]


def test_decode_preset_steps_a_two_cell_decoder_against_torch_nn(tmp_path):
    """--preset decode (issue 24): Tacotron 2's two stepped cells, both cells' gradients checked against torch.nn's;
    every fusedrnn backend on this machine as a row, interleaved with torch.nn (the runner's repetitions)."""
    status, doc = run_cli(tmp_path, "--preset", "decode", *TINY, *FAST, "--dtype", "float64",
                          "--backends", "torch.nn,fusedrnn:auto,fusedrnn:reference,fusedrnn:torch")  # fmt: skip
    assert status == 0
    assert {r["config"]["cell"] for r in doc["results"]} == {"lstm", "gru"}
    assert {r["config"]["batch"] for r in doc["results"]} == {2}, "--batch overrides both of the preset's batches"
    for record in doc["results"]:
        assert record["config"]["decoder"] and record["status"] == "ok", record
        assert "decoder" in record["label"]
        states = 2 if record["config"]["cell"] == "lstm" else 1
        # y, cell2's state; training: the gradients of x, h0 (+ c0) and of both cells' 4 parameters.
        compared = 1 + states + (1 + states + 8 if record["config"]["mode"] == "training" else 0)
        assert record["check"]["compared"] == compared, record["label"]


def test_decode_preset_shapes():
    configs = build_configs("decode", None, ["inference"], "float32", {})
    assert {(c.cell, c.shape.seq_len, c.shape.batch, c.shape.input_size, c.shape.hidden_size) for c in configs} == {
        (cell, 200, n, 768, 1024) for cell in ("lstm", "gru") for n in (1, 8)
    }
    assert all(c.shape.decoder and validate_shape(c.shape, c.cell) is None for c in configs)
    assert "decode" in validate_shape(dataclasses.replace(configs[0].shape, layers=2), "lstm")


def test_json_records_kernel_choices_and_tf32(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSEDRNN_TRITON_TUNE", "warps=4")
    _, doc = run_cli(tmp_path, *TINY, *FAST, *ROWS, "--cell", "gru", "--mode", "inference")
    assert doc["complete"] is True
    assert doc["settings"]["fusedrnn_environment"]["FUSEDRNN_TRITON_TUNE"] == "warps=4"
    assert set(doc["settings"]["tf32"]) == {"cuda.matmul.allow_tf32", "cudnn.allow_tf32", "float32_matmul_precision"}


def test_json_is_written_after_every_config(tmp_path, monkeypatch):
    """A run stopped part-way (here: the second config raises) keeps the first config's results on disk."""
    real_run_config = cli.run_config
    calls = []

    def stop_at_second(config, *args, **kwargs):
        calls.append(config)
        if len(calls) == 2:
            raise KeyboardInterrupt("stopped by the step's time limit")
        return real_run_config(config, *args, **kwargs)

    monkeypatch.setattr(cli, "run_config", stop_at_second)
    path = tmp_path / "run.json"
    with pytest.raises(KeyboardInterrupt):
        cli.main([*TINY, *FAST, *ROWS, "--cell", "lstm", "gru", "--mode", "inference", "--json", str(path)])
    doc = json.loads(path.read_text())
    assert doc["complete"] is False
    assert {r["config"]["cell"] for r in doc["results"]} == {"lstm"} and len(doc["results"]) == 2


def test_every_available_backend_is_a_row_and_the_rest_are_noted(tmp_path):
    status, doc = run_cli(tmp_path, *TINY, *FAST, "--cell", "rnn_tanh", "--mode", "inference")
    assert status == 0
    expected = ["torch.nn", "fusedrnn:auto", *(f"fusedrnn:{name}" for name in registry.available_backends())]
    assert [r["row"] for r in doc["results"]][: len(expected)] == expected
    skipped = {item["row"]: item["reason"] for item in doc["skipped_rows"]}
    assert "--compile" in skipped["compile:reference"]
    unavailable = {f"fusedrnn:{n}" for n, reason in registry.availability().items() if reason is not None}
    assert unavailable <= skipped.keys()
    ran = {r["row"] for r in doc["results"]}
    assert ran.isdisjoint(skipped) and ran | skipped.keys() >= {"flashrnn", "haste", *unavailable}


def test_csv_markdown_and_plot_files(tmp_path):
    pytest.importorskip("matplotlib")
    paths = {kind: tmp_path / f"out.{kind}" for kind in ("csv", "markdown", "plot")}
    status = cli.main([*TINY, *FAST, *ROWS, "--cell", "gru", "--csv", str(paths["csv"]),
                       "--markdown", str(paths["markdown"]), "--plot", str(paths["plot"])])  # fmt: skip
    assert status == 0
    with paths["csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows and list(rows[0]) == CSV_FIELDS and len(rows) == 4
    assert {r["row"] for r in rows} == {"torch.nn", "fusedrnn:reference"} and rows[0]["device"] == "cpu"
    markdown = paths["markdown"].read_text()
    assert "| fusedrnn:reference |" in markdown and "gru T=3 N=2 I=4 H=5 float32 inference" in markdown
    assert paths["plot"].read_bytes().startswith(b"\x89PNG")


def test_sweep_plot_draws_time_against_the_swept_axis(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "sweep.png"
    status = cli.main(["--preset", "sweep", "--device", "cpu", "--seq-len", "2", "--hidden-size", "3",
                       "--input-size", "3", "--mode", "inference", *FAST, *ROWS, "--plot", str(path)])  # fmt: skip
    assert status == 0 and path.read_bytes().startswith(b"\x89PNG")


# ---------------------------------------------------------------------------------------------------------------
# The correctness gate, with fake backends registered for the test only


class PerturbedBackend(Backend):
    """torch's kernels with a deliberate error: in the outputs, or only in the gradients (forward values exact)."""

    summary = "test double: torch with a deliberate error"

    def __init__(self, name: str, where: str, size: float = 1e-2):
        self.name, self.where, self.size = name, where, size

    def run(self, call, x, lengths, hx, cx, weights, dropout):
        y, h_n, c_n = registry.get_backend("torch").run(call, x, lengths, hx, cx, weights, dropout)
        if self.where == "output":
            return y + self.size, h_n, c_n
        # Same values, gradients scaled by 1 + size: only the gradient comparison can notice.
        return y + self.size * (y - y.detach()), h_n, c_n


class BrokenBackend(Backend):
    summary = "test double: raises, or declines every call"

    def __init__(self, name: str, declines: bool):
        self.name, self.declines = name, declines

    def unsupported_reason(self, call):
        return "declines every call (test)" if self.declines else None

    def run(self, call, x, lengths, hx, cx, weights, dropout):
        raise RuntimeError("kernel exploded (test)")


@pytest.fixture
def registered():
    names = []

    def register(backend: Backend) -> str:
        registry.register(backend.name, backend)
        names.append(backend.name)
        return f"fusedrnn:{backend.name}"

    yield register
    for name in names:
        registry.unregister(name)


@pytest.mark.parametrize(
    "where, mode, flagged",
    [("output", "inference", "y"), ("output", "training", "y"), ("gradient", "training", "grad x")],
    ids=["output-inference", "output-training", "gradient-only-training"],
)
def test_a_wrong_backend_is_flagged_as_a_mismatch(tmp_path, registered, where, mode, flagged):
    row = registered(PerturbedBackend("test_perturbed", where))
    status, doc = run_cli(tmp_path, *TINY, *FAST, "--cell", "lstm", "--mode", mode, "--backends", f"torch.nn,{row}")
    assert status == 1
    records = {r["row"]: r for r in doc["results"]}
    assert records["torch.nn"]["status"] == "ok"
    wrong = records[row]
    assert wrong["status"] == "mismatch" and not wrong["check"]["passed"]
    assert flagged in wrong["check"]["failed"] and wrong["check"]["max_abs_err"] > 0
    assert wrong["time_ms"] is not None  # still timed: the table shows the speed next to the failed check


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"], ids=["bfloat16", "float16"])
def test_low_precision_gate_flags_errors_beyond_rounding(tmp_path, registered, dtype):
    """In 16-bit a row may differ from torch.nn by rounding, judged against the float64 truth, but a real error
    (an offset far above either's rounding error) is still a mismatch; the reference loop passes."""
    row = registered(PerturbedBackend("test_offset", "output", size=0.25))
    status, doc = run_cli(tmp_path, *TINY, *FAST, "--dtype", dtype, "--cell", "gru", "--mode", "training",
                          "--backends", f"{row},fusedrnn:reference")  # fmt: skip
    assert status == 1
    records = {r["row"]: r for r in doc["results"]}
    assert records[row]["status"] == "mismatch" and "y" in records[row]["check"]["failed"]
    assert records["fusedrnn:reference"]["status"] == "ok"


def test_gradient_only_error_passes_in_inference(tmp_path, registered):
    row = registered(PerturbedBackend("test_grad_only", "gradient"))
    status, doc = run_cli(tmp_path, *TINY, *FAST, "--cell", "gru", "--mode", "inference", "--backends", row)
    assert status == 0
    assert {r["status"] for r in doc["results"]} == {"ok"}


@pytest.mark.parametrize("declines, expected, exit_status", [(False, "failed", 1), (True, "unsupported", 0)],
                         ids=["raises", "declines"])  # fmt: skip
def test_a_broken_row_is_reported_and_the_others_still_run(tmp_path, registered, declines, expected, exit_status):
    row = registered(BrokenBackend("test_broken", declines))
    status, doc = run_cli(tmp_path, *TINY, *FAST, "--cell", "rnn_tanh", "--mode", "training",
                          "--backends", f"{row},fusedrnn:reference")  # fmt: skip
    assert status == exit_status
    records = {r["row"]: r for r in doc["results"]}
    assert records[row]["status"] == expected and records[row]["time_ms"] is None
    assert ("exploded" if not declines else "declines") in records[row]["note"]
    assert records["fusedrnn:reference"]["status"] == "ok"
    assert records["torch.nn"]["status"] == "ok"  # the baseline always runs, even when not listed


def test_a_failing_torch_compile_is_a_failed_row_not_a_crash(tmp_path, monkeypatch):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler (test)")

    monkeypatch.setattr(torch, "compile", no_compiler)
    status, doc = run_cli(tmp_path, *TINY, *FAST, "--cell", "lstm", "--mode", "inference", "--compile",
                          "--backends", "compile:reference")  # fmt: skip
    assert status == 1
    records = {r["row"]: r for r in doc["results"]}
    assert records["compile:reference"]["status"] == "failed"
    assert "no C++ compiler" in records["compile:reference"]["note"]
    assert records["torch.nn"]["status"] == "ok"


#: The heads preset's rows at a size a test runs in seconds.
TINY_HEADS = heads.HeadsShape(hidden=8, heads=2, seq_len=3, batches=(2,))


def test_heads_preset_runs_and_checks_the_replaced_cell(tmp_path):
    """`--preset heads` at a tiny shape: every row timed, xlstm's and TiRex's cells checked against their fusedrnn
    replacements (when installed), the ratios in the table, FlashRNN's row skipped with its reason where it can't
    run."""
    doc = heads.run(shape=TINY_HEADS, repeat=1)
    names = [record["row"] for record in doc["rows"]]
    assert {"sLSTM:auto", "sLSTM:reference", "LSTM(num_heads):auto", heads.LSTM_ROW} <= set(names)
    assert importlib.util.find_spec("xlstm") is None or {heads.XLSTM_ROW, "fusedrnn:auto"} <= set(names)
    assert heads.COMPILE_XLSTM_ROW not in names  # only with --compile
    assert all("median_ms" in record for record in doc["rows"]), doc["rows"]
    table = heads.markdown(doc)
    assert "| 2 | sLSTM:auto |" in table and "vs torch.nn.LSTM" in table
    assert all(check["passed"] for check in doc["checks"]) and ("fusedrnn:auto vs xlstm:vanilla" in table) == bool(
        importlib.util.find_spec("xlstm"))
    assert cli.build_parser().parse_args(["--preset", "heads"]).preset == heads.PRESET
    # The default device: CUDA when present (every row on it), else the CPU.
    assert doc["shape"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu") == doc["env"]["device"]
    if importlib.util.find_spec("tirex") is None:
        assert any("tirex is not installed" in reason for reason in doc["skipped"])
    else:
        assert {heads.TIREX_ROW, "tirex:fusedrnn:auto"} <= set(names)
        (check,) = [c for c in doc["checks"] if c["row"] == "tirex:fusedrnn:auto"]
        assert check["passed"] and check["against"] == heads.TIREX_ROW and check["rtol"] == 1e-2  # bfloat16's
        assert "tirex:fusedrnn:auto vs tirex:torch" in table and "bfloat16" in table
    if importlib.util.find_spec("flashrnn") is None or not torch.cuda.is_available():
        assert heads.FLASHRNN_ROW not in names
        assert any(heads.FLASHRNN_ROW in reason for reason in doc["skipped"]) and heads.FLASHRNN_ROW in table


def test_heads_tirex_check_fails_a_wrong_replacement(monkeypatch):
    """The TiRex check is not vacuous: a replacement whose forget gates read the wrong bias fails it."""
    pytest.importorskip("tirex")
    from fusedrnn.replace_slstm import TiRexsLSTMCell

    original = TiRexsLSTMCell.fused_weights

    def wrong(self):
        w_hh, bias = original(self)
        return w_hh, bias.roll(1)

    monkeypatch.setattr(TiRexsLSTMCell, "fused_weights", wrong)
    _, (check,) = heads.tirex_rows(TINY_HEADS, 2, torch.float32, torch.device("cpu"), "auto")
    assert not check["passed"] and "MISMATCH" in check["summary"]


def fake_flashrnn(Wx, R, b, states=None, function="lstm", backend="cuda_fused", dtype="bfloat16"):
    """FlashRNN's LSTM as its calling convention documents it (fusedrnn.bench.peers), written out step by step in
    torch: Wx [N, T, G, K, d], R [G, K, d_in, d_out], b [G, K, d], gates i, f, z, o; zero initial states; returns
    (the states' sequences [2, N, T, K, d], the last states)."""
    assert function == "lstm" and states is None
    N, T, _, K, d = Wx.shape
    h = c = Wx.new_zeros(N, K, d)
    hs, cs = [], []
    for t in range(T):
        gates = Wx[:, t] + torch.einsum("nki,gkio->ngko", h, R) + b
        i, f, z, o = gates.unbind(1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(z)
        h = torch.sigmoid(o) * torch.tanh(c)
        hs, cs = [*hs, h], [*cs, c]
    sequences = torch.stack([torch.stack(hs, 1), torch.stack(cs, 1)])
    return sequences, sequences[:, :, -1:]


def test_flashrnn_heads_adapter_maps_the_weights(monkeypatch):
    """FlashRNN is not installed here (it needs CUDA): its multi-head LSTM adapter, against a stand-in written from
    FlashRNN's documented convention, computes what fusedrnn's multi-head LSTM does on the same weights, and its
    gradients reach the layer's own parameters."""
    import types

    module = types.ModuleType("flashrnn")
    module.flashrnn = fake_flashrnn
    monkeypatch.setitem(sys.modules, "flashrnn", module)
    from fusedrnn.bench.peers import flashrnn_lstm_heads

    torch.manual_seed(0)
    layer = heads.LSTM(8, 8, num_heads=2, backend="reference", dtype=torch.float64)
    x = torch.randn(3, 2, 8, dtype=torch.float64, requires_grad=True)
    expected = heads.module_step(layer, x, seed=0)()
    actual = heads.training_step(lambda: flashrnn_lstm_heads(layer, x, "float64"), [x, *layer.parameters()], 0)()
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, want)


def eager_compile(model, **kwargs):
    """torch.compile through Dynamo without Inductor's code generation: what the test can
    afford (Inductor takes ~15 s even at the tiny shape on this project's CPU machine)."""
    return torch._dynamo.optimize("eager")(model)


def test_heads_compile_row(monkeypatch):
    """--compile adds compile(xlstm:vanilla): checked against xlstm's loop, its first call reported apart."""
    pytest.importorskip("xlstm")
    monkeypatch.setattr(torch, "compile", eager_compile)
    doc = heads.run(shape=TINY_HEADS, repeat=1, compile=True)
    records = {record["row"]: record for record in doc["rows"]}
    assert "median_ms" in records[heads.COMPILE_XLSTM_ROW]
    (check,) = [c for c in doc["checks"] if c["row"] == heads.COMPILE_XLSTM_ROW]
    assert check["passed"] and check["against"] == heads.XLSTM_ROW
    (first,) = doc["compile_times"]
    assert first["row"] == heads.COMPILE_XLSTM_ROW and first["first_call_s"] > 0
    assert "compile(xlstm:vanilla)'s first call" in heads.markdown(doc)


def test_heads_failing_compile_is_a_failed_row(monkeypatch):
    pytest.importorskip("xlstm")

    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler (test)")

    monkeypatch.setattr(torch, "compile", no_compiler)
    doc = heads.run(shape=TINY_HEADS, repeat=1, compile=True)
    records = {record["row"]: record for record in doc["rows"]}
    assert "no C++ compiler" in records[heads.COMPILE_XLSTM_ROW]["error"]
    assert "median_ms" in records[heads.XLSTM_ROW] and not doc["compile_times"]


@pytest.mark.parametrize(("flags", "dtype"), [([], torch.float32), (["--dtype", "float64"], torch.float64)],
                         ids=["default_dtype", "float64"])  # fmt: skip
def test_heads_preset_from_the_command_line(flags, dtype, monkeypatch, tmp_path):
    """`fusedrnn-bench --preset heads` reaches heads.run with the dtype asked for, float32 by default (the CLI's
    --dtype is None unless given), on the CLI's device, backend auto and no compile row by default, and writes its
    files."""
    seen, original = [], heads.run

    def run(backend, *, dtype, device, compile):
        seen.append((backend, dtype, device, compile))
        return original(backend, shape=TINY_HEADS, repeat=1, dtype=dtype, device=device, compile=compile)

    monkeypatch.setattr(heads, "run", run)
    out = tmp_path / "heads.md"
    assert cli.main(["--preset", "heads", "--markdown", str(out), *flags]) == 0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert seen == [("auto", dtype, device, False)] and "sLSTM:auto" in out.read_text()


def test_heads_preset_passes_device_backend_and_compile(monkeypatch):
    """--device, --backends (one fusedrnn backend name for this preset) and --compile reach heads.run; a list of
    rows or an unknown name is a usage error."""
    seen = []
    empty = {"rows": [], "checks": []}
    monkeypatch.setattr(heads, "run", lambda backend, **kwargs: seen.append((backend, kwargs)) or empty)
    monkeypatch.setattr(heads, "markdown", lambda doc: "")
    assert cli.main(["--preset", "heads", "--device", "cpu", "--backends", "reference", "--compile"]) == 0
    assert seen == [("reference", {"dtype": torch.float32, "device": torch.device("cpu"), "compile": True})]
    for wrong in ("reference,auto", "nonesuch"):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["--preset", "heads", "--device", "cpu", "--backends", wrong])
        assert exit_info.value.code == 2


def test_heads_backend_that_cannot_serve_is_a_failed_row(monkeypatch):
    """A fused row whose backend raises in its check run (a backend that can't serve the configuration) is reported
    as that row's error, the others still timed: not a crashed run."""
    pytest.importorskip("xlstm")
    module = importlib.import_module("fusedrnn.replace_slstm")  # `fusedrnn.replace_slstm` is the function

    def refuse(*args, **kwargs):
        raise RuntimeError("cannot serve this (test)")

    monkeypatch.setattr(module, "run_cell", refuse)
    doc = heads.run(shape=TINY_HEADS, repeat=1)
    records = {record["row"]: record for record in doc["rows"]}
    assert "cannot serve this" in records["fusedrnn:auto"]["error"]
    assert "median_ms" in records[heads.XLSTM_ROW] and "median_ms" in records["sLSTM:auto"]
    assert not any(check["row"] == "fusedrnn:auto" for check in doc["checks"])
    if importlib.util.find_spec("tirex") is not None:
        assert "cannot serve this" in records["tirex:fusedrnn:auto"]["error"]
