"""The shell scripts CI and the GPU round depend on: valid bash, every benchmark command they run parses, the time
limits nest (a child's timeout inside its step's limit, every limit inside the GPU lease), and the whole GPU check
runs end to end on CPU (`scripts/gpu_check.sh --dry-run`), so a typo cannot waste GPU time."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from fusedrnn.bench import sweep
from fusedrnn.bench.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["scripts/setup.sh", "scripts/gpu_check.sh", "scripts/install_editable.sh", ".ci/run",
           "bench/record_results.sh"]  # fmt: skip
GPU_CHECK = ROOT / "scripts/gpu_check.sh"
#: The device tool brings back at most 8 files from $OUT, and the last 12,000 characters of the output.
MAX_OUT_FILES = 8
MAX_STDOUT_CHARS = 8000
#: The GPU check must end within 5 minutes on an H100, leaving time for a fix and a rerun in a 15-minute lease.
MAX_BUDGET_S = 5 * 60
#: The dry run on 2 shared CPU cores takes ~3 min (the interpreter is far slower than a GPU); far longer means
#: something hangs. Its deadline is raised to match (GPU_CHECK_BUDGET_S), or its last stages would be cut.
DRY_RUN_TIMEOUT_S = 480
DRY_RUN_BUDGET_S = 420


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_is_valid_bash(script):
    subprocess.run(["bash", "-n", str(ROOT / script)], check=True)


def gpu_check_text() -> str:
    """The script with its line continuations joined."""
    return GPU_CHECK.read_text().replace("\\\n", " ")


def gpu_check_bench_arguments() -> list[list[str]]:
    """The fusedrnn-bench arguments of each `bench LABEL LIMIT KERNEL ...` line of scripts/gpu_check.sh."""
    text = gpu_check_text()
    common = shlex.split(re.search(r'^BENCH=\("\$PY" -m fusedrnn\.bench (.*)\)$', text, re.MULTILINE).group(1))
    lines = re.findall(r"^\s*bench [\w-]+ \d+ (?:tiled|persistent) (.*)$", text, re.MULTILINE)
    fused = re.search(r"^\s*FUSED=(\S+)$", text, re.MULTILINE).group(1)
    return [common + shlex.split(line.replace('"$FUSED"', fused)) for line in lines]


def test_gpu_check_runs_benchmarks_persistent_first():
    text = gpu_check_text()
    kernels = re.findall(r"^\s*bench [\w-]+ \d+ (tiled|persistent) ", text, re.MULTILINE)
    assert len(kernels) >= 3
    assert kernels == sorted(kernels, key=lambda k: k != "persistent"), "persistent runs must come before tiled ones"


@pytest.mark.parametrize("arguments", gpu_check_bench_arguments(), ids=lambda a: a[a.index("--preset") + 1])
def test_gpu_check_benchmark_commands_parse(arguments):
    build_parser().parse_args(arguments)  # argparse exits (SystemExit) on an unknown flag or value


def _number(name: str) -> int:
    """A setting's default: NAME=123 or NAME=${OVERRIDE:-123}."""
    return int(re.search(rf"^{name}=(?:\$\{{\w+:-)?(\d+)", gpu_check_text(), re.MULTILINE).group(1))


def _step_limit(name: str) -> int:
    return int(re.search(rf"step {name} (\d+) ", gpu_check_text()).group(1))


def test_gpu_check_time_limits_nest():
    assert _number("BUDGET_S") <= MAX_BUDGET_S
    assert _number("PER_TEST_TIMEOUT_S") < _step_limit("tests")
    assert sweep.CHILD_TIMEOUT_S < _step_limit("sweep")
    assert int(re.search(r"--budget-s (\d+)", gpu_check_text()).group(1)) < _step_limit("sweep")


def test_gpu_check_stages_fit_the_deadline_on_a_gpu():
    """The stages a GPU run goes through one after another (install, smoke, tests, benchmarks, sanitizers; the
    evidence runs beside them) fit within the deadline with the summary's reserve: none is cut on a GPU as fast as
    their limits assume, and the whole call ends within MAX_BUDGET_S."""
    text = gpu_check_text()
    serial = _step_limit("install") + int(re.search(r'step "smoke-\$group" (\d+) ', text).group(1))
    serial += _step_limit("tests") + sum(int(n) for n in re.findall(r"^\s*bench [\w-]+ (\d+) ", text, re.MULTILINE))
    serial += 2 * int(re.search(r'step "sanitize-\$tool" (\d+) "\$SANITIZER"', text).group(1))
    assert serial + _number("RESERVE_S") <= _number("BUDGET_S") <= MAX_BUDGET_S


def test_install_editable_stays_offline():
    """The GPU machine has no network: pip must neither look for packages nor check its own version there."""
    text = (ROOT / "scripts/install_editable.sh").read_text()
    assert "--no-index" in text and "--disable-pip-version-check" in text and "--no-build-isolation" in text


