"""The Triton kernels' planner (fusedrnn.kernels.plan): which path, tiles, grid, and why a persistent launch is refused.

Plain Python: these tests need neither triton nor a GPU. Device limits are an H100's (132 SMs, 227 KB shared memory per
block) unless a case says otherwise.
"""

from __future__ import annotations

import dataclasses

import pytest

from fusedrnn.kernels import plan

H100 = plan.Device.cuda(132)
BF16, FP32 = 2, 4

#: (problem, backward) -> (block_h, grid, k_pieces) of the persistent plan: the forward's slices are as small as one
#: program per SM allows (its dot's M = 4 * block_h >= 16), the backward's have 16 units (M = block_h >= 16).
FITS = {
    "lstm_N16_H768_bf16_forward": ((16, 768, 4, BF16), False, (8, 96, (256, 256, 256, 0))),
    "lstm_N16_H768_bf16_backward": ((16, 768, 4, BF16), True, (16, 48, (256, 256, 256, 0))),
    "gru_N64_H512_bf16_forward": ((64, 512, 3, BF16), False, (4, 128, (128, 128, 128, 128))),
    "gru_N16_H512_bf16_backward": ((16, 512, 3, BF16), True, (16, 32, (256, 256, 0, 0))),
    "lstm_N1_H256_fp32_forward": ((1, 256, 4, FP32), False, (4, 64, (128, 128, 0, 0))),
    "rnn_N3_H1000_bf16_forward": ((3, 1000, 1, BF16), False, (16, 63, (256, 256, 256, 256))),
}


@pytest.mark.parametrize("case_id", list(FITS))
def test_persistent_plan_fits(case_id):
    problem, backward, (block_h, grid, pieces) = FITS[case_id]
    chosen = plan.plan_persistent(plan.Problem(*problem), backward, H100)
    assert (chosen.block_h, chosen.grid, chosen.k_pieces) == (block_h, grid, pieces)
    assert chosen.grid <= H100.programs  # one program per SM: all co-resident
    assert chosen.rows >= plan.MIN_DOT and chosen.block_n >= plan.MIN_DOT
    assert sum(chosen.k_pieces) >= problem[1]  # K = H (the backward: one dot per gate)
    assert chosen.shared_bytes <= H100.shared_bytes and not chosen.one_step_per_launch


#: (problem, backward, device, tuning) -> a phrase of the refusal.
REFUSALS = {
    "batch_65": ((65, 256, 4, BF16), False, H100, plan.Tuning(), "batch 65 > 64"),
    "lstm_H2048_bf16_shared_memory": ((16, 2048, 4, BF16), False, H100, plan.Tuning(), "shared memory"),
    "lstm_H768_fp32_backward_shared_memory": ((16, 768, 4, FP32), True, H100, plan.Tuning(), "shared memory"),
    "more_programs_than_sms": ((16, 768, 4, BF16), False, H100, plan.Tuning(block_h=4), "192 programs"),
    "rnn_N64_H2048_operand": ((64, 2048, 1, BF16), False, H100, plan.Tuning(), "operand \\(256 KB\\)"),
    "small_gpu": ((16, 768, 4, BF16), True, plan.Device.cuda(16), plan.Tuning(), "shared memory"),
    "exact_fp32_on_gpu": (plan.Problem(16, 256, 4, FP32, exact_fp32=True), False, H100, plan.Tuning(), "ieee"),
    "32_bit_offsets": ((1, 30000, 4, BF16), False, H100, plan.Tuning(), "32-bit offsets"),
    "dot_below_16": ((16, 256, 1, BF16), False, H100, plan.Tuning(block_h=8), "M = 8 < 16"),
    "block_k_is_tiled_only": ((16, 256, 4, BF16), False, H100, plan.Tuning(block_k=32), "block_k"),
    "stages_across_barrier": ((16, 256, 4, BF16), True, H100, plan.Tuning(stages=3), "stages=3"),
    "hidden_0_forward": ((16, 0, 4, BF16), False, H100, plan.Tuning(), "hidden size 0"),
    "hidden_0_backward": ((16, 0, 3, FP32), True, H100, plan.Tuning(), "hidden size 0"),
    "hidden_0_interpreter": ((2, 0, 1, FP32), False, plan.Device.interpreter_device(), plan.Tuning(), "hidden size 0"),
}


@pytest.mark.parametrize("case_id", list(REFUSALS))
def test_persistent_plan_refuses_with_reason(case_id):
    problem, backward, device, tuning, reason = REFUSALS[case_id]
    problem = problem if isinstance(problem, plan.Problem) else plan.Problem(*problem)
    with pytest.raises(plan.Refused, match=reason):
        plan.plan_persistent(problem, backward, device, tuning)


