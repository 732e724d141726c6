"""The forward and backward kernels of xLSTM's sLSTM (fusedrnn.reference_slstm's math), one layer and direction per
launch (fusedrnn.triton_slstm_ops launches them).

Heads never exchange state (R is block-diagonal, [K, 4*d, d]), so these run on kernels/heads.py's machinery: a grid
of (heads, batch tiles), each program running the whole sequence on its head's d units of its BLOCK_N rows with no
barrier between programs, R_k's gate tiles streamed from global memory (L2) every step in [BLOCK_K, BLOCK_H] chunks
(heads.head_recurrent_tile forward, heads.head_recurrent_backward for dh_{t-1}), any d up to plan.MAX_HEAD_DIM. The
host computes the input projection of all steps, a = x W_ih^T + b_ih + b_hh [T, N, 4*H] in the input dtype, so a step
is a_t + h_{t-1} R_k^T and the pointwise update below. The dots take input-dtype operands with fp32 accumulation;
the state (h, c, n, m) and all pointwise math are fp32 whatever the storage dtype: m and n overflow 16 bits easily,
and the stabiliser's exp() amplifies a pre-activation's error.

The state lives in a global fp32 buffer states [S, 4, N, H] of (h, c, n, m) slots, kernels/timesteps.py's layout
(S = T + 1 with SAVE: the state before step t is slot t + reverse, the initial one put there by the host; else two
slots alternate): a dot's K operand cannot be sliced out of a register tile, and a head wider than one tile is
updated tile by tile. The forward saves the whole sequence for the backward, which recomputes each step's gates from
the saved previous state (one more recurrent matmul per step instead of 4 saved pre-activations per element).

xlstm's first-step rule (m_t = i~ while the whole n state is zero) is a batch-wide flag that one program cannot
reduce over the grid. It holds exactly on the steps before any row has run plus the first one, when n_0 is all zero:
a row's first step gives n = 1 (m = i~, so i' = 1), and afterwards n_t = f' n + i' >= min(n_{t-1}, 1) stays
positive (when m_t = log f + m_{t-1}, f' = 1). So the host passes `n0_zero` (all(n_0 == 0), a device scalar: no sync)
and the longest length, and the rule applies at those loop steps.
"""

import triton
import triton.language as tl

from .activations import tanh
from .cells import load_f32
from .heads import head_recurrent_backward, head_recurrent_tile
from .timesteps import backward_step_slots, forward_step_slots

#: sLSTM's gates (i, f, z, o), and its state's parts (h, c, n, m): one slot of the states buffer.
SLSTM_GATES = tl.constexpr(4)
SLSTM_STATES = tl.constexpr(4)


@triton.jit
def _logsigmoid(v):
    # min(v, 0) - log(1 + exp(-|v|)): no overflow for either sign
    return tl.minimum(v, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(v)))


@triton.jit
def _first_step(step, t, reverse, n0_zero, max_len, HAS_LENGTHS: tl.constexpr):
    """Whether xlstm's first-step rule applies at forward loop step `step` (time t), module docstring: forward, step 0
    (every row runs it); reverse with lengths, every step until the longest row's first."""
    first = step == 0
    if HAS_LENGTHS:
        first = first | ((reverse != 0) & (t >= max_len - 1))
    return n0_zero & first


@triton.jit
def _stabilised(i_raw, f_raw, m_prev, first, TIREX: tl.constexpr, FORGET_CLAMP: tl.constexpr):
    """(f~ as logsigmoid reads it, log f + m_{t-1}, m_t, exp(i~ - m_t), exp(log f + m_{t-1} - m_t)): the
    stabiliser and the uncapped exponential gates, shared by the forward and the backward."""
    f_in = f_raw
    if TIREX:
        f_in = tl.minimum(f_raw, FORGET_CLAMP)
    log_f_plus_m = m_prev + _logsigmoid(f_in)
    m_new = tl.where(first, i_raw, tl.maximum(i_raw, log_f_plus_m))
    return f_in, log_f_plus_m, m_new, tl.exp(i_raw - m_new), tl.exp(log_f_plus_m - m_new)


