"""`fusedrnn-bench --preset variants` (issue 15): the plain-loop baselines of fusedrnn/bench/variant_peers.py compute
what fusedrnn's variant layers compute (float64, every output and gradient, masks included), and the CLI runs each
variant against its loop, records it and flags a wrong row. Tiny shapes, one repetition, no timing assertions."""

from __future__ import annotations

import signal
import time

import pytest
import torch
from torch import nn

import fusedrnn
from fusedrnn import registry
from fusedrnn.bench import cli, rows, timing
from fusedrnn.bench.configs import VARIANTS, BenchConfig, Shape, build_configs
from fusedrnn.bench.variant_models import MODELS, loop_module
from fusedrnn.bench.variant_peers import LoopRNN
from fusedrnn.registry import Backend
from parity import assert_all_close, forward_backward, leaf
from test_bench_cli import FAST, TINY, run_cli

T, N, I, H = 5, 3, 4, 6
DTYPE = torch.float64
MASK_SEED = 7


def _inputs(lstm: bool):
    """make_inputs for parity.forward_backward: fresh leaves of fixed random x [T, N, I], h0 (and c0) [1, N, H]."""
    generator = torch.Generator().manual_seed(0)
    x, h0, c0 = (torch.randn(shape, generator=generator, dtype=DTYPE) for shape in ((T, N, I), (1, N, H), (1, N, H)))

    def make():
        leaves = {"x": leaf(x), "h0": leaf(h0)}
        if lstm:
            leaves["c0"] = leaf(c0)
            return (leaves["x"], (leaves["h0"], leaves["c0"])), leaves
        return (leaves["x"], leaves["h0"]), leaves

    return make


def _seeded_run(module: nn.Module, make_inputs) -> dict:
    torch.manual_seed(MASK_SEED)  # the same zoneout / DropConnect masks for every module compared
    return forward_backward(module, make_inputs)


def _loop(name: str, training: bool) -> LoopRNN:
    """The variant's loop with seeded weights, layer-norm gains and biases moved off their 1 / 0 initialisation."""
    config = BenchConfig(name, Shape(T, N, I, H), "float64", "training" if training else "inference")
    loop = loop_module(config, torch.device("cpu"), seed=0).train(training)
    with torch.no_grad():
        for param_name, param in loop.named_parameters():
            if param_name.startswith("ln_"):
                param.uniform_(0.5, 1.5)
    return loop


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("name", list(MODELS), ids=list(MODELS))
def test_loop_peer_matches_the_fused_layer(name, backend, training):
    """Same state_dict, same seed: the loop and fusedrnn's layer give the same outputs and gradients (float64)."""
    loop = _loop(name, training)
    variant = MODELS[name]
    fused = getattr(fusedrnn, variant.fused_class)(I, H, **variant.options(), backend=backend, dtype=DTYPE)
    fused.load_state_dict(loop.state_dict())
    fused.train(training)
    make_inputs = _inputs(variant.cell == "lstm")
    assert_all_close(_seeded_run(fused, make_inputs), _seeded_run(loop, make_inputs), DTYPE)


@pytest.mark.parametrize("name", ["lstm_zoneout", "lstm_weight_dropout"])
def test_training_masks_depend_on_the_seed(name):
    """The regularisers really draw masks in training (so the comparison above compares masked runs)."""
    loop = _loop(name, training=True)
    make_inputs = _inputs(lstm=True)
    first = forward_backward(loop, make_inputs)  # drawn from whatever state torch's RNG is in
    again = _seeded_run(loop, make_inputs)
    assert not torch.equal(first["output[0]"], again["output[0]"])


@pytest.mark.parametrize("cell, torch_cls", [("lstm", nn.LSTM), ("gru", nn.GRU)], ids=["lstm", "gru"])
def test_plain_loop_cells_are_torch_nn(cell, torch_cls):
    """Without layer norm or regularisers the loop is torch.nn's LSTM / GRU: its cell math stands on its own."""
    loop = LoopRNN(cell, I, H, dtype=DTYPE)
    expected = torch_cls(I, H, dtype=DTYPE)
    expected.load_state_dict(loop.state_dict())
    make_inputs = _inputs(cell == "lstm")
    assert_all_close(forward_backward(loop, make_inputs), forward_backward(expected, make_inputs), DTYPE)


def test_configs_name_every_variant_model():
    assert VARIANTS.keys() == MODELS.keys()


#: Issue 22's GPU rows: T=100, N in (16, 64) x H in (256, 512, 1024), bf16 and fp32, inference and training.
GPU_SHAPES = {Shape(100, n, h, h) for n in (16, 64) for h in (256, 512, 1024)}


