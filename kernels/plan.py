"""Which recurrence kernels a call gets, how they are tiled, and why a persistent launch is refused.

Plain Python: no triton, no torch, no GPU state (the caller passes the device's limits in `Device`), so CPU tests
cover every decision and a sweep driver can call it directly. Used by fusedrnn.triton_ops, which plans each launch
(a forced persistent call that does not fit raises BackendError with the planner's reason there), and by the triton
backend for the 32-bit offset limit (MAX_OFFSET).

Environment (read by the host, once per call):
  FUSEDRNN_TRITON_KERNEL  auto (default) | tiled | persistent
      auto        the persistent kernels wherever `plan_persistent` says they fit on CUDA, else the tiled ones.
                  Under Triton's interpreter auto means tiled (the persistent kernels there launch once per step,
                  which is slow), so tests force persistent explicitly.
      tiled       always the tiled kernels (one program per 16 batch rows; any N, any H).
      persistent  always the persistent kernels; a call they do not fit raises `Refused` with the reason.
  FUSEDRNN_TRITON_TUNE    comma-separated key=value overrides of the chosen path's tiling, e.g. "warps=4,block_h=16".
      keys: warps (num_warps), block_h (hidden units per program / per tile), block_k (reduction tile of the tiled
      kernels), stages (num_stages of the tiled kernels). An unknown key or a malformed value is a ValueError; a
      well-formed value that the chosen path cannot use is `Refused` with the reason (auto then runs tiled).

The variants (layer norm, zoneout, IndRNN: fusedrnn.kernels.variants, and layer norm beyond MAX_NORM_HIDDEN
fusedrnn.kernels.variants_chunked) are planned by `plan_variant` (bottom of this file, with why the persistent kernels
refuse layer norm and zoneout and how they could do it).

Persistent kernels (fusedrnn.kernels.persistent): one program per slice of BLOCK_H hidden units, all batch rows in one
tile, the program's W_hh slice resident on chip for the sequence, one grid-wide barrier per step. The barrier
requires every program to be resident at once: at most one program per SM (`Device.programs`). Their reduction
(K = H; the backward runs one dot per gate) is held whole, as at most four power-of-two pieces (768 = 3 x 256), so H
is not padded to a power of two.
"""

from __future__ import annotations

import dataclasses
import os

KERNEL_ENV = "FUSEDRNN_TRITON_KERNEL"
KERNELS = ("auto", "tiled", "persistent")
TUNE_ENV = "FUSEDRNN_TRITON_TUNE"
TUNE_KEYS = ("warps", "block_h", "block_k", "stages")

#: tl.dot needs every dimension >= 16 when compiled for a GPU (the interpreter would accept less).
MIN_DOT = 16
#: Largest thread count Triton launches per program (32 warps of 32 threads).
MAX_WARPS = 32
#: Tiled kernels: 16 batch rows per program; 4 gate accumulators of [16, 64] fp32 plus 4 weight tiles of [32, 64]
#: per reduction step; with a 64-deep reduction tile ptxas spilled at 4 warps, and at 4 warps the 4-gate
#: specialisations spilled too (compile_check --ptxas), hence 8.
TILED_BLOCK_N = MIN_DOT
TILED_BLOCK_H = 64
TILED_BLOCK_K = 32
TILED_WARPS = 8
#: Persistent kernels: the W slice is a shared-memory operand and the per-step accumulator is small ([G*BH, N] fp32).
#: The forward runs one warpgroup (4 warps). The backward's G dots (K = H each) materialise their operand fragments
#: at once: at 4 warps ptxas spilled (LSTM bf16 N=16 H=768: 255 registers, 92 B spilled), at 8 it does not.
PERSISTENT_WARPS = 4
PERSISTENT_BACKWARD_WARPS = 8
#: Every persistent program covers all batch rows: its accumulator [G*BH, BN] fp32 and the per-step operand [K, BN]
#: grow with N, and beyond 64 rows the tiled kernels' batch parallelism wins anyway.
MAX_PERSISTENT_BATCH = 64
#: The persistent kernels' reduction is split into at most this many dots per step (kernel code: K0 ... K3) ...
MAX_PIECES = 4
#: ... each at most this many bytes per row (per 16 batch rows: the per-step operand piece is [piece, BLOCK_N]) when
#: four such pieces cover K. A dot loads its whole operand fragments before its MMA chain: with one [16, 768] bf16
#: piece the Elman backward needed 200 registers, the LSTM's spilled (sm_90, compile_check); with 256-wide pieces
#: (128 at N=64) none spills.
MAX_PIECE_BYTES = 512
#: Shared memory one program may use on an H100/H200 (227 KB per block, opted in); Triton refuses to launch beyond.
H100_SHARED_BYTES = 227 * 1024
#: The kernels index with 32-bit offsets inside one step (W_hh: G*H*H elements; a step of gi / saved / dgates:
#: N*4*H elements); time offsets are 64-bit, so T is unbounded.
MAX_OFFSET = 2**31 - 1
#: Under the interpreter the persistent kernels run one step per launch (the launch boundary is the barrier), so any
#: program count works; planning for a small GPU gives several programs even at the tests' tiny hidden sizes.
INTERPRETER_PROGRAMS = 4


