"""The sLSTM oracle (fusedrnn.reference_slstm) and the block-diagonal recurrence: gradchecked in float64, checked
against xlstm's own vanilla sLSTM (the `xlstm` extra; skipped without it) and against a per-head loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fusedrnn.reference import headwise_linear
from fusedrnn.reference_slstm import TIREX_FORGET_CLAMP, SLSTMState, slstm_layer, slstm_step

T, N, I, K, d = 3, 3, 2, 2, 2
H = K * d
LENGTHS = torch.tensor([3, 1, 2])


def make(dtype=torch.float64, projected=False, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape, scale=1.0: (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)  # noqa
    x = rand(T, N, 4 * H if projected else I)
    w_ih = None if projected else rand(4 * H, I, scale=0.7)
    w_hh = rand(K, 4 * d, d, scale=0.7)
    b_ih, b_hh = (rand(4 * H, scale=0.5), rand(4 * H, scale=0.5)) if bias else (None, None)
    return x, w_ih, w_hh, b_ih, b_hh


def given_state(dtype=torch.float64, seed=1):
    """A non-trivial state: n > 0 (away from the first-step rule, which a finite difference of a zero n would flip)."""
    g = torch.Generator().manual_seed(seed)
    h, c, m = (torch.randn(N, H, generator=g, dtype=torch.float64).to(dtype) for _ in range(3))
    n = (torch.rand(N, H, generator=g, dtype=torch.float64) + 0.5).to(dtype)
    return SLSTMState(h, c, n, m)


def test_headwise_linear_is_block_diagonal():
    h = torch.randn(N, H, dtype=torch.float64)
    w = torch.randn(K, 3 * d, d, dtype=torch.float64)
    dense = torch.zeros(3 * H, H, dtype=torch.float64)  # the same matrix, written out with zero off-diagonal blocks
    for k in range(K):
        for gate in range(3):
            dense[gate * H + k * d : gate * H + (k + 1) * d, k * d : (k + 1) * d] = w[k, gate * d : (gate + 1) * d]
    torch.testing.assert_close(headwise_linear(h, w), F.linear(h, dense))


CASES = {
    "tirex": dict(formulation="tirex"),
    "projected": dict(projected=True),
    "no_bias": dict(bias=False),
    "reverse": dict(reverse=True),
    "packed": dict(lengths=True),
    "packed_reverse_state": dict(lengths=True, reverse=True, state=True),
    "state": dict(state=True),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_gradcheck(case):
    x, w_ih, w_hh, b_ih, b_hh = make(projected=case.get("projected", False), bias=case.get("bias", True))
    state = given_state() if case.get("state") else None
    lengths = LENGTHS if case.get("lengths") else None
    formulation = case.get("formulation", "xlstm")
    tensors = [t for t in (x, w_ih, w_hh, b_ih, b_hh, *(state or ())) if t is not None]
    for t in tensors:
        t.requires_grad_(True)

    def layer(*values):
        values = list(values)
        take = lambda t: None if t is None else values.pop(0)  # noqa: E731
        args = [take(t) for t in (x, w_ih, w_hh, b_ih, b_hh)]
        s = None if state is None else SLSTMState(*(take(t) for t in state))
        y, out = slstm_layer(args[0], s, *args[1:], reverse=case.get("reverse", False), lengths=lengths,
                             formulation=formulation)  # fmt: skip
        return (y, *out)

    # Random projections of the Jacobian and of the second derivative (fast_mode), which catch a wrong derivative as
    # surely for a loop of autograd ops, in CI's time; test_gradcheck_every_entry checks every entry once.
    assert torch.autograd.gradcheck(layer, tensors, fast_mode=True)
    assert torch.autograd.gradgradcheck(layer, tensors, fast_mode=True)


def test_gradcheck_every_entry():
    """Every entry of the Jacobian, on a small packed, reversed, multi-head case with a given state."""
    g = torch.Generator().manual_seed(4)
    x, w_hh, b = (torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
                  for shape in ((2, 2, 8), (2, 4, 1), (8,)))  # fmt: skip
    h, c, m = (torch.randn(2, 2, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    n = (torch.rand(2, 2, generator=g, dtype=torch.float64) + 0.5).requires_grad_()

    def layer(x, w_hh, b, h, c, n, m):
        y, out = slstm_layer(x, SLSTMState(h, c, n, m), None, w_hh, None, b, True, torch.tensor([2, 1]))
        return (y, *out)

    assert torch.autograd.gradcheck(layer, (x, w_hh, b, h, c, n, m))


def test_first_step_rule_and_caps():
    """m_1 = i~ from a zero state; with c_0 != 0 and n_0 = 0 the capped f' = 1 keeps c_0 whole."""
    a = torch.randn(N, 4 * H, dtype=torch.float64)
    a[:, H : 2 * H] = 5.0  # log f close to 0, and m_0 = 3 above i~: log f + m_0 - i~ > 0, so f' would exceed 1
    a[:, :H] = torch.linspace(-1, 1, N * H, dtype=torch.float64).view(N, H)
    zero = torch.zeros(N, H, dtype=torch.float64)
    c0 = torch.randn(N, H, dtype=torch.float64)
    out = slstm_step(a, SLSTMState(zero, c0, zero, zero + 3.0))
    torch.testing.assert_close(out.m, a[:, :H])
    torch.testing.assert_close(out.n, torch.ones_like(zero))  # i' = exp(0) = 1
    torch.testing.assert_close(out.c, c0 + torch.tanh(a[:, 2 * H : 3 * H]))  # f' capped at 1