def test_variants_preset_on_cuda_is_the_gpu_grid():
    """On a CUDA device the variants preset measures the issue's grid in both dtypes; on the CPU its one shape in
    float32 (built here without a GPU: build_configs only names the device)."""
    modes = ["inference", "training"]
    on_gpu = build_configs("variants", None, modes, None, {}, "cuda")
    assert {c.shape for c in on_gpu} == GPU_SHAPES
    assert {c.dtype for c in on_gpu} == {"bfloat16", "float32"}
    assert {c.cell for c in on_gpu} == set(MODELS)
    assert len(on_gpu) == len(MODELS) * len(GPU_SHAPES) * 2 * len(modes)  # every combination once
    assert BenchConfig("ln_lstm", Shape(100, 64, 512, 512), "bfloat16", "training") in on_gpu  # the 10x target
    on_cpu = build_configs("variants", None, modes, None, {}, "cpu")
    assert {(c.shape, c.dtype) for c in on_cpu} == {(Shape(100, 16, 256, 256), "float32")}
    forced = build_configs("variants", ["ln_gru"], ["training"], "float16", {"batch": 8}, "cuda")
    assert {(c.shape.batch, c.shape.hidden_size, c.dtype) for c in forced} == {(8, h, "float16") for h in
                                                                                 (256, 512, 1024)}  # fmt: skip


def test_dry_run_lists_the_gpu_rows_without_a_gpu(capsys):
    """--dry-run --device cuda: every config of the GPU grid with its rows (the loop baseline first, torch.compile of
    the loop's step, fusedrnn's auto), and no measurement."""
    status = cli.main(["--preset", "variants", "--device", "cuda", "--dry-run"])
    assert status == 0
    lines = capsys.readouterr().out.splitlines()
    count = len(MODELS) * len(GPU_SHAPES) * 2 * 2
    assert lines[0] == f"{count} configs on cuda"
    configs = [line for line in lines[1:] if not line.strip().startswith("skipped")]
    assert len(configs) == count
    target = next(line for line in configs if "ln_lstm T=100 N=64 I=512 H=512 bfloat16 training" in line)
    listed = target.split(": ", 1)[1].split(", ")
    assert listed[0] == rows.LOOP_BASELINE and {rows.COMPILE_STEP_ROW, rows.AUTO_ROW} <= set(listed)


# ---------------------------------------------------------------------------------------------------------------
# The CLI

#: Rows that need no compiler (torch.compile rows have their own, single-config tests below: they compile for seconds).
NO_COMPILE = ["--backends", f"fusedrnn:auto,fusedrnn:reference,fusedrnn:cpu,{rows.WEIGHT_DROP_ROW}"]


def test_variants_preset_checks_every_variant_against_its_loop(tmp_path):
    status, doc = run_cli(tmp_path, "--preset", "variants", *TINY, *FAST, "--dtype", "float64", *NO_COMPILE)
    assert status == 0
    records = doc["results"]
    assert {r["config"]["cell"] for r in records} == set(MODELS)
    assert {r["config"]["mode"] for r in records} == {"inference", "training"}
    labels = list(dict.fromkeys(r["label"] for r in records))
    assert len(labels) == 2 * len(MODELS)
    for label in labels:
        table = [r for r in records if r["label"] == label]
        assert table[0]["row"] == rows.LOOP_BASELINE and {r["baseline"] for r in table} == {rows.LOOP_BASELINE}
        assert [r["row"] for r in table][:4] == [rows.LOOP_BASELINE, rows.WEIGHT_DROP_ROW, rows.AUTO_ROW,
                                                 "fusedrnn:reference"]  # fmt: skip
        for record in table:
            # The C++ backend may decline a variant (unsupported, with why); torch.nn's LSTM serves only DropConnect.
            if record["row"] != "fusedrnn:cpu" and record["row"] != rows.WEIGHT_DROP_ROW:
                assert record["status"] == "ok", record
            if record["row"] == rows.WEIGHT_DROP_ROW:
                assert record["status"] == ("ok" if record["config"]["cell"] == "lstm_weight_dropout" else
                                            "unsupported"), record  # fmt: skip
            assert record["status"] in ("ok", "unsupported"), record
            assert record["speedup_vs_torch"] is None or record["speedup_vs_torch"] > 0
    training = [r for r in records if r["config"]["mode"] == "training" and r["row"] == "fusedrnn:reference"]
    # y, h_n (+ c_n) and the gradients of x, h0 (+ c0) and of every parameter (LayerNorm gains included) were compared.
    compared = {r["config"]["cell"]: r["check"]["compared"] for r in training}
    assert compared == {"ln_lstm": 3 + 3 + 8, "ln_gru": 2 + 2 + 6, "indrnn": 2 + 2 + 4, "lstm_zoneout": 3 + 3 + 4,
                        "lstm_weight_dropout": 3 + 3 + 4}  # fmt: skip


def test_torch_nn_cells_and_variants_each_get_their_own_baseline(tmp_path):
    status, doc = run_cli(tmp_path, *TINY, *FAST, "--cell", "lstm", "ln_gru", "--mode", "inference",
                          "--backends", "fusedrnn:reference")  # fmt: skip
    assert status == 0
    first = {r["config"]["cell"]: r["row"] for r in reversed(doc["results"])}
    assert first == {"lstm": rows.BASELINE, "ln_gru": rows.LOOP_BASELINE}
    assert {(r["config"]["cell"], r["baseline"]) for r in doc["results"]} == {
        ("lstm", rows.BASELINE), ("ln_gru", rows.LOOP_BASELINE)}  # fmt: skip
    assert all(r["status"] == "ok" for r in doc["results"])