def interpreter_enabled() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (read by triton at import: set it before importing)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


class Refused(RuntimeError):
    """The requested kernels cannot serve this call; the message says why."""


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Overrides from FUSEDRNN_TRITON_TUNE; None keeps the planner's choice."""

    warps: int | None = None
    block_h: int | None = None
    block_k: int | None = None
    stages: int | None = None


def _power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def parse_tuning(text: str) -> Tuning:
    """"warps=4,block_h=16" -> Tuning. ValueError for an unknown key or a value that is no valid setting at all."""
    values = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in TUNE_KEYS:
            raise ValueError(f"{TUNE_ENV}: {item.strip()!r} is not key=value with a key among {', '.join(TUNE_KEYS)}")
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"{TUNE_ENV}: {key}={value.strip()!r} is not an integer") from None
        if key == "stages" and number < 1:
            raise ValueError(f"{TUNE_ENV}: stages={number} must be >= 1")
        if key != "stages" and not _power_of_two(number):
            raise ValueError(f"{TUNE_ENV}: {key}={number} must be a power of two (a Triton block dimension)")
        if key == "warps" and number > MAX_WARPS:
            raise ValueError(f"{TUNE_ENV}: warps={number} exceeds Triton's {MAX_WARPS}")
        values[key] = number
    return Tuning(**values)


def tuning_from_env() -> Tuning:
    return parse_tuning(os.environ.get(TUNE_ENV, ""))


def kernel_from_env() -> str:
    kernel = os.environ.get(KERNEL_ENV, "auto").strip() or "auto"
    if kernel not in KERNELS:
        raise ValueError(f"{KERNEL_ENV}={kernel!r}: expected one of {', '.join(KERNELS)}")
    return kernel


@dataclasses.dataclass(frozen=True)
class Device:
    """What the planner needs to know about where the kernels run."""

    programs: int  # programs that can be resident at once: one per SM
    shared_bytes: int  # shared memory one program may use
    interpreter: bool  # Triton's interpreter: one step (backward: stage) per launch, no registers to run out of

    @staticmethod
    def cuda(sm_count: int, shared_bytes: int = H100_SHARED_BYTES) -> Device:
        return Device(programs=sm_count, shared_bytes=shared_bytes, interpreter=False)

    @staticmethod
    def interpreter_device() -> Device:
        return Device(programs=INTERPRETER_PROGRAMS, shared_bytes=H100_SHARED_BYTES, interpreter=True)


