"""The GPU round's helpers in fusedrnn.bench: the tuning sweep's verdicts, the SASS summary's parsing, and the digest
of several benchmark runs. (scripts/gpu_check.sh --dry-run runs all three end to end: tests/test_scripts.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import fusedrnn
from fusedrnn.bench import digest, sass, sweep


def bench_doc(row_status: str = "ok", note: str = "", complete: bool = True, skipped=()) -> dict:
    """A minimal fusedrnn-bench JSON document: torch.nn and one fused row on one config."""
    label = "lstm T=3 N=2 I=4 H=5 float32 inference"

    def result(row, status, median, check):
        return {"label": label, "row": row, "status": status, "note": note if row != "torch.nn" else "",
                "check": check, "time_ms": {"median": median} if median else None,
                "speedup_vs_torch": 2.0 if row != "torch.nn" and median else None,
                "peak_memory_bytes": 2**20 if median else None}  # fmt: skip

    ok_check = {"passed": True, "max_abs_err": 1e-7, "worst": "y"}
    fused = result("fusedrnn:triton", row_status, 1.0 if row_status == "ok" else None,
                   ok_check if row_status == "ok" else None)  # fmt: skip
    return {"complete": complete, "skipped_rows": list(skipped),
            "results": [result("torch.nn", "ok", 2.0, ok_check), fused]}  # fmt: skip


OUTCOMES = {
    "ok": ("ok", "", "ok"),
    "declined": ("unsupported", "H=4096 does not fit in shared memory", "refused: H=4096 does not fit"),
    "unknown-key": ("failed", "ValueError: unknown key 'wraps'", "refused: ValueError: unknown key"),
    "crash": ("failed", "RuntimeError: CUDA error", "failed: RuntimeError: CUDA error"),
}


@pytest.mark.parametrize("status, note, expected", OUTCOMES.values(), ids=OUTCOMES.keys())
def test_sweep_verdicts(status, note, expected):
    (record,) = sweep.records_from(bench_doc(status, note), "triton-persistent", "warps=4")
    assert record["result"].startswith(expected)
    assert (record["target"], record["tune"]) == ("triton-persistent", "warps=4")
    assert record["torch_ms"] == 2.0 and record["median_ms"] == (1.0 if status == "ok" else None)


def test_sweep_grid_override_keeps_the_default_point():
    assert sweep.parse_grid(";warps=4, block_h=32") == ("", "warps=4, block_h=32")
    assert all(target.grid[0] == "" for target in sweep.TARGETS.values())


def test_sweep_markdown_lists_every_record():
    records = sweep.records_from(bench_doc(), "cuda", "")
    records.append({"target": "cuda", "tune": "x=1", "config": "(run)", "result": "timed out after 100 s"})
    text = sweep.markdown(records)
    assert "(planner default)" in text and "timed out after 100 s" in text and text.count("\n") == 4


def test_digest_marks_stopped_runs_and_unavailable_rows(tmp_path):
    path = tmp_path / "flashrnn-bf16.json"
    path.write_text(json.dumps(bench_doc(complete=False, skipped=[{"row": "fusedrnn:cuda", "reason": "no GPU"}])))
    merged = tmp_path / "merged.json"
    assert digest.main([str(path), str(tmp_path / "missing.json"), "--json", str(merged)]) == 0
    text = digest.table([("flashrnn-bf16", json.loads(path.read_text()))])
    assert "flashrnn-bf16 (stopped)" in text and "unavailable: no GPU" in text
    assert "| ok | 1.000 | 2.000 | 2.00 | 1.0 |" in text
    assert [run["run"] for run in json.loads(merged.read_text())["runs"]] == ["flashrnn-bf16"]


def test_digest_shows_a_mismatch_with_its_worst_tensor():
    doc = bench_doc()
    doc["results"][1]["status"] = "mismatch"
    doc["results"][1]["check"] = {"passed": False, "max_abs_err": 0.5, "worst": "grad w_hh"}
    assert "MISMATCH (max err 5.0e-01 in grad w_hh)" in digest.table([("run", doc)])


RESOURCE_USAGE = """
Resource usage:
 Common:
  GLOBAL:0
 Function persistent_backward_kernel:
  REG:255 STACK:72 SHARED:1024 LOCAL:0 CONSTANT[0]:648 TEXTURE:0 SURFACE:0 SAMPLER:0
