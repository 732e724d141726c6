"""Compile every recurrence kernel for a GPU target without a GPU: `python -m fusedrnn.kernels.compile_check`.

Triton's interpreter accepts programs a GPU compile rejects (dots smaller than 16, some type mixes); this builds the
kernels all the way to a cubin (Triton ships ptxas) for sm_90 and, with --ptxas, prints ptxas' register and spill
report per kernel. Must run with TRITON_INTERPRET unset (the test suite starts it in a subprocess). It proves the
kernels compile, not that they are right or fast on the GPU.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

#: Pointer arguments by name: the ones in the input dtype; the rest are fp32 state buffers or integers.
DTYPE_POINTERS = {"gi_ptr", "w_hh_ptr", "b_hh_ptr", "y_ptr", "saved_ptr", "hx_ptr", "dy_ptr", "dgi_ptr", "dgh_ptr"}
INT_POINTERS = {"lengths_ptr": "*i64", "sync_ptr": "*i64"}
TRITON_DTYPES = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}
GATES = {0: 4, 1: 3, 2: 1, 3: 1}


def _signature(kernel, dtype: str, constexprs: dict) -> dict:
    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in DTYPE_POINTERS:
            signature[name] = f"*{dtype}"
        elif name in INT_POINTERS:
            signature[name] = INT_POINTERS[name]
        elif name.endswith("_ptr"):
            signature[name] = "*fp32"
        else:
            signature[name] = "i32"
    return signature


#: Integer arguments the kernels let Triton specialise (divisibility by 16), as a launch does for these sizes.
SPECIALISED_SIZES = ("N", "H")
#: What Triton records for a pointer or integer that is a multiple of 16 (torch allocations are 16-byte aligned).
DIVISIBLE = [["tt.divisibility", 16]]


def _attrs(kernel, signature: dict, sizes: dict) -> dict:
    """The specialisation attributes a real launch would give: every pointer aligned, N and H where divisible."""
    attrs = {}
    for index, name in enumerate(kernel.arg_names):
        if signature[name].startswith("*") or (name in sizes and sizes[name] % 16 == 0):
            attrs[(index,)] = DIVISIBLE
    return attrs


def specializations(hidden: int = 768, batch: int = 16, sms: int = 132):
    """(label, kernel, dtype, constexprs, num_warps, num_stages) covering every cell with every optional piece
    enabled, tiled and persistent (planned by fusedrnn.kernels.plan for an H100 with `sms` SMs)."""
    from fusedrnn.kernels import plan
    from fusedrnn.kernels.backward import recurrence_backward_kernel
    from fusedrnn.kernels.forward import recurrence_forward_kernel
    from fusedrnn.kernels.modes import SAVED_SLOTS
    from fusedrnn.kernels.persistent import persistent_backward_kernel, persistent_forward_kernel

    device = plan.Device.cuda(sms)
    # Every cell with every optional piece on in bf16; every piece off (inference: no save, no bias, forward
    # direction) for LSTM and GRU; fp32 (the dot's input precision differs) for the LSTM.
    variants = [("bf16", mode, True) for mode in GATES] + [("bf16", 0, False), ("bf16", 1, False), ("fp32", 0, True)]
    for dtype, mode, on in variants:
        gates = GATES[mode]
        common = dict(MODE=mode, GATES=gates, HAS_LENGTHS=on, SLOTS=SAVED_SLOTS[mode],
                      PRECISION="ieee" if dtype == "fp32" else "tf32")  # fmt: skip
        forward = dict(common, HAS_BIAS=on, SAVE=on)
        label = f"mode={mode} {dtype}{'' if on else ' minimal'}"
        problem = plan.Problem(batch=batch, hidden=hidden, gates=gates, element_size=4 if dtype == "fp32" else 2)
        tiled = plan.plan_tiled(problem)
        tiles = dict(BLOCK_N=tiled.block_n, BLOCK_H=tiled.block_h, BLOCK_K=tiled.block_k)
        yield f"tiled forward {label}", recurrence_forward_kernel, dtype, dict(forward, **tiles), tiled.warps, None
        yield f"tiled backward {label}", recurrence_backward_kernel, dtype, dict(common, **tiles), tiled.warps, None
        for backward in (False, True):
            name = f"persistent {'backward' if backward else 'forward'} {label}"
            try:
                chosen = plan.plan_persistent(problem, backward, device)
            except plan.Refused as refusal:
                print(f"{name}: {refusal} (the tiled kernels run instead)")
                continue
            tiles = dict(BLOCK_N=chosen.block_n, BLOCK_H=chosen.block_h, K0=chosen.k0, K1=chosen.k1)
            if backward:
                yield name, persistent_backward_kernel, dtype, dict(common, **tiles), chosen.warps, 1
            else:
                yield name, persistent_forward_kernel, dtype, dict(forward, **tiles, GATES_P2=chosen.gates_p2), \
                    chosen.warps, 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 90 for H100/H200")
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--ptxas", action="store_true", help="print ptxas' register / spill report per kernel")
    parser.add_argument("--only", default="", help="compile only labels containing this text")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("unset TRITON_INTERPRET: the interpreter does not compile", file=sys.stderr)
        return 2
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", args.arch, 32)
    for label, kernel, dtype, constexprs, warps, stages in specializations(args.hidden, args.batch):
        if args.only not in label:
            continue
        start = time.perf_counter()
        signature = _signature(kernel, dtype, constexprs)
        source = ASTSource(kernel, signature, constexprs={
            (kernel.arg_names.index(name),): value for name, value in constexprs.items()},
            attrs=_attrs(kernel, signature, {"N": args.batch, "H": args.hidden}))  # fmt: skip
        options = {"num_warps": warps} if stages is None else {"num_warps": warps, "num_stages": stages}
        compiled = triton.compile(source, target=target, options=options)
        line = f"{label}: ok in {time.perf_counter() - start:.1f}s, shared memory {compiled.metadata.shared} B"
        if args.ptxas:
            line += ", " + _ptxas_report(compiled.asm["ptx"], args.arch)
        print(line, flush=True)
    return 0


def _ptxas_report(ptx: str, arch: int) -> str:
    from triton.backends.nvidia.compiler import get_ptxas

    ptxas = get_ptxas(arch).path
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "kernel.ptx")
        with open(path, "w") as handle:
            handle.write(ptx)
        suffix = "a" if arch >= 90 else ""
        result = subprocess.run([ptxas, f"--gpu-name=sm_{arch}{suffix}", "-v", path, "-o", path + ".cubin"],
                                capture_output=True, text=True)  # fmt: skip
    text = result.stderr + result.stdout
    registers = re.search(r"Used (\d+) registers", text)
    spills = re.search(r"(\d+) bytes spill stores", text)
    return f"{registers.group(1) if registers else '?'} registers, {spills.group(1) if spills else '?'} B spill stores"


if __name__ == "__main__":
    sys.exit(main())