@dataclasses.dataclass(frozen=True)
class Problem:
    """One layer and direction: batch N, hidden H, gates G (LSTM 4, GRU 3, RNN 1), bytes per input element."""

    batch: int
    hidden: int
    gates: int
    element_size: int
    exact_fp32: bool = False  # fp32 dots in "ieee" precision: Triton lowers them to FMA loops, not tensor cores
    projection: bool = False  # LSTM with proj_size: only the tiled kernels implement it


@dataclasses.dataclass(frozen=True)
class TiledPlan:
    block_n: int
    block_h: int
    block_k: int
    warps: int
    stages: int | None  # None: Triton's default
    grid: int
    kernel: str = "tiled"


@dataclasses.dataclass(frozen=True)
class PersistentPlan:
    block_n: int  # all batch rows, padded to >= 16
    block_h: int  # hidden units per program
    gates_p2: int  # forward: gate blocks in the resident slice (GATES rounded to a power of two; backward: 1)
    k_pieces: tuple[int, int, int, int]  # the reduction K = H as power-of-two pieces, one dot each (0: unused)
    warps: int
    grid: int  # programs, <= Device.programs
    one_step_per_launch: bool
    shared_bytes: int  # estimate: resident slice + staged per-step operand + accumulator re-layout
    kernel: str = "persistent"

    @property
    def rows(self) -> int:
        """M of the per-step dot: rows of the resident W slice."""
        return self.gates_p2 * self.block_h


