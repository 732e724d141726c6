"""The `cuda` backend's planner (csrc/persistent_plan.h through torch.ops.fusedrnn.cuda_plan), on the CPU: which
layers run persistent, which per step on the same fused kernels, which on the GEMM + pointwise loop, with which grid
and tiles, and a reason for every refusal."""

from __future__ import annotations

import itertools

import pytest
import torch

from fusedrnn.backends.native import H100_MAX_CLUSTER, H100_SMEM_PER_BLOCK, H100_SMS, cuda_plan

#: csrc/persistent_plan.h's limits, restated: a plan that breaks them would fail to launch or spill.
MAX_THREADS, TILE_M, TILE_N, TILE_K, MAX_TILES_PER_WARP, MAX_STATES_PER_THREAD, STATIC_SMEM = 256, 16, 8, 16, 4, 4, 32
#: Warps of the default 256 threads: the K-split accumulators hold at most max(warps, output tiles) tiles.
WARPS = 8
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
DTYPES = [torch.bfloat16, torch.float16, torch.float32, torch.float64]

#: (id, mode, batch, hidden, dtype, backward): shapes the persistent path is meant for (README / REFERENCE.md §3).
FITTING = [
    ("lstm_bf16_N16_H768_fwd", "LSTM", 16, 768, torch.bfloat16, False),
    ("lstm_bf16_N16_H768_bwd", "LSTM", 16, 768, torch.bfloat16, True),
    ("lstm_fp16_N64_H512_fwd", "LSTM", 64, 512, torch.float16, False),
    ("lstm_fp16_N64_H512_bwd", "LSTM", 64, 512, torch.float16, True),
    ("lstm_fp32_N1_H256_fwd", "LSTM", 1, 256, torch.float32, False),
    ("gru_fp64_N3_H37_bwd", "GRU", 3, 37, torch.float64, True),
    ("rnn_relu_bf16_N5_H1_fwd", "RNN_RELU", 5, 1, torch.bfloat16, False),
]


@pytest.mark.parametrize(("name", "mode", "batch", "hidden", "dtype", "backward"), FITTING, ids=[f[0] for f in FITTING])
def test_fitting_shapes_are_planned_persistent(name, mode, batch, hidden, dtype, backward):
    plan = cuda_plan(mode, batch, hidden, dtype, backward=backward)
    assert plan.persistent, plan.reason
    tiling = plan.tiling
    assert tiling["ctas"] <= H100_SMS
    assert tiling["smem_bytes"] + STATIC_SMEM <= H100_SMEM_PER_BLOCK
    assert tiling["cluster"] == 0  # no max_cluster given: the grid path


def test_lstm_h768_spreads_over_the_sms():
    """768 units over 132 SMs: 6 units per CTA, 128 CTAs; forward tile rows 4 gates x 6 units, K = H."""
    tiling = cuda_plan("LSTM", 16, 768, torch.bfloat16).tiling
    assert (tiling["ctas"], tiling["units"], tiling["m"], tiling["m_pad"], tiling["k"]) == (128, 6, 24, 32, 768)
    backward = cuda_plan("LSTM", 16, 768, torch.bfloat16, backward=True).tiling
    assert (backward["units"], backward["m"], backward["m_pad"], backward["k"]) == (6, 6, 16, 4 * 768)


