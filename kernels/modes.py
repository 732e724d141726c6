"""Cell modes as Triton compile-time constants, and the host-side tables derived from them.

The kernels are written once and specialised per mode by `tl.constexpr` branches; these integers are the keys.
"""

import triton.language as tl

LSTM = tl.constexpr(0)
GRU = tl.constexpr(1)
RNN_TANH = tl.constexpr(2)
RNN_RELU = tl.constexpr(3)
#: IndRNN (issue #15): only the variant kernels (fusedrnn.kernels.variants) run it.
INDRNN_TANH = tl.constexpr(4)
INDRNN_RELU = tl.constexpr(5)

#: torch.nn mode name -> kernel mode id.
MODE_IDS = {"LSTM": 0, "GRU": 1, "RNN_TANH": 2, "RNN_RELU": 3, "INDRNN_TANH": 4, "INDRNN_RELU": 5}

#: Per-step activations the forward saves for the backward, in units of H per batch row:
#: LSTM (i, f, g, o) after their nonlinearities; GRU (r, z, n, W_hn h + b_hn); the Elman RNN saves none (its
#: derivative comes from the output state h itself); IndRNN saves h~ (its state after zoneout differs).
SAVED_SLOTS = {0: 4, 1: 4, 2: 0, 3: 0, 4: 1, 5: 1}
