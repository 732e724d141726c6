"""The per-element math of one cell step, forward and backward, shared by every recurrence kernel (fp32 throughout).

Each kernel loads its tiles however its layout requires and calls these; `MODE` is a compile-time constant, so each
specialisation keeps only its own cell's code. Unused return values are placeholders (the same tensor again).
"""

import triton
import triton.language as tl

from .activations import sigmoid, tanh
from .modes import GRU, LSTM, RNN_TANH


@triton.jit
def cell_forward(pre0, pre1, gi2, gh2, pre3, h_prev, c_prev, MODE: tl.constexpr):
    """Gate pre-activations (gi + gh, except the third gate whose input and recurrent parts come apart because the
    GRU's reset gate scales only the recurrent one) -> (h, c, a0, a1, a2, a3): the new state and the four saved
    activations (LSTM i, f, g, o; GRU r, z, n, W_hn h + b_hn)."""
    if MODE == LSTM:
        i = sigmoid(pre0)
        f = sigmoid(pre1)
        g = tanh(gi2 + gh2)
        o = sigmoid(pre3)
        c = f * c_prev + i * g
        h = o * tanh(c)
        return h, c, i, f, g, o
    elif MODE == GRU:
        r = sigmoid(pre0)
        z = sigmoid(pre1)
        n = tanh(gi2 + r * gh2)  # the reset gate scales W_hn h + b_hn (PyTorch's GRU)
        h = (1.0 - z) * n + z * h_prev
        return h, c_prev, r, z, n, gh2
    elif MODE == RNN_TANH:
        h = tanh(pre0)
        return h, c_prev, h, h, h, h
    else:
        h = tl.maximum(pre0, 0.0)
        return h, c_prev, h, h, h, h


@triton.jit
def cell_backward(dh, dc, a0, a1, a2, a3, h_prev, h_new, c_prev, c_new, MODE: tl.constexpr):
    """dL/dh_t (and dL/dc_t) -> (d0, d1, d2, d2_hh, d3, dc_prev, direct): the gate pre-activation gradients (d2_hh is
    the third gate's gradient on the recurrent side: the GRU's d2 * r, else d2), dL/dc_{t-1}, and the part of
    dL/dh_{t-1} that does not go through W_hh (GRU: dh * z; else 0)."""
    if MODE == LSTM:
        i, f, g, o = a0, a1, a2, a3
        tc = tanh(c_new)  # recomputed from the saved c: one exp per element is cheaper than saving tanh(c)
        dc_total = dc + dh * o * (1.0 - tc * tc)
        d0 = dc_total * g * i * (1.0 - i)
        d1 = dc_total * c_prev * f * (1.0 - f)
        d2 = dc_total * i * (1.0 - g * g)
        d3 = dh * tc * o * (1.0 - o)
        return d0, d1, d2, d2, d3, dc_total * f, dh * 0.0
    elif MODE == GRU:
        r, z, n, gh_n = a0, a1, a2, a3
        d2 = dh * (1.0 - z) * (1.0 - n * n)
        d1 = dh * (h_prev - n) * z * (1.0 - z)
        d0 = d2 * gh_n * r * (1.0 - r)
        return d0, d1, d2, d2 * r, d2, dc, dh * z
    elif MODE == RNN_TANH:
        d0 = dh * (1.0 - h_new * h_new)
        return d0, d0, d0, d0, d0, dc, dh * 0.0
    else:
        d0 = tl.where(h_new > 0, dh, 0.0)
        return d0, d0, d0, d0, d0, dc, dh * 0.0


@triton.jit
def load_f32(ptr, mask):
    """A masked load widened to fp32: every kernel computes in fp32 whatever the storage dtype."""
    return tl.load(ptr, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def load_gate_inputs(gi_tile, H, mask, GATES: tl.constexpr):
    """The input projection of one tile, per gate: `gi_tile` points at gate 0 (gate k is k*H further). Unused gates
    are placeholders. Separate from `combine_forward` so a kernel can issue these loads early (before a barrier)."""
    gi0 = load_f32(gi_tile, mask)
    if GATES == 1:
        return gi0, gi0, gi0, gi0
    else:
        gi1 = load_f32(gi_tile + H, mask)
        gi2 = load_f32(gi_tile + 2 * H, mask)
        if GATES == 3:
            return gi0, gi1, gi2, gi0
        else:
            return gi0, gi1, gi2, load_f32(gi_tile + 3 * H, mask)


@triton.jit
def combine_forward(gi0, gi1, gi2, gi3, gh0, gh1, gh2, gh3, h_prev, c_prev, MODE: tl.constexpr, GATES: tl.constexpr):
    """One step from the tile's input projection and recurrent terms W_hh h + b_hh per gate (unused ones: anything).
    Returns cell_forward's (h, c, a0, a1, a2, a3)."""
    pre0 = gi0 + gh0
    if GATES == 1:
        return cell_forward(pre0, pre0, pre0, pre0, pre0, h_prev, c_prev, MODE)
    elif GATES == 3:
        return cell_forward(pre0, gi1 + gh1, gi2, gh2, pre0, h_prev, c_prev, MODE)
    else:
        return cell_forward(pre0, gi1 + gh1, gi2, gh2, gi3 + gh3, h_prev, c_prev, MODE)


@triton.jit
def step_forward(gi_tile, H, mask, gh0, gh1, gh2, gh3, h_prev, c_prev, MODE: tl.constexpr, GATES: tl.constexpr):
    """`combine_forward` with the tile's input projection loaded from `gi_tile` (see `load_gate_inputs`)."""
    gi0, gi1, gi2, gi3 = load_gate_inputs(gi_tile, H, mask, GATES)
    return combine_forward(gi0, gi1, gi2, gi3, gh0, gh1, gh2, gh3, h_prev, c_prev, MODE, GATES)


@triton.jit
def skip_finished_rows(valid, d0, d1, d2, d2_hh, d3, dc_prev, direct, dc, dh):
    """Backward of a step for rows past their length (valid False), which did not step in the forward: no gate
    gradient, and dh, dc pass through to the previous step unchanged."""
    return (
        tl.where(valid, d0, 0.0),
        tl.where(valid, d1, 0.0),
        tl.where(valid, d2, 0.0),
        tl.where(valid, d2_hh, 0.0),
        tl.where(valid, d3, 0.0),
        tl.where(valid, dc_prev, dc),
        tl.where(valid, direct, dh),
    )


@triton.jit
def store_gate_grads(gate_out, gh_out, d0, d1, d2, d2_hh, d3, H, mask, MODE: tl.constexpr, GATES: tl.constexpr):
    """Store one tile of a step's gate pre-activation gradients (dgi, gate g at column offset g*H, in the buffer's
    dtype). The GRU also needs the gradient of its recurrent projection W_h h + b_h, which differs from dgi only in
    the n gate (scaled by r): stored to gh_out."""
    out_ty = gate_out.dtype.element_ty
    tl.store(gate_out, d0.to(out_ty), mask=mask)
    if GATES > 1:
        tl.store(gate_out + H, d1.to(out_ty), mask=mask)
        tl.store(gate_out + 2 * H, d2.to(out_ty), mask=mask)
    if GATES > 3:
        tl.store(gate_out + 3 * H, d3.to(out_ty), mask=mask)
    if MODE == GRU:
        tl.store(gh_out, d0.to(out_ty), mask=mask)
        tl.store(gh_out + H, d1.to(out_ty), mask=mask)
        tl.store(gh_out + 2 * H, d2_hh.to(out_ty), mask=mask)
