"""Which time step and which state slots a step of the recurrence uses, shared by the forward and backward kernels.

States live in a slot buffer hs[slot, N, H]. When the forward saves the sequence (SAVE), forward direction reads
h_{t-1} from slot t and writes h_t into slot t+1; reverse reads slot t+1 and writes slot t. So the state before
step t of either direction is slot t + reverse, which the backward reuses. Without SAVE two slots alternate.
"""

import triton
import triton.language as tl


@triton.jit
def forward_step_slots(step, T, reverse, SAVE: tl.constexpr):
    """(t, prev, new) for forward step `step`: the time index it processes (0 .. T-1, or T-1 .. 0 when reverse),
    the slot of the state it reads and the slot it writes."""
    t = step + reverse * (T - 1 - 2 * step)
    if SAVE:
        prev = t + reverse
        new = t + 1 - reverse
    else:
        prev = step % 2
        new = (step + 1) % 2
    return t, prev, new


@triton.jit
def backward_step_slots(step, T, reverse):
    """(t, prev, new) for backward step `step`, which walks the forward's steps in the opposite order (forward
    direction: T-1 .. 0; reverse: 0 .. T-1): the saved slots of the state before and after step t."""
    t = (T - 1 - step) + reverse * (2 * step + 1 - T)
    return t, t + reverse, t + 1 - reverse
