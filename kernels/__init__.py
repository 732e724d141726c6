"""Triton kernels of fusedrnn, installed as `fusedrnn.kernels`; launched by `fusedrnn.triton_ops`.

Every kernel is written once and specialised by `tl.constexpr` flags: cell MODE (LSTM, GRU, RNN_TANH, RNN_RELU),
the input dtype (pointer element types), HAS_BIAS, HAS_LENGTHS (per-row lengths of a PackedSequence: rows
stop stepping at t >= len[n], keep their state and output zeros), SAVE (keep what the backward needs). h0 / c0 are
written into the first state slot by the host (zeros when absent). State and accumulation are fp32 for every input
dtype; `tl.dot` operands are the input dtype (fp32 dots follow torch's TF32 setting). Every dot dimension is >= 16.

What one layer and direction costs (T steps, N rows, H hidden, G gates):

  forward   1 torch matmul  x W_ih^T + b_ih for all T steps                     [T*N, I] @ [I, G*H]
            1 launch        the whole recurrence (time loop inside the kernel):
                            tiled       forward.recurrence_forward_kernel, one program per 16 batch rows, looping
                                        over hidden tiles per step (tl.debug_barrier between steps); any H, any N.
                            persistent  persistent.persistent_forward_kernel (opt-in, FUSEDRNN_TRITON_KERNEL=
                                        persistent; N <= 64, H <= 1024): one program per hidden slice, its W_hh
                                        slice on chip for the sequence, one grid-wide barrier per step.
  backward  1 launch        reverse-time recurrence: gate gradients per step, dh / dc carried, dh_{t-1} += dgates_t
                            @ W_hh by tl.dot (backward.recurrence_backward_kernel or persistent_backward_kernel)
            4 torch matmuls dx = dgates @ W_ih, dW_ih = dgates^T x, dW_hh = dgates^T h_{t-1}, over all T*N rows
            2 reductions    db_ih, db_hh (GRU: the n-gate's recurrent-side gradient differs by the factor r)

Modules: modes (cell ids, saved-activation layout), activations (tanh/sigmoid without overflow), cells (the per-element
math of one step, forward and backward, shared by all kernels), forward, backward, persistent, compile_check (builds
every specialisation for sm_90 without a GPU and reports registers / spills).

Verification status: the tiled kernels are tested under Triton's interpreter against the reference (tests/
test_triton_backend.py) and compile for sm_90; the persistent kernels' math is tested under the interpreter with a
single program only (its barrier is trivial there), they compile for sm_90, and have not yet run on a GPU.
"""