#: (id, arguments, keyword arguments, words of the reason)
REFUSED = [
    ("projection", ("LSTM", 4, 64, torch.bfloat16), {"projection": True}, "projection"),
    ("w_hh_too_big", ("LSTM", 16, 4096, torch.float32), {}, "bytes of shared memory per block"),
    ("batch_too_big_for_registers", ("GRU", 2048, 512, torch.bfloat16), {}, "states exceed"),
    ("batch_too_many_tiles", ("RNN_TANH", 512, 64, torch.bfloat16), {"tune": "ctas=32"}, "output tiles"),
    ("not_co_resident", ("LSTM", 16, 768, torch.bfloat16), {"blocks_per_sm": 0}, "fit at once"),
    ("tuned_too_many_ctas", ("LSTM", 16, 768, torch.bfloat16), {"tune": "ctas=133"}, "exceeds the 132 SMs"),
    ("tuned_threads_not_warps", ("LSTM", 16, 768, torch.bfloat16), {"tune": "threads=100"}, "multiple of 32"),
    ("tuned_threads_too_many", ("LSTM", 16, 768, torch.bfloat16), {"tune": "threads=512"}, "multiple of 32"),
    ("tuned_chunk_not_tiles", ("LSTM", 16, 768, torch.bfloat16), {"tune": "chunk=24"}, "multiple of 16"),
    ("tuned_per_step", ("LSTM", 16, 768, torch.bfloat16), {"tune": "path=step"}, "path=step"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "args", "kwargs", "words"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refusals_say_why(name, args, kwargs, words):
    plan = cuda_plan(*args, **kwargs)
    assert not plan.persistent
    assert words in plan.reason


#: (id, arguments, keyword arguments, words of why not persistent): refused persistent, but one step's slice fits a
#: CTA, so the fused kernels run once per step.
PER_STEP = [
    ("not_co_resident", ("LSTM", 16, 768, torch.bfloat16), {"blocks_per_sm": 0}, "fit at once"),
    ("w_hh_too_big_fwd", ("LSTM", 16, 2048, torch.float32), {}, "bytes of shared memory per block"),
    ("batch_256_states_bwd", ("GRU", 256, 1024, torch.float16), {"backward": True}, "states exceed"),
    ("batch_256_states", ("LSTM", 256, 1024, torch.bfloat16), {}, "states exceed"),
    ("tuned_more_ctas_than_sms", ("LSTM", 16, 768, torch.bfloat16), {"tune": "ctas=133"}, "exceeds the 132 SMs"),
    ("tuned_path_step", ("RNN_RELU", 5, 1, torch.float64), {"tune": "path=step"}, "path=step"),
    ("tuned_path_step_bwd", ("GRU", 3, 37, torch.float16), {"backward": True, "tune": "path=step"}, "path=step"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "args", "kwargs", "words"), PER_STEP, ids=[r[0] for r in PER_STEP])
def test_what_does_not_fit_on_chip_runs_per_step(name, args, kwargs, words):
    plan = cuda_plan(*args, **kwargs)
    assert plan.path == "step", plan.reason
    assert words in plan.reason and "per step" not in plan.reason
    assert plan.tiling["cluster"] == 0 and plan.tiling["smem_bytes"] + STATIC_SMEM <= H100_SMEM_PER_BLOCK


#: (id, arguments, keyword arguments, words of why not per step): even one step's slice does not fit a CTA.
LOOP = [
    ("projection", ("LSTM", 4, 64, torch.bfloat16), {"projection": True}, "no W_hr step"),
    ("batch_too_big_for_registers", ("GRU", 2048, 512, torch.bfloat16), {}, "states exceed"),
    ("batch_too_many_tiles", ("RNN_TANH", 512, 64, torch.bfloat16), {}, "output tiles"),
    ("w_hh_rows_too_wide_fwd", ("LSTM", 16, 8192, torch.float32), {}, "bytes of shared memory per block"),
    ("w_hh_rows_too_wide_bwd", ("LSTM", 16, 2048, torch.bfloat16), {"backward": True}, "bytes of shared memory"),
    ("tuned_threads_not_warps", ("LSTM", 16, 768, torch.bfloat16), {"tune": "threads=100"}, "multiple of 32"),
    ("tuned_path_loop", ("LSTM", 16, 768, torch.bfloat16), {"tune": "path=loop"}, "path=loop"),
    # Empty layers: every tiling divides by the sizes (hidden 0 once crashed the process with SIGFPE).
    ("hidden_0", ("LSTM", 4, 0, torch.float16), {}, "empty layer"),
    ("hidden_0_bwd", ("GRU", 4, 0, torch.bfloat16), {"backward": True}, "empty layer"),
    ("hidden_0_cluster", ("RNN_TANH", 4, 0, torch.float32), {"max_cluster": H100_MAX_CLUSTER}, "empty layer"),
    ("batch_0", ("LSTM", 0, 64, torch.float16), {}, "empty layer"),
    ("hidden_0_tuned", ("LSTM", 4, 0, torch.float16), {"tune": "ctas=4"}, "empty layer"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "args", "kwargs", "words"), LOOP, ids=[r[0] for r in LOOP])
def test_loop_only_where_one_step_does_not_fit(name, args, kwargs, words):
    plan = cuda_plan(*args, **kwargs)
    assert plan.path == "loop" and plan.tiling == {}
    assert "; per step: " in plan.reason and words in plan.reason.split("; per step: ")[1]


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
def test_per_step_takes_the_fewest_ctas_that_fit(backward):
    """LSTM bf16 N=256 H=1024: 256 states per ... at most 4 units x 256 rows = 1024 states (256 threads x 4), so 4
    units per CTA, 256 CTAs (more than the SMs: no co-residency needed); 5 units would not fit."""
    t = cuda_plan("LSTM", 256, 1024, torch.bfloat16, backward=backward).tiling
    assert (t["ctas"], t["units"]) == (256, 4)
    assert "states exceed" in cuda_plan("LSTM", 256, 1024, torch.bfloat16, backward=backward, tune="ctas=205").reason


def test_per_step_keeps_the_tuning():
    t = cuda_plan("LSTM", 16, 768, torch.bfloat16, tune="path=step,ctas=300,threads=128,chunk=64").tiling
    assert (t["ctas"], t["units"], t["threads"], t["chunk"]) == (256, 3, 128, 64)
    forced = cuda_plan("LSTM", 16, 768, torch.bfloat16, tune="path=step")
    assert forced.tiling == cuda_plan("LSTM", 16, 768, torch.bfloat16).tiling  # the same tiling, launched per step


def test_a_smaller_gpu_gets_one_cta_per_sm():
    tiling = cuda_plan("GRU", 4, 64, torch.float16, sm_count=16, smem_per_block=99 * 1024, blocks_per_sm=1).tiling
    assert (tiling["ctas"], tiling["units"]) == (16, 4)


def test_tuning_overrides_apply():
    tiling = cuda_plan("LSTM", 16, 768, torch.bfloat16, tune="ctas=64, threads=128,chunk=256").tiling
    assert (tiling["ctas"], tiling["units"], tiling["threads"], tiling["chunk"]) == (64, 12, 128, 256)
    # The barrier timeout changes no tiling.
    assert cuda_plan("LSTM", 16, 768, torch.bfloat16, tune="timeout_ms=60000") == cuda_plan(
        "LSTM", 16, 768, torch.bfloat16
    )


@pytest.mark.parametrize(
    ("tune", "match"),
    [("blocks=3", "unknown key 'blocks'"), ("ctas=x", "not a positive integer"), ("ctas=-2", "not a positive integer"),
     ("ctas", "not a positive integer"), ("timeout_ms=0", "not a positive integer"),
     ("path=fast", "expected persistent, step or loop")],
    ids=["unknown_key", "not_a_number", "negative", "no_value", "zero_timeout", "bad_path"],
)  # fmt: skip
def test_bad_tuning_is_a_value_error(tune, match):
    with pytest.raises(ValueError, match=match):
        cuda_plan("LSTM", 16, 768, torch.bfloat16, tune=tune)


#: A grid of sizes for the invariants below: batch and hidden sizes odd, tiny, and around the tile and SM counts.
GRID_BATCH = [1, 3, 8, 17, 64, 130, 256, 257]
GRID_HIDDEN = [1, 7, 64, 131, 133, 512, 1000, 2048, 5000]


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_plan_respects_the_kernel_limits(dtype, backward):
    """Whatever the shape: a persistent or per-step plan fits the block's shared memory, covers every hidden unit
    exactly once, stays within the registers the kernels keep, and its tiles cover the matmul; a persistent plan has
    at most one CTA per SM; a refusal has a reason. Every batch up to 256 gets a fused path."""
    element_size = torch.empty((), dtype=dtype).element_size()
    for mode, batch, hidden in itertools.product(GATES, GRID_BATCH, GRID_HIDDEN):
        plan = cuda_plan(mode, batch, hidden, dtype, backward=backward)
        assert plan.path in ("persistent", "step", "loop")
        if not plan.persistent:
            assert plan.reason
        if plan.path == "loop":  # only past the limits of one CTA with one unit: batch, or one 16-row W slice
            k_pad = -(-(hidden * (GATES[mode] if backward else 1)) // TILE_K) * TILE_K
            n_pad = -(-batch // TILE_N) * TILE_N
            accumulators = max(WARPS, n_pad // TILE_N) * TILE_M * TILE_N * (8 if element_size == 8 else 4)
            smallest = (TILE_M * (k_pad + 8) + n_pad * (TILE_K + 8)) * element_size + accumulators
            assert batch > 256 or smallest > H100_SMEM_PER_BLOCK - STATIC_SMEM, plan.reason
            continue
        t = plan.tiling
        assert t["smem_bytes"] + STATIC_SMEM <= H100_SMEM_PER_BLOCK
        assert 1 <= t["ctas"] and (t["ctas"] <= H100_SMS or plan.path == "step")
        assert t["ctas"] * t["units"] >= hidden > (t["ctas"] - 1) * t["units"]
        assert batch * t["units"] <= t["threads"] * MAX_STATES_PER_THREAD
        assert t["threads"] % 32 == 0 and t["threads"] <= MAX_THREADS
        gates = GATES[mode]
        assert t["m"] == (gates * t["units"] if not backward else t["units"])
        assert t["k"] == (hidden if not backward else gates * hidden)
        assert t["m_pad"] % TILE_M == 0 and t["m_pad"] >= t["m"]
        assert t["n_pad"] % TILE_N == 0 and t["n_pad"] >= batch
        assert t["k_pad"] % TILE_K == 0 and t["k_pad"] >= t["k"]
        assert t["chunk"] % TILE_K == 0 and TILE_K <= t["chunk"] <= t["k_pad"]
        tiles = (t["m_pad"] // TILE_M) * (t["n_pad"] // TILE_N)
        groups = (t["threads"] // 32) // t["ksplit"]
        assert groups >= 1 and -(-tiles // groups) <= MAX_TILES_PER_WARP
        accumulator = 8 if element_size == 8 else 4
        expected = (t["m_pad"] * t["w_ld"] + t["n_pad"] * t["b_ld"]) * element_size + (
            t["ksplit"] * t["m_pad"] * t["n_pad"] * accumulator
        )
        assert t["smem_bytes"] == expected
        assert t["w_ld"] == t["k_pad"] + 8 and t["b_ld"] == t["chunk"] + 8


#: (id, mode, batch, hidden, dtype): forward passes whose W_hh fits in one cluster of 16 CTAs with all of h twice.
CLUSTER_FITTING = [
    ("lstm_fp32_N1_H256", "LSTM", 1, 256, torch.float32),
    ("lstm_bf16_N16_H512", "LSTM", 16, 512, torch.bfloat16),
    ("gru_fp16_N8_H37", "GRU", 8, 37, torch.float16),
    ("rnn_tanh_fp64_N3_H5", "RNN_TANH", 3, 5, torch.float64),
]


@pytest.mark.parametrize(
    ("name", "mode", "batch", "hidden", "dtype"), CLUSTER_FITTING, ids=[c[0] for c in CLUSTER_FITTING]
)
def test_small_forward_passes_take_the_cluster_path(name, mode, batch, hidden, dtype):
    t = cuda_plan(mode, batch, hidden, dtype, max_cluster=H100_MAX_CLUSTER).tiling
    units = -(-hidden // min(hidden, H100_MAX_CLUSTER))  # H=37: 3 units per CTA, so 13 CTAs
    assert t["cluster"] == t["ctas"] == -(-hidden // units) and t["units"] == units
    assert t["chunk"] == t["k_pad"]  # all of h resident: nothing staged from L2
    element_size = torch.empty((), dtype=dtype).element_size()
    accumulator = 8 if element_size == 8 else 4
    two_buffers = 2 * t["n_pad"] * t["b_ld"] * element_size
    expected = t["m_pad"] * t["w_ld"] * element_size + two_buffers + t["ksplit"] * t["m_pad"] * t["n_pad"] * accumulator
    assert t["smem_bytes"] == expected and expected + STATIC_SMEM <= H100_SMEM_PER_BLOCK


def test_cluster_path_only_where_it_fits():
    """W_hh of LSTM bf16 H=768 (4.7 MB) exceeds a cluster's 3.6 MB: the grid path; backward never clusters; and
    cluster=0 or a ctas override choose the grid path too."""
    assert cuda_plan("LSTM", 16, 768, torch.bfloat16, max_cluster=16).tiling["cluster"] == 0
    assert cuda_plan("LSTM", 1, 256, torch.float32, backward=True, max_cluster=16).tiling["cluster"] == 0
    assert cuda_plan("LSTM", 1, 256, torch.float32, backward=True, max_cluster=16, tune="cluster=8").persistent
    assert cuda_plan("LSTM", 1, 256, torch.float32, max_cluster=16, tune="cluster=0").tiling["cluster"] == 0
    assert cuda_plan("LSTM", 1, 256, torch.float32, max_cluster=16, tune="ctas=64").tiling["ctas"] == 64
    assert cuda_plan("LSTM", 1, 256, torch.float32, max_cluster=16, tune="cluster=8").tiling["cluster"] == 8


LSTM_BF16 = ("LSTM", 16, 512, torch.bfloat16)


@pytest.mark.parametrize(
    ("args", "kwargs", "words"),
    [(LSTM_BF16, {"max_cluster": 8, "tune": "cluster=16"}, "exceeds the largest cluster here (8"),
     (LSTM_BF16, {"max_cluster": 0, "tune": "cluster=4"}, "thread-block clusters"),
     (LSTM_BF16, {"max_cluster": 16, "tune": "cluster=1"}, "cluster=1: batch 16 x 512 hidden units"),
     (("LSTM", 1, 256, torch.float32), {"max_cluster": 16, "tune": "cluster=4"}, "cluster=4: the W_hh slice")],
    ids=["too_big", "no_clusters", "too_many_states", "too_little_smem"],
)  # fmt: skip
def test_forced_cluster_refusals_say_why(args, kwargs, words):
    plan = cuda_plan(*args, **kwargs)
    assert not plan.persistent and words in plan.reason


def test_plans_are_pure():
    first = cuda_plan("GRU", 17, 1000, torch.float16, backward=True)
    assert first == cuda_plan("GRU", 17, 1000, torch.float16, backward=True)
