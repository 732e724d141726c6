"""Triton kernels of fusedrnn, installed as `fusedrnn.kernels`; launched by `fusedrnn.triton_ops`.

Every kernel is written once and specialised by `tl.constexpr` flags: cell MODE (LSTM, GRU, RNN_TANH, RNN_RELU),
the input dtype (pointer element types), HAS_BIAS, HAS_LENGTHS (per-row lengths of a PackedSequence: rows
stop stepping at t >= len[n], keep their state and output zeros), SAVE (keep what the backward needs). h0 / c0 are
written into the first state slot by the host (zeros when absent). State and accumulation are fp32 for every input
dtype; `tl.dot` operands are the input dtype (fp32 dots follow torch's TF32 setting). Every dot dimension is >= 16.
N and H are specialised by size class only (Triton's divisibility-by-16 specialisation: 16-byte loads where they
divide), T and the direction not at all, so one compiled kernel serves every sequence length and both directions.

What one layer and direction costs (T steps, N rows, H hidden, G gates):

  forward   1 torch matmul  x W_ih^T + b_ih for all T steps                     [T*N, I] @ [I, G*H]
            1 launch        the whole recurrence (time loop inside the kernel), chosen by plan.choose:
                            persistent  persistent.persistent_forward_kernel, the default on CUDA where it fits
                                        (N <= 64, W_hh slice within shared memory, one program per SM): one program
                                        per hidden slice, its W_hh slice on chip for the sequence, h exchanged in the
                                        input dtype, one grid-wide barrier per step (bounded spin, error flag).
                            tiled       forward.recurrence_forward_kernel, one program per 16 batch rows, looping
                                        over hidden tiles per step (tl.debug_barrier between steps); any H, any N;
                                        LSTM projection (PROJ) as a second phase per step, h = W_hr (o * tanh(c)).
  backward  1 launch        reverse-time recurrence: gate gradients per step, dh / dc carried, dh_{t-1} += dgates_t
                            @ W_hh by tl.dot (persistent_backward_kernel or backward.recurrence_backward_kernel)
            4 torch matmuls dx = dgates @ W_ih, dW_ih = dgates^T x, dW_hh = dgates^T h_{t-1}, over all T*N rows
            2 reductions    db_ih, db_hh (GRU: the n-gate's recurrent-side gradient differs by the factor r)

Modules: modes (cell ids, saved-activation layout), activations (tanh/sigmoid without overflow), cells (the per-element
math of one step, forward and backward, shared by all kernels), forward, backward, persistent, variants (issue #15's
layer norm, zoneout and IndRNN: launched by fusedrnn.triton_variant_ops), slstm (issue #21's xLSTM sLSTM, forward
and backward on heads' recurrent helpers with its own pointwise math: launched by fusedrnn.triton_slstm_ops), heads
(issue #21's multi-head LSTM / GRU / Elman RNN, W_hh block-diagonal [K, G*d, d]: one program per head and batch tile
for the whole sequence, cells' math; launched by fusedrnn.triton_heads_ops), plan (which kernels and tiles a call
gets, and why persistent ones are refused: plain Python), compile_check (builds the kernels for sm_90
without a GPU and reports registers, spills, shared memory, load widths and MMA instructions).

Verification status: every kernel is tested under Triton's interpreter against torch.nn and the reference (tests/
test_triton_backend.py; the persistent ones with several programs, one launch per step) and compiled for sm_90 in CI
with guards on spills, shared memory and load widths (tests/test_triton_compile.py). None has run on a GPU yet: the
persistent kernels' in-launch barrier, their speed and the 16-bit dtypes are unverified there.
"""