def test_tirex_clamps_the_forget_preactivation():
    a = torch.randn(N, 4 * H, dtype=torch.float64)
    a[:, H : 2 * H] = torch.linspace(10, 40, N * H, dtype=torch.float64).view(N, H)
    state = given_state()
    clamped = a.clone()
    clamped[:, H : 2 * H] = clamped[:, H : 2 * H].clamp(max=TIREX_FORGET_CLAMP)
    for got, want in zip(slstm_step(a, state, "tirex"), slstm_step(clamped, state, "xlstm")):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not torch.equal(slstm_step(a, state, "tirex").m, slstm_step(a, state, "xlstm").m)


def test_packed_rows_match_their_own_runs():
    """A row of a padded batch with lengths gives what it gives alone at its own length (given n > 0, where the
    batch-wide first-step rule cannot differ between the two)."""
    x, w_ih, w_hh, b_ih, b_hh = make()
    state = given_state()
    for reverse in (False, True):
        y, out = slstm_layer(x, state, w_ih, w_hh, b_ih, b_hh, reverse, LENGTHS)
        for row, length in enumerate(LENGTHS.tolist()):
            alone = SLSTMState(*(s[row : row + 1] for s in state))
            y_row, out_row = slstm_layer(x[:length, row : row + 1], alone, w_ih, w_hh, b_ih, b_hh, reverse)
            torch.testing.assert_close(y[:length, row : row + 1], y_row)
            assert not y[length:, row].any()
            for s, s_row in zip(out, out_row):
                torch.testing.assert_close(s[row : row + 1], s_row)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_storage_computes_in_float32(dtype):
    x, w_ih, w_hh, b_ih, b_hh = make(dtype)
    y, state = slstm_layer(x, None, w_ih, w_hh, b_ih, b_hh)
    upcast = [None if t is None else t.float() for t in (w_ih, w_hh, b_ih, b_hh)]
    # The input projection runs in the storage dtype (one matmul), then everything in float32.
    a = F.linear(x, w_ih, b_ih).float() - F.linear(x.float(), upcast[0], upcast[2])
    y32, state32 = slstm_layer(x.float(), None, *upcast)
    assert y.dtype == dtype and all(s.dtype == dtype for s in state)
    assert a.abs().max() < 0.05  # only the projection's rounding differs
    torch.testing.assert_close(y.float(), y32, rtol=2e-2, atol=5e-2)


# ----------------------------------------------------------------------------------------------------------------
# Against xlstm's own vanilla sLSTM (pip install 'fusedrnn[xlstm]').


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("state", [False, True], ids=["zero_state", "state"])
def test_matches_xlstm_vanilla_forward(dtype, state):
    vanilla = pytest.importorskip("xlstm.blocks.slstm.src.vanilla")
    x, _, w_hh, _, b = make(dtype, projected=True)
    s0 = given_state(dtype) if state else SLSTMState(*torch.zeros(4, N, H, dtype=dtype))
    pointwise = vanilla.slstm_pointwise_function_registry["slstm"]
    all_states, _, _ = vanilla.slstm_forward(x, torch.stack(s0), w_hh, b, pointwise)
    y, out = slstm_layer(x, s0, None, w_hh, None, b)
    exact = dict(rtol=0, atol=0) if dtype == torch.float64 else dict(rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(y, all_states[0, 1:], **exact)
    for index, s in enumerate(out):
        torch.testing.assert_close(s, all_states[index, -1], **exact)
