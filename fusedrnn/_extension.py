"""The compiled operators `torch.ops.fusedrnn.*`: loading them, and their autograd.

`load()` imports the ahead-of-time build `fusedrnn._C` (setup.py); when that is missing or does not load, it builds
the same sources just in time with ninja through `torch.utils.cpp_extension.load` into torch's extension cache.
Whatever fails, the error says what is missing (a compiler, ninja, the sources) and the pure-Python backends
are unaffected: only the `cpu` and `cuda` backends depend on this module.

Ops (shapes in fusedrnn/reference.py; every tensor contiguous, one dtype and device):
    layer_forward(mode, x [T,N,I], h0 [N,P], c0 [N,H]|None, w_ih, w_hh, b_ih|None, b_hh|None, w_hr|None, reverse,
                  save_workspace=True, lengths [N] int64|None, ln_ih [G*H]|None, ln_hh [G*H]|None,
                  ln_c_weight [H]|None, ln_c_bias [H]|None, zoneout_h [T,N,H]|None, zoneout_c [T,N,H]|None)
        -> y [T,N,P], h_n [N,P], c_n [N,H] (LSTM; else empty), workspace (saved activations for the backward;
           empty when save_workspace is False, which only inference may use). With lengths, rows with
           t >= lengths[n] keep their state and y[t] is that state (the caller zeroes those outputs).
           The variants (fusedrnn/reference.py; CPU and CUDA, the CUDA paths unverified on a GPU): mode
           INDRNN_TANH/INDRNN_RELU with w_hh = u [H] (on CUDA one whole-sequence kernel, csrc/indrnn_sequence.h); the
           layer-norm gains (ln_ih and ln_hh together, ln_c_* for LSTM); zoneout masks.
    layer_backward(...) -> grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_w_hr,
                           grad_ln_ih, grad_ln_hh, grad_ln_c_weight, grad_ln_c_bias (empty where absent)
    slstm_forward(x [T,N,I] (or [T,N,4H] pre-activations when w_ih is None), h0, c0, n0, m0 [N,H], w_ih [4H,I]|None,
                  w_hh [K,4d,d], b_ih|None, b_hh|None, reverse, tirex, save_workspace=True, lengths [N] int64|None)
        -> y [T,N,H], h_n, c_n, n_n, m_n [N,H], workspace: one xLSTM sLSTM layer direction
           (fusedrnn/reference_slstm.py; tirex: formulation "tirex"), float32/float64 on CPU (half-precision callers
           convert to float32, as the reference computes). With lengths, y as layer_forward's.
    slstm_backward(...) -> grad_x, grad_h0, grad_c0, grad_n0, grad_m0, grad_w_ih (empty without w_ih), grad_w_hh,
                           grad_bias (of either bias; empty without)
    cpu_capability() -> "DEFAULT", "AVX2" or "AVX512": the CPU pointwise variant in use, chosen at load time as ATen
              chooses its own kernels (the CPU's best; ATEN_CPU_CAPABILITY=default|avx2|avx512 forces a narrower one)
    cpu_kept_buffer_bytes(), cpu_release_kept_buffers() -> int: the bytes of the CPU buffers kept for reuse between
              calls (csrc/cpu_buffers.h), and handing them back to the OS (fusedrnn.empty_cache)
    cuda_plan(mode, batch, hidden, projection, element_size, backward, sm_count, smem_per_block, blocks_per_sm=-1,
              max_cluster=0, tune="") -> (path, tiling, reason): the `cuda` backend's planner (persistent, per-step
              fused or loop) on given device numbers (no GPU needed; fusedrnn.backends.native.cuda_plan wraps it)
    cuda_indrnn_plan(mode, batch, hidden, tune="") -> (path, reason): whether the `cuda` backend runs an IndRNN layer
              direction as one whole-sequence kernel ("sequence") or on the per-step loop ("loop"), and why not (no
              GPU needed; fusedrnn.backends.native.cuda_indrnn_plan wraps it)
    cuda_defer_barrier_checks(), cuda_flush_barrier_checks(check): the persistent CUDA kernels' barrier flags of the
              launches between the two read in one host sync at the flush (fusedrnn.backends.native: once per module
              call instead of once per layer direction); no-ops in a build without CUDA
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import torch

from . import _build, autograd_paths, reference_slstm

_PACKAGE = Path(__file__).resolve().parent
#: Where the C++/CUDA sources are: inside an installed package (setup.py copies them), or the source checkout.
_SOURCE_DIRS = [_PACKAGE / "csrc", _PACKAGE.parent / "csrc"]
_JIT_NAME = "fusedrnn_C"


class ExtensionError(RuntimeError):
    """The compiled operators cannot be loaded or built here; the message says what is missing."""


def _sources() -> Path:
    for folder in _SOURCE_DIRS:
        if all((folder / name).exists() for name in _build.CPP_SOURCES):
            return folder
    raise ExtensionError(
        "fusedrnn._C is not built and its C++ sources are not found (looked in "
        + ", ".join(map(str, _SOURCE_DIRS))
        + "); reinstall fusedrnn with `pip install --no-build-isolation .`"
    )


def _jit_build(import_error: Exception) -> str:
    """Build the extension with ninja into torch's extension cache; returns how it was built."""
    folder = _sources()
    cuda_home = _build.prepare_cuda_environment()  # before importing cpp_extension, which reads CUDA_HOME once
    from torch.utils import cpp_extension  # noqa: PLC0415

    if cuda_home and not (cpp_extension.CUDA_HOME and _build.is_toolkit(Path(cpp_extension.CUDA_HOME))):
        # Imported earlier by someone else, it guessed the root from a wrapper script (e.g. /usr/local/bin/nvcc).
        cpp_extension.CUDA_HOME = cuda_home

    compiler = cpp_extension.get_cxx_compiler()
    if shutil.which(compiler) is None:
        raise ExtensionError(
            f"fusedrnn._C is not built ({import_error}) and the C++ compiler {compiler!r} needed to build it is not "
            "found (install g++ or set CXX)"
        )
    if not cpp_extension.is_ninja_available():
        raise ExtensionError(f"fusedrnn._C is not built ({import_error}) and ninja, needed to build it, is missing")
    with_cuda = torch.version.cuda is not None and cuda_home is not None and not _build.env_flag(_build.SKIP_CUDA_ENV)
    sources = [folder / name for name in _build.CPP_SOURCES + (_build.CUDA_SOURCES if with_cuda else [])]
    defines = _build.cuda_define() if with_cuda else []
    try:
        cpp_extension.load(
            name=_JIT_NAME,
            sources=[str(s) for s in sources],
            extra_cflags=_build.cxx_flags() + defines,
            extra_cuda_cflags=_build.nvcc_flags() + defines,
            with_cuda=with_cuda,
            is_python_module=False,
        )
    except Exception as error:  # noqa: BLE001 - any build failure becomes one clear message
        raise ExtensionError(f"fusedrnn._C is not built ({import_error}) and building it JIT failed: {error}") from error
    return f"JIT build in {cpp_extension._get_build_directory(_JIT_NAME, verbose=False)}"