def _next_power_of_two(value: int) -> int:
    return 1 << max(0, value - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def k_pieces(k: int, element_size: int, block_n: int = MIN_DOT) -> tuple[int, int, int, int]:
    """The reduction K as four power-of-two pieces (zeros at the end unused), each one dot per step.

    A dot materialises its whole operand fragments in registers, so pieces are at most MAX_PIECE_BYTES per row (bf16:
    256 wide) unless four such pieces cannot cover K; K is rounded up to 16 and only the last piece is padded
    (768 -> 3 x 256; 1000 -> 4 x 256; 70 -> 64 + 16), never K to the next power of two."""
    padded = _cdiv(k, MIN_DOT) * MIN_DOT
    largest = 1 << (padded.bit_length() - 1)  # the largest power of two <= padded
    cap = MAX_PIECE_BYTES * MIN_DOT // (element_size * block_n)  # the per-step operand piece is [piece, block_n]
    piece = min(largest, max(cap, _next_power_of_two(_cdiv(padded, MAX_PIECES))))
    full, rest = divmod(padded, piece)
    pieces = [piece] * full
    while rest and len(pieces) < MAX_PIECES - 1:  # the remainder in its binary digits (multiples of 16)
        digit = 1 << (rest.bit_length() - 1)
        pieces.append(digit)
        rest -= digit
    if rest:
        pieces.append(_next_power_of_two(rest))
    return tuple(pieces + [0] * (MAX_PIECES - len(pieces)))


def plan_tiled(problem: Problem, tuning: Tuning = Tuning()) -> TiledPlan:
    block_h = tuning.block_h or TILED_BLOCK_H
    block_k = tuning.block_k or TILED_BLOCK_K
    if min(block_h, block_k) < MIN_DOT:
        raise Refused(f"tiled kernels: block_h={block_h}, block_k={block_k}: tl.dot needs every dimension >= {MIN_DOT}")
    return TiledPlan(block_n=TILED_BLOCK_N, block_h=block_h, block_k=block_k, warps=tuning.warps or TILED_WARPS,
                     stages=tuning.stages, grid=_cdiv(problem.batch, TILED_BLOCK_N))  # fmt: skip


def plan_persistent(problem: Problem, backward: bool, device: Device, tuning: Tuning = Tuning()) -> PersistentPlan:
    """The persistent kernels' plan for one pass, or `Refused` with the first reason they do not fit."""
    N, H, G = problem.batch, problem.hidden, problem.gates
    name = "persistent backward" if backward else "persistent forward"
    if tuning.block_k is not None:
        raise Refused(f"{name}: block_k applies to the tiled kernels; the persistent ones hold the whole reduction")
    if tuning.stages not in (None, 1):
        raise Refused(f"{name}: stages={tuning.stages}: the time loop must not be pipelined across the grid barrier "
                      f"(loads of other programs' data would move before it); only stages=1")  # fmt: skip
    if problem.projection:
        raise Refused(f"{name}: LSTM projection (proj_size) runs on the tiled kernels only")
    if problem.exact_fp32 and not device.interpreter:
        raise Refused(f"{name}: fp32 with exact (ieee) dots: Triton lowers them to FMA loops whose resident operands "
                      f"spill (sm_90: 13 KB); allow TF32 (torch.set_float32_matmul_precision('high')) or use bf16/fp16")
    if H == 0:
        raise Refused(f"{name}: hidden size 0: no W_hh slice to hold, no program to run (the tiled kernels handle it)")
    if N > MAX_PERSISTENT_BATCH:
        raise Refused(f"{name}: batch {N} > {MAX_PERSISTENT_BATCH}: every program covers all batch rows")
    if max(G * H * H, N * 4 * H) > MAX_OFFSET:
        raise Refused(f"{name}: H={H}, N={N} exceed the kernels' 32-bit offsets (G*H*H and N*4*H must be < 2**31)")
    gates_p2 = 1 if backward else _next_power_of_two(G)
    # Each program's dot is [gates_p2 * BH, K] @ [K, BN]: M = gates_p2 * BH must be >= 16.
    min_block_h = max(1, MIN_DOT // gates_p2)
    if tuning.block_h is not None:
        block_h = tuning.block_h
        if block_h < min_block_h:
            raise Refused(f"{name}: block_h={block_h} makes the dot's M = {gates_p2 * block_h} < {MIN_DOT}")
    else:  # the most programs that can be resident: the smallest slice
        block_h = min_block_h
        while _cdiv(H, block_h) > device.programs:
            block_h *= 2
    grid = _cdiv(H, block_h)
    if grid > device.programs:
        raise Refused(f"{name}: H={H} at block_h={block_h} needs {grid} programs, more than the {device.programs} "
                      f"that can be resident at once (one per SM); the grid barrier would deadlock")  # fmt: skip
    block_n = max(MIN_DOT, _next_power_of_two(N))
    pieces = k_pieces(H, problem.element_size, block_n)  # backward: one dot per gate, each K = H
    k = sum(pieces)
    rows = gates_p2 * block_h
    element = problem.element_size
    gate_dots = G if backward else 1
    slice_bytes = gate_dots * rows * k * element
    operand_bytes = k * block_n * element  # this step's h (dgates) of every program, staged for the dot
    relayout_bytes = rows * block_n * 4  # the fp32 accumulator split into gates / converted for the cell math
    shared = slice_bytes + operand_bytes + relayout_bytes
    if shared > device.shared_bytes:
        raise Refused(f"{name}: the resident W_hh slice ({slice_bytes // 1024} KB: {gate_dots} x {rows} rows x K={k}) plus "
                      f"the per-step operand ({operand_bytes // 1024} KB) and accumulator ({relayout_bytes // 1024} "
                      f"KB) exceed {device.shared_bytes // 1024} KB of shared memory per SM")  # fmt: skip
    return PersistentPlan(block_n=block_n, block_h=block_h, gates_p2=gates_p2, k_pieces=pieces,
                          warps=tuning.warps or (PERSISTENT_BACKWARD_WARPS if backward else PERSISTENT_WARPS), grid=grid,
                          one_step_per_launch=device.interpreter, shared_bytes=shared)  # fmt: skip


def choose(problem: Problem, backward: bool, device: Device, kernel: str = "auto",
           tuning: Tuning = Tuning()) -> TiledPlan | PersistentPlan:  # fmt: skip
    """The plan of one pass for FUSEDRNN_TRITON_KERNEL=`kernel` (see the module docstring)."""
    if kernel == "tiled":
        return plan_tiled(problem, tuning)
    if kernel == "persistent":
        return plan_persistent(problem, backward, device, tuning)
    if kernel != "auto":
        raise ValueError(f"kernel {kernel!r}: expected one of {', '.join(KERNELS)}")
    if device.interpreter:  # tiled is one launch there, persistent one per step
        return plan_tiled(problem, tuning)
    try:
        return plan_persistent(problem, backward, device, tuning)
    except Refused:
        return plan_tiled(problem, tuning)


# Issue #15's variants (fusedrnn.kernels.variants): layer norm, zoneout, IndRNN.
VARIANT_KERNELS = ("rowwise", "tiled", "elementwise")
#: Layer norm reduces over a step's whole G*H row (and the LSTM's c~ over H): the rowwise kernel holds all of it in
#: one program (BLOCK_H >= H, G fp32 accumulators [16, BLOCK_H]). Beyond this the accumulators no longer fit in
#: registers (compile_check, sm_90, 8 warps: see tests/test_triton_compile.py's variant checks).
MAX_NORM_HIDDEN = 128
#: The rowwise kernel's tiles are the whole row (up to 4 x [16, 128] fp32 accumulators): at the tiled kernels' 8 warps
#: the fp32 LN-LSTM backward with zoneout spilled 36 B at H=128 (compile_check --variants), at 16 nothing spills.
ROWWISE_WARPS = 16
#: ... and its reduction tile is 16 deep: at 32 the fp32 LN-LSTM forward (four [32, 128] W_hh tiles per K step) still
#: spilled 8 B at 16 warps; at 16 neither dtype spills and the staged tiles take half the shared memory.
ROWWISE_BLOCK_K = MIN_DOT
#: Beyond MAX_NORM_HIDDEN layer norm runs the chunked kernels (fusedrnn.kernels.variants_chunked): the same program
#: (16 batch rows) walks the row in hidden tiles, several passes per step (sums, then normalise and gates), the raw row
#: in a global fp32 workspace of CHUNKED_WORKSPACE_GATES * H columns per batch row (the G*H row, then the LSTM's c~
#: and o). Their hidden tiles and warps are the tiled kernels' (one hidden tile of every gate at a time: the same
#: accumulators); the reduction tile is 16 deep, not 32: with 32 the fp32 LN-GRU spilled 4-8 B under Triton 3.6
#: (compile_check --variants, sm_90, N=16 H=1024), with 16 neither Triton 3.6 nor 3.8 spills in any dtype.
CHUNKED_WORKSPACE_GATES = 6
CHUNKED_BLOCK_H = TILED_BLOCK_H
CHUNKED_BLOCK_K = MIN_DOT
CHUNKED_WARPS = TILED_WARPS
#: The chunked kernels run a step's whole G*H x H recurrent matmul in the program owning the rows (one per 16 batch
#: rows), so one program's work per step grows as H^2: at H = 1024 an LSTM step is 16 x 4096 x 1024 per program.
#: Planned up to here (the issue's sizes, interpreter-tested at 256 and 1024); beyond, the row's matmul would have to
#: be split across programs (a cross-program exchange per step, as PERSISTENT_VARIANT_REASON describes).
MAX_CHUNKED_NORM_HIDDEN = 1024
#: IndRNN's elementwise kernel: no dot, so any tile works; 16 x 64 fp32 tiles per program and step.
ELEMENTWISE_BLOCK_H = 64
ELEMENTWISE_WARPS = 4
#: Why the persistent (split-hidden) kernels do not run layer norm. The design they would need, for later:
#: each program holds BLOCK_H units of every gate, so a step's row mean and variance are partial sums per program;
#: either a second grid barrier per step (programs publish [N, 2] partial sums to global memory, barrier, each reads
#: all and finishes the statistics), or a two-pass scheme folding the exchange into the existing barrier (publish
#: partials of step t with h_t, normalise after the barrier of step t+1 — the LN of c~ needs it before h_t exists,
#: so the LSTM would still need two). The backward needs the same for its two LN reductions per row.
PERSISTENT_VARIANT_REASON = (
    "the persistent kernels split the hidden units across programs, so layer norm's per-step row reduction would "
    "need a cross-program exchange (a second grid barrier per step) that they do not implement; use the tiled family "
    f"({KERNEL_ENV}=auto or tiled)"
)
#: Zoneout needs no reduction, so the persistent kernels could run it; what they lack is its state layout: the
#: backward needs each step's pre-zoneout h~ (and the LSTM's c~) besides the zoned-out state they save, and each step
#: reads one or two [N, H] masks. The tiled variant kernels have both (kernels/variants.py), so zoneout runs there;
#: moving them into the persistent kernels is worth it only once a GPU run shows the tiled family is the slower.
PERSISTENT_ZONEOUT_REASON = (
    "the persistent kernels do not save the pre-zoneout states h~ / c~ that zoneout's backward needs (not "
    f"implemented there); use the tiled family ({KERNEL_ENV}=auto or tiled), which runs zoneout at any H"
)


@dataclasses.dataclass(frozen=True)
class VariantPlan:
    """Launch of variants.variant_forward_kernel / variant_backward_kernel (kernel "chunked":
    variants_chunked.chunked_norm_forward_kernel / chunked_norm_backward_kernel) for one pass."""

    kernel: str  # rowwise (layer norm: whole row per program), chunked (layer norm: the row in hidden tiles, several
    #              passes), tiled (zoneout: hidden tiles), elementwise (IndRNN)
    block_n: int
    block_h: int
    block_k: int
    warps: int
    stages: int | None
    grid: tuple[int, int]  # (batch tiles, hidden tiles; > 1 only for elementwise)
    workspace_columns: int = 0  # chunked: fp32 workspace columns per batch row (CHUNKED_WORKSPACE_GATES * H)


def plan_variant(problem: Problem, layer_norm: bool, elementwise: bool, kernel: str = "auto",
                 tuning: Tuning = Tuning()) -> VariantPlan:  # fmt: skip
    """The variant kernels' plan (both passes use the same tiles), or `Refused` with the reason.

    kernel (FUSEDRNN_TRITON_KERNEL): IndRNN's elementwise kernel is persistent by construction (every program runs
    the whole sequence on its own hidden units, no barrier), so every setting runs it; layer norm and zoneout run
    the tiled family under auto / tiled and are refused under persistent (PERSISTENT_VARIANT_REASON,
    PERSISTENT_ZONEOUT_REASON)."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel {kernel!r}: expected one of {', '.join(KERNELS)}")
    N, H = problem.batch, problem.hidden
    if problem.projection:
        raise Refused("variant kernels: layer norm and zoneout are not defined with a projection (proj_size)")
    if max(problem.gates * H * H, N * 4 * H) > MAX_OFFSET:
        raise Refused(f"variant kernels: H={H}, N={N} exceed the kernels' 32-bit offsets (G*H*H and N*4*H < 2**31)")
    block_n = TILED_BLOCK_N
    if elementwise:
        block_h = tuning.block_h or ELEMENTWISE_BLOCK_H
        return VariantPlan(kernel="elementwise", block_n=block_n, block_h=block_h, block_k=tuning.block_k or MIN_DOT,
                           warps=tuning.warps or ELEMENTWISE_WARPS, stages=tuning.stages,
                           grid=(_cdiv(N, block_n), max(1, _cdiv(H, block_h))))  # fmt: skip
    if kernel == "persistent":
        if layer_norm:
            raise Refused(f"variant kernels (layer norm): {PERSISTENT_VARIANT_REASON}")
        raise Refused(f"variant kernels (zoneout): {PERSISTENT_ZONEOUT_REASON}")
    block_k = tuning.block_k or (ROWWISE_BLOCK_K if layer_norm else TILED_BLOCK_K)
    if layer_norm and H > MAX_NORM_HIDDEN:
        return _plan_chunked_norm(problem, tuning)
    if layer_norm:
        whole = max(MIN_DOT, _next_power_of_two(H))
        block_h = tuning.block_h or whole
        if block_h < H:
            raise Refused(f"layer norm kernels: block_h={block_h} < H={H}: the row reduction needs the whole row in "
                          f"one tile")  # fmt: skip
        name, warps = "rowwise", ROWWISE_WARPS
    else:
        block_h = tuning.block_h or TILED_BLOCK_H
        name, warps = "tiled", TILED_WARPS
    if min(block_h, block_k) < MIN_DOT:
        raise Refused(f"variant kernels: block_h={block_h}, block_k={block_k}: tl.dot needs every dimension >= "
                      f"{MIN_DOT}")
    return VariantPlan(kernel=name, block_n=block_n, block_h=block_h, block_k=block_k, warps=tuning.warps or warps,
                       stages=tuning.stages, grid=(_cdiv(N, block_n), 1))  # fmt: skip


def _plan_chunked_norm(problem: Problem, tuning: Tuning) -> VariantPlan:
    """Layer norm above MAX_NORM_HIDDEN: the chunked kernels, or `Refused` with the reason."""
    H = problem.hidden
    if H > MAX_CHUNKED_NORM_HIDDEN:
        raise Refused(f"layer norm kernels: hidden size {H} > {MAX_CHUNKED_NORM_HIDDEN}: the chunked kernels run a "
                      f"step's whole {problem.gates}*H x H recurrent matmul in the program owning the rows, whose "
                      f"work grows as H^2; wider rows need the row split across programs "
                      f"(fusedrnn.kernels.plan)")  # fmt: skip
    block_h = tuning.block_h or CHUNKED_BLOCK_H
    block_k = tuning.block_k or CHUNKED_BLOCK_K
    if min(block_h, block_k) < MIN_DOT:
        raise Refused(f"chunked layer norm kernels: block_h={block_h}, block_k={block_k}: tl.dot needs every "
                      f"dimension >= {MIN_DOT}")  # fmt: skip
    return VariantPlan(kernel="chunked", block_n=TILED_BLOCK_N, block_h=block_h, block_k=block_k,
                       warps=tuning.warps or CHUNKED_WARPS, stages=tuning.stages,
                       grid=(_cdiv(problem.batch, TILED_BLOCK_N), 1),
                       workspace_columns=CHUNKED_WORKSPACE_GATES * H)  # fmt: skip


# Issue #21's multi-head LSTM / GRU / Elman RNN (fusedrnn.kernels.heads): one program per (head, BLOCK_N batch rows)
# runs the whole sequence on its head, R_k's gate tiles streamed from global memory (L2) every step.
#: The output tile of a head and the reduction chunk: the tiled kernels' (four [16, 64] fp32 gate accumulators and
#: four [32, 64] R tiles per chunk, for which ptxas needed 8 warps there); heads narrower than a tile get one tile of
#: their size rounded up to a power of two, never below tl.dot's 16. Every head size runs 8 warps: with 4, the d = 32
#: builds in exact fp32 spilled 20-28 bytes (ptxas 12.8, triton 3.6) and the d >= 64 ones more.
HEADS_BLOCK_H = TILED_BLOCK_H
HEADS_BLOCK_K = TILED_BLOCK_K
HEADS_WARPS = TILED_WARPS
#: The registers a thread of a HEADS_WARPS program may use: all of them (255, the ISA's limit; 255 x 256 threads fit
#: an SM's 64K). Without the cap ptxas sizes a kernel for the occupancy it assumes the grid needs and spills to get
#: it: 80 registers and 8 spilled bytes for three 256-thread programs per SM (ptxas 12.8 on triton 3.6's PTX of the
#: d = 128 forwards). These grids are heads x batch tiles, a few programs per GPU, so occupancy buys nothing. The
#: sLSTM backward goes without it: at 249-255 registers either way, ptxas scheduled it for the whole file under the
#: cap and spilled 8-16 bytes in exact fp32 (ptxas 12.8 and 12.9), none without. torch.compile's Inductor (2.11)
#: drops this launch option: compiled graphs get ptxas' own choice.
HEADS_MAX_REGISTERS = 255
#: The widest head planned. One program runs its head's whole G*d x d recurrent matmul per step for 16 rows, so its
#: work per step grows as d^2 while the grid (heads x batch tiles) stays small: at d = 1024 an LSTM step is
#: 16 x 4096 x 1024 per program, the chunked layer-norm kernels' limit for the same reason. Wider heads would need a
#: head split across programs (an exchange per step). R is never held resident, at any d: a d = 128 LSTM head's four
#: gate tiles are 256 KB in fp32, an SM's whole register file (64K 32-bit registers), so every head size streams them
#: (d <= 32 ones would fit; one code path keeps one thing to verify). sLSTM's kernels use the same plan (plan_slstm).
MAX_HEAD_DIM = 1024


@dataclasses.dataclass(frozen=True)
class HeadsPlan:
    """Launch of heads.heads_forward_kernel / heads_backward_kernel (both passes use the same tiles)."""

    block_n: int
    block_h: int  # units of a head per output tile
    block_k: int  # reduction chunk of a head's units
    warps: int
    grid: tuple[int, int]  # (heads, batch tiles)
    forward_registers: int | None = HEADS_MAX_REGISTERS  # Triton's maxnreg (None: ptxas chooses)
    backward_registers: int | None = HEADS_MAX_REGISTERS


def plan_heads(problem: Problem, heads: int, kernels: str = "multi-head kernels") -> HeadsPlan:
    """The multi-head kernels' plan for `problem` split into `heads` heads of d = hidden / heads units, or `Refused`
    with the first reason they do not serve it (`kernels` names them in the reason)."""
    N, H, G = problem.batch, problem.hidden, problem.gates
    if heads < 1 or H % heads:
        raise Refused(f"{kernels}: hidden size {H} is not {heads} heads of equal size")
    d = H // heads
    if problem.projection:
        raise Refused(f"{kernels}: a projection (proj_size) is not defined with heads")
    if d > MAX_HEAD_DIM:
        raise Refused(f"{kernels}: head size {d} > {MAX_HEAD_DIM}: one program runs its head's whole "
                      f"{G}*d x d recurrent matmul per step, whose work grows as d^2 (fusedrnn.kernels.plan)")
    if max(G * H * d, N * 4 * H) > MAX_OFFSET:
        raise Refused(f"{kernels}: H={H}, N={N} exceed the kernels' 32-bit offsets (G*H*d and N*4*H must "
                      f"be < 2**31)")  # fmt: skip
    whole = max(MIN_DOT, _next_power_of_two(d))
    block_h = min(HEADS_BLOCK_H, whole)
    block_k = min(HEADS_BLOCK_K, whole)
    return HeadsPlan(block_n=TILED_BLOCK_N, block_h=block_h, block_k=block_k, warps=HEADS_WARPS,
                     grid=(heads, _cdiv(N, TILED_BLOCK_N)))  # fmt: skip


#: sLSTM's gates (i, f, z, o): its R is [K, 4*d, d], as a multi-head LSTM's.
SLSTM_GATES = 4


def plan_slstm(batch: int, hidden: int, heads: int, element_size: int) -> HeadsPlan:
    """xLSTM's sLSTM kernels (fusedrnn.kernels.slstm) run on the multi-head kernels' tiles and grid, with the same
    limits (its backward recomputes each step's recurrent matmul, a second one per step, but its work still grows as
    d^2 per program): plan_heads' plan for a 4-gate head, its backward without the register cap
    (HEADS_MAX_REGISTERS), or `Refused` with the reason."""
    problem = Problem(batch=batch, hidden=hidden, gates=SLSTM_GATES, element_size=element_size)
    return dataclasses.replace(plan_heads(problem, heads, kernels="sLSTM kernels"), backward_registers=None)
