"""Persistent split-hidden recurrence kernels: each program keeps its W_hh slice on chip for the whole sequence.

Grid: one program per slice of BLOCK_H hidden units (fusedrnn.kernels.plan); every program covers all batch rows.
Per step the programs exchange data through global memory and then must wait for each other:
  forward   h_t in the input dtype (`hx`, a [2, N, H] ping-pong buffer by step parity; h0 in slot 0);
  backward  the step's gate gradients (dgi / dgh, the input dtype), which the tiled kernels' layout already has.
Each program's own fp32 state slice (h, c; the backward's dh carry and dc) stays in registers within a launch.

One kernel body serves two ways of running, chosen by the host with (step0, steps):
  GPU          one launch covers the whole sequence; a grid-wide barrier (atomic counter, release/acquire) separates
               steps inside it. Every program must be resident (the planner launches at most one per SM). The spin
               is bounded: after `spin_limit` polls a program sets the error flag and releases everyone (the
               counter jumps by TIMEOUT_BUMP), so a launch whose programs are not co-resident ends, and the host
               raises instead of hanging.
  interpreter  the host launches one step at a time (steps=1): the launch boundary is the barrier, so several
               programs work under TRITON_INTERPRET=1, which runs programs one after another.
At a launch boundary the carried state goes through memory: the forward reloads h, c from the state sequence (it
stores them every step anyway), the backward stores / reloads its carry in dh_ptr and dc_ptr.

Dots are operand-swapped so the resident W slice is the wide M side: forward gates^T [GATES_P2*BH, N] =
W_slice [GATES_P2*BH, H] @ h^T [H, N]; backward dh^T [BH, N] = W_hh[:, slice]^T [BH, G*H] @ dgates^T [G*H, N]. The
reduction is held as two power-of-two pieces K0 + K1 (K1 may be 0), so H is not padded to a power of two. State
tiles are therefore [BLOCK_H, BLOCK_N] (hidden unit, batch row). The next step's inputs that no other program
writes (gi; the backward's saved activations, dy and states) are loaded before the barrier wait.
State layouts in memory are the tiled kernels' (fusedrnn.kernels.forward / backward): either backward takes either
forward.
"""

import triton
import triton.language as tl

from .cells import cell_backward, combine_forward, load_f32, load_gate_inputs, skip_finished_rows, store_gate_grads
from .modes import GRU, LSTM
from .plan import interpreter_enabled

#: Added to the barrier counter by a program that gave up waiting: larger than any count of arrivals
#: (programs * steps < 2**40), so every later wait of the launch passes at once.
TIMEOUT_BUMP = tl.constexpr(2**40)
#: The barrier's wait as one thread's PTX loop (_spin_until); Triton's interpreter runs no PTX, so there the wait is
#: the same polls in Triton code (the interpreter runs a whole-sequence launch only to test the timeout path).
SPIN_IN_PTX = tl.constexpr(not interpreter_enabled())


@triton.jit
def _spin_until(sync_ptr, target, spin_limit):
    """Thread 0 of the program polls the arrival counter (ld.acquire.gpu) until it reaches `target` or `spin_limit`
    polls have passed; every other thread returns at once (the caller's block barrier then waits for thread 0). A poll
    in Triton code would be a scalar atomic: a block barrier and a shared-memory broadcast per poll, ~1-2 us a step
    on the critical path; here the program synchronises once after the wait."""
    return tl.inline_asm_elementwise(
        asm="""{
        .reg .pred p;
        .reg .u32 tid, n;
        .reg .s64 v;
        mov.s64 v, 0;
        mov.u32 tid, %tid.x;
        setp.ne.u32 p, tid, 0;
        @p bra DONE;
        mov.u32 n, 0;
        SPIN:
        ld.acquire.gpu.global.s64 v, [$1];
        setp.ge.s64 p, v, $2;
        @p bra DONE;
        add.u32 n, n, 1;
        setp.lt.u32 p, n, $3;
        @p bra SPIN;
        DONE:
        mov.b64 $0, v;
        }""",
        constraints="=l,l,l,r",
        args=[sync_ptr, target, spin_limit],
        dtype=tl.int64,
        is_pure=False,
        pack=1,
    )