@triton.jit
def slstm_cell_forward(i_raw, f_raw, z_raw, o_raw, c_prev, n_prev, m_prev, first, mask, TIREX: tl.constexpr,
                       FORGET_CLAMP: tl.constexpr):  # fmt: skip
    """One step's pointwise update, fp32 tiles [BN, BH] -> (h, c, n, m) (fusedrnn.reference_slstm.slstm_step)."""
    _, _, m_new, e_i, e_f = _stabilised(i_raw, f_raw, m_prev, first, TIREX, FORGET_CLAMP)
    i_gate = tl.minimum(e_i, 1.0)
    f_gate = tl.minimum(e_f, 1.0)
    c_new = f_gate * c_prev + i_gate * tanh(z_raw)
    n_new = f_gate * n_prev + i_gate
    h_new = tl.sigmoid(o_raw) * c_new / tl.where(mask, n_new, 1.0)  # padding lanes: no 0/0
    return h_new, c_new, n_new, m_new


@triton.jit
def _cap_weight(e):
    """d min(e, 1) / d e as torch.minimum's backward gives it: 1 below the cap, 0 above, half at a tie."""
    return tl.where(e < 1.0, 1.0, tl.where(e == 1.0, 0.5, 0.0))


@triton.jit
def slstm_cell_backward(i_raw, f_raw, z_raw, o_raw, c_prev, n_prev, m_prev, first, mask, g_h, dc, dn, dm,
                        TIREX: tl.constexpr, FORGET_CLAMP: tl.constexpr):  # fmt: skip
    """Reverse-mode of slstm_cell_forward: dL/d(h, c, n, m)_t (g_h includes the output's gradient) -> (di~, df~, dz~,
    do~, dc_{t-1}, dn_{t-1}, dm_{t-1}). Derivatives are those of fusedrnn.reference_slstm's autograd, ties included
    (torch.minimum / maximum split the gradient at equality)."""
    f_in, log_f_plus_m, _, e_i, e_f = _stabilised(i_raw, f_raw, m_prev, first, TIREX, FORGET_CLAMP)
    i_gate = tl.minimum(e_i, 1.0)
    f_gate = tl.minimum(e_f, 1.0)
    z = tanh(z_raw)
    o = tl.sigmoid(o_raw)
    c_new = f_gate * c_prev + i_gate * z
    n_new = tl.where(mask, f_gate * n_prev + i_gate, 1.0)  # padding lanes: no 0/0

    d_o_raw = g_h * c_new / n_new * o * (1.0 - o)
    d_c = dc + g_h * o / n_new
    d_n = dn - g_h * o * c_new / (n_new * n_new)
    d_f_gate = d_c * c_prev + d_n * n_prev
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
    return d_i_raw, d_f_raw, d_z_raw, d_o_raw, d_c * f_gate, d_n * f_gate, d_log_f_plus_m


@triton.jit
def _pre_activations(a_t, r_head, h_prev_ptr, head, rows, row_ok, units, unit_ok, cols, mask, H, d,
                     BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
                     PRECISION: tl.constexpr):  # fmt: skip
    """(i~, f~, z~, o~) of one tile, fp32 [BN, BH]: a_t [N, 4*H] + h_{t-1} R_k^T."""
    acc_i, acc_f, acc_z, acc_o = head_recurrent_tile(h_prev_ptr, r_head, head, rows, row_ok, units, unit_ok, H, d,
                                                     SLSTM_GATES, BLOCK_N, BLOCK_H, BLOCK_K, PRECISION)  # fmt: skip
    a = a_t + rows[:, None] * (SLSTM_GATES * H) + cols[None, :]
    return (acc_i + load_f32(a, mask), acc_f + load_f32(a + H, mask), acc_z + load_f32(a + 2 * H, mask),
            acc_o + load_f32(a + 3 * H, mask))  # fmt: skip