def test_gpu_run_selects_the_gpu_marker():
    """The GPU run's pytest runs exactly the `gpu`-marked tests (tests/devices.py); this file's are not among them."""
    assert re.search(r'PYTEST=\("\$PY" -m pytest -m gpu ', gpu_check_text())
    marks = getattr(test_gpu_check_dry_run, "pytestmark", [])
    assert test_gpu_check_dry_run.__module__ == __name__ and all(mark.name != "gpu" for mark in marks)


def test_gpu_check_rejects_unknown_arguments():
    result = subprocess.run(["bash", str(GPU_CHECK), "--dryrun"], capture_output=True, text=True, timeout=30,
                            check=False)  # fmt: skip
    assert result.returncode == 2 and "unknown argument" in result.stderr


#: CI sets this in its dev leg (.ci/run): the dry run then runs only in the gpu-twin leg, the GPU machine's own stack
#: (its ~2 minutes, doubled, were the largest single test cost of CI). Everywhere else, the README's test command
#: included, it runs.
DRY_RUN_ELSEWHERE = "FUSEDRNN_CI_DRY_RUN_IN_TWIN_LEG"


@pytest.mark.skipif(os.environ.get(DRY_RUN_ELSEWHERE) == "1",
                    reason="CI runs the gpu_check dry run in its gpu-twin leg (the GPU machine's torch and triton)")
def test_gpu_check_dry_run(tmp_path, child_timeout):
    """The whole script on CPU: install (pip --dry-run), every benchmark on a tiny shape, the suite collected, the
    sanitizer commands without the sanitizer, a compile and SASS summary of one kernel, and a two-point sweep."""
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path / "out"), TMPDIR=str(tmp_path),
               GPU_CHECK_BUDGET_S=str(DRY_RUN_BUDGET_S))  # fmt: skip
    result = subprocess.run(["bash", str(GPU_CHECK), "--dry-run"], env=env, capture_output=True, text=True,
                            timeout=child_timeout(DRY_RUN_TIMEOUT_S), cwd=tmp_path, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    out = tmp_path / "out"
    files = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert len(files) <= MAX_OUT_FILES, files
    assert {"report.md", "smoke.jsonl", "junit.xml", "bench.json", "evidence.json", "sweep.json", "sweep.md",
            "logs.tar.gz"} <= set(files)  # fmt: skip
    assert result.stdout.lstrip().startswith("## Summary"), "the summary must be what is printed last"
    assert len(result.stdout) <= MAX_STDOUT_CHARS, len(result.stdout)
    stages = dict(re.findall(r"^\| ([\w-]+) \| ([^|]+?) \| \d+ \| \d+ \|$", result.stdout, re.MULTILINE))
    assert {"install", "smoke-triton", "smoke-cuda", "smoke-compile", "tests", "sanitize-memcheck", "sweep",
            "evidence-compile", "evidence-sass"} <= set(stages), stages  # fmt: skip
    assert all(outcome == "ok" for name, outcome in stages.items() if not name.startswith("probe-")), stages
    # The failure paths a real run can hit, each with the outcome it must have.
    probes = re.findall(r"^\| (probe-[\w-]+) \| ([^|]+) \| ([^|]+) \|$", result.stdout, re.MULTILINE)
    assert {name for name, _, _ in probes} == {"probe-limit", "probe-deadline", "probe-pytest", "probe-pytest-summary",
                                               "probe-pytest-junit", "probe-bench-kill", "probe-bench-partial"}
    assert all(expected.strip() == seen.strip() for _, expected, seen in probes), probes
    assert stages["probe-limit"] == "TIMED OUT" and stages["probe-deadline"] == "skipped: out of time"
    # The GPU tests are collected by their marker: many, and not all of the suite.
    collected = re.search(r"### Tests \(pytest -m gpu\): (\d+)/(\d+) tests collected \((\d+) deselected\)",
                          result.stdout)  # fmt: skip
    assert collected and int(collected.group(1)) >= 100 and int(collected.group(3)) > 0, result.stdout[-3000:]
    smoke = [json.loads(line) for line in (out / "smoke.jsonl").read_text().splitlines()]
    assert {r["group"] for r in smoke} == {"triton", "cuda", "compile"}
    assert all(r["status"] == ("skipped" if r["group"] == "cuda" else "ok") for r in smoke), smoke
    runs = json.loads((out / "bench.json").read_text())["runs"]
    labels = [run["run"] for run in runs]
    assert len(labels) == len(gpu_check_bench_arguments()) and all(run["complete"] for run in runs)
    triton = [r for run in runs for r in run["results"] if r["row"] == "fusedrnn:triton"]
    assert triton and all(r["status"] == "ok" for r in triton)
    assert json.loads((out / "evidence.json").read_text()), "the SASS summary found no kernel"
    records = json.loads((out / "sweep.json").read_text())["records"]
    assert {r["tune"] for r in records if r["target"] == "triton-persistent"} == {"", "warps=4"}
