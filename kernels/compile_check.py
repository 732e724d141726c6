"""Compile the recurrence kernels for a GPU target without a GPU: `python -m fusedrnn.kernels.compile_check`.

Triton's interpreter accepts programs a GPU compile rejects (dots smaller than 16, some type mixes); this builds the
kernels all the way to a cubin (Triton ships ptxas) for sm_90, specialised as a launch at the given N and H would
be (16-byte aligned pointers; N, H divisible by 16 where they are), tiled as fusedrnn.kernels.plan plans them.
--ptxas prints a table per kernel: registers, spills and stack frame (ptxas -v), shared memory, 16-byte vs other
global loads and MMA instructions (PTX); --json prints the same as one JSON object per line, and --key restricts the
run to the key configurations (KEY_SHAPES) that tests/test_triton_compile.py guards. Must run with TRITON_INTERPRET
unset (the tests start it in a subprocess). It proves the kernels compile and what their code looks like, not that
they are right or fast on the GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time

#: Pointer arguments by name: the ones in the input dtype; the rest are fp32 state buffers or integers.
DTYPE_POINTERS = {"gi_ptr", "w_hh_ptr", "b_hh_ptr", "y_ptr", "saved_ptr", "hx_ptr", "dy_ptr", "dgi_ptr", "dgh_ptr",
                  "w_hr_ptr", "ln_hh_ptr", "ln_cw_ptr", "ln_cb_ptr", "zh_ptr", "zc_ptr", "draw_ptr", "a_ptr", "da_ptr"}
INT_POINTERS = {"lengths_ptr": "*i64", "sync_ptr": "*i64", "n0_zero_ptr": "*i1", "max_len_ptr": "*i64"}
GATES = {0: 4, 1: 3, 2: 1, 3: 1}
#: The variant kernels (fusedrnn.kernels.variants, --variants): (label, mode, layer norm, zoneout h, zoneout c), each
#: with every optional piece on (bias, lengths, save); IndRNN's modes 4 / 5 have one gate.
VARIANTS = (("ln", 0, True, False, False), ("ln", 1, True, False, False), ("ln zoneout", 0, True, True, True),
            ("zoneout", 0, False, True, True), ("zoneout", 1, False, True, False), ("indrnn", 4, False, False, False),
            ("indrnn zoneout", 5, False, True, False))  # fmt: skip
#: The key configurations of the variant kernels: layer norm at the rowwise kernels' largest H and at the chunked
#: kernels' (plan.MAX_NORM_HIDDEN, plan.MAX_CHUNKED_NORM_HIDDEN; 512 the benchmark's N=64 training shape), zoneout
#: and IndRNN at 768.
VARIANT_KEY_SHAPES = ((16, 128, ("ln", "ln zoneout")), (64, 128, ("ln",)),
                      (16, 768, ("zoneout", "indrnn", "indrnn zoneout")), (16, 1024, ("ln", "ln zoneout")),
                      (64, 512, ("ln",)))  # fmt: skip
#: The persistent kernels' reduction pieces (fusedrnn.kernels.plan.k_pieces).
PIECES = ("K0", "K1", "K2", "K3")
#: Integer arguments the kernels let Triton specialise (divisibility by 16), as a launch does for these sizes (d: the
#: multi-head kernels' head size).
SPECIALISED_SIZES = ("N", "H", "P", "d")
#: What Triton records for a pointer or integer that is a multiple of 16 (torch allocations are 16-byte aligned).
DIVISIBLE = [["tt.divisibility", 16]]
#: The key configurations: (batch, hidden, labels to build) — the issue's target shapes (LSTM bf16 N=16 H=768; the
#: T=100 N=64 H=512 training benchmark for LSTM and GRU; N=1 H=256 inference), every cell at the first.
KEY_SHAPES = (
    (16, 768, ("persistent forward mode=0 bf16", "persistent backward mode=0 bf16", "persistent forward mode=1 bf16",
               "persistent backward mode=1 bf16", "persistent forward mode=2 bf16", "persistent backward mode=2 bf16",
               "persistent forward mode=0 fp32-tf32", "tiled forward mode=0 bf16", "tiled backward mode=0 bf16")),
    (64, 512, ("persistent forward mode=0 bf16", "persistent backward mode=0 bf16", "persistent forward mode=1 bf16",
               "persistent backward mode=1 bf16")),
    (1, 256, ("persistent forward mode=0 bf16", "persistent backward mode=0 bf16")),
)  # fmt: skip


#: The multi-head kernels' key configurations (--heads --key; fusedrnn.kernels.heads): (batch, hidden, heads, what to
#: build). TiRex's H = 512 in 4 heads of 128 (two output tiles, four reduction chunks per gate) for every cell in bf16
#: and the LSTM in fp32 with exact and TF32 dots; heads of 32 (one tile under the tiled kernels' width, 4 warps); an
#: odd head of 5 units (padded to 16).
HEADS_KEY_SHAPES = (
    (16, 512, 4, (("bf16", "tf32", 0), ("bf16", "tf32", 1), ("bf16", "tf32", 2), ("bf16", "tf32", 3),
                  ("fp32", "ieee", 0), ("fp32", "tf32", 0))),
    (16, 128, 4, (("bf16", "tf32", 0), ("fp32", "ieee", 1))),
    (16, 15, 3, (("bf16", "tf32", 0), ("bf16", "tf32", 1))),
)  # fmt: skip


#: The sLSTM kernels' key configurations (--slstm --key; fusedrnn.kernels.slstm): (batch, hidden, heads, (dtype,
#: precision) pairs). TiRex's H = 512 in 4 heads of 128 in every served dtype (fp32 with exact and TF32 dots); heads of
#: 32 (one tile under the tiled kernels' width, 4 warps); heads of 40 (not a multiple of 16: padded lanes and a
#: partial reduction chunk).
SLSTM_KEY_SHAPES = (
    (16, 512, 4, (("bf16", "tf32"), ("fp16", "tf32"), ("fp32", "ieee"), ("fp32", "tf32"))),
    (16, 128, 4, (("bf16", "tf32"), ("fp32", "ieee"))),
    (16, 80, 2, (("bf16", "tf32"),)),
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Spec:
    """One specialisation to build."""

    label: str
    kernel: object
    dtype: str
    constexprs: dict
    warps: int
    stages: int | None  # None: Triton's default
    planned_shared_bytes: int | None  # the planner's estimate (persistent kernels)
    max_registers: int | None = None  # Triton's maxnreg, as the launch passes it (None: ptxas chooses)


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


def _attrs(kernel, signature: dict, sizes: dict) -> dict:
    """The specialisation attributes a real launch would give: every pointer aligned, N and H where divisible."""
    attrs = {}
    for index, name in enumerate(kernel.arg_names):
        if signature[name].startswith("*") or (name in SPECIALISED_SIZES and sizes[name] % 16 == 0):
            attrs[(index,)] = DIVISIBLE
    return attrs


def specializations(hidden: int = 768, batch: int = 16, sms: int = 132, tune: str = ""):
    """Specs covering every cell with every optional piece enabled, tiled and persistent (planned by
    fusedrnn.kernels.plan for an H100 with `sms` SMs; persistent ones that do not fit are reported and skipped)."""
    from fusedrnn.kernels import plan
    from fusedrnn.kernels.backward import recurrence_backward_kernel
    from fusedrnn.kernels.forward import recurrence_forward_kernel
    from fusedrnn.kernels.modes import SAVED_SLOTS
    from fusedrnn.kernels.persistent import persistent_backward_kernel, persistent_forward_kernel

    device = plan.Device.cuda(sms)
    tuning = plan.parse_tuning(tune)
    # Every cell with every optional piece on in bf16; every piece off (inference: no save, no bias, forward
    # direction) for LSTM and GRU; fp32 with exact and with TF32 dots for the LSTM; the LSTM projection (tiled only).
    variants = [("bf16", "tf32", mode, True, False) for mode in GATES] + [
        ("bf16", "tf32", 0, False, False), ("bf16", "tf32", 1, False, False), ("fp32", "ieee", 0, True, False),
        ("fp32", "tf32", 0, True, False), ("bf16", "tf32", 0, True, True)]
    for dtype, precision, mode, on, proj in variants:
        gates = GATES[mode]
        common = dict(MODE=mode, GATES=gates, HAS_LENGTHS=on, SLOTS=SAVED_SLOTS[mode], PRECISION=precision)
        forward = dict(common, HAS_BIAS=on, SAVE=on)
        label = f"mode={mode} {dtype}{'-' + precision if dtype == 'fp32' else ''}{'' if on else ' minimal'}"
        label += " proj" if proj else ""
        problem = plan.Problem(batch=batch, hidden=hidden, gates=gates, element_size=4 if dtype == "fp32" else 2,
                               exact_fp32=precision == "ieee")  # fmt: skip
        tiled = plan.plan_tiled(problem, tuning)
        tiles = dict(BLOCK_N=tiled.block_n, BLOCK_H=tiled.block_h, BLOCK_K=tiled.block_k, PROJ=proj)
        for name, kernel, flags in (("forward", recurrence_forward_kernel, forward),
                                    ("backward", recurrence_backward_kernel, common)):  # fmt: skip
            yield Spec(f"tiled {name} {label}", kernel, dtype, dict(flags, **tiles), tiled.warps, tiled.stages, None)
        for backward in (False, True) if not proj else ():
            name = f"persistent {'backward' if backward else 'forward'} {label}"
            try:
                chosen = plan.plan_persistent(problem, backward, device, tuning)
            except plan.Refused as refusal:
                print(f"{name}: {refusal} (the tiled kernels run instead)", file=sys.stderr)
                continue
            tiles = dict(BLOCK_N=chosen.block_n, BLOCK_H=chosen.block_h, **dict(zip(PIECES, chosen.k_pieces)))
            if backward:
                kernel, flags = persistent_backward_kernel, dict(common, **tiles)
            else:
                kernel, flags = persistent_forward_kernel, dict(forward, **tiles, GATES_P2=chosen.gates_p2)
            yield Spec(name, kernel, dtype, flags, chosen.warps, 1, chosen.shared_bytes)


def heads_specializations(hidden: int, batch: int, heads: int, builds=None):
    """Specs of the multi-head kernels (fusedrnn.kernels.heads), forward and backward, every optional piece on
    (lengths, save, the GRU's b_hn), planned by plan.plan_heads; builds: (dtype, precision, mode) triples, every cell
    in bf16 if None."""
    from fusedrnn.kernels import plan
    from fusedrnn.kernels.heads import heads_backward_kernel, heads_forward_kernel
    from fusedrnn.kernels.modes import GRU, SAVED_SLOTS

    for dtype, precision, mode in builds or [("bf16", "tf32", mode) for mode in GATES]:
        gates = GATES[mode]
        problem = plan.Problem(batch=batch, hidden=hidden, gates=gates, element_size=4 if dtype == "fp32" else 2)
        chosen = plan.plan_heads(problem, heads)
        common = dict(MODE=mode, GATES=gates, HAS_LENGTHS=True, SLOTS=SAVED_SLOTS[mode], BLOCK_N=chosen.block_n,
                      BLOCK_H=chosen.block_h, BLOCK_K=chosen.block_k, PRECISION=precision)  # fmt: skip
        forward = dict(common, HAS_B_HN=mode == GRU, SAVE=True)
        name = f"mode={mode} {dtype}{'-' + precision if dtype == 'fp32' else ''} K={heads}"
        yield Spec(f"heads forward {name}", heads_forward_kernel, dtype, forward, chosen.warps, None, None,
                   chosen.forward_registers)  # fmt: skip
        yield Spec(f"heads backward {name}", heads_backward_kernel, dtype, common, chosen.warps, None, None,
                   chosen.backward_registers)  # fmt: skip


def heads_key_labels() -> list[str]:
    """The labels `--heads --key` builds (tests/test_heads_triton.py checks each was built)."""
    return [f"{spec.label} N={batch} H={hidden}" for batch, hidden, heads, builds in HEADS_KEY_SHAPES
            for spec in heads_specializations(hidden, batch, heads, builds)]  # fmt: skip


def slstm_specializations(hidden: int, batch: int, heads: int, builds=None):
    """Specs of the sLSTM kernels (fusedrnn.kernels.slstm), forward and backward, every optional piece on (lengths,
    save, TiRex's forget clamp), and the inference forward with every piece off, planned by plan.plan_slstm; builds:
    (dtype, precision) pairs, bf16 if None."""
    from fusedrnn.kernels import plan
    from fusedrnn.kernels.slstm import slstm_backward_kernel, slstm_forward_kernel
    from fusedrnn.reference_slstm import TIREX_FORGET_CLAMP

    for dtype, precision in builds or [("bf16", "tf32")]:
        chosen = plan.plan_slstm(batch, hidden, heads, 4 if dtype == "fp32" else 2)
        tiles = dict(FORGET_CLAMP=TIREX_FORGET_CLAMP, BLOCK_N=chosen.block_n, BLOCK_H=chosen.block_h,
                     BLOCK_K=chosen.block_k, PRECISION=precision)  # fmt: skip
        common = dict(tiles, HAS_LENGTHS=True, TIREX=True)
        name = f"{dtype}{'-' + precision if dtype == 'fp32' else ''} K={heads}"
        yield Spec(f"slstm forward {name}", slstm_forward_kernel, dtype, dict(common, SAVE=True), chosen.warps, None,
                   None, chosen.forward_registers)  # fmt: skip
        yield Spec(f"slstm backward {name}", slstm_backward_kernel, dtype, common, chosen.warps, None, None,
                   chosen.backward_registers)  # fmt: skip
        # Inference: every optional piece off (no lengths, no save, xlstm's formulation), a specialisation of its own.
        minimal = dict(tiles, HAS_LENGTHS=False, TIREX=False, SAVE=False)
        yield Spec(f"slstm forward {name} minimal", slstm_forward_kernel, dtype, minimal, chosen.warps, None, None,
                   chosen.forward_registers)  # fmt: skip


def slstm_key_labels() -> list[str]:
    """The labels `--slstm --key` builds (tests/test_triton_compile.py checks each was built)."""
    return [f"{spec.label} N={batch} H={hidden}" for batch, hidden, heads, builds in SLSTM_KEY_SHAPES
            for spec in slstm_specializations(hidden, batch, heads, builds)]  # fmt: skip


def variant_specializations(hidden: int, batch: int, labels=None, dtypes=("bf16", "fp32"), tune: str = ""):
    """Specs of the variant kernels (VARIANTS whose label is in `labels`, all if None), planned by
    plan.plan_variant; ones it refuses at this size are reported and skipped."""
    from fusedrnn.kernels import plan
    from fusedrnn.kernels.variants import variant_backward_kernel, variant_forward_kernel
    from fusedrnn.kernels.variants_chunked import chunked_norm_backward_kernel, chunked_norm_forward_kernel

    for name, mode, norm, zoneout_h, zoneout_c in VARIANTS:
        if labels is not None and name not in labels:
            continue
        gates = 1 if mode >= 4 else GATES[mode]
        for dtype in dtypes:
            label = f"variant {name} mode={mode} {dtype}"
            problem = plan.Problem(batch=batch, hidden=hidden, gates=gates, element_size=4 if dtype == "fp32" else 2)
            try:
                chosen = plan.plan_variant(problem, norm, mode >= 4, tuning=plan.parse_tuning(tune))
            except plan.Refused as refusal:
                print(f"{label}: {refusal}", file=sys.stderr)
                continue
            common = dict(MODE=mode, GATES=gates, HAS_BIAS=True, HAS_LENGTHS=True, SLOTS=4 if mode < 2 else 1,
                          ZONEOUT_H=zoneout_h, ZONEOUT_C=zoneout_c, BLOCK_N=chosen.block_n, BLOCK_H=chosen.block_h,
                          BLOCK_K=chosen.block_k, PRECISION="tf32")  # fmt: skip
            if chosen.kernel == "chunked":  # layer norm only: no NORM / ELEMENTWISE flags
                forward, backward = chunked_norm_forward_kernel, chunked_norm_backward_kernel
            else:
                forward, backward = variant_forward_kernel, variant_backward_kernel
                common.update(NORM=norm, ELEMENTWISE=mode >= 4)
            label += f" {chosen.kernel}"
            yield Spec(f"{label} forward", forward, dtype, dict(common, SAVE=True), chosen.warps, chosen.stages, None)
            yield Spec(f"{label} backward", backward, dtype, common, chosen.warps, chosen.stages, None)


@dataclasses.dataclass(frozen=True)
class Report:
    """What the sm_XX build of one specialisation looks like (from Triton's metadata, the PTX and ptxas -v)."""

    label: str
    batch: int
    hidden: int
    registers: int
    spill_bytes: int  # spill stores
    stack_bytes: int  # ptxas' stack frame: local memory, spills or not
    local_in_ptx: bool  # `.local` state space in the PTX
    shared_bytes: int
    planned_shared_bytes: int | None
    vector_loads: int  # 16-byte global loads: ld.global*.v4.b32 / .v2.b64 / cp.async of 16 bytes
    other_loads: int  # narrower global loads
    exchange_loads: int  # loads through L2 only (ld.global.cg): the persistent kernels' per-step exchange
    exchange_vector_loads: int  # ... of which 16 bytes wide
    mma: int  # mma.sync (MMAv2) instructions in the PTX
    wgmma: int  # wgmma.mma_async (MMAv3) instructions
    barrier_polls: int  # the persistent kernels' one-thread barrier spin (ld.acquire.gpu.global.s64 in PTX)
    seconds: float

    def row(self) -> str:
        return (f"| {self.label} N={self.batch} H={self.hidden} | {self.registers} | {self.spill_bytes} | "
                f"{self.stack_bytes} | {self.shared_bytes // 1024} KB | {self.vector_loads} / {self.other_loads} | "
                f"{self.exchange_vector_loads} / {self.exchange_loads} | {self.mma} | {self.wgmma} |")  # fmt: skip


TABLE_HEADER = ("| kernel | registers | spill B | stack B | shared | 16-B / other global loads | 16-B / all "
                "exchange loads | mma.sync | wgmma |\n|---|---|---|---|---|---|---|---|---|")  # fmt: skip


def compile_spec(spec: Spec, sizes: dict, arch: int = 90):
    """Build one specialisation to a cubin for sm_`arch` (no GPU needed); sizes: the N and H it is specialised for."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = _signature(spec.kernel, spec.dtype, spec.constexprs)
    source = ASTSource(spec.kernel, signature, constexprs={
        (spec.kernel.arg_names.index(name),): value for name, value in spec.constexprs.items()},
        attrs=_attrs(spec.kernel, signature, sizes))  # fmt: skip
    options = {"num_warps": spec.warps}
    if spec.stages is not None:
        options["num_stages"] = spec.stages
    if spec.max_registers is not None:
        options["maxnreg"] = spec.max_registers
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)


#: A global load in PTX (predicated or not): ld.global[.modifiers].type, or cp.async ... with its byte count.
LOAD = re.compile(r"^\s*(?:@!?%p\d+\s+)?(ld\.global\S*|cp\.async\.c[ag]\.shared\.global[^;]*)", re.M)


def _is_16_bytes(load: str) -> bool:
    return ".v4.b32" in load or ".v4.u32" in load or ".v2.b64" in load or load.startswith("cp.async") and \
        re.search(r",\s*16\s*(,|$)", load) is not None  # fmt: skip


def report(spec: Spec, compiled, sizes: dict, arch: int, seconds: float = 0.0) -> Report:
    ptx = compiled.asm["ptx"]
    text = _ptxas_verbose(ptx, arch)

    def number(pattern: str) -> int:
        found = re.search(pattern, text)
        if found is None:
            raise RuntimeError(f"{spec.label}: no {pattern!r} in ptxas' report:\n{text}")
        return int(found.group(1))

    loads = LOAD.findall(ptx)
    exchange = [load for load in loads if load.startswith("ld.global.cg")]
    return Report(
        label=spec.label, batch=sizes["N"], hidden=sizes["H"], registers=number(r"Used (\d+) registers"),
        spill_bytes=number(r"(\d+) bytes spill stores"), stack_bytes=number(r"(\d+) bytes stack frame"),
        local_in_ptx=re.search(r"\.local\b", ptx) is not None, shared_bytes=compiled.metadata.shared,
        planned_shared_bytes=spec.planned_shared_bytes, vector_loads=sum(map(_is_16_bytes, loads)),
        other_loads=len(loads) - sum(map(_is_16_bytes, loads)), exchange_loads=len(exchange),
        exchange_vector_loads=sum(map(_is_16_bytes, exchange)), mma=len(re.findall(r"\bmma\.sync\b", ptx)),
        wgmma=len(re.findall(r"\bwgmma\.mma_async\b", ptx)),
        barrier_polls=len(re.findall(r"\bld\.acquire\.gpu\.global\.s64\b", ptx)), seconds=seconds,
    )  # fmt: skip


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 90 for H100/H200")
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--ptxas", action="store_true", help="print the table (runs ptxas -v once more per kernel)")
    parser.add_argument("--json", action="store_true", help="print each kernel's report as a JSON line")
    parser.add_argument("--key", action="store_true", help="build the key configurations (KEY_SHAPES) only")
    parser.add_argument("--only", default="", help="build only labels containing this text")
    parser.add_argument("--variants", action="store_true", help="build the variant kernels (with --key: theirs)")
    parser.add_argument("--heads", type=int, nargs="?", const=4, default=0,
                        help="build the multi-head kernels with this many heads (default 4; with --key: theirs)")
    parser.add_argument("--slstm", type=int, nargs="?", const=4, default=0,
                        help="build the sLSTM kernels with this many heads (default 4; with --key: theirs)")
    parser.add_argument("--tune", default="", help="tiling overrides as in FUSEDRNN_TRITON_TUNE, e.g. warps=4")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("unset TRITON_INTERPRET: the interpreter does not compile", file=sys.stderr)
        return 2
    if args.slstm:
        shapes = SLSTM_KEY_SHAPES if args.key else ((args.batch, args.hidden, args.slstm, None),)
    elif args.heads:
        shapes = HEADS_KEY_SHAPES if args.key else ((args.batch, args.hidden, args.heads, None),)
    elif args.variants:
        shapes = VARIANT_KEY_SHAPES if args.key else ((args.batch, args.hidden, None),)
    else:
        shapes = KEY_SHAPES if args.key else ((args.batch, args.hidden, None),)
    # The projection's P is specialised like H (the sizes built here have P = H).
    if args.ptxas:
        print(TABLE_HEADER)
    for batch, hidden, *rest, labels in shapes:
        head_dim = hidden // rest[0] if args.heads or args.slstm else hidden
        sizes = {"N": batch, "H": hidden, "P": hidden, "d": head_dim}
        if args.slstm:
            specs = slstm_specializations(hidden, batch, rest[0], labels)
            labels = None
        elif args.heads:
            specs = heads_specializations(hidden, batch, rest[0], labels)
            labels = None
        elif args.variants:
            specs = variant_specializations(hidden, batch, labels, tune=args.tune)
            labels = None
        else:
            specs = specializations(hidden, batch, tune=args.tune)
        for spec in specs:
            if args.only not in spec.label or (labels is not None and spec.label not in labels):
                continue
            start = time.perf_counter()
            compiled = compile_spec(spec, sizes, args.arch)
            seconds = time.perf_counter() - start
            if args.ptxas or args.json:
                result = report(spec, compiled, sizes, args.arch, seconds)
                fields = dict(dataclasses.asdict(result), head_dim=head_dim)
                print(json.dumps(fields) if args.json else result.row(), flush=True)
            else:
                print(f"{spec.label} N={batch} H={hidden}: ok in {seconds:.1f}s, shared memory "
                      f"{compiled.metadata.shared} B", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
