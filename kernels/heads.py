"""Multi-head LSTM / GRU / Elman RNN (issue #21): the forward and backward recurrence of one layer and direction whose
W_hh is block-diagonal, stored as R [K, G*d, d] (fusedrnn.reference.headwise_linear); launched by
fusedrnn.triton_heads_ops.

Heads never exchange state, so the grid is (heads, batch tiles) and each program runs the whole sequence on its
head's d units of its BLOCK_N rows: no barrier between programs. The host computes the input projection of all steps
(x W_ih^T + b_ih, and b_hh where it can be folded in: every gate but the GRU's n, which the reset gate scales), so a
step is gi_t + h_{t-1} R_k^T + kernels/cells.py's cell math, in fp32. xLSTM's sLSTM (kernels/slstm.py) runs on the
same recurrent helpers (head_recurrent_tile, head_recurrent_backward) with its own pointwise math.

R_k is not held in registers: an LSTM head of d = 128 is four [128, 128] gate tiles, 256 KB in fp32, an SM's whole
register file. Each step streams R_k's gate tiles [BLOCK_K, BLOCK_H] from global memory (after the first step from
L2: R is K * G * d * d elements, 1 MB for TiRex's H = 512 LSTM in fp32, of an H100's 50 MB), and the state goes
through a global fp32 buffer as in kernels/forward.py, since a dot's K operand cannot be sliced out of a register
tile. Each phase that writes that buffer ends with `tl.debug_barrier`: the next reads back what this program
wrote, and nobody else writes the program's (rows, head) block. The layouts and step slots are the plain tiled
kernels' (kernels/timesteps.py), so the host's weight-gradient matmuls read them the same way.
"""

import triton
import triton.language as tl

from .backward import _matmul_rows
from .cells import cell_backward, load_f32, skip_finished_rows, step_forward, store_gate_grads
from .forward import _store_state
from .modes import GRU, LSTM
from .timesteps import backward_step_slots, forward_step_slots


@triton.jit
def _gate_dot(acc, h, r_head, gate, d, units, unit_ok, ks, k_ok, PRECISION: tl.constexpr):
    """acc[BN, BH] += h[BN, BK] @ R_k[gate*d + units, ks]^T (r_head: R_k [G*d, d], row-major)."""
    r = tl.load(r_head + (gate * d + units)[None, :] * d + ks[:, None], mask=unit_ok[None, :] & k_ok[:, None],
                other=0.0)  # fmt: skip
    return tl.dot(h, r, acc, input_precision=PRECISION)