@pytest.mark.parametrize(("k", "element_size", "block_n", "pieces"), [
    (5, BF16, 16, (16, 0, 0, 0)), (19, FP32, 16, (32, 0, 0, 0)), (70, BF16, 16, (64, 16, 0, 0)),
    (100, BF16, 16, (64, 32, 16, 0)), (768, BF16, 16, (256, 256, 256, 0)), (512, FP32, 16, (128, 128, 128, 128)),
    (1000, BF16, 16, (256, 256, 256, 256)), (2048, BF16, 16, (512, 512, 512, 512)),
    (3000, BF16, 16, (1024, 1024, 512, 512)), (512, BF16, 64, (128, 128, 128, 128)), (256, BF16, 64, (64, 64, 64, 64)),
])  # fmt: skip
def test_reduction_pieces_pad_only_the_remainder(k, element_size, block_n, pieces):
    """At most four power-of-two dots per step, each with operands of at most 512 bytes per row (x 16 batch rows)
    where four such cover K; only the last piece is padded."""
    assert plan.k_pieces(k, element_size, block_n) == pieces
    assert sum(pieces) - k < max(pieces) and all(p == 0 or p >= plan.MIN_DOT for p in pieces)


def test_choose_auto_prefers_persistent_on_cuda_where_it_fits():
    small, large = plan.Problem(16, 768, 4, BF16), plan.Problem(128, 768, 4, BF16)
    assert plan.choose(small, False, H100).kernel == "persistent"
    assert plan.choose(large, False, H100).kernel == "tiled"  # batch > 64: refused, so tiled
    assert plan.choose(small, False, plan.Device.interpreter_device()).kernel == "tiled"  # one launch beats T launches
    forced = plan.choose(plan.Problem(4, 19, 4, FP32), True, plan.Device.interpreter_device(), "persistent")
    assert forced.kernel == "persistent" and forced.one_step_per_launch
    exact = plan.Problem(4, 19, 4, FP32, exact_fp32=True)  # the interpreter has no registers to spill
    assert plan.choose(exact, False, plan.Device.interpreter_device(), "persistent").kernel == "persistent"
    assert plan.choose(small, False, H100, "tiled").kernel == "tiled"
    with pytest.raises(plan.Refused, match="batch 128"):
        plan.choose(large, False, H100, "persistent")
    with pytest.raises(ValueError, match="kernel 'fast'"):
        plan.choose(small, False, H100, "fast")


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
def test_choose_auto_runs_hidden_size_0_on_the_tiled_kernels(backward):
    """H = 0 leaves the persistent kernels nothing to hold (and no reduction to split): auto falls to the tiled ones."""
    assert plan.choose(plan.Problem(16, 0, 4, BF16), backward, H100).kernel == "tiled"


def test_tiled_plan_follows_tuning():
    problem = plan.Problem(40, 100, 3, BF16)
    default = plan.plan_tiled(problem)
    assert (default.block_n, default.block_h, default.block_k, default.warps, default.grid) == (16, 64, 32, 8, 3)
    tuned = plan.plan_tiled(problem, plan.parse_tuning("block_h=32,block_k=64,warps=4,stages=2"))
    assert (tuned.block_h, tuned.block_k, tuned.warps, tuned.stages) == (32, 64, 4, 2)
    with pytest.raises(plan.Refused, match="block_k=8"):
        plan.plan_tiled(problem, plan.Tuning(block_k=8))


@pytest.mark.parametrize(("text", "message"), [("blocks=4", "key among"), ("warps", "key among"),
                                               ("warps=four", "not an integer"), ("block_h=24", "power of two"),
                                               ("warps=64", "exceeds"), ("stages=0", ">= 1")])  # fmt: skip
def test_tuning_rejects_malformed_settings(text, message):
    with pytest.raises(ValueError, match=message):
        plan.parse_tuning(text)


def test_environment_is_read(monkeypatch):
    monkeypatch.setenv(plan.TUNE_ENV, " warps=2 , block_h=32,")
    assert plan.tuning_from_env() == plan.Tuning(warps=2, block_h=32)
    monkeypatch.delenv(plan.KERNEL_ENV, raising=False)
    assert plan.kernel_from_env() == "auto"
    monkeypatch.setenv(plan.KERNEL_ENV, "persistant")
    with pytest.raises(ValueError, match="persistant"):
        plan.kernel_from_env()


