"""Backend `triton`: fused recurrence kernels written in Triton (fusedrnn.kernels), one launch per layer and direction
for the whole sequence, forward and backward (see fusedrnn.triton_ops for the ops and what they save). Issue #15's
variants (layer norm, zoneout, IndRNN) run fusedrnn.triton_variant_ops; layer norm up to plan.MAX_CHUNKED_NORM_HIDDEN.
xLSTM's sLSTM (issue #21) runs fusedrnn.triton_slstm_ops (forward and backward kernels on the multi-head kernels'
machinery, plan.plan_slstm; fp32, fp16, bf16), by name only; multi-head LSTM / GRU / Elman RNN (issue #21) run
fusedrnn.triton_heads_ops (one program per head and batch tile, plan.plan_heads).

Runs on CUDA devices; on CPU tensors only under Triton's interpreter (TRITON_INTERPRET=1), which is how CI tests it
and is never chosen by `auto`.
"""

from __future__ import annotations

import importlib.util

import torch

from ..kernels.plan import (MAX_CHUNKED_NORM_HIDDEN, MAX_OFFSET, Problem, Refused, interpreter_enabled, plan_heads,
                            plan_slstm)
from ..reference import ELEMENTWISE_RECURRENCE
from ..registry import SLSTM, BackendError, LayerBackend, RNNCall, reference_only_reason

#: Dtypes the kernels are written for: tl.dot takes fp16/bf16/fp32 operands (fp64 has no tensor-core dot).
CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: Under the interpreter the kernels are a test vehicle; fp32 is the dtype they are tested in there.
INTERPRETER_DTYPES = (torch.float32,)
#: Rank under `auto` on CUDA, below torch's (cuDNN) 10 and the `cuda` backend's 9: no GPU timing of these kernels
#: exists yet (the persistent ones are now the default GPU path, but unmeasured), so they must not displace cuDNN.
UNMEASURED_GPU_PREFERENCE = 8


class TritonBackend(LayerBackend):
    name = "triton"
    summary = "fused Triton kernels: whole-sequence recurrence in one launch per layer/direction, fwd and bwd"

    def unavailable_reason(self) -> str | None:
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed (pip install 'fusedrnn[triton]')"
        if not torch.cuda.is_available() and not interpreter_enabled():
            return "no CUDA device (set TRITON_INTERPRET=1 before importing triton to run on CPU, slowly)"
        return None

    def unsupported_reason(self, call: RNNCall) -> str | None:
        if call.mode == SLSTM:
            reason = _slstm_reason(call)
        elif call.num_heads > 1:
            reason = _heads_reason(call)
        else:
            reason = reference_only_reason(call, self.name)
        if reason is not None:
            return reason
        if call.layer_norm and call.hidden_size > MAX_CHUNKED_NORM_HIDDEN:
            # plan.plan_variant: the program owning a batch row runs its whole recurrent matmul per step.
            return (f"layer norm with hidden size {call.hidden_size} > {MAX_CHUNKED_NORM_HIDDEN}: the Triton kernels "
                    f"run a step's whole row of gate pre-activations in one program (see fusedrnn.kernels.plan)")
        # An unknown batch (torch.compile's selection) is checked by `run` and `cell`, where it is known.
        reason = _offset_reason(call, 1 if call.batch_size is None else call.batch_size)
        if reason is not None:
            return reason
        if call.device_type == "cuda":
            if call.dtype not in CUDA_DTYPES:
                return f"dtype {call.dtype} is not supported on CUDA (float32, float16 and bfloat16 are)"
        elif call.device_type == "cpu":
            if not interpreter_enabled():
                return "CPU tensors need Triton's interpreter (TRITON_INTERPRET=1); use backend 'cpu' or 'torch'"
            if call.dtype not in INTERPRETER_DTYPES:
                return f"dtype {call.dtype} is not supported under the interpreter on CPU (float32 is)"
        else:
            return f"device type {call.device_type!r} is not supported (cuda; cpu under TRITON_INTERPRET=1)"
        return None

    def preference(self, call: RNNCall) -> int:
        if call.mode == SLSTM:
            return 0  # the sLSTM kernels have never run on a GPU: only when asked for by name
        # `auto` must pick the fastest backend, and these kernels have not yet been timed on a GPU (the tiled kernel is
        # estimated slower than cuDNN per step): below torch (cuDNN, 10) until a GPU run shows otherwise. Never
        # auto-picked on CPU, where it would be the slow interpreter.
        return UNMEASURED_GPU_PREFERENCE if call.device_type == "cuda" else 0

    def run(self, call, x, *args, **kwargs):
        _check_compiled_batch(call, x.shape[1])
        return super().run(call, x, *args, **kwargs)

    def cell(self, call, x, hx, cx, weights):
        _check_compiled_batch(call, x.shape[0])
        return super().cell(call, x, hx, cx, weights)

    def layer(self, mode, x, hx, cx, w, reverse, lengths, *, zoneout=None):
        # These import triton; deferred so that the registry can list this backend without it.
        from .. import triton_heads_ops, triton_ops, triton_variant_ops

        try:
            if w.w_hh.dim() == 3:  # multi-head: [K, G*d, d] (issue #21)
                return triton_heads_ops.rnn_layer(mode, x, hx, cx, w.w_ih, w.w_hh, w.b_ih, w.b_hh, reverse=reverse,
                                                  lengths=lengths)  # fmt: skip
            if w.norm is not None or zoneout is not None or mode in ELEMENTWISE_RECURRENCE:  # issue #15's variants
                return triton_variant_ops.rnn_layer(mode, x, hx, cx, w.w_ih, w.w_hh, w.b_ih, w.b_hh, reverse=reverse,
                                                    lengths=lengths, norm=w.norm, zoneout=zoneout)  # fmt: skip
            return triton_ops.rnn_layer(mode, x, hx, cx, w.w_ih, w.w_hh, w.b_ih, w.b_hh, w.w_hr, reverse=reverse,
                                        lengths=lengths)  # fmt: skip
        except Refused as error:  # forced persistent kernels that do not fit this call (or a variant)
            raise BackendError(f"fusedrnn backend 'triton': {error}") from error


    def slstm_layer(self, x, state, w, reverse, lengths, formulation):
        from .. import triton_slstm_ops  # imports triton

        return triton_slstm_ops.slstm_layer(x, state, w.w_ih, w.w_hh, w.b_ih, w.b_hh, reverse, lengths,
                                            formulation=formulation)  # fmt: skip