@triton.jit
def head_recurrent_tile(h_prev_ptr, r_head, head, rows, row_ok, units, unit_ok, H, d, GATES: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
                        PRECISION: tl.constexpr):  # fmt: skip
    """h_prev[rows, head's units] [BN, d] @ R_k's gate rows of the tile ^T, K = d in BLOCK_K chunks: four fp32
    [BLOCK_N, BLOCK_H] accumulators (unused gates stay zero)."""
    acc0 = tl.zeros([BLOCK_N, BLOCK_H], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK_N, BLOCK_H], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_N, BLOCK_H], dtype=tl.float32)
    acc3 = tl.zeros([BLOCK_N, BLOCK_H], dtype=tl.float32)
    for k0 in range(0, d, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < d
        h = tl.load(h_prev_ptr + rows[:, None] * H + (head * d + ks)[None, :], mask=row_ok[:, None] & k_ok[None, :],
                    other=0.0).to(r_head.dtype.element_ty)  # fmt: skip
        acc0 = _gate_dot(acc0, h, r_head, 0, d, units, unit_ok, ks, k_ok, PRECISION)
        if GATES > 1:
            acc1 = _gate_dot(acc1, h, r_head, 1, d, units, unit_ok, ks, k_ok, PRECISION)
            acc2 = _gate_dot(acc2, h, r_head, 2, d, units, unit_ok, ks, k_ok, PRECISION)
        if GATES > 3:
            acc3 = _gate_dot(acc3, h, r_head, 3, d, units, unit_ok, ks, k_ok, PRECISION)
    return acc0, acc1, acc2, acc3


@triton.jit
def head_recurrent_backward(dh_out, dgates, r_head, head, rows, row_ok, H, d, GATES: tl.constexpr,
                            BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    """dh_{t-1}[rows, head's units] (fp32 [N, H], in place) += sum_g dgates[rows, g*H + head's units] @ R_k[g]
    (dgates [N, G*H]: the gradient of the recurrent term h R^T; r_head: R_k [G*d, d]), gate by gate, tile by tile of
    the head's units, K = d."""
    for j0 in range(0, d, BLOCK_H):
        units = j0 + tl.arange(0, BLOCK_H)
        unit_ok = units < d
        mask = row_ok[:, None] & unit_ok[None, :]
        tile = rows[:, None] * H + (head * d + units)[None, :]
        acc = tl.load(dh_out + tile, mask=mask, other=0.0)
        for gate in tl.static_range(GATES):
            acc = _matmul_rows(acc, dgates + gate * H + head * d, GATES * H, r_head + gate * d * d, d, d, rows,
                               row_ok, units, unit_ok, BLOCK_K, PRECISION)  # fmt: skip
        tl.store(dh_out + tile, acc, mask=mask)


@triton.jit(do_not_specialize=["T", "reverse"])  # one compiled kernel for every length and both directions
def heads_forward_kernel(
    gi_ptr,  # [T, N, G*H] x W_ih^T + b_ih (+ b_hh except the GRU's n gate), input dtype
    w_hh_ptr,  # [K, G*d, d] R, input dtype
    b_hh_ptr,  # [G*H] the GRU's b_hh (read only if HAS_B_HN: its n gate; r and z are folded into gi)
    lengths_ptr,  # [N] integer (read only if HAS_LENGTHS): row n is valid for t < lengths[n]
    hs_ptr,  # [S, N, H] fp32 state sequence; the host put h0 in the first slot read
    cs_ptr,  # [S, N, H] fp32 cell states (LSTM only), c0 in the first slot read
    y_ptr,  # [T, N, H] output, input dtype
    saved_ptr,  # [T, N, SLOTS*H] gate activations for the backward (written only if SAVE), input dtype
    T,
    N,
    H,  # K * d
    d,  # units per head
    MODE: tl.constexpr,
    GATES: tl.constexpr,
    reverse,  # 0 or 1
    HAS_B_HN: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    SAVE: tl.constexpr,  # S = T + 1: the whole state sequence is kept; else S = 2 (ping-pong)
    SLOTS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_H: tl.constexpr,  # units of the head per output tile
    BLOCK_K: tl.constexpr,  # reduction chunk of the head's units
    PRECISION: tl.constexpr,
):
    head = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    r_head = w_hh_ptr + head * GATES * d * d
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + rows, mask=row_ok, other=0)
    state_size = N * H
    for step in range(T):
        t, prev, new = forward_step_slots(step, T, reverse, SAVE)
        h_prev_ptr = hs_ptr + tl.cast(prev, tl.int64) * state_size
        h_new_ptr = hs_ptr + tl.cast(new, tl.int64) * state_size
        c_prev_ptr = cs_ptr + tl.cast(prev, tl.int64) * state_size
        c_new_ptr = cs_ptr + tl.cast(new, tl.int64) * state_size
        gi_t = gi_ptr + tl.cast(t, tl.int64) * N * GATES * H
        y_t = y_ptr + tl.cast(t, tl.int64) * state_size
        saved_t = saved_ptr + tl.cast(t, tl.int64) * N * SLOTS * H
        if HAS_LENGTHS:
            valid = (t < length)[:, None]
        else:
            valid = row_ok[:, None]  # unused
        for j0 in range(0, d, BLOCK_H):
            units = j0 + tl.arange(0, BLOCK_H)
            unit_ok = units < d
            cols = head * d + units  # the tile's columns of H (and, + g*H, of gate g)
            mask = row_ok[:, None] & unit_ok[None, :]
            tile = rows[:, None] * H + cols[None, :]
            acc0, acc1, acc2, acc3 = head_recurrent_tile(h_prev_ptr, r_head, head, rows, row_ok, units, unit_ok, H, d,
                                                         GATES, BLOCK_N, BLOCK_H, BLOCK_K, PRECISION)  # fmt: skip
            if HAS_B_HN:  # the GRU's b_hn belongs to the recurrent term the reset gate scales
                acc2 += tl.load(b_hh_ptr + 2 * H + cols, mask=unit_ok, other=0.0).to(tl.float32)[None, :]
            h_prev = load_f32(h_prev_ptr + tile, mask)
            if MODE == LSTM:
                c_prev = load_f32(c_prev_ptr + tile, mask)
            else:
                c_prev = h_prev  # unused
            h, c, a0, a1, a2, a3 = step_forward(gi_t + rows[:, None] * (GATES * H) + cols[None, :], H, mask, acc0,
                                                acc1, acc2, acc3, h_prev, c_prev, MODE, GATES)  # fmt: skip
            if MODE == LSTM:
                if HAS_LENGTHS:
                    c = tl.where(valid, c, c_prev)
                tl.store(c_new_ptr + tile, c, mask=mask)
            if SAVE:
                if SLOTS > 0:
                    out_ty = saved_ptr.dtype.element_ty
                    saved = saved_t + rows[:, None] * (SLOTS * H) + cols[None, :]
                    tl.store(saved, a0.to(out_ty), mask=mask)
                    tl.store(saved + H, a1.to(out_ty), mask=mask)
                    tl.store(saved + 2 * H, a2.to(out_ty), mask=mask)
                    tl.store(saved + 3 * H, a3.to(out_ty), mask=mask)
            _store_state(h, h_prev, h_new_ptr + tile, y_t + tile, mask, valid, HAS_LENGTHS)
        # The next step reads every unit of the head this step wrote (this program's own block).
        tl.debug_barrier()


@triton.jit(do_not_specialize=["T", "reverse"])
def heads_backward_kernel(
    dy_ptr,  # [T, N, H] gradient of the output sequence
    saved_ptr,  # [T, N, SLOTS*H] activations saved by the forward
    hs_ptr,  # [T+1, N, H] fp32 state sequence from the forward (slot t + reverse is the state before step t)
    cs_ptr,  # [T+1, N, H] fp32 cell states (LSTM)
    w_hh_ptr,  # [K, G*d, d] R
    lengths_ptr,  # [N] integer (if HAS_LENGTHS)
    dh_ptr,  # [2, N, H] fp32: slot 0 holds dL/dh_n on entry; slot T % 2 holds dL/dh_0 on exit
    dc_ptr,  # [N, H] fp32 (LSTM): dL/dc_n on entry, dL/dc_0 on exit
    dgi_ptr,  # [T, N, G*H] out: the gradient of the input projection gi
    dgh_ptr,  # [T, N, G*H] out (GRU only): the gradient of the recurrent term h R^T + b_hh; other cells use dgi
    T,
    N,
    H,
    d,
    MODE: tl.constexpr,
    GATES: tl.constexpr,
    reverse,
    HAS_LENGTHS: tl.constexpr,
    SLOTS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Reverse-mode of heads_forward_kernel, per step: A. the gate gradients of the head's tiles from the saved
    activations (kernels/cells.py's cell_backward), B. dh_{t-1}[head] += sum_g dgates_g[head] @ R_k[g] (K = d).
    The weight and bias gradients are the host's matmuls over all T*N rows, as for the plain kernels."""
    head = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    r_head = w_hh_ptr + head * GATES * d * d
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + rows, mask=row_ok, other=0)
    state_size = N * H
    GH = GATES * H
    for step in range(T):
        t, prev, new = backward_step_slots(step, T, reverse)
        dh_in = dh_ptr + (step % 2) * state_size
        dh_out = dh_ptr + ((step + 1) % 2) * state_size
        dy_t = dy_ptr + tl.cast(t, tl.int64) * state_size
        saved_t = saved_ptr + tl.cast(t, tl.int64) * N * SLOTS * H
        dgi_t = dgi_ptr + tl.cast(t, tl.int64) * N * GH
        dgh_t = dgh_ptr + tl.cast(t, tl.int64) * N * GH
        h_prev_ptr = hs_ptr + tl.cast(prev, tl.int64) * state_size
        h_new_ptr = hs_ptr + tl.cast(new, tl.int64) * state_size
        if HAS_LENGTHS:
            valid = (t < length)[:, None]
        # Phase A: gate gradients, tile by tile of the head.
        for j0 in range(0, d, BLOCK_H):
            units = j0 + tl.arange(0, BLOCK_H)
            cols = head * d + units
            mask = row_ok[:, None] & (units < d)[None, :]
            tile = rows[:, None] * H + cols[None, :]
            dy = load_f32(dy_t + tile, mask)
            if HAS_LENGTHS:
                dy = tl.where(valid, dy, 0.0)  # padded outputs are constant zeros
            dh = load_f32(dh_in + tile, mask) + dy
            h_prev = load_f32(h_prev_ptr + tile, mask)
            h_new = load_f32(h_new_ptr + tile, mask)
            saved = saved_t + rows[:, None] * (SLOTS * H) + cols[None, :]
            if SLOTS > 0:
                a0 = load_f32(saved, mask)
                a1 = load_f32(saved + H, mask)
                a2 = load_f32(saved + 2 * H, mask)
                a3 = load_f32(saved + 3 * H, mask)
            else:
                a0, a1, a2, a3 = dh, dh, dh, dh  # unused
            if MODE == LSTM:
                c_prev = load_f32(cs_ptr + tl.cast(prev, tl.int64) * state_size + tile, mask)
                c_new = load_f32(cs_ptr + tl.cast(new, tl.int64) * state_size + tile, mask)
                dc = load_f32(dc_ptr + tile, mask)
            else:
                c_prev, c_new, dc = dh, dh, dh  # unused
            d0, d1, d2, d2_hh, d3, dc_prev, direct = cell_backward(
                dh, dc, a0, a1, a2, a3, h_prev, h_new, c_prev, c_new, MODE
            )
            if HAS_LENGTHS:
                d0, d1, d2, d2_hh, d3, dc_prev, direct = skip_finished_rows(
                    valid, d0, d1, d2, d2_hh, d3, dc_prev, direct, dc, dh
                )
            if MODE == LSTM:
                tl.store(dc_ptr + tile, dc_prev, mask=mask)
            store_gate_grads(dgi_t + rows[:, None] * GH + cols[None, :], dgh_t + rows[:, None] * GH + cols[None, :],
                             d0, d1, d2, d2_hh, d3, H, mask, MODE, GATES)  # fmt: skip
            tl.store(dh_out + tile, direct, mask=mask)
        tl.debug_barrier()
        # Phase B: dh_{t-1}[head] += dgates_t[head] @ R_k.
        if MODE == GRU:
            src = dgh_t
        else:
            src = dgi_t
        head_recurrent_backward(dh_out, src, r_head, head, rows, row_ok, H, d, GATES, BLOCK_H, BLOCK_K, PRECISION)
        tl.debug_barrier()