#: Multi-head kernels (plan.plan_heads): (batch, hidden, gates, heads) -> (block_h, block_k, warps, grid). A head
#: narrower than the tiled kernels' 64 x 32 tiles gets one tile of its size (>= 16, a power of two); every head 8 warps.
HEADS_PLANS = {
    "tirex_lstm_d128": ((16, 512, 4, 4), (64, 32, 8, (4, 1))),
    "gru_d64_two_batch_tiles": ((17, 256, 3, 4), (64, 32, 8, (4, 2))),
    "rnn_d32": ((3, 128, 1, 4), (32, 32, 8, (4, 1))),
    "odd_head_d5": ((3, 15, 4, 3), (16, 16, 8, (3, 1))),
    "widest_head": ((1, 2 * plan.MAX_HEAD_DIM, 4, 2), (64, 32, 8, (2, 1))),
}


@pytest.mark.parametrize("case_id", list(HEADS_PLANS))
def test_heads_plan(case_id):
    (N, H, G, K), (block_h, block_k, warps, grid) = HEADS_PLANS[case_id]
    chosen = plan.plan_heads(plan.Problem(N, H, G, FP32), K)
    assert (chosen.block_n, chosen.block_h, chosen.block_k, chosen.warps, chosen.grid) == (16, block_h, block_k,
                                                                                           warps, grid)  # fmt: skip
    assert min(chosen.block_h, chosen.block_k) >= plan.MIN_DOT
    # A few programs per GPU: both kernels may use a thread's every register (no occupancy-driven spills).
    assert (chosen.forward_registers, chosen.backward_registers) == (plan.HEADS_MAX_REGISTERS,) * 2


HEADS_REFUSALS = {
    "head_too_wide": ((1, 2 * (plan.MAX_HEAD_DIM + 1), 4, BF16), 2, f"head size {plan.MAX_HEAD_DIM + 1} > "),
    "unequal_heads": ((1, 10, 4, BF16), 3, "not 3 heads of equal size"),
    "projection": ((1, 8, 4, BF16, False, True), 2, "projection"),
    "offsets": ((2**20, 512, 4, BF16), 4, "32-bit offsets"),
}


@pytest.mark.parametrize("case_id", list(HEADS_REFUSALS))
def test_heads_plan_refusals(case_id):
    problem, heads, message = HEADS_REFUSALS[case_id]
    with pytest.raises(plan.Refused, match=message):
        plan.plan_heads(plan.Problem(*problem), heads)


#: sLSTM kernels (plan.plan_slstm): the multi-head kernels' tiles for a 4-gate head, in any served element size.
#: (batch, hidden, heads, element size) -> (block_h, block_k, warps, grid).
SLSTM_PLANS = {
    "tirex_d128_bf16": ((16, 512, 4, BF16), (64, 32, 8, (4, 1))),
    "tirex_d128_fp32_two_batch_tiles": ((17, 512, 4, FP32), (64, 32, 8, (4, 2))),
    "d40": ((3, 80, 2, BF16), (64, 32, 8, (2, 1))),  # padded to one 64-wide tile, reduction 32 + 8 of 32
    "d32": ((3, 128, 4, FP32), (32, 32, 8, (4, 1))),
    "odd_head_d3": ((3, 6, 2, FP32), (16, 16, 8, (2, 1))),
    "widest_head": ((1, 2 * plan.MAX_HEAD_DIM, 2, BF16), (64, 32, 8, (2, 1))),
}


@pytest.mark.parametrize("case_id", list(SLSTM_PLANS))
def test_slstm_plan(case_id):
    (N, H, K, element_size), (block_h, block_k, warps, grid) = SLSTM_PLANS[case_id]
    chosen = plan.plan_slstm(N, H, K, element_size)
    assert (chosen.block_n, chosen.block_h, chosen.block_k, chosen.warps, chosen.grid) == (16, block_h, block_k,
                                                                                           warps, grid)  # fmt: skip
    heads_plan = plan.plan_heads(plan.Problem(N, H, plan.SLSTM_GATES, element_size), K)
    # One tiling to verify; the backward alone leaves its registers to ptxas (plan.HEADS_MAX_REGISTERS says why).
    assert chosen == dataclasses.replace(heads_plan, backward_registers=None)


SLSTM_REFUSALS = {
    "head_too_wide": ((1, 2 * (plan.MAX_HEAD_DIM + 1), 2, BF16),
                      f"sLSTM kernels: head size {plan.MAX_HEAD_DIM + 1} > "),
    "unequal_heads": ((1, 10, 3, FP32), "sLSTM kernels: hidden size 10 is not 3 heads of equal size"),
    "offsets": ((2**20, 512, 4, BF16), "sLSTM kernels: .* 32-bit offsets"),
}


@pytest.mark.parametrize("case_id", list(SLSTM_REFUSALS))
def test_slstm_plan_refusals(case_id):
    (N, H, K, element_size), message = SLSTM_REFUSALS[case_id]
    with pytest.raises(plan.Refused, match=message):
        plan.plan_slstm(N, H, K, element_size)