@triton.jit
def _grid_barrier(sync_ptr, arrivals, spin_limit):
    """Wait until every program has arrived here `arrivals` times in this launch. sync_ptr: [2] int64, zero at launch:
    the arrival counter (it only grows: no reset race) and the error flag. Gives up after `spin_limit` polls.
    Ordering: the block barrier orders the program's stores of the step before the release add; after thread 0's
    acquire polls, a block barrier and one acquire read of the counter (the same value for every thread) order every
    thread's later loads after the other programs' stores."""
    tl.debug_barrier()  # all of this program's stores of the step are issued before it signals
    tl.atomic_add(sync_ptr, 1, sem="release", scope="gpu")
    target = arrivals.to(tl.int64) * tl.num_programs(0)
    if SPIN_IN_PTX:
        _spin_until(sync_ptr, target, spin_limit)
    else:
        spins = 0
        while (tl.atomic_add(sync_ptr, 0, sem="acquire", scope="gpu") < target) & (spins < spin_limit):
            spins += 1
    tl.debug_barrier()  # every thread waits for thread 0's spin
    arrived = tl.atomic_add(sync_ptr, 0, sem="acquire", scope="gpu")
    if arrived < target:
        tl.atomic_xchg(sync_ptr + 1, 1)
        tl.atomic_add(sync_ptr, TIMEOUT_BUMP, sem="release", scope="gpu")
    tl.debug_barrier()


@triton.jit
def _resident(w_ptr, m_offsets, m_ok, k_stride, K, K_OFF: tl.constexpr, KP: tl.constexpr):
    """[M, KP] piece of a resident operand: element [m, k] at w_ptr + m_offsets[m] + (K_OFF + k) * k_stride (zeros
    beyond K or for masked rows)."""
    ks = K_OFF + tl.arange(0, KP)
    return tl.load(w_ptr + m_offsets[:, None] + ks[None, :] * k_stride, mask=m_ok[:, None] & (ks < K)[None, :],
                   other=0.0)  # fmt: skip


@triton.jit
def _resident_pieces(w_ptr, m_offsets, m_ok, k_stride, K, K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr,
                     K3: tl.constexpr):  # fmt: skip
    """The resident operand as a tuple of its four reduction pieces (K0 ... K3 wide; unused ones are placeholders).
    Each piece is one dot per step: a dot materialises its whole operand fragments in registers, so the pieces are
    kept short (fusedrnn.kernels.plan.k_pieces)."""
    w0 = _resident(w_ptr, m_offsets, m_ok, k_stride, K, 0, K0)
    w1, w2, w3 = w0, w0, w0
    if K1 > 0:
        w1 = _resident(w_ptr, m_offsets, m_ok, k_stride, K, K0, K1)
    if K2 > 0:
        w2 = _resident(w_ptr, m_offsets, m_ok, k_stride, K, K0 + K1, K2)
    if K3 > 0:
        w3 = _resident(w_ptr, m_offsets, m_ok, k_stride, K, K0 + K1 + K2, K3)
    return w0, w1, w2, w3


@triton.jit
def _exchanged(src_ptr, rows, row_ok, row_stride, K, K_OFF: tl.constexpr, KP: tl.constexpr):
    """[KP, BN] transposed piece of what every program wrote this step: element [k, n] at src_ptr + n * row_stride +
    K_OFF + k. Read through L2 (".cg"), never from a stale L1 line: other SMs wrote it."""
    ks = K_OFF + tl.arange(0, KP)
    return tl.load(src_ptr + rows[None, :] * row_stride + ks[:, None], mask=(ks < K)[:, None] & row_ok[None, :],
                   other=0.0, cache_modifier=".cg")  # fmt: skip


@triton.jit
def _piece_dot(acc, w, src_ptr, rows, row_ok, row_stride, K, K_OFF: tl.constexpr, KP: tl.constexpr,
               PRECISION: tl.constexpr):  # fmt: skip
    b = _exchanged(src_ptr, rows, row_ok, row_stride, K, K_OFF, KP).to(w.dtype)
    return tl.dot(w, b, acc, input_precision=PRECISION)


