"""The forward kernel of xLSTM's sLSTM (fusedrnn.reference_slstm's math), one layer and direction per launch.

Heads never exchange state (R is block-diagonal), so the grid is (heads, batch tiles) and each program runs the whole
sequence on its own head and rows with its R block resident (four [d, d] gate tiles) and no barrier at all. The host
computes the input projection of all steps, a = x W_ih^T + b_ih + b_hh [T, N, 4*H] in float32, so a step here is
a_t + h_{t-1} R_k^T and the pointwise update, all in float32.

xlstm's first-step rule (m_t = i~ while the whole n state is zero) is a batch-wide flag that one program cannot
reduce over the grid. It holds exactly on the steps before any row has run plus the first one, when n_0 is all zero:
a row's first step gives n = 1 (m = i~, so i' = 1), and afterwards n_t = f' n + i' >= min(n_{t-1}, 1) stays
positive (when m_t = log f + m_{t-1}, f' = 1). So the host passes `n0_zero` (all(n_0 == 0), a device scalar: no sync)
and the longest length, and the rule applies at those loop steps.
"""

import triton
import triton.language as tl

from .activations import tanh

#: sLSTM's gates (i, f, z, o).
SLSTM_GATES = tl.constexpr(4)


@triton.jit
def _logsigmoid(v):
    # min(v, 0) - log(1 + exp(-|v|)): no overflow for either sign
    return tl.minimum(v, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(v)))


@triton.jit
def _load_gate(a_ptr, row_off, cols, mask, gate, H):
    return tl.load(a_ptr + row_off[:, None] + gate * H + cols[None, :], mask=mask, other=0.0)


@triton.jit
def slstm_forward_kernel(
    a_ptr,  # [T, N, 4*H] float32: x W_ih^T + b_ih + b_hh
    r_ptr,  # [K, 4*d, d] float32
    h0_ptr, c0_ptr, n0_ptr, m0_ptr,  # [N, H] float32
    y_ptr,  # [T, N, H] float32
    hn_ptr, cn_ptr, nn_ptr, mn_ptr,  # [N, H] float32
    lengths_ptr,  # [N] int64 (HAS_LENGTHS)
    n0_zero_ptr,  # [] bool: all(n_0 == 0)
    max_len_ptr,  # [] int64: the longest row (HAS_LENGTHS)
    T, N, H, d,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    REVERSE: tl.constexpr, HAS_LENGTHS: tl.constexpr, TIREX: tl.constexpr, FORGET_CLAMP: tl.constexpr,
):  # fmt: skip
    head = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    units = tl.arange(0, BLOCK_D)
    row_ok = rows < N
    unit_ok = units < d
    mask = row_ok[:, None] & unit_ok[None, :]
    cols = head * d + units  # this head's columns of H
    state_off = rows[:, None] * H + cols[None, :]

    # R_k's gate tiles, transposed for h @ R_g^T: element [i (input unit), j (output unit)] = R[k, g*d + j, i].
    r_base = r_ptr + head * SLSTM_GATES * d * d
    r_mask = unit_ok[:, None] & unit_ok[None, :]
    r_off = units[None, :] * d + units[:, None]
    r_i = tl.load(r_base + 0 * d * d + r_off, mask=r_mask, other=0.0)
    r_f = tl.load(r_base + 1 * d * d + r_off, mask=r_mask, other=0.0)
    r_z = tl.load(r_base + 2 * d * d + r_off, mask=r_mask, other=0.0)
    r_o = tl.load(r_base + 3 * d * d + r_off, mask=r_mask, other=0.0)

    h = tl.load(h0_ptr + state_off, mask=mask, other=0.0)
    c = tl.load(c0_ptr + state_off, mask=mask, other=0.0)
    n = tl.load(n0_ptr + state_off, mask=mask, other=0.0)
    m = tl.load(m0_ptr + state_off, mask=mask, other=0.0)
    n0_zero = tl.load(n0_zero_ptr)
    if HAS_LENGTHS:
        lengths = tl.load(lengths_ptr + rows, mask=row_ok, other=0)
        max_len = tl.load(max_len_ptr)
    for step in range(T):
        t = T - 1 - step if REVERSE else step
        # The first-step rule's loop steps (module docstring): forward, step 0 (every row runs it); reverse with
        # lengths, every step until the longest row's first.
        if HAS_LENGTHS and REVERSE:
            first = n0_zero & (t >= max_len - 1)
        else:
            first = n0_zero & (step == 0)
        row_off = (t * N + rows) * (SLSTM_GATES * H)
        i_raw = _load_gate(a_ptr, row_off, cols, mask, 0, H) + tl.dot(h, r_i, input_precision="ieee")
        f_raw = _load_gate(a_ptr, row_off, cols, mask, 1, H) + tl.dot(h, r_f, input_precision="ieee")
        z_raw = _load_gate(a_ptr, row_off, cols, mask, 2, H) + tl.dot(h, r_z, input_precision="ieee")
        o_raw = _load_gate(a_ptr, row_off, cols, mask, 3, H) + tl.dot(h, r_o, input_precision="ieee")
        if TIREX:
            f_raw = tl.minimum(f_raw, FORGET_CLAMP)
        log_f_plus_m = m + _logsigmoid(f_raw)
        m_new = tl.where(first, i_raw, tl.maximum(i_raw, log_f_plus_m))
        i_gate = tl.minimum(tl.exp(i_raw - m_new), 1.0)
        f_gate = tl.minimum(tl.exp(log_f_plus_m - m_new), 1.0)
        c_new = f_gate * c + i_gate * tanh(z_raw)
        n_new = f_gate * n + i_gate
        h_new = tl.sigmoid(o_raw) * c_new / tl.where(mask, n_new, 1.0)  # padding lanes: no 0/0
        if HAS_LENGTHS:
            # Rows past their length keep their state and output zeros (fusedrnn.reference's packed convention).
            valid = (t < lengths)[:, None]
            h = tl.where(valid, h_new, h)
            c = tl.where(valid, c_new, c)
            n = tl.where(valid, n_new, n)
            m = tl.where(valid, m_new, m)
            out = tl.where(valid, h_new, 0.0)
        else:
            h, c, n, m, out = h_new, c_new, n_new, m_new, h_new
        h = tl.where(mask, h, 0.0)  # padding lanes stay zero: they feed the next step's dot
        tl.store(y_ptr + (t * N + rows[:, None]) * H + cols[None, :], out, mask=mask)
    tl.store(hn_ptr + state_off, h, mask=mask)
    tl.store(cn_ptr + state_off, c, mask=mask)
    tl.store(nn_ptr + state_off, n, mask=mask)
    tl.store(mn_ptr + state_off, m, mask=mask)