def _slstm_reason(call: RNNCall) -> str | None:
    """What the sLSTM kernels (fusedrnn.triton_slstm_ops) do not serve; None when they do (dtypes and devices are
    checked with every other mode's, in unsupported_reason)."""
    try:
        plan_slstm(1 if call.batch_size is None else call.batch_size, call.hidden_size, call.num_heads,
                   call.dtype.itemsize)  # fmt: skip
    except Refused as refusal:
        return str(refusal)
    return None


#: The cells the multi-head kernels (fusedrnn.kernels.heads) run: kernels/cells.py's, whose W_hh is a matrix.
HEAD_MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")


def _heads_reason(call: RNNCall) -> str | None:
    """What the multi-head kernels (fusedrnn.triton_heads_ops) do not serve; None when they do."""
    if call.mode not in HEAD_MODES:
        return f"the multi-head Triton kernels run {', '.join(HEAD_MODES)}, not {call.mode}"
    other = [name for name, used in (("layer norm", call.layer_norm), ("zoneout", call.zoneout),
                                     ("a projection", call.proj_size > 0)) if used]  # fmt: skip
    if other:
        return (f"the multi-head Triton kernels do not implement heads with {' and '.join(other)} "
                "(use backend 'reference' or 'cpu')")  # fmt: skip
    problem = Problem(batch=1 if call.batch_size is None else call.batch_size, hidden=call.hidden_size,
                      gates=call.gates, element_size=call.dtype.itemsize)  # fmt: skip
    try:
        plan_heads(problem, call.num_heads)
    except Refused as refusal:
        return str(refusal)
    return None


def _offset_reason(call: RNNCall, batch) -> str | None:
    weights = call.gates * call.hidden_size * call.hidden_size
    step = batch * 4 * call.hidden_size  # 4: saved activations per row (GRU: 3 gates, 4 slots)
    if max(weights, step) > MAX_OFFSET:
        return (f"hidden size {call.hidden_size} with batch {batch} exceeds the kernels' 32-bit offsets "
                f"(G*H*H and N*4*H must stay below 2**31)")  # fmt: skip
    return None


def _check_compiled_batch(call: RNNCall, batch) -> None:
    """The refusal that selection cannot make under torch.compile, which selects without sizes
    (registry._compiled_fields). Traced by Dynamo, the comparison on a symbolic batch becomes a guard: a batch
    past the limit recompiles and raises here."""
    if torch.compiler.is_compiling():
        reason = _offset_reason(call, batch)
        if reason is not None:
            raise BackendError(f"fusedrnn backend 'triton' cannot run this {call.mode} call: {reason}")


BACKEND = TritonBackend()
