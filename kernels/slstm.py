"""The forward and backward kernels of xLSTM's sLSTM (fusedrnn.reference_slstm's math), one layer and direction per
launch (fusedrnn.triton_slstm_ops launches them).

Heads never exchange state (R is block-diagonal), so the grid is (heads, batch tiles) and each program runs the whole
sequence on its own head and rows with its R block resident (four [d, d] gate tiles) and no barrier at all. The host
computes the input projection of all steps, a = x W_ih^T + b_ih + b_hh [T, N, 4*H] in float32, so a step here is
a_t + h_{t-1} R_k^T and the pointwise update, all in float32, the dots exact (input_precision "ieee", not TF32: the
kernels are float32-only for now, and the stabiliser's exp() amplifies a pre-activation's error).

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
    saved_ptr,  # [T, 4, N, H] float32 (SAVE): (h, c, n, m) after each time step, for the backward kernel
    lengths_ptr,  # [N] int64 (HAS_LENGTHS)
    n0_zero_ptr,  # [] bool: all(n_0 == 0)
    max_len_ptr,  # [] int64: the longest row (HAS_LENGTHS)
    T, N, H, d,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, REVERSE: tl.constexpr, HAS_LENGTHS: tl.constexpr,
    TIREX: tl.constexpr, FORGET_CLAMP: tl.constexpr, SAVE: tl.constexpr,
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
        if SAVE:
            saved = saved_ptr + t * SLSTM_GATES * N * H + state_off
            tl.store(saved, h, mask=mask)
            tl.store(saved + N * H, c, mask=mask)
            tl.store(saved + 2 * N * H, n, mask=mask)
            tl.store(saved + 3 * N * H, m, mask=mask)
    tl.store(hn_ptr + state_off, h, mask=mask)
    tl.store(cn_ptr + state_off, c, mask=mask)
    tl.store(nn_ptr + state_off, n, mask=mask)
    tl.store(mn_ptr + state_off, m, mask=mask)


@triton.jit
def _cap_weight(e):
    """d min(e, 1) / d e as torch.minimum's backward gives it: 1 below the cap, 0 above, half at a tie."""
    return tl.where(e < 1.0, 1.0, tl.where(e == 1.0, 0.5, 0.0))


