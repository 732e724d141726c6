"""The shell scripts CI and the GPU round depend on: valid bash, and every benchmark command they run parses."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from fusedrnn.bench.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["scripts/setup.sh", "scripts/gpu_check.sh", ".ci/run", "bench/record_results.sh"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_is_valid_bash(script):
    subprocess.run(["bash", "-n", str(ROOT / script)], check=True)


def gpu_check_bench_arguments() -> list[list[str]]:
    """The fusedrnn-bench arguments of each `step bench` line of scripts/gpu_check.sh, BENCH expanded."""
    text = (ROOT / "scripts/gpu_check.sh").read_text()
    common = shlex.split(re.search(r'^BENCH=\("\$PY" -m fusedrnn\.bench (.*)\)$', text, re.M).group(1))
    lines = re.findall(r'^step bench \d+ "\$\{BENCH\[@\]\}" (.*)$', text, re.M)
    return [common + shlex.split(line.replace('"$OUT', '"/tmp')) for line in lines]


def test_gpu_check_runs_benchmarks():
    assert len(gpu_check_bench_arguments()) >= 3


@pytest.mark.parametrize("arguments", gpu_check_bench_arguments(), ids=lambda a: "-".join(a[a.index("--preset") + 1:][:1]))
def test_gpu_check_benchmark_commands_parse(arguments):
    build_parser().parse_args(arguments)  # argparse exits (SystemExit) on an unknown flag or value
