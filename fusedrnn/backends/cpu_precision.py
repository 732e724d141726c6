"""The `cpu` backend's compute dtype for bfloat16 and float16 calls (issue #23).

Where the CPU has dot-product instructions for a 16-bit dtype (bfloat16: AVX512-BF16 or AMX; float16: AVX512-FP16 or
AMX-FP16, oneDNN's own tests), the loop computes in that dtype: its GEMMs read half the bytes. Without them ATen's and
oneDNN's 16-bit GEMMs convert on every call, and a layer in that dtype costs 3-20x its float32 time (2-core Intel Xeon
with AVX-512 but no AVX512-BF16, one thread, T=50 N=16 I=H=256, thread CPU time; torch.nn / `cpu` before this policy,
ms: GRU float32 8.4 / 9.2, bfloat16 26 / 25, float16 63 / 199; LSTM float16 100 / 273; issue #23 measured the same on an
AVX2-only EPYC). There each layer direction runs in float32: its input, state and weights are upcast once per call,
and its outputs rounded back to the storage dtype, so activations between layers, outputs and gradients keep the
caller's dtype (and inter-layer dropout draws the masks torch.nn draws), while the recurrence itself runs at float32
speed and accuracy (closer to the float64 truth than torch.nn's own 16-bit result, which tests/test_native_backend.py
checks).

Upcasting W costs about as much as a few steps' GEMMs in the 16-bit dtype, so short calls (a cell, a decoder's
1-step layer call) keep the storage dtype: below MIN_STEPS_TO_UPCAST steps the upcast lost (same machine, inference,
ms, upcast / storage: LSTM H=1024 N=8 bfloat16 T=4 41 / 27, T=8 30 / 46; float16 T=2 15 / 26, T=4 24 / 56; LSTMCell
H=256 N=1 bfloat16 0.35 / 0.15, H=1024 N=8 22 / 6.6).

FUSEDRNN_CPU_HALF_COMPUTE overrides the choice, read at every call: "float32" (always upcast), "storage" (never), or
"auto" (the default: by the CPU's instructions).
"""

from __future__ import annotations

import functools
import os

import torch

HALF_DTYPES = (torch.bfloat16, torch.float16)
ENV_VAR = "FUSEDRNN_CPU_HALF_COMPUTE"
CHOICES = ("auto", "float32", "storage")
#: The fewest time steps for which `auto` upcasts a layer direction (float16's GEMMs are the slower, so it pays sooner).
MIN_STEPS_TO_UPCAST = {torch.bfloat16: 8, torch.float16: 4}


def _has(probe: str) -> bool:
    """torch.cpu's private CPU-feature probes (present since torch 2.3); a missing one reads as absent."""
    function = getattr(torch.cpu, probe, None)
    return bool(function()) if function is not None else False


#: oneDNN's instruction-set caps (ONEDNN_MAX_CPU_ISA, or its older name DNNL_MAX_CPU_ISA) under which oneDNN has no
#: 16-bit dot products and emulates them, whatever the CPU has: oneDNN's names for AVX2- and plain AVX-512-level ISAs.
#: Capped so, a CPU counts as one without them (how an AVX2-only CPU is approximated on an AVX-512 one).
ONEDNN_ISAS_WITHOUT_HALF_DOTS = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI"})


def _onednn_capped_below_half_dots() -> bool:
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    return cap.strip().upper() in ONEDNN_ISAS_WITHOUT_HALF_DOTS


@functools.cache
def native_half_dtypes() -> frozenset[torch.dtype]:
    """The 16-bit dtypes this CPU has dot-product instructions for, as oneDNN may use them (read once: oneDNN reads its
    cap once too)."""
    if _onednn_capped_below_half_dots():
        return frozenset()
    native = set()
    if _has("_is_avx512_bf16_supported") or _has("_is_amx_tile_supported"):
        native.add(torch.bfloat16)
    if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_fp16_supported():  # AVX512-FP16 / AMX-FP16
        native.add(torch.float16)
    return frozenset(native)


def choice() -> str:
    """FUSEDRNN_CPU_HALF_COMPUTE, checked."""
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"{ENV_VAR} must be one of {', '.join(CHOICES)}, got {value!r}")
    return value


def compute_dtype(dtype: torch.dtype, steps: int | None, native: frozenset[torch.dtype] | None = None) -> torch.dtype:
    """The dtype the `cpu` loop computes `steps` time steps (None: unknown, as long) of storage dtype `dtype` in:
    float32 for a 16-bit dtype the CPU (or `native`, the set of dtypes it has instructions for) cannot multiply
    natively, over enough steps to pay for the upcast; else `dtype` itself."""
    if dtype not in HALF_DTYPES:
        return dtype
    mode = choice()
    if mode == "auto":
        native = native_half_dtypes() if native is None else native
        upcast = dtype not in native and (steps is None or steps >= MIN_STEPS_TO_UPCAST[dtype])
    else:
        upcast = mode == "float32"
    return torch.float32 if upcast else dtype