@triton.jit(do_not_specialize=["T", "reverse"])  # one compiled kernel for every length and both directions
def slstm_forward_kernel(
    a_ptr,  # [T, N, 4*H] x W_ih^T + b_ih + b_hh, input dtype
    w_hh_ptr,  # [K, 4*d, d] R, input dtype
    states_ptr,  # [S, 4, N, H] fp32 (h, c, n, m) slots; the host put the initial state in the first slot read
    y_ptr,  # [T, N, H] output, input dtype
    lengths_ptr,  # [N] int64 (read only if HAS_LENGTHS)
    n0_zero_ptr,  # [] bool: all(n_0 == 0)
    max_len_ptr,  # [] int64: the longest row (read only if HAS_LENGTHS)
    T, N,
    H,  # K * d
    d,  # units per head
    reverse,  # 0 or 1
    HAS_LENGTHS: tl.constexpr, SAVE: tl.constexpr,  # SAVE: S = T + 1, the whole state sequence; else S = 2
    TIREX: tl.constexpr, FORGET_CLAMP: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    head = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    r_head = w_hh_ptr + head * SLSTM_GATES * d * d
    state_size = N * H
    n0_zero = tl.load(n0_zero_ptr)
    max_len = T  # unread without lengths
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + rows, mask=row_ok, other=0)
        max_len = tl.load(max_len_ptr)
    for step in range(T):
        t, prev, new = forward_step_slots(step, T, reverse, SAVE)
        first = _first_step(step, t, reverse, n0_zero, max_len, HAS_LENGTHS)
        prev_ptr = states_ptr + tl.cast(prev, tl.int64) * SLSTM_STATES * state_size
        new_ptr = states_ptr + tl.cast(new, tl.int64) * SLSTM_STATES * state_size
        a_t = a_ptr + tl.cast(t, tl.int64) * N * SLSTM_GATES * H
        y_t = y_ptr + tl.cast(t, tl.int64) * state_size
        for j0 in range(0, d, BLOCK_H):
            units = j0 + tl.arange(0, BLOCK_H)
            unit_ok = units < d
            cols = head * d + units  # the tile's columns of H (and, + g*H, of gate g)
            mask = row_ok[:, None] & unit_ok[None, :]
            tile = rows[:, None] * H + cols[None, :]
            i_raw, f_raw, z_raw, o_raw = _pre_activations(a_t, r_head, prev_ptr, head, rows, row_ok, units, unit_ok,
                                                          cols, mask, H, d, BLOCK_N, BLOCK_H, BLOCK_K, PRECISION)
            h_p = load_f32(prev_ptr + tile, mask)
            c_p = load_f32(prev_ptr + state_size + tile, mask)
            n_p = load_f32(prev_ptr + 2 * state_size + tile, mask)
            m_p = load_f32(prev_ptr + 3 * state_size + tile, mask)
            h, c, n, m = slstm_cell_forward(i_raw, f_raw, z_raw, o_raw, c_p, n_p, m_p, first, mask, TIREX,
                                            FORGET_CLAMP)  # fmt: skip
            out = h
            if HAS_LENGTHS:
                # Rows past their length keep their state and output zeros (fusedrnn.reference's packed convention).
                valid = (t < length)[:, None]
                out = tl.where(valid, h, 0.0)
                h = tl.where(valid, h, h_p)
                c = tl.where(valid, c, c_p)
                n = tl.where(valid, n, n_p)
                m = tl.where(valid, m, m_p)
            tl.store(new_ptr + tile, h, mask=mask)
            tl.store(new_ptr + state_size + tile, c, mask=mask)
            tl.store(new_ptr + 2 * state_size + tile, n, mask=mask)
            tl.store(new_ptr + 3 * state_size + tile, m, mask=mask)
            tl.store(y_t + tile, out.to(y_ptr.dtype.element_ty), mask=mask)
        # The next step reads every unit of the head this step wrote (this program's own block).
        tl.debug_barrier()