def test_compiled_rows_match_the_loop_masks_included(tmp_path):
    """torch.compile of the step and of the whole loop (which draws the zoneout masks inside the compiled graph:
    fallback_random keeps them eager torch's) give the loop's outputs and gradients. ~20 s of compiling."""
    status, doc = run_cli(tmp_path, *TINY, *FAST, "--cell", "lstm_zoneout", "--mode", "training", "--compile",
                          "--backends", f"{rows.COMPILE_STEP_ROW},{rows.COMPILE_LOOP_ROW}")  # fmt: skip
    records = {r["row"]: r for r in doc["results"]}
    assert status == 0
    for row in (rows.COMPILE_STEP_ROW, rows.COMPILE_LOOP_ROW):
        assert records[row]["status"] == "ok" and records[row]["check"]["compared"] == 3 + 3 + 4, records[row]


def test_compiling_the_loop_past_its_limit_gives_the_row_up(tmp_path, monkeypatch):
    """torch.compile of the unrolled loop takes minutes at real sizes: past COMPILE_LOOP_LIMIT_S the row is declined
    with the reason, and the run goes on (exit 0)."""
    monkeypatch.setattr(rows, "COMPILE_LOOP_LIMIT_S", 1e-3)  # less than any compilation takes, warm caches too
    status, doc = run_cli(tmp_path, *TINY, *FAST, "--cell", "indrnn", "--mode", "inference",
                          "--backends", rows.COMPILE_LOOP_ROW)  # fmt: skip
    records = {r["row"]: r for r in doc["results"]}
    assert status == 0
    assert records[rows.COMPILE_LOOP_ROW]["status"] == "unsupported"
    assert "gave up after 0 s" in records[rows.COMPILE_LOOP_ROW]["note"]
    assert records[rows.LOOP_BASELINE]["status"] == "ok"


def test_time_limit_interrupts_a_long_call_and_none_does_not():
    start = time.perf_counter()
    with pytest.raises(timing.TimeLimitExceeded), timing.time_limit(0.05):
        while time.perf_counter() - start < 10:
            pass
    assert time.perf_counter() - start < 5
    with timing.time_limit(None):
        time.sleep(0.01)


def test_time_limit_keeps_an_outer_alarm_pending():
    """pytest-timeout (and others) arm SIGALRM too: after a time_limit the outer alarm is still armed."""
    if not hasattr(signal, "setitimer"):
        pytest.skip("no interval timers here")
    previous = signal.signal(signal.SIGALRM, lambda *_: None)
    signal.setitimer(signal.ITIMER_REAL, 100.0)
    try:
        with timing.time_limit(5.0):
            pass
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 90.0 < remaining <= 100.0
        with timing.time_limit(500.0):  # the outer alarm comes first: left in place
            assert 90.0 < signal.getitimer(signal.ITIMER_REAL)[0] <= 100.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class OffsetReference(Backend):
    """The reference backend with a deliberate error in y: it serves the variants, so the gate must catch it."""

    summary = "test double: reference plus an offset"
    name = "test_offset_reference"

    def run(self, call, x, lengths, hx, cx, weights, dropout, **zoneout):
        y, h_n, c_n = registry.get_backend("reference").run(call, x, lengths, hx, cx, weights, dropout, **zoneout)
        return y + 1e-2, h_n, c_n


def test_a_wrong_backend_is_flagged_on_a_variant(tmp_path):
    registry.register(OffsetReference.name, OffsetReference())
    try:
        row = f"fusedrnn:{OffsetReference.name}"
        status, doc = run_cli(tmp_path, *TINY, *FAST, "--cell", "ln_lstm", "lstm_zoneout", "--mode", "training",
                              "--backends", row)  # fmt: skip
    finally:
        registry.unregister(OffsetReference.name)
    assert status == 1
    wrong = [r for r in doc["results"] if r["row"] == row]
    assert len(wrong) == 2 and all(r["status"] == "mismatch" and "y" in r["check"]["failed"] for r in wrong)


BAD_ARGUMENTS = {
    "variant-layers": ["--cell", "ln_lstm", "--layers", "2"],
    "variant-bidirectional": ["--preset", "variants", "--bidirectional"],
    "variant-proj": ["--cell", "lstm_zoneout", "--proj-size", "2"],
    "variant-row-for-torch-cells": ["--cell", "lstm", "--backends", "compile:step"],
}


@pytest.mark.parametrize("argv", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_bad_variant_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*TINY, *argv])
    assert exit_info.value.code == 2
    assert "usage: fusedrnn-bench" in capsys.readouterr().err


def test_list_shows_the_variant_rows(capsys):
    assert cli.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in (rows.LOOP_BASELINE, rows.COMPILE_STEP_ROW, rows.COMPILE_LOOP_ROW, rows.AUTO_ROW, *VARIANTS):
        assert name in out
