"""Compile every recurrence kernel for a GPU target without a GPU: `python -m fusedrnn.kernels.compile_check`.

Triton's interpreter accepts programs a GPU compile rejects (dots smaller than 16, some type mixes); this builds the
kernels all the way to a cubin (Triton ships ptxas) for sm_90 and, with --ptxas, prints ptxas' register and spill
report per kernel. Must run with TRITON_INTERPRET unset (the test suite starts it in a subprocess). It proves the
kernels compile, not that they are right or fast on the GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
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
#: The persistent kernels' reduction pieces (fusedrnn.kernels.plan.k_pieces).
PIECES = ("K0", "K1", "K2", "K3")


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


def specializations(hidden: int = 768, batch: int = 16, sms: int = 132, tune: str = ""):
    """(label, kernel, dtype, constexprs, num_warps, num_stages) covering every cell with every optional piece
    enabled, tiled and persistent (planned by fusedrnn.kernels.plan for an H100 with `sms` SMs)."""
    from fusedrnn.kernels import plan
    from fusedrnn.kernels.backward import recurrence_backward_kernel
    from fusedrnn.kernels.forward import recurrence_forward_kernel
    from fusedrnn.kernels.modes import SAVED_SLOTS
    from fusedrnn.kernels.persistent import persistent_backward_kernel, persistent_forward_kernel

    device = plan.Device.cuda(sms)
    tuning = plan.parse_tuning(tune)
    # Every cell with every optional piece on in bf16; every piece off (inference: no save, no bias, forward
    # direction) for LSTM and GRU; fp32 with exact and with TF32 dots for the LSTM.
    variants = [("bf16", "tf32", mode, True) for mode in GATES] + [
        ("bf16", "tf32", 0, False), ("bf16", "tf32", 1, False), ("fp32", "ieee", 0, True), ("fp32", "tf32", 0, True)]
    for dtype, precision, mode, on in variants:
        gates = GATES[mode]
        common = dict(MODE=mode, GATES=gates, HAS_LENGTHS=on, SLOTS=SAVED_SLOTS[mode], PRECISION=precision)
        forward = dict(common, HAS_BIAS=on, SAVE=on)
        label = f"mode={mode} {dtype}{'-' + precision if dtype == 'fp32' else ''}{'' if on else ' minimal'}"
        problem = plan.Problem(batch=batch, hidden=hidden, gates=gates, element_size=4 if dtype == "fp32" else 2,
                               exact_fp32=precision == "ieee")  # fmt: skip
        tiled = plan.plan_tiled(problem, tuning)
        tiles = dict(BLOCK_N=tiled.block_n, BLOCK_H=tiled.block_h, BLOCK_K=tiled.block_k)
        stages = tiled.stages
        yield f"tiled forward {label}", recurrence_forward_kernel, dtype, dict(forward, **tiles), tiled.warps, stages
        yield f"tiled backward {label}", recurrence_backward_kernel, dtype, dict(common, **tiles), tiled.warps, stages
        for backward in (False, True):
            name = f"persistent {'backward' if backward else 'forward'} {label}"
            try:
                chosen = plan.plan_persistent(problem, backward, device, tuning)
            except plan.Refused as refusal:
                print(f"{name}: {refusal} (the tiled kernels run instead)")
                continue
            tiles = dict(BLOCK_N=chosen.block_n, BLOCK_H=chosen.block_h, **dict(zip(PIECES, chosen.k_pieces)))
            if backward:
                yield name, persistent_backward_kernel, dtype, dict(common, **tiles), chosen.warps, 1
            else:
                yield name, persistent_forward_kernel, dtype, dict(forward, **tiles, GATES_P2=chosen.gates_p2), \
                    chosen.warps, 1


@dataclasses.dataclass(frozen=True)
class Report:
    """What the sm_XX build of one specialisation looks like (from Triton's metadata, the PTX and ptxas -v)."""

    label: str
    registers: int
    spill_bytes: int  # spill stores
    stack_bytes: int  # ptxas' stack frame: local memory, spills or not
    local_in_ptx: bool  # `.local` state space in the PTX
    shared_bytes: int
    vector_loads: int  # 16-byte global loads: ld.global*.v4.b32 / cp.async with 16 bytes
    scalar_loads: int  # other global loads
    mma: int  # mma.sync (MMAv2) instructions in the PTX
    wgmma: int  # wgmma.mma_async (MMAv3) instructions
    seconds: float

    def row(self) -> str:
        return (f"| {self.label} | {self.registers} | {self.spill_bytes} | {self.stack_bytes} | "
                f"{self.shared_bytes // 1024} KB | {self.vector_loads} / {self.scalar_loads} | {self.mma} | "
                f"{self.wgmma} |")  # fmt: skip


TABLE_HEADER = ("| kernel | registers | spill B | stack B | shared | 16-B / other global loads | mma.sync | wgmma |\n"
                "|---|---|---|---|---|---|---|---|")  # fmt: skip


def compile_one(kernel, dtype: str, constexprs: dict, warps: int, stages: int | None, sizes: dict, arch: int = 90):
    """Build one specialisation to a cubin for sm_`arch` (no GPU needed); sizes: the N and H it is specialised for."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = _signature(kernel, dtype, constexprs)
    source = ASTSource(kernel, signature, constexprs={
        (kernel.arg_names.index(name),): value for name, value in constexprs.items()},
        attrs=_attrs(kernel, signature, sizes))  # fmt: skip
    options = {"num_warps": warps} if stages is None else {"num_warps": warps, "num_stages": stages}
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)


def report(label: str, compiled, arch: int, seconds: float = 0.0) -> Report:
    ptx = compiled.asm["ptx"]
    text = _ptxas_verbose(ptx, arch)

    def number(pattern: str) -> int:
        found = re.search(pattern, text)
        if found is None:
            raise RuntimeError(f"{label}: no {pattern!r} in ptxas' report:\n{text}")
        return int(found.group(1))

    loads = re.findall(r"^\s*(?:@%p\d+\s+)?(ld\.global\S*|cp\.async\.c[ag]\.shared\.global\S*\s[^;]*)", ptx, re.M)
    vector = [load for load in loads if ".v4.b32" in load or ".v2.b64" in load or load.rstrip().endswith("16")]
    return Report(label=label, registers=number(r"Used (\d+) registers"), spill_bytes=number(r"(\d+) bytes spill stores"),
                  stack_bytes=number(r"(\d+) bytes stack frame"), local_in_ptx=".local" in ptx,
                  shared_bytes=compiled.metadata.shared, vector_loads=len(vector),
                  scalar_loads=len(loads) - len(vector), mma=len(re.findall(r"\bmma\.sync\b", ptx)),
                  wgmma=len(re.findall(r"\bwgmma\.mma_async\b", ptx)), seconds=seconds)  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 90 for H100/H200")
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--ptxas", action="store_true", help="a table of registers, spills, shared memory, load "
                        "widths and MMA instructions per kernel (runs ptxas -v once more per kernel)")  # fmt: skip
    parser.add_argument("--only", default="", help="compile only labels containing this text")
    parser.add_argument("--tune", default="", help="tiling overrides as in FUSEDRNN_TRITON_TUNE, e.g. warps=4")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("unset TRITON_INTERPRET: the interpreter does not compile", file=sys.stderr)
        return 2
    if args.ptxas:
        print(TABLE_HEADER)
    sizes = {"N": args.batch, "H": args.hidden}
    for label, kernel, dtype, constexprs, warps, stages in specializations(args.hidden, args.batch, tune=args.tune):
        if args.only not in label:
            continue
        start = time.perf_counter()
        compiled = compile_one(kernel, dtype, constexprs, warps, stages, sizes, args.arch)
        seconds = time.perf_counter() - start
        if args.ptxas:
            print(report(f"{label} N={args.batch} H={args.hidden}", compiled, args.arch, seconds).row(), flush=True)
        else:
            print(f"{label}: ok in {seconds:.1f}s, shared memory {compiled.metadata.shared} B", flush=True)
    return 0


def _ptxas_verbose(ptx: str, arch: int) -> str:
    """ptxas -v's report for the PTX (Triton's own ptxas run does not keep it)."""
    from triton.backends.nvidia.compiler import get_ptxas

    ptxas = get_ptxas(arch).path
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "kernel.ptx")
        with open(path, "w") as handle:
            handle.write(ptx)
        suffix = "a" if arch >= 90 else ""
        result = subprocess.run([ptxas, f"--gpu-name=sm_{arch}{suffix}", "-v", path, "-o", path + ".cubin"],
                                capture_output=True, text=True, check=True)  # fmt: skip
    return result.stderr + result.stdout


if __name__ == "__main__":
    sys.exit(main())
