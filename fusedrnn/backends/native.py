"""Backends `cpu` and `cuda`: the compiled extension fusedrnn._C (csrc/). On CPU one C++ time loop per layer direction
with a GEMM per step and a vectorized fused pointwise pass. On CUDA a persistent kernel (one cooperative launch per
layer direction, W_hh resident in shared memory, csrc/persistent_*) wherever its planner says it fits, else the same
fused kernel launched once per step (any grid size), else (projections, batches or W_hh rows too large for one CTA)
the same C++ loop with a cuBLAS GEMM and a fused pointwise kernel per step. IndRNN has no recurrent GEMM: one kernel
per layer direction runs its whole sequence, each thread owning a (row, unit) (csrc/indrnn_sequence.h; not yet run on
a GPU). `cuda_plan` and `cuda_indrnn_plan` show the planners' decisions.

The ops and their autograd live in fusedrnn._extension; here they are only wrapped as LayerBackends.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from .. import _extension, reference_slstm
from ..reference import ELEMENTWISE_RECURRENCE, hidden_size
from ..reference_slstm import SLSTMState, check_slstm_weights
from ..registry import SLSTM, LayerBackend, LayerWeights, RNNCall, is_one_step, reference_only_reason
from . import cpu_precision

#: dtypes each device's kernels are instantiated for (csrc/ops.cpp: dtype_supported).
#: CPU bfloat16/float16: stored in that dtype, GEMMs by ATen (oneDNN), gate math in float32 (csrc/pointwise_cpu_kernels.h).
DTYPES = {
    "cpu": (torch.float16, torch.bfloat16, torch.float32, torch.float64),
    "cuda": (torch.float16, torch.bfloat16, torch.float32, torch.float64),
}

#: `auto` order; torch's own kernels have 10. CPU, from the quiet table of issue #14 (bench/native_cpu_speed.py --table,
#: bench/results/cpu-amd-epyc-2c/cpu-table.md: 2-core AMD EPYC, torch's 2 threads, T=100, I=H=512, N=64 and 4,
#: inference and training): GRU 1.8-3.5x torch.nn in float32 and 1.2-2.6x in bfloat16 (Elman RNN alike), so this
#: backend leads. LSTM is the exception: torch runs oneDNN's fused LSTM primitive (the whole sequence in one JIT'd
#: call) where this loop pays one oneDNN GEMM call per step through the dispatcher (~12 us each) plus the pointwise
#: pass: float32 measured 0.76-0.98x, bfloat16 inference 0.73-0.79x, so LSTM sequences stay with torch, except
#: bfloat16 training (1.06-1.08x), which comes here (not that of small layers at mid batch:
#: CPU_BF16_TRAINING_MIN_HIDDEN). One step (LSTMCell) is not oneDNN's sequence kernel but torch's
#: per-op lstm_cell, which this backend matches (pytorch/examples-style LSTMCell loop, float64: `fusedrnn-bench
#: --preset cells`), while `torch` adds fusedrnn's Python to torch.nn's own call: one-step LSTM calls come here. CUDA:
#: the persistent and per-step kernels are compiled but not yet run or timed on a GPU (the persistent one is designed
#: to beat cuDNN's ~2 us/step at small batch, unmeasured), so `cuda` stays below torch's cuDNN until a GPU run shows
#: it correct and faster for a shape.
#: The exception to the exception (issue 23): the fused LSTM kernels (csrc/lstm_cpu_fused*: W_hh packed once per call,
#: one OpenMP region per sequence, the gate math in registers, forward and backward) beat torch.nn in float32 at small
#: batch. 2-core Intel Xeon (AVX-512), one thread, machine shared (load average 3.9-4.2), thread CPU time, medians of 5
#: interleaved calls, T=100 (bench/results/cpu-intel-xeon-processor-2c/cpu-fused-lstm-t1.md), inference / training:
#: I=H=512 N=1 1.18x / 1.28x, N=4 1.58x / 1.21x, N=16 1.06x / 0.97x, N=64 1.05x / 0.92x; I=H=256 N=1 1.38x / 1.36x,
#: N=4 1.66x / 1.13x, N=16 1.03x / 1.04x, N=64 0.85x / 0.91x (N=16 inference measured 0.95-1.00x in an earlier run:
#: noise). On a 2-core AMD EPYC (Zen 4, AVX-512 with AVX512-BF16, 1 MB L2 per core), quiet, two threads, wall ms,
#: medians of 9 interleaved calls, T=100, I=H, torch.nn / `cpu`, inference and training, once the kernels' large
#: buffers were recycled (csrc/cpu_buffers.h: fresh pages had cost a third of the forward's recurrence; before, H=512
#: N=4 and H=1024 N=1 inference lost, 0.93x and 0.86x): float32 H=512 N=1 9.83 / 6.59 and 25.6 / 16.6, N=2 7.44 /
#: 6.85 and 20.7 / 19.3, N=4 10.36 / 10.44 (parity) and 44.5 / 32.5, N=16 35.6 / 38.9 (0.92x) and 116 / 114; H=768 N=4
#: 23.8 / 21.6 and 95.1 / 70.7; H=1024 (16 MB) N=1 34.4 / 28.4 and 107 / 57.5, N=2 96.4 / 30.8 and 134 / 87.2, N=4
#: 72.3 / 41.8 and 182 / 134; H=256 N=16 9.28 / 11.0 (0.84x) and 34.4 / 40.1 (0.86x); bfloat16 (the bfloat16
#: kernel: vdpbf16ps) H=512 N=2 4.31 / 3.44, N=4 5.24 / 5.04; H=768 N=4 10.9 / 10.9; H=1024 (8 MB) N=2 17.2 / 12.8,
#: N=4 20.5 / 19.7 (bench/results/cpu-amd-epyc-f25m17-2c/). So float32 calls, and bfloat16 where the bfloat16
#: kernel runs, come here up to CPU_FUSED_LSTM_AUTO_MAX_BATCH rows where W_hh is at most
#: CPU_FUSED_LSTM_AUTO_MAX_WEIGHT_BYTES (H <= 1024 in float32: past the L3 of many CPUs, and unmeasured), where the
#: kernels' planner takes the call; the rest of CPU LSTM stays with torch (from 16 rows small layers lost). One
#: thread: H=512 N=1 1.29x / 1.43x, N=4 0.97x / 1.16x, H=1024 N=4 1.74x / 1.37x (cpu-table-t1.md and the note of
#: issue 23). The AVX2 variant likewise, measured with ATen, oneDNN and MKL limited to AVX2 on the same Zen 4 (an
#: AVX2-only Zen 3 also runs two 256-bit FMAs a cycle; lstm-avx2-emulated.md): N <= 4 1.01-2.29x on two threads,
#: 0.97-2.83x on one; from 16 rows 0.92-0.96x. The baseline variant (no AVX2) is unmeasured: torch.
PREFERENCE = {"cpu": 15, "cuda": 9}
CPU_LSTM_PREFERENCE = 9
CPU_FUSED_LSTM_AUTO_MAX_BATCH = 4
CPU_FUSED_LSTM_AUTO_MAX_WEIGHT_BYTES = 16 << 20
CPU_FUSED_LSTM_AUTO_CAPABILITIES = ("AVX512", "AVX2")
#: Past 4 rows, on the AVX-512 variant, since the threads share each step dynamically and the forward computes the
#: input projection in the step (csrc/lstm_cpu_fused_plan.h). 2-core AMD EPYC (Zen 4), quiet, two threads, T=100,
#: I=H, medians of 7 interleaved calls, `cpu` against torch.nn, inference / training
#: (bench/results/cpu-amd-epyc-f25m17-2c/cpu-fused-lstm-wide-batch.md): float32 H=512 N=8 1.04x / 0.93x, N=16 0.98x /
#: 1.03x, N=32 1.01x / 1.07x, N=64 1.06x / 1.11x; H=256 N=16 1.06x / 0.92x, N=64 1.04x / 1.05x; H=128 N=64 1.14x /
#: 1.36x; H=768 N=16 1.03x / 1.14x, N=64 1.16x / 1.13x; H=1024 N=16 1.15x / 1.11x; bfloat16 inference (the bfloat16
#: kernel) H=512 N=8 1.05x, N=16 1.04x, N=32 1.03x, N=64 0.99x; H=256 N=16 1.02x, N=64 1.03x; H=768 N=16 0.98x, N=64
#: 1.05x; H=1024 N=16 1.02x; H=128 N=64 1.04x. So inference comes here up to the planner's 64 rows (0.98-0.99x is
#: this machine's noise), float32 training from CPU_FUSED_LSTM_AUTO_TRAINING_MIN_BATCH rows or
#: CPU_FUSED_LSTM_AUTO_TRAINING_MIN_HIDDEN units (between, small layers lost); bfloat16 training keeps its own rule
#: (CPU_BF16_TRAINING_MIN_HIDDEN). The AVX2 variant is unmeasured past 4 rows against torch: it stays there.
CPU_FUSED_LSTM_AUTO_MAX_BATCH_AVX512 = 64
CPU_FUSED_LSTM_AUTO_TRAINING_MIN_BATCH = 32
CPU_FUSED_LSTM_AUTO_TRAINING_MIN_HIDDEN = 768
#: bfloat16 LSTM training on CPU (see bf16_training in NativeBackend.preference): torch.nn's bfloat16 backward is slow
#: for wide layers and small batches (Zen 4, bench/results/cpu-amd-epyc-f25m17-2c/cpu-fused-lstm-sizes.md: `cpu`
#: 1.00-8.1x from H=512 at every batch measured, 1.01-1.24x at N <= 4 from H=128), but small layers at mid batch
#: lost (H=128 N=32 0.68-0.75x, H=256 N=16 0.88-0.92x; H=128 N=64 and H=256 N=64 won, 1.07-1.11x): those stay with
#: torch.
CPU_BF16_TRAINING_MIN_HIDDEN = 512
#: One step of one unidirectional layer (a cell, or a 1-step layer call of a decoder loop) on CPU, float32/float64:
#: torch's one-step cell ops (what torch.nn's cells call, and what the `torch` backend runs for such a call) were
#: faster than this op at every measured size (issue 24; 2-core Intel Xeon, one thread, load 4-5, thread CPU time
#: per call, medians of 5 interleaved rounds; `_VF` cell vs layer_forward, us): inference float32 LSTM H=256 N=1
#: 73 vs 101, H=256 N=16 276 vs 310, H=1024 N=1 1343 vs 1412, N=16 5415 vs 5711; GRU 50 vs 72 .. 4090 vs 4178;
#: float64 LSTM 182 vs 214 .. 10875 vs 10930, GRU 133 vs 168 .. 7901 vs 8232; training (forward + backward of a
#: whole module call) float32 LSTMCell H=256 N=1 817 vs 898, H=1024 N=8 23882 vs 28870 us, GRUCell alike. So such
#: calls rank below torch's 10 (float16/bfloat16 unmeasured: unchanged).
CPU_ONE_STEP_PREFERENCE = 9
ONE_STEP_MEASURED_DTYPES = (torch.float32, torch.float64)
#: xLSTM's sLSTM on CPU (issue #21): only `reference` (a Python loop, preference 1) and this C++ loop serve it. At
#: TiRex's shape (H=512, 4 heads, T=100, N=1 and 4, float32, forward + backward, one thread; `fusedrnn-bench
#: --preset heads`, bench/results/cpu-intel-xeon-processor-2c/heads-t1.md, 2-core Intel Xeon, quiet) this backend's
#: layer took 10.3 / 31.6 ms where `reference` took 87 / 166 ms (8x / 5x), and xlstm's own vanilla cell 16-33x
#: longer than the same cell replaced onto this backend; a plain torch.nn.LSTM of the same size took 54 / 69 ms.
#: float16/bfloat16 run the same float32 loop (plus conversions), float64 the same loop in double. (Multi-head
#: LSTM/GRU/RNN need no rule of their own: torch refuses them, and this backend's 4-head LSTM took 17 / 37 ms there
#: against `reference`'s 64 / 127 ms.)
CPU_SLSTM_PREFERENCE = PREFERENCE["cpu"]


class NativeBackend(LayerBackend):
    def __init__(self, device_type: str) -> None:
        self.device_type = device_type
        self.name = device_type
        self.summary = (
            "C++ time loop, BLAS GEMM + vectorized fused pointwise per step (compiled extension)"
            if device_type == "cpu"
            else "persistent CUDA kernel (W_hh on chip, one launch per layer) where it fits, else a C++ loop of "
            "cuBLAS GEMM + fused pointwise kernel per step (compiled extension)"
        )

    def unavailable_reason(self) -> str | None:
        try:
            _extension.load()
        except Exception as error:  # noqa: BLE001 - whatever breaks loading makes the backend unavailable, with why
            return str(error) if isinstance(error, _extension.ExtensionError) else f"{type(error).__name__}: {error}"
        if self.device_type == "cuda":
            if not _extension.has_cuda_kernels():
                return "fusedrnn._C was built without CUDA (no CUDA toolkit at build time, or FUSEDRNN_SKIP_CUDA_BUILD)"
            if not torch.cuda.is_available():
                return "no CUDA device"
        return None

    def unsupported_reason(self, call: RNNCall) -> str | None:
        # sLSTM and multi-head LSTM/GRU/RNN have CPU loops (csrc/slstm_loop.cpp, rnn_loop.cpp's headwise
        # products), not yet CUDA kernels.
        reason = None if self.device_type == "cpu" else reference_only_reason(call, self.name)
        if reason is not None:
            return reason
        if call.device_type != self.device_type:
            return f"runs {self.device_type} tensors only, got {call.device_type}"
        if call.dtype not in DTYPES[self.device_type]:
            names = ", ".join(str(d).removeprefix("torch.") for d in DTYPES[self.device_type])
            return f"dtype {call.dtype} is not supported on {self.device_type} ({names})"
        # CUDA: IndRNN (with or without zoneout) runs one whole-sequence kernel per layer direction
        # (csrc/indrnn_plan.h; unverified on a GPU); layer norm and zoneout on the other cells run on the C++ loop
        # with the per-step CUDA kernel (pointwise_cuda.cu: step.h's element math; layer norm one block per batch
        # row, step.h's forward_row).
        return None

    def preference(self, call: RNNCall) -> int:
        if call.device_type != self.device_type:
            return 0
        if call.mode == SLSTM:
            return CPU_SLSTM_PREFERENCE if call.device_type == "cpu" else 0  # CUDA refuses sLSTM (issue #21)
        if call.device_type == "cpu" and is_one_step(call) and call.dtype in ONE_STEP_MEASURED_DTYPES:
            return CPU_ONE_STEP_PREFERENCE
        # An unknown length (torch.compile's selection) ranks as a sequence: compiled, torch is refused anyway.
        if call.device_type == "cpu" and call.mode == "LSTM" and call.seq_len != 1:
            bf16_training = call.dtype == torch.bfloat16 and call.needs_grad and _bf16_training_beats_torch(call)
            # Upcast to float32 (cpu_precision), this loop runs at float32 speed, against torch's slow 16-bit GEMMs.
            upcast = self.compute_dtype(call.dtype, call.seq_len) != call.dtype
            fused = _fused_lstm_beats_torch(call)
            return PREFERENCE["cpu"] if bf16_training or upcast or fused else CPU_LSTM_PREFERENCE
        return PREFERENCE[self.device_type]

    def run(self, call, x, *args, **kwargs):
        """The layer stack (LayerBackend.run); on CUDA in eager mode with the persistent kernels' barrier flags read
        once at the end, in one host sync, instead of once per layer direction (each sync stalls the host until the
        GPU drains, so the next layer's launch waits). A timed-out barrier still raises, before anything returns."""
        if self.device_type != "cuda" or torch.compiler.is_compiling():
            return super().run(call, x, *args, **kwargs)
        torch.ops.fusedrnn.cuda_defer_barrier_checks()
        try:
            result = super().run(call, x, *args, **kwargs)
        except BaseException:
            torch.ops.fusedrnn.cuda_flush_barrier_checks(False)  # the error on its way says more
            raise
        torch.ops.fusedrnn.cuda_flush_barrier_checks(True)
        return result

    def compute_dtype(self, dtype: torch.dtype, steps: int | None) -> torch.dtype:
        """The dtype the kernels compute `steps` time steps of storage dtype `dtype` in (cpu_precision: 16-bit
        sequences on a CPU without native dot products for them run in float32)."""
        return cpu_precision.compute_dtype(dtype, steps) if self.device_type == "cpu" else dtype

    def cell(self, call, x, hx, cx, w):
        compute = self.compute_dtype(x.dtype, 1)
        if compute != x.dtype:
            h, c = self.cell(call, *_cast((x, hx, cx), compute), _cast_weights(w, compute))
            return _cast((h, c), x.dtype)
        # layer() for one step, without what a cell never has (lengths, reversal): a cell is latency-bound.
        N = x.shape[0]
        h0 = x.new_zeros(N, call.hidden_size) if hx is None else hx.contiguous()
        c0 = None if call.mode != "LSTM" else (x.new_zeros(N, call.hidden_size) if cx is None else cx.contiguous())
        save = call.needs_grad and (
            x.requires_grad or h0.requires_grad or (c0 is not None and c0.requires_grad) or w.w_ih.requires_grad
            or w.w_hh.requires_grad or (w.b_ih is not None and (w.b_ih.requires_grad or w.b_hh.requires_grad))
        )  # fmt: skip
        b_ih, b_hh = (None, None) if w.b_ih is None else (w.b_ih.contiguous(), w.b_hh.contiguous())
        _, h, c, _ = _extension.layer_forward(
            call.mode, x.contiguous().unsqueeze(0), h0, c0, w.w_ih.contiguous(), w.w_hh.contiguous(), b_ih, b_hh,
            None, False, save or _norm_requires_grad(w), None, *_variant_args(w, None),
        )  # fmt: skip
        return h, (c if c0 is not None else None)

    def layer(self, mode, x, hx, cx, w, reverse, lengths, *, zoneout=None):
        compute = self.compute_dtype(x.dtype, x.shape[0])
        if compute != x.dtype:
            masks = None if zoneout is None else type(zoneout)(*_cast(zoneout, compute))
            outputs = self.layer(mode, *_cast((x, hx, cx), compute), _cast_weights(w, compute), reverse, lengths,
                                 zoneout=masks)  # fmt: skip
            return _cast(outputs, x.dtype)
        T, N, _ = x.shape
        H = hidden_size(mode, w.w_hh)
        P = H if mode in ELEMENTWISE_RECURRENCE or w.w_hh.dim() == 3 else w.w_hh.shape[1]  # IndRNN, heads: no P
        h0 = x.new_zeros(N, P) if hx is None else hx.contiguous()
        c0 = None if mode != "LSTM" else (x.new_zeros(N, H) if cx is None else cx.contiguous())
        b_ih, b_hh, w_hr = (None if t is None else t.contiguous() for t in (w.b_ih, w.b_hh, w.w_hr))
        # Inference saves nothing for a backward pass: less memory, and no page faults on a [T, N, ~5H] buffer.
        save = torch.is_grad_enabled() and (
            any(t is not None and t.requires_grad for t in (x, hx, cx, *w[:5])) or _norm_requires_grad(w)
        )
        y, h_n, c_n, _ = _extension.layer_forward(
            mode, x.contiguous(), h0, c0, w.w_ih.contiguous(), w.w_hh.contiguous(), b_ih, b_hh, w_hr, reverse, save,
            None if lengths is None else lengths.to(torch.int64).contiguous(), *_variant_args(w, zoneout),
        )
        if lengths is not None:  # y holds each row's state, carried past its end; the output is zero there
            valid = torch.arange(T, device=x.device).unsqueeze(1) < lengths.to(x.device).unsqueeze(0)
            y = torch.where(valid.unsqueeze(2), y, y.new_zeros(()))
        return y, h_n, (c_n if mode == "LSTM" else None)

    def slstm_layer(self, x, state, w, reverse, lengths, formulation):
        check_slstm_weights(x, w.w_ih, w.w_hh, w.b_ih, w.b_hh)
        # float16 / bfloat16 are computed in float32, states included (fusedrnn.reference_slstm): converted here,
        # so autograd converts the gradients back.
        dtype = reference_slstm.compute_dtype(x.dtype)
        T, N, _ = x.shape
        H = w.w_hh.shape[0] * w.w_hh.shape[2]
        if state is None:
            zeros = x.new_zeros(N, H, dtype=dtype)
            state = SLSTMState(zeros, zeros, zeros, zeros)
        tensors = (x, *state, w.w_ih, w.w_hh, w.b_ih, w.b_hh)  # reference_slstm.SLSTM_LAYER_INPUTS
        save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
        y, *final, _ = _extension.slstm_forward(
            *(None if t is None else t.contiguous() for t in _cast(tensors, dtype)), reverse, formulation == "tirex",
            save, None if lengths is None else lengths.to(torch.int64).contiguous(),
        )  # fmt: skip
        if lengths is not None:  # y holds each row's state, carried past its end; the output is zero there
            valid = torch.arange(T, device=x.device).unsqueeze(1) < lengths.to(x.device).unsqueeze(0)
            y = torch.where(valid.unsqueeze(2), y, y.new_zeros(()))
        return y.to(x.dtype), SLSTMState(*_cast(final, x.dtype))


def _bf16_training_beats_torch(call: RNNCall) -> bool:
    """Whether a bfloat16 CPU LSTM training call is one this backend measured faster (CPU_BF16_TRAINING_MIN_HIDDEN)."""
    small_batch = call.batch_size is not None and call.batch_size <= CPU_FUSED_LSTM_AUTO_MAX_BATCH
    return call.hidden_size >= CPU_BF16_TRAINING_MIN_HIDDEN or small_batch


def _fused_lstm_beats_torch(call: RNNCall) -> bool:
    """Whether a CPU LSTM sequence call is one where the fused kernels measured faster than torch.nn (see
    CPU_FUSED_LSTM_AUTO_MAX_BATCH and the sizes after it): float32, or bfloat16 where the CPU has the bfloat16
    kernel (its forward; bfloat16 training comes here anyway)."""
    if call.dtype not in (torch.float32, torch.bfloat16) or call.batch_size is None:
        return False
    if call.dtype == torch.bfloat16 and torch.bfloat16 not in cpu_precision.native_half_dtypes():
        return False  # the bfloat16 kernel needs AVX512-BF16 (the planner checks the instruction itself too)
    weight_bytes = 4 * call.hidden_size * call.hidden_size * call.dtype.itemsize
    if weight_bytes > CPU_FUSED_LSTM_AUTO_MAX_WEIGHT_BYTES:
        return False
    if call.batch_size > CPU_FUSED_LSTM_AUTO_MAX_BATCH and not _wide_batch_beats_torch(call):
        return False
    return _fused_lstm_planned(call.batch_size, call.hidden_size, call.dtype, call.proj_size > 0,
                               call.layer_norm or call.zoneout)  # fmt: skip


def _wide_batch_beats_torch(call: RNNCall) -> bool:
    """Past 4 rows: the AVX-512 variant's measured cells (CPU_FUSED_LSTM_AUTO_MAX_BATCH_AVX512 and after it)."""
    if _cpu_variant() != "AVX512" or call.batch_size > CPU_FUSED_LSTM_AUTO_MAX_BATCH_AVX512:
        return False
    if not call.needs_grad:
        return True
    wide = call.batch_size >= CPU_FUSED_LSTM_AUTO_TRAINING_MIN_BATCH
    return call.dtype == torch.float32 and (wide or call.hidden_size >= CPU_FUSED_LSTM_AUTO_TRAINING_MIN_HIDDEN)


@functools.lru_cache(maxsize=1)
def _cpu_variant() -> str:
    """The CPU kernels' variant in this process (AVX512, AVX2, DEFAULT), or "" without the compiled operators."""
    try:
        _extension.load()
    except Exception:  # noqa: BLE001 - no extension: the backend is unavailable anyway
        return ""
    return torch.ops.fusedrnn.cpu_capability()


@functools.lru_cache(maxsize=256)
def _fused_lstm_planned(batch: int, hidden: int, dtype: torch.dtype, projection: bool, variants: bool) -> bool:
    """The kernel's planner (csrc/lstm_cpu_fused_plan.h) takes the call, on a measured CPU variant. Cached: it
    depends on the sizes and on this process's CPU variant only (the thread count changes threads, not the path)."""
    if _cpu_variant() not in CPU_FUSED_LSTM_AUTO_CAPABILITIES:
        return False
    plan = torch.ops.fusedrnn.cpu_fused_plan("LSTM", batch, hidden, dtype, projection, variants, 1, "auto")
    return plan[0] == "fused"


def _cast(tensors, dtype: torch.dtype) -> tuple:
    """Each tensor in `dtype` (autograd-aware: gradients come back in the original dtype); None stays None."""
    return tuple(None if t is None else t.to(dtype) for t in tensors)


def _cast_weights(w: LayerWeights, dtype: torch.dtype) -> LayerWeights:
    norm = None if w.norm is None else type(w.norm)(*_cast(w.norm, dtype))
    return LayerWeights(*_cast(w[:5], dtype), norm)


def _norm_requires_grad(w) -> bool:
    return torch.is_grad_enabled() and w.norm is not None and any(t is not None and t.requires_grad for t in w.norm)


def _variant_args(w, zoneout) -> tuple:
    """The op's trailing variant arguments: layer-norm gains (ih, hh, c_weight, c_bias) and zoneout masks (h, c)."""
    norm = (None,) * 4 if w.norm is None else w.norm
    masks = (None, None) if zoneout is None else zoneout
    return tuple(None if t is None else t.contiguous() for t in (*norm, *masks))


CPU_BACKEND = NativeBackend("cpu")
CUDA_BACKEND = NativeBackend("cuda")


#: H100 SXM: 132 SMs, 227 KB of shared memory per block (opt-in), clusters of up to 16 CTAs (non-portable size).
H100_SMS, H100_SMEM_PER_BLOCK, H100_MAX_CLUSTER = 132, 227 * 1024, 16


class CudaPlan(NamedTuple):
    """The `cuda` backend's plan for one layer direction (csrc/persistent_plan.h: plan_layer): `path` "persistent"
    (one launch for the sequence), "step" (the same fused kernels, one launch per step) or "loop" (GEMM + pointwise
    kernel per step); `tiling` (Tiling's fields) on the fused paths; `reason` why the faster paths were refused."""

    path: str
    reason: str
    tiling: dict[str, int]

    @property
    def persistent(self) -> bool:
        return self.path == "persistent"


def cuda_plan(
    mode: str,
    batch: int,
    hidden: int,
    dtype: torch.dtype,
    *,
    projection: bool = False,
    backward: bool = False,
    sm_count: int = H100_SMS,
    smem_per_block: int = H100_SMEM_PER_BLOCK,
    blocks_per_sm: int = -1,
    max_cluster: int = 0,
    tune: str = "",
) -> CudaPlan:
    """The planner's decision for the given device numbers (no GPU needed). blocks_per_sm: the kernel's occupancy at
    the planned shared memory (-1: unknown, not checked); max_cluster: the largest thread-block cluster (16 on an
    H100; 0: no cluster path); tune: a FUSEDRNN_CUDA_TUNE string (ValueError if bad)."""
    _extension.load()
    element_size = torch.empty((), dtype=dtype).element_size()
    device = (sm_count, smem_per_block, blocks_per_sm, max_cluster)
    path, tiling, reason = torch.ops.fusedrnn.cuda_plan(
        mode, batch, hidden, projection, element_size, backward, *device, tune
    )
    fields = (item.split("=") for item in tiling.split(",")) if tiling else ()
    return CudaPlan(path, reason, {key: int(value) for key, value in fields})


class IndrnnPlan(NamedTuple):
    """The `cuda` backend's IndRNN decision for one layer direction (csrc/indrnn_plan.h: plan_layer): `path`
    "sequence" (one kernel for the whole sequence, each thread owning a (row, unit)) or "loop" (rnn_loop.cpp's
    pointwise kernel per step); `reason` why the sequence kernel was refused (empty when it runs)."""

    path: str
    reason: str

    @property
    def sequence(self) -> bool:
        return self.path == "sequence"


def cuda_indrnn_plan(mode: str, batch: int, hidden: int, *, tune: str = "") -> IndrnnPlan:
    """The IndRNN planner's decision (no GPU needed); tune: a FUSEDRNN_CUDA_TUNE string (ValueError if bad;
    path=loop sends IndRNN to the per-step loop)."""
    _extension.load()
    return IndrnnPlan(*torch.ops.fusedrnn.cuda_indrnn_plan(mode, batch, hidden, tune))