@triton.jit
def _resident_dot(acc, ws, src_ptr, rows, row_ok, row_stride, K, K0: tl.constexpr, K1: tl.constexpr,
                  K2: tl.constexpr, K3: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    """acc [M, BN] fp32 += resident [M, K] (the pieces `ws`) @ exchanged^T [K, BN]."""
    acc = _piece_dot(acc, ws[0], src_ptr, rows, row_ok, row_stride, K, 0, K0, PRECISION)
    if K1 > 0:
        acc = _piece_dot(acc, ws[1], src_ptr, rows, row_ok, row_stride, K, K0, K1, PRECISION)
    if K2 > 0:
        acc = _piece_dot(acc, ws[2], src_ptr, rows, row_ok, row_stride, K, K0 + K1, K2, PRECISION)
    if K3 > 0:
        acc = _piece_dot(acc, ws[3], src_ptr, rows, row_ok, row_stride, K, K0 + K1 + K2, K3, PRECISION)
    return acc


@triton.jit
def _split_gates(acc, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, GATES_P2: tl.constexpr):
    """[GATES_P2*BH, BN] with gate-major rows -> four [BH, BN] tiles (placeholders beyond GATES_P2)."""
    if GATES_P2 == 1:
        return acc, acc, acc, acc
    else:
        a = tl.permute(tl.reshape(acc, [2, 2, BLOCK_H, BLOCK_N]), (2, 3, 0, 1))  # [BH, BN, gate // 2, gate % 2]
        even, odd = tl.split(a)
        g0, g2 = tl.split(even)
        g1, g3 = tl.split(odd)
        return g0, g1, g2, g3


@triton.jit(do_not_specialize=["T", "step0", "steps", "reverse", "spin_limit"])  # N, H: one kernel per size class
def persistent_forward_kernel(
    gi_ptr, w_hh_ptr, b_hh_ptr, lengths_ptr, hs_ptr, cs_ptr, y_ptr, saved_ptr,  # as recurrence_forward_kernel
    hx_ptr,  # [2, N, H] input dtype: h exchanged between programs, slot step % 2 holds h before `step`
    sync_ptr,  # [2] int64, zero at launch: barrier counter, error flag
    T, N, H,
    step0, steps,  # this launch runs steps step0 .. step0 + steps - 1 (of 0 .. T - 1, in processing order)
    spin_limit,  # barrier polls before giving up (error flag)
    MODE: tl.constexpr, GATES: tl.constexpr, reverse, HAS_BIAS: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, SAVE: tl.constexpr, SLOTS: tl.constexpr,
    GATES_P2: tl.constexpr,  # 1 or 4: GATES rounded up to a power of two (the GRU's fourth gate is all zeros)
    BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
    K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, K3: tl.constexpr,  # the reduction's pieces: sum >= H
    PRECISION: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    units = pid * BLOCK_H + tl.arange(0, BLOCK_H)
    unit_ok = units < H
    rows = tl.arange(0, BLOCK_N)
    row_ok = rows < N
    mask = unit_ok[:, None] & row_ok[None, :]
    tile = units[:, None] + rows[None, :] * H  # [BH, BN] offsets of this program's slice in an [N, H] state
    # The resident W_hh slice: row r is gate r // BLOCK_H of hidden unit pid*BLOCK_H + r % BLOCK_H.
    r = tl.arange(0, GATES_P2 * BLOCK_H)
    r_gate = r // BLOCK_H
    r_unit = pid * BLOCK_H + r % BLOCK_H
    r_ok = (r_gate < GATES) & (r_unit < H)
    ws = _resident_pieces(w_hh_ptr, (r_gate * H + r_unit) * H, r_ok, 1, H, K0, K1, K2, K3)
    if HAS_BIAS:
        bias = tl.load(b_hh_ptr + r_gate * H + r_unit, mask=r_ok, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros([GATES_P2 * BLOCK_H], dtype=tl.float32)
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + rows, mask=row_ok, other=0)
    state_size = N * H
    gi_step = N * GATES * H
    # The state before step0: with SAVE slot t + reverse of step0's time index t, else ping-pong slot step0 % 2.
    t0 = step0 + reverse * (T - 1 - 2 * step0)
    if SAVE:
        first = t0 + reverse
    else:
        first = step0 % 2
    h = load_f32(hs_ptr + tl.cast(first, tl.int64) * state_size + tile, mask)  # fp32, in registers for the launch
    if MODE == LSTM:
        c = load_f32(cs_ptr + tl.cast(first, tl.int64) * state_size + tile, mask)
    else:
        c = h  # unused
    for step in range(step0, step0 + steps):
        t = step + reverse * (T - 1 - 2 * step)
        if SAVE:
            new = t + 1 - reverse
        else:
            new = (step + 1) % 2
        gi_tile = gi_ptr + tl.cast(t, tl.int64) * gi_step + rows[None, :] * (GATES * H) + units[:, None]
        gi0, gi1, gi2, gi3 = load_gate_inputs(gi_tile, H, mask, GATES)  # issued before the wait
        if step != step0:
            _grid_barrier(sync_ptr, step - step0, spin_limit)
        acc = tl.zeros([GATES_P2 * BLOCK_H, BLOCK_N], dtype=tl.float32) + bias[:, None]
        acc = _resident_dot(acc, ws, hx_ptr + (step % 2) * state_size, rows, row_ok, H, H, K0, K1, K2, K3, PRECISION)
        gh0, gh1, gh2, gh3 = _split_gates(acc, BLOCK_H, BLOCK_N, GATES_P2)
        h_new, c_new, a0, a1, a2, a3 = combine_forward(gi0, gi1, gi2, gi3, gh0, gh1, gh2, gh3, h, c, MODE, GATES)
        y = h_new
        if HAS_LENGTHS:
            valid = (t < length)[None, :]
            y = tl.where(valid, h_new, 0.0)
            h_new = tl.where(valid, h_new, h)
            c_new = tl.where(valid, c_new, c)
        h = h_new
        c = c_new
        tl.store(hx_ptr + ((step + 1) % 2) * state_size + tile, h.to(hx_ptr.dtype.element_ty), mask=mask)
        tl.store(hs_ptr + tl.cast(new, tl.int64) * state_size + tile, h, mask=mask)
        tl.store(y_ptr + tl.cast(t, tl.int64) * state_size + tile, y.to(y_ptr.dtype.element_ty), mask=mask)
        if MODE == LSTM:
            tl.store(cs_ptr + tl.cast(new, tl.int64) * state_size + tile, c, mask=mask)
        if SAVE:
            if SLOTS > 0:
                out_ty = saved_ptr.dtype.element_ty
                saved = saved_ptr + tl.cast(t, tl.int64) * N * SLOTS * H + rows[None, :] * (SLOTS * H) + units[:, None]
                tl.store(saved, a0.to(out_ty), mask=mask)
                tl.store(saved + H, a1.to(out_ty), mask=mask)
                tl.store(saved + 2 * H, a2.to(out_ty), mask=mask)
                tl.store(saved + 3 * H, a3.to(out_ty), mask=mask)


@triton.jit(do_not_specialize=["T", "step0", "steps", "reverse", "spin_limit"])  # N, H: one kernel per size class
def persistent_backward_kernel(
    dy_ptr, saved_ptr, hs_ptr, cs_ptr, w_hh_ptr, lengths_ptr,  # as recurrence_backward_kernel
    dh_ptr,  # [2, N, H] fp32: the carry at a launch boundary, slot stage % 2; dL/dh_n in slot 0 on entry
    dc_ptr,  # [N, H] fp32 (LSTM): dL/dc_n on entry, the carried dc between launches, dL/dc_0 on exit
    dgi_ptr, dgh_ptr,  # as recurrence_backward_kernel
    sync_ptr,  # [2] int64, zero at launch: barrier counter, error flag
    T, N, H,
    step0, steps,  # this launch runs stages step0 .. step0 + steps - 1 of 0 .. T (see below)
    spin_limit,
    MODE: tl.constexpr, GATES: tl.constexpr, reverse, HAS_LENGTHS: tl.constexpr,
    SLOTS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
    K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, K3: tl.constexpr,  # the reduction's pieces: sum >= H
    PRECISION: tl.constexpr,
):  # fmt: skip
    # Stage s finishes step s-1 (dh_{t-1} = direct part + W_hh^T dgates of every program; s > 0) and then computes
    # the gate gradients of step s (s < T). Stages 0 .. T: the one data exchange sits between two stages.
    pid = tl.program_id(0)
    units = pid * BLOCK_H + tl.arange(0, BLOCK_H)
    unit_ok = units < H
    rows = tl.arange(0, BLOCK_N)
    row_ok = rows < N
    mask = unit_ok[:, None] & row_ok[None, :]
    tile = units[:, None] + rows[None, :] * H
    GH = GATES * H
    # Resident, per gate g: W_hh[g*H:(g+1)*H, units]^T, [BH, H]: element [j, k] = W_hh[g*H + k, unit j] (W_hh is
    # [G*H, H], row-major). One dot per gate, K = H each, keeps every dot's operand as small as the forward's.
    w_0 = _resident_pieces(w_hh_ptr, units, unit_ok, H, H, K0, K1, K2, K3)
    w_1, w_2, w_3 = w_0, w_0, w_0  # placeholders for the gates a cell does not have
    if GATES > 1:
        w_1 = _resident_pieces(w_hh_ptr + H * H, units, unit_ok, H, H, K0, K1, K2, K3)
        w_2 = _resident_pieces(w_hh_ptr + 2 * H * H, units, unit_ok, H, H, K0, K1, K2, K3)
    if GATES > 3:
        w_3 = _resident_pieces(w_hh_ptr + 3 * H * H, units, unit_ok, H, H, K0, K1, K2, K3)
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + rows, mask=row_ok, other=0)
    state_size = N * H
    # The carry: dL/dh of the step about to be processed, minus (after stage s's second half) the W_hh part that
    # stage s+1 adds.
    carry = load_f32(dh_ptr + (step0 % 2) * state_size + tile, mask)
    if MODE == LSTM:
        dc = load_f32(dc_ptr + tile, mask)
    else:
        dc = carry  # unused
    for stage in range(step0, step0 + steps):
        live = stage < T  # false only for the last stage, which just finishes step T-1
        s = tl.minimum(stage, T - 1)
        t = (T - 1 - s) + reverse * (2 * s + 1 - T)
        prev = t + reverse
        new = t + 1 - reverse
        # This step's inputs, written by the forward: loaded before the wait.
        a_mask = mask & live
        dy = load_f32(dy_ptr + tl.cast(t, tl.int64) * state_size + tile, a_mask)
        if SLOTS > 0:
            saved = saved_ptr + tl.cast(t, tl.int64) * N * SLOTS * H + rows[None, :] * (SLOTS * H) + units[:, None]
            a0 = load_f32(saved, a_mask)
            a1 = load_f32(saved + H, a_mask)
            a2 = load_f32(saved + 2 * H, a_mask)
            a3 = load_f32(saved + 3 * H, a_mask)
        else:
            a0, a1, a2, a3 = dy, dy, dy, dy  # unused
        h_prev = load_f32(hs_ptr + tl.cast(prev, tl.int64) * state_size + tile, a_mask)
        h_new = load_f32(hs_ptr + tl.cast(new, tl.int64) * state_size + tile, a_mask)
        if MODE == LSTM:
            c_prev = load_f32(cs_ptr + tl.cast(prev, tl.int64) * state_size + tile, a_mask)
            c_new = load_f32(cs_ptr + tl.cast(new, tl.int64) * state_size + tile, a_mask)
        else:
            c_prev, c_new = dy, dy  # unused
        if stage != step0:
            _grid_barrier(sync_ptr, stage - step0, spin_limit)
        if stage > 0:  # finish step stage-1: its gate gradients of every program are written
            s_done = stage - 1
            t_done = (T - 1 - s_done) + reverse * (2 * s_done + 1 - T)
            if MODE == GRU:
                src = dgh_ptr + tl.cast(t_done, tl.int64) * N * GH
            else:
                src = dgi_ptr + tl.cast(t_done, tl.int64) * N * GH
            carry = _resident_dot(carry, w_0, src, rows, row_ok, GH, H, K0, K1, K2, K3, PRECISION)
            if GATES > 1:
                carry = _resident_dot(carry, w_1, src + H, rows, row_ok, GH, H, K0, K1, K2, K3, PRECISION)
                carry = _resident_dot(carry, w_2, src + 2 * H, rows, row_ok, GH, H, K0, K1, K2, K3, PRECISION)
            if GATES > 3:
                carry = _resident_dot(carry, w_3, src + 3 * H, rows, row_ok, GH, H, K0, K1, K2, K3, PRECISION)
        if live:
            if HAS_LENGTHS:
                valid = (t < length)[None, :]
                dy = tl.where(valid, dy, 0.0)  # padded outputs are constant zeros
            dh = carry + dy
            d0, d1, d2, d2_hh, d3, dc_prev, direct = cell_backward(dh, dc, a0, a1, a2, a3, h_prev, h_new, c_prev,
                                                                   c_new, MODE)  # fmt: skip
            if HAS_LENGTHS:
                d0, d1, d2, d2_hh, d3, dc_prev, direct = skip_finished_rows(
                    valid, d0, d1, d2, d2_hh, d3, dc_prev, direct, dc, dh
                )
            dgi_t = dgi_ptr + tl.cast(t, tl.int64) * N * GH + rows[None, :] * GH + units[:, None]
            dgh_t = dgh_ptr + tl.cast(t, tl.int64) * N * GH + rows[None, :] * GH + units[:, None]
            store_gate_grads(dgi_t, dgh_t, d0, d1, d2, d2_hh, d3, H, mask, MODE, GATES)
            carry = direct
            dc = dc_prev
    tl.store(dh_ptr + ((step0 + steps) % 2) * state_size + tile, carry, mask=mask)
    if MODE == LSTM:
        tl.store(dc_ptr + tile, dc, mask=mask)