@triton.jit(do_not_specialize=["T", "reverse"])
def slstm_backward_kernel(
    a_ptr,  # [T, N, 4*H] the forward's pre-activation input, input dtype
    w_hh_ptr,  # [K, 4*d, d] R, input dtype
    states_ptr,  # [T+1, 4, N, H] fp32: the forward's saved state slots (slot t + reverse: the state before step t)
    dy_ptr,  # [T, N, H] gradient of the output sequence
    dh_ptr,  # [2, N, H] fp32: slot 0 holds dL/dh_n on entry; slot T % 2 holds dL/dh_0 on exit
    dcnm_ptr,  # [3, N, H] fp32: dL/d(c, n, m)_n on entry, dL/d(c, n, m)_0 on exit
    da_ptr,  # [T, N, 4*H] out: the gradient of the pre-activations (of a and of h R^T alike), input dtype
    lengths_ptr, n0_zero_ptr, max_len_ptr,
    T, N, H, d, reverse,
    HAS_LENGTHS: tl.constexpr, TIREX: tl.constexpr, FORGET_CLAMP: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Reverse-mode of slstm_forward_kernel, per step (the forward's in the opposite order): A. tile by tile of the
    head, the step's gates recomputed from the saved previous state, their gradients (slstm_cell_backward) stored to
    da, the c / n / m carries updated in place; B. dh_{t-1}[head] += da_t[head] @ R_k. The weight and bias gradients
    are the host's matmuls over all T*N rows, as for the multi-head kernels."""
    head = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    r_head = w_hh_ptr + head * SLSTM_GATES * d * d
    state_size = N * H
    n0_zero = tl.load(n0_zero_ptr)
    max_len = T  # unread without lengths
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + rows, mask=row_ok, other=0)
        max_len = tl.load(max_len_ptr)
    for step in range(T):
        t, prev, _ = backward_step_slots(step, T, reverse)
        first = _first_step(t + reverse * (T - 1 - 2 * t), t, reverse, n0_zero, max_len, HAS_LENGTHS)
        dh_in = dh_ptr + (step % 2) * state_size
        dh_out = dh_ptr + ((step + 1) % 2) * state_size
        prev_ptr = states_ptr + tl.cast(prev, tl.int64) * SLSTM_STATES * state_size
        a_t = a_ptr + tl.cast(t, tl.int64) * N * SLSTM_GATES * H
        da_t = da_ptr + tl.cast(t, tl.int64) * N * SLSTM_GATES * H
        dy_t = dy_ptr + tl.cast(t, tl.int64) * state_size
        # Phase A: gate gradients, tile by tile of the head.
        for j0 in range(0, d, BLOCK_H):
            units = j0 + tl.arange(0, BLOCK_H)
            unit_ok = units < d
            cols = head * d + units
            mask = row_ok[:, None] & unit_ok[None, :]
            tile = rows[:, None] * H + cols[None, :]
            i_raw, f_raw, z_raw, o_raw = _pre_activations(a_t, r_head, prev_ptr, head, rows, row_ok, units, unit_ok,
                                                          cols, mask, H, d, BLOCK_N, BLOCK_H, BLOCK_K, PRECISION)
            c_p = load_f32(prev_ptr + state_size + tile, mask)
            n_p = load_f32(prev_ptr + 2 * state_size + tile, mask)
            m_p = load_f32(prev_ptr + 3 * state_size + tile, mask)
            dh = load_f32(dh_in + tile, mask)
            dc = load_f32(dcnm_ptr + tile, mask)
            dn = load_f32(dcnm_ptr + state_size + tile, mask)
            dm = load_f32(dcnm_ptr + 2 * state_size + tile, mask)
            g_h = dh + load_f32(dy_t + tile, mask)
            d_i, d_f, d_z, d_o, dc_p, dn_p, dm_p = slstm_cell_backward(i_raw, f_raw, z_raw, o_raw, c_p, n_p, m_p,
                                                                       first, mask, g_h, dc, dn, dm, TIREX,
                                                                       FORGET_CLAMP)  # fmt: skip
            direct = dh * 0.0  # the part of dL/dh_{t-1} that bypasses R
            if HAS_LENGTHS:
                # Rows past their length kept their state unchanged: the carries pass through, no gate gradient.
                valid = (t < length)[:, None]
                d_i = tl.where(valid, d_i, 0.0)
                d_f = tl.where(valid, d_f, 0.0)
                d_z = tl.where(valid, d_z, 0.0)
                d_o = tl.where(valid, d_o, 0.0)
                dc_p = tl.where(valid, dc_p, dc)
                dn_p = tl.where(valid, dn_p, dn)
                dm_p = tl.where(valid, dm_p, dm)
                direct = tl.where(valid, 0.0, dh)
            out_ty = da_ptr.dtype.element_ty
            da = da_t + rows[:, None] * (SLSTM_GATES * H) + cols[None, :]
            tl.store(da, d_i.to(out_ty), mask=mask)
            tl.store(da + H, d_f.to(out_ty), mask=mask)
            tl.store(da + 2 * H, d_z.to(out_ty), mask=mask)
            tl.store(da + 3 * H, d_o.to(out_ty), mask=mask)
            tl.store(dcnm_ptr + tile, dc_p, mask=mask)
            tl.store(dcnm_ptr + state_size + tile, dn_p, mask=mask)
            tl.store(dcnm_ptr + 2 * state_size + tile, dm_p, mask=mask)
            tl.store(dh_out + tile, direct, mask=mask)
        tl.debug_barrier()
        # Phase B: dh_{t-1}[head] += da_t[head] @ R_k.
        head_recurrent_backward(dh_out, da_t, r_head, head, rows, row_ok, H, d, SLSTM_GATES, BLOCK_H, BLOCK_K,
                                PRECISION)  # fmt: skip
        tl.debug_barrier()