"""
SASS = """
	code for sm_90a
		Function : persistent_backward_kernel
	.headerflags	@"EF_CUDA_SM90"
        /*0000*/                   LDC R1, c[0x0][0x28] ;                /* 0x00000a00ff017b82 */
                                                                         /* 0x000e220000000800 */
        /*0010*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4 ; /* 0x0000000c0804723c */
        /*0020*/              @!P0 STL [R1+0x20], R15 ;                  /* 0x0000200f01007387 */
        /*0030*/                   LDL R15, [R1+0x20] ;                  /* 0x0000200f01007387 */
        /*0040*/                   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR4], R24 ;
        /*0050*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;         /* 0x0000000000007b1d */
"""


def test_sass_parsing():
    assert sass.parse_resources(RESOURCE_USAGE) == {
        "persistent_backward_kernel": {"REG": 255, "STACK": 72, "SHARED": 1024, "LOCAL": 0, "CONSTANT[0]": 648,
                                       "TEXTURE": 0, "SURFACE": 0, "SAMPLER": 0},
    }  # fmt: skip
    counts = sass.parse_sass(SASS)["persistent_backward_kernel"]
    assert counts == {"HMMA": 1, "HGMMA": 1, "LDL": 1, "STL": 1, "BAR": 1, "total": 6}


def test_sass_summary_of_the_extension(tmp_path):
    """On the built extension: every CUDA kernel in it is found, with its registers and instruction count."""
    if sass.cuobjdump() is None:
        pytest.skip("no cuobjdump (neither on PATH nor shipped with triton)")
    built = sorted(Path(fusedrnn.__file__).parent.glob("_C*.so"))
    if not built:
        pytest.skip("fusedrnn._C is not built in place here")
    kernels = [k for path in built for k in sass.inspect(path, "sm_90", sass.cuobjdump())]
    if not kernels:
        pytest.skip("the extension was built without CUDA code for sm_90")
    assert all(k.resources["REG"] > 0 and k.counts["total"] > 0 for k in kernels)
    assert all("(" not in k.name and not k.name.startswith("_Z") for k in kernels) or not sass.shutil.which("c++filt")
    assert sass.main([str(p) for p in built] + ["--json", str(tmp_path / "k.json")]) == 0
    assert len(json.loads((tmp_path / "k.json").read_text())) == len(kernels)


def _bench_script(name: str):
    """A script of bench/ as a module (they are run as files, not installed)."""
    import importlib.util

    path = Path(__file__).parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "mode,N,expected_ms",
    # T=10, I=H=8, LSTM: a step is 4*8*8 = 256 multiply-adds per row and 1 KB of float32 W_hh; 1e6 MAC/s, 1e6 B/s.
    # N=1: the stream (1.024 ms a step) bounds it; N=8: the multiply-adds (2.048 ms). Input projection: T*N*256 MACs.
    [("inference", 1, 10 * 1.024 + 2.56), ("inference", 8, 10 * 2.048 + 20.48),
     ("training", 1, 2 * 10 * 1.024 + 4 * 2.56)],
    ids=["inference_stream_bound", "inference_compute_bound", "training_stream_bound"],
)  # fmt: skip
def test_cpu_roofline_bound(mode, N, expected_ms):
    roofline = _bench_script("cpu_roofline")
    row = {"cell": "LSTM", "dtype": "float32", "T": 10, "N": N, "I": 8, "H": 8, "mode": mode}
    rates = {("gemm", "float32", 10 * N, 8, 32): 1e6, ("stream", 4 * 8 * 8 * 4): 1e6}
    assert roofline.bound_ms(row, rates) == pytest.approx(expected_ms)


def test_native_cpu_speed_in_processes():
    """--processes: each implementation's calls come from processes of its own, `processes` x `repeats` of each."""
    speed = _bench_script("native_cpu_speed")
    times = speed.measure_in_processes("GRU", (3, 2, 4, 8), True, 2, torch.float32, processes=2, threads=1)
    assert sorted(times) == ["fused", "torch"]
    assert all(len(t) == 4 and all(ms > 0 for ms in t) for t in times.values())
