"""Evidence from compiled GPU kernels, at no GPU time: resources and an instruction summary per kernel.

`python -m fusedrnn.bench.sass PATH... [--arch sm_90] [--markdown FILE] [--json FILE]` reads every cubin under PATH
(a Triton cache folder holds one per compiled kernel, with a .json of its launch metadata beside it) and every CUDA
fat binary (the extension's .so), and reports per kernel:
  registers, stack and local bytes, static shared memory (cuobjdump -res-usage; Triton's shared memory is dynamic and
  comes from its .json), and counts of the instructions that answer the usual questions (cuobjdump -sass):
  HMMA (mma.sync tensor-core ops), HGMMA (Hopper's wgmma), LDL/STL (local memory: spills or a register array
  indexed at run time), BAR (block-wide barriers), and the total.
cuobjdump comes from PATH, else from the copy Triton ships (triton/backends/nvidia/bin).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

#: The opcodes counted per kernel (the first dot-separated part of a SASS mnemonic).
COUNTED = ("HMMA", "HGMMA", "LDL", "STL", "BAR")
#: Seconds one cuobjdump call may take (a large fat binary disassembles in a few seconds).
CUOBJDUMP_TIMEOUT_S = 60

_FUNCTION = re.compile(r"^\s*Function\s*:?\s*(\S+?):?\s*$")
_RESOURCES = re.compile(r"(\w+(?:\[\d+\])?):(\d+)")
_INSTRUCTION = re.compile(r"^\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T\d]+\s+)?([A-Z][A-Z0-9_]*)")


@dataclasses.dataclass
class Kernel:
    file: str
    name: str
    resources: dict[str, int] = dataclasses.field(default_factory=dict)  # REG, STACK, SHARED, LOCAL, ...
    counts: dict[str, int] = dataclasses.field(default_factory=dict)  # COUNTED opcodes and "total"
    launch: dict = dataclasses.field(default_factory=dict)  # Triton's metadata: num_warps, num_stages, shared


def cuobjdump() -> str | None:
    found = shutil.which("cuobjdump")
    if found:
        return found
    try:
        import triton
    except ImportError:
        return None
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(bundled) if bundled.exists() else None


def binaries(paths: list[Path]) -> list[Path]:
    """Cubins and shared objects under the given files and folders, in a stable order."""
    found = []
    for path in paths:
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        found += [p for p in candidates if p.is_file() and (p.suffix == ".cubin" or ".so" in p.suffixes)]
    return found


def _run(tool: str, *args: str) -> str:
    result = subprocess.run([tool, *args], capture_output=True, text=True, timeout=CUOBJDUMP_TIMEOUT_S, check=False)
    return result.stdout


def parse_resources(text: str) -> dict[str, dict[str, int]]:
    """cuobjdump -res-usage output -> {kernel: {"REG": n, "STACK": n, ...}}."""
    kernels, current = {}, None
    for line in text.splitlines():
        match = _FUNCTION.match(line)
        if match:
            current = match.group(1)
        elif current and "REG:" in line:
            kernels[current] = {key: int(value) for key, value in _RESOURCES.findall(line)}
            current = None
    return kernels


def parse_sass(text: str) -> dict[str, dict[str, int]]:
    """cuobjdump -sass output -> {kernel: {opcode in COUNTED: count, "total": instructions}}."""
    kernels: dict[str, collections.Counter] = {}
    current = None
    for line in text.splitlines():
        match = _FUNCTION.match(line)
        if match:
            current = kernels.setdefault(match.group(1), collections.Counter())
            continue
        match = _INSTRUCTION.match(line)
        if match and current is not None:
            current["total"] += 1
            if match.group(1) in COUNTED:
                current[match.group(1)] += 1
    return {name: {key: counts[key] for key in (*COUNTED, "total")} for name, counts in kernels.items()}


def inspect(path: Path, arch: str, tool: str) -> list[Kernel]:
    resources = parse_resources(_run(tool, "-arch", arch, "-res-usage", str(path)))
    counts = parse_sass(_run(tool, "-arch", arch, "-sass", str(path)))
    metadata = path.with_suffix(".json")  # Triton's cache: kernel.cubin beside kernel.json
    launch = {}
    if path.suffix == ".cubin" and metadata.exists():
        meta = json.loads(metadata.read_text())
        launch = {key: meta.get(key) for key in ("num_warps", "num_stages", "shared")}
        launch["cache_key"] = path.parent.name[:8]
    names = sorted(set(resources) | set(counts))
    readable = demangle(names)
    return [Kernel(str(path), readable[name], resources.get(name, {}), counts.get(name, {}), launch) for name in names]


#: Namespaces dropped from demangled C++ kernel names, which otherwise exceed a table column.
_NOISE = ("fusedrnn::", "(anonymous namespace)::", "c10::", "void ")


def demangle(names: list[str]) -> dict[str, str]:
    """Mangled C++ kernel names -> short readable ones (c++filt where present; Triton's names are plain already)."""
    tool = shutil.which("c++filt")
    if tool is None or not names:
        return {name: name for name in names}
    result = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True, timeout=30, check=False)
    readable = result.stdout.splitlines()
    if len(readable) != len(names):
        return {name: name for name in names}
    short = []
    for text in readable:
        for noise in _NOISE:
            text = text.replace(noise, "")
        short.append(re.sub(r"\((.*)\)$", "", text))  # the parameter list: the template arguments say enough
    return dict(zip(names, short))


def markdown(kernels: list[Kernel]) -> str:
    lines = [
        "| kernel | file | warps | shared B | REG | STACK | LOCAL | " + " | ".join(COUNTED) + " | instr |",
        "|---|---|---|---|---|---|---|" + "---|" * len(COUNTED) + "---|",
    ]
    for k in kernels:
        shared = k.launch.get("shared", k.resources.get("SHARED", "-"))
        file = Path(k.file).name + (f" ({k.launch['cache_key']})" if "cache_key" in k.launch else "")
        name = k.name if len(k.name) <= 70 else k.name[:67] + "..."
        values = [name, file, k.launch.get("num_warps", "-"), shared,
                  *(k.resources.get(key, "-") for key in ("REG", "STACK", "LOCAL")),
                  *(k.counts.get(key, "-") for key in (*COUNTED, "total"))]  # fmt: skip
        lines.append("| " + " | ".join(str(v) for v in values) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="cubins, .so files, or folders holding them")
    parser.add_argument("--arch", default="sm_90", help="the GPU architecture whose code is read")
    parser.add_argument("--markdown", type=Path, help="write the table here too")
    parser.add_argument("--json", type=Path, help="write every kernel's numbers here")
    args = parser.parse_args(argv)
    tool = cuobjdump()
    if tool is None:
        print("cuobjdump not found (neither on PATH nor in triton's bin folder)", file=sys.stderr)
        return 2
    files = binaries(args.paths)
    kernels = [kernel for path in files for kernel in inspect(path, args.arch, tool)]
    table = markdown(kernels)
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(k) for k in kernels], indent=2) + "\n")
    print(table, end="")
    if not kernels:
        print(f"no {args.arch} kernels found in {len(files)} file(s) under {', '.join(map(str, args.paths))}",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