_LOADED: list[str | ExtensionError] = []  # the outcome of the first load(), success or failure


def load() -> str:
    """Make torch.ops.fusedrnn available; returns where the operators came from. Raises ExtensionError, the same
    one on every call (a failed build is not retried in the same process)."""
    if not _LOADED:
        try:
            try:
                importlib.import_module("fusedrnn._C")
                origin = "fusedrnn._C"
            except (ImportError, OSError) as error:
                origin = _jit_build(error)
            _register_autograd()
            _LOADED.append(origin)
        except ExtensionError as error:
            _LOADED.append(error)
    if isinstance(_LOADED[0], ExtensionError):
        raise _LOADED[0]
    return _LOADED[0]


def loaded() -> bool:
    """Whether load() has made the operators available in this process (without trying to)."""
    return bool(_LOADED) and not isinstance(_LOADED[0], ExtensionError)


def has_cuda_kernels() -> bool:
    """Whether the loaded operators include the CUDA implementation (compiled with a CUDA toolkit)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("fusedrnn::layer_forward", "CUDA")


# ---------------------------------------------------------------------------------------------------------------
# Autograd (the pattern in fusedrnn.autograd_paths): layer_backward is the derivative of layer_forward; where the
# backward itself must be differentiable, it is the reference's vector-Jacobian product instead.


#: Where the op's arguments are: mode, the eight tensors of a plain layer, reverse, save_workspace, lengths, then
#: the variants' six (fusedrnn.reference.LAYER_INPUTS after w_hr: layer-norm gains, zoneout masks).
_PLAIN, _VARIANTS = range(1, 9), range(12, 18)
_ARITY = 18


def _setup_context(ctx, inputs, output):
    mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, _save_workspace, lengths, *variants = inputs
    y, _, _, workspace = output
    ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, *variants, y, workspace, lengths)
    ctx.mode, ctx.reverse = mode, reverse
    ctx.mark_non_differentiable(workspace)


def _contiguous_or_zeros(grad, like):
    return torch.zeros_like(like) if grad is None else grad.contiguous()


def _recompute(ctx) -> autograd_paths.Recompute:
    *inputs, _y, _workspace, lengths = ctx.saved_tensors  # reference.LAYER_INPUTS, in order
    return autograd_paths.Recompute(ctx.mode, tuple(inputs), ctx.reverse, lengths)


def _kernel_backward(ctx, grad_y, grad_h_n, grad_c_n, _grad_workspace):
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, *variants, y, workspace, lengths = ctx.saved_tensors
    has_bias = b_ih is not None
    grad_y = _contiguous_or_zeros(grad_y, y)
    grad_h_n = _contiguous_or_zeros(grad_h_n, h0)
    grad_c_n = None if grad_c_n is None or c0 is None else grad_c_n.contiguous()
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr, *d_norm = torch.ops.fusedrnn.layer_backward(
        ctx.mode, grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, w_hr, y, workspace, ctx.reverse, has_bias,
        lengths, *variants,
    )
    bias = (db_ih, db_hh) if has_bias else (None, None)
    dc0 = dc0 if c0 is not None else None
    # The layer-norm gains get their gradients; the zoneout masks (constants) none.
    d_norm = [g if v is not None else None for g, v in zip(d_norm, variants)]
    return (None, dx, dh0, dc0, dw_ih, dw_hh, *bias, dw_hr if w_hr is not None else None, None, None, None,
            *d_norm, None, None)  # fmt: skip


_LAYER = autograd_paths.LayerAutograd(
    "NativeLayer",
    lambda *args: torch.ops.fusedrnn.layer_forward(*args),  # looked up per call: the op exists once load() ran
    _setup_context,
    _kernel_backward,
    _recompute,
    input_positions=(*_PLAIN, *_VARIANTS),  # reference.LAYER_INPUTS's positions among the op's arguments
    arity=_ARITY,
)


#: slstm_forward's arguments: reference_slstm.SLSTM_LAYER_INPUTS (positions 0-8), reverse, tirex, save_workspace,
#: lengths.
_SLSTM_INPUTS = range(len(reference_slstm.SLSTM_LAYER_INPUTS))
_SLSTM_ARITY = len(_SLSTM_INPUTS) + 4
_SLSTM_OUTPUTS = 5  # y, h_n, c_n, n_n, m_n


def _slstm_setup_context(ctx, inputs, output):
    *tensors, reverse, tirex, _save_workspace, lengths = inputs
    ctx.save_for_backward(*tensors, output[0], output[-1], lengths)
    ctx.reverse, ctx.tirex = reverse, tirex
    ctx.mark_non_differentiable(output[-1])


def _slstm_recompute(ctx) -> autograd_paths.Recompute:
    *inputs, _y, _workspace, lengths = ctx.saved_tensors
    return autograd_paths.Recompute("tirex" if ctx.tirex else "xlstm", tuple(inputs), ctx.reverse, lengths)


def _slstm_kernel_backward(ctx, grad_y, *grad_final):
    x, h0, c0, n0, m0, w_ih, w_hh, b_ih, b_hh, y, workspace, lengths = ctx.saved_tensors
    grad_state = [_contiguous_or_zeros(g, h0) for g in grad_final[: _SLSTM_OUTPUTS - 1]]
    has_bias = b_ih is not None or b_hh is not None
    dx, dh0, dc0, dn0, dm0, dw_ih, dw_hh, db = torch.ops.fusedrnn.slstm_backward(
        _contiguous_or_zeros(grad_y, y), *grad_state, x, h0, c0, n0, m0, w_ih, w_hh, y, workspace, ctx.reverse,
        ctx.tirex, has_bias, lengths,
    )
    # Both biases are added to the same pre-activations: the same gradient, a copy each (no two grads alias).
    db_ih = db if b_ih is not None else None
    db_hh = (db.clone() if b_ih is not None else db) if b_hh is not None else None
    return (dx, dh0, dc0, dn0, dm0, dw_ih if w_ih is not None else None, dw_hh, db_ih, db_hh, None, None, None, None)


_SLSTM = autograd_paths.LayerAutograd(
    "NativeSLSTM",
    lambda *args: torch.ops.fusedrnn.slstm_forward(*args),
    _slstm_setup_context,
    _slstm_kernel_backward,
    _slstm_recompute,
    input_positions=_SLSTM_INPUTS,
    arity=_SLSTM_ARITY,
    vjp=reference_slstm.slstm_vjp,
    outputs=_SLSTM_OUTPUTS,
)


def _register_autograd() -> None:
    torch.library.register_autograd("fusedrnn::layer_forward", _LAYER.backward, setup_context=_setup_context)
    torch.library.register_autograd("fusedrnn::slstm_forward", _SLSTM.backward, setup_context=_slstm_setup_context)


def layer_forward(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, save_workspace, lengths,
                  ln_ih=None, ln_hh=None, ln_c_weight=None, ln_c_bias=None, zoneout_h=None, zoneout_c=None):
    """torch.ops.fusedrnn.layer_forward with autograd, at the least per-call cost (fusedrnn.autograd_paths):
    inference saves no workspace and needs none."""
    return _LAYER.apply(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, save_workspace, lengths,
                        ln_ih, ln_hh, ln_c_weight, ln_c_bias, zoneout_h, zoneout_c,
                        differentiable=save_workspace)  # fmt: skip


def slstm_forward(x, h0, c0, n0, m0, w_ih, w_hh, b_ih, b_hh, reverse, tirex, save_workspace, lengths):
    """torch.ops.fusedrnn.slstm_forward with autograd (as layer_forward): inference saves no workspace."""
    return _SLSTM.apply(x, h0, c0, n0, m0, w_ih, w_hh, b_ih, b_hh, reverse, tirex, save_workspace, lengths,
                        differentiable=save_workspace)  # fmt: skip