@triton.jit
def slstm_backward_kernel(
    a_ptr,  # [T, N, 4*H] float32, the forward's
    r_ptr,  # [K, 4*d, d] float32
    h0_ptr, c0_ptr, n0_ptr, m0_ptr,  # [N, H] float32, the initial state
    saved_ptr,  # [T, 4, N, H] float32: (h, c, n, m) after each time step (SAVE of the forward)
    dy_ptr,  # [T, N, H] float32
    dhn_ptr, dcn_ptr, dnn_ptr, dmn_ptr,  # [N, H] float32: gradients of the final state
    da_ptr,  # [T, N, 4*H] float32, out: gradients of the pre-activations
    dr_ptr,  # [tiles, K, 4*d, d] float32, out: this batch tile's share of dR
    dh0_ptr, dc0_ptr, dn0_ptr, dm0_ptr,  # [N, H] float32, out
    lengths_ptr, n0_zero_ptr, max_len_ptr,
    T, N, H, d,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    REVERSE: tl.constexpr, HAS_LENGTHS: tl.constexpr, TIREX: tl.constexpr, FORGET_CLAMP: tl.constexpr,
):  # fmt: skip
    """Reverse-mode of slstm_forward_kernel, one program per (head, batch tile), walking the forward's steps
    backwards and recomputing each step's gates from the saved previous state. Derivatives are those of
    fusedrnn.reference_slstm's autograd, ties included (torch.minimum / maximum split the gradient at equality)."""
    head = tl.program_id(0)
    tile = tl.program_id(1)
    rows = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    units = tl.arange(0, BLOCK_D)
    row_ok = rows < N
    unit_ok = units < d
    mask = row_ok[:, None] & unit_ok[None, :]
    cols = head * d + units
    state_off = rows[:, None] * H + cols[None, :]
    state_size = N * H

    r_base = r_ptr + head * SLSTM_GATES * d * d
    r_mask = unit_ok[:, None] & unit_ok[None, :]
    rt_off = units[None, :] * d + units[:, None]  # [i, j] = R[g*d + j, i], for the forward's h @ R_g^T
    r_off = units[:, None] * d + units[None, :]  # [j, i] = R[g*d + j, i], for da_g @ R_g
    rt_i = tl.load(r_base + 0 * d * d + rt_off, mask=r_mask, other=0.0)
    rt_f = tl.load(r_base + 1 * d * d + rt_off, mask=r_mask, other=0.0)
    rt_z = tl.load(r_base + 2 * d * d + rt_off, mask=r_mask, other=0.0)
    rt_o = tl.load(r_base + 3 * d * d + rt_off, mask=r_mask, other=0.0)
    dr_i = tl.zeros((BLOCK_D, BLOCK_D), dtype=tl.float32)
    dr_f = tl.zeros((BLOCK_D, BLOCK_D), dtype=tl.float32)
    dr_z = tl.zeros((BLOCK_D, BLOCK_D), dtype=tl.float32)
    dr_o = tl.zeros((BLOCK_D, BLOCK_D), dtype=tl.float32)

    dh = tl.load(dhn_ptr + state_off, mask=mask, other=0.0)
    dc = tl.load(dcn_ptr + state_off, mask=mask, other=0.0)
    dn = tl.load(dnn_ptr + state_off, mask=mask, other=0.0)
    dm = tl.load(dmn_ptr + state_off, mask=mask, other=0.0)
    n0_zero = tl.load(n0_zero_ptr)
    if HAS_LENGTHS:
        lengths = tl.load(lengths_ptr + rows, mask=row_ok, other=0)
        max_len = tl.load(max_len_ptr)
    for back in range(T):
        step = T - 1 - back  # the forward's loop index
        t = T - 1 - step if REVERSE else step
        if HAS_LENGTHS and REVERSE:
            first = n0_zero & (t >= max_len - 1)
        else:
            first = n0_zero & (step == 0)
        # The state before this step: the initial one at the forward's first step, else the saved one of the
        # previous step in the forward's order.
        if step == 0:
            h_p = tl.load(h0_ptr + state_off, mask=mask, other=0.0)
            c_p = tl.load(c0_ptr + state_off, mask=mask, other=0.0)
            n_p = tl.load(n0_ptr + state_off, mask=mask, other=0.0)
            m_p = tl.load(m0_ptr + state_off, mask=mask, other=0.0)
        else:
            t_p = t + 1 if REVERSE else t - 1
            prev = saved_ptr + t_p * SLSTM_GATES * state_size + state_off
            h_p = tl.load(prev, mask=mask, other=0.0)
            c_p = tl.load(prev + state_size, mask=mask, other=0.0)
            n_p = tl.load(prev + 2 * state_size, mask=mask, other=0.0)
            m_p = tl.load(prev + 3 * state_size, mask=mask, other=0.0)
        row_off = (t * N + rows) * (SLSTM_GATES * H)
        i_raw = _load_gate(a_ptr, row_off, cols, mask, 0, H) + tl.dot(h_p, rt_i, input_precision="ieee")
        f_raw = _load_gate(a_ptr, row_off, cols, mask, 1, H) + tl.dot(h_p, rt_f, input_precision="ieee")
        z_raw = _load_gate(a_ptr, row_off, cols, mask, 2, H) + tl.dot(h_p, rt_z, input_precision="ieee")
        o_raw = _load_gate(a_ptr, row_off, cols, mask, 3, H) + tl.dot(h_p, rt_o, input_precision="ieee")
        f_in = f_raw
        if TIREX:
            f_in = tl.minimum(f_raw, FORGET_CLAMP)
        log_f_plus_m = m_p + _logsigmoid(f_in)
        m_new = tl.where(first, i_raw, tl.maximum(i_raw, log_f_plus_m))
        e_i = tl.exp(i_raw - m_new)
        e_f = tl.exp(log_f_plus_m - m_new)
        i_gate = tl.minimum(e_i, 1.0)
        f_gate = tl.minimum(e_f, 1.0)
        z = tanh(z_raw)
        o = tl.sigmoid(o_raw)
        c_new = f_gate * c_p + i_gate * z
        n_new = tl.where(mask, f_gate * n_p + i_gate, 1.0)  # padding lanes: no 0/0

        g_h = dh + tl.load(dy_ptr + (t * N + rows[:, None]) * H + cols[None, :], mask=mask, other=0.0)
        d_o_raw = g_h * c_new / n_new * o * (1.0 - o)
        d_c = dc + g_h * o / n_new
        d_n = dn - g_h * o * c_new / (n_new * n_new)
        d_f_gate = d_c * c_p + d_n * n_p
        d_i_gate = d_c * z + d_n
        d_z_raw = d_c * i_gate * (1.0 - z * z)
        d_exp_i = d_i_gate * _cap_weight(e_i) * e_i  # d(i~ - m)
        d_exp_f = d_f_gate * _cap_weight(e_f) * e_f  # d(log f + m_prev - m)
        d_m = dm - d_exp_i - d_exp_f
        i_wins = tl.where(i_raw > log_f_plus_m, 1.0, tl.where(i_raw == log_f_plus_m, 0.5, 0.0))
        to_i = tl.where(first, 1.0, i_wins)
        d_i_raw = d_exp_i + d_m * to_i
        d_log_f_plus_m = d_exp_f + d_m * (1.0 - to_i)
        d_f_raw = d_log_f_plus_m * tl.sigmoid(-f_in)  # d logsigmoid(v) / dv = sigmoid(-v)
        if TIREX:
            d_f_raw = tl.where(f_raw <= FORGET_CLAMP, d_f_raw, 0.0)  # torch.clamp passes the gradient at the bound
        if HAS_LENGTHS:
            valid = (t < lengths)[:, None] & mask
        else:
            valid = mask
        d_i_raw = tl.where(valid, d_i_raw, 0.0)
        d_f_raw = tl.where(valid, d_f_raw, 0.0)
        d_z_raw = tl.where(valid, d_z_raw, 0.0)
        d_o_raw = tl.where(valid, d_o_raw, 0.0)
        tl.store(da_ptr + row_off[:, None] + 0 * H + cols[None, :], d_i_raw, mask=mask)
        tl.store(da_ptr + row_off[:, None] + 1 * H + cols[None, :], d_f_raw, mask=mask)
        tl.store(da_ptr + row_off[:, None] + 2 * H + cols[None, :], d_z_raw, mask=mask)
        tl.store(da_ptr + row_off[:, None] + 3 * H + cols[None, :], d_o_raw, mask=mask)
        # dR_g[j, i] += sum_n da_g[n, j] h_prev[n, i]; dh_prev[n, i] = sum_g sum_j da_g[n, j] R_g[j, i]
        dr_i += tl.dot(tl.trans(d_i_raw), h_p, input_precision="ieee")
        dr_f += tl.dot(tl.trans(d_f_raw), h_p, input_precision="ieee")
        dr_z += tl.dot(tl.trans(d_z_raw), h_p, input_precision="ieee")
        dr_o += tl.dot(tl.trans(d_o_raw), h_p, input_precision="ieee")
        r_i = tl.load(r_base + 0 * d * d + r_off, mask=r_mask, other=0.0)
        r_f = tl.load(r_base + 1 * d * d + r_off, mask=r_mask, other=0.0)
        r_z = tl.load(r_base + 2 * d * d + r_off, mask=r_mask, other=0.0)
        r_o = tl.load(r_base + 3 * d * d + r_off, mask=r_mask, other=0.0)
        dh_p = (tl.dot(d_i_raw, r_i, input_precision="ieee") + tl.dot(d_f_raw, r_f, input_precision="ieee")
                + tl.dot(d_z_raw, r_z, input_precision="ieee") + tl.dot(d_o_raw, r_o, input_precision="ieee"))
        # Valid rows hand their gradients to the previous state; rows past their length kept it unchanged.
        dh = tl.where(valid, dh_p, dh)
        dc = tl.where(valid, d_c * f_gate, dc)
        dn = tl.where(valid, d_n * f_gate, dn)
        dm = tl.where(valid, d_log_f_plus_m, dm)
        dh = tl.where(mask, dh, 0.0)
        dc = tl.where(mask, dc, 0.0)
        dn = tl.where(mask, dn, 0.0)
        dm = tl.where(mask, dm, 0.0)
    tl.store(dh0_ptr + state_off, dh, mask=mask)
    tl.store(dc0_ptr + state_off, dc, mask=mask)
    tl.store(dn0_ptr + state_off, dn, mask=mask)
    tl.store(dm0_ptr + state_off, dm, mask=mask)
    dr_base = dr_ptr + (tile * tl.num_programs(0) + head) * SLSTM_GATES * d * d
    tl.store(dr_base + 0 * d * d + r_off, dr_i, mask=r_mask)
    tl.store(dr_base + 1 * d * d + r_off, dr_f, mask=r_mask)
    tl.store(dr_base + 2 * d * d + r_off, dr_z, mask=r_mask)
    tl.store(dr_base + 3 * d * d + r_off, dr_o, mask=r_mask)
