"""What a result was measured on: device, library versions, backend availability (recorded in --json / --csv)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path

import torch

from .. import __version__, registry


def _cpuinfo(key: str) -> str | None:
    """The first processor's `key` in /proc/cpuinfo, or None (not Linux, or no such line)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (platform.processor() is often just the architecture)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_family_model() -> str | None:
    """x86's 'cpu family' and 'model' numbers as /proc/cpuinfo gives them (e.g. 'f25m17', a Zen 4 EPYC), or None."""
    family, model = _cpuinfo("cpu family"), _cpuinfo("model")
    return None if family is None or model is None else f"f{family}m{model}"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"{cpu_name()} ({os.cpu_count()} cores, {threads} torch thread{'s' * (threads != 1)})"


def device_slug(device: torch.device) -> str:
    """A file-name-safe device tag for results folders, e.g. 'cpu-amd-epyc-f25m17-2c' or 'cuda-nvidia-h100'. A CPU
    whose model name carries no number (a cloud VM's 'AMD EPYC', 'Intel Xeon Processor') is told apart by its family
    and model (Zen 4 and Zen 5 are both 'AMD EPYC'); folders written before that rule lack them."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        family_model = cpu_family_model() if not re.search(r"\d", cpu_name()) else None
        name = f"{cpu_name()} {family_model or ''} {os.cpu_count()}c"
    name = re.sub(r"\((r|tm)\)", "", name.lower())
    return f"{device.type}-" + re.sub(r"[^a-z0-9]+", "-", name).strip("-")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    """Output of a git command in this package's checkout; None when not a checkout (an installed wheel)."""
    try:
        out = subprocess.run(
            ["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def describe(device: torch.device) -> dict:
    """Everything needed to reproduce or compare a run."""
    cuda = device.type == "cuda"
    return {
        "device": device.type,
        "device_name": device_name(device),
        "device_slug": device_slug(device),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # Other processes' load skews CPU timings (torch's threads wait for each other); recorded so a reader can judge.
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "triton": _version("triton"),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "gpu_capability": list(torch.cuda.get_device_capability(device)) if cuda else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "fusedrnn": __version__,
        "git_commit": _git("rev-parse", "--short", "HEAD") or None,
        # Tracked files changed since that commit: the measured code is not exactly the commit.
        "git_dirty": None
        if (status := _git("status", "--porcelain", "--untracked-files=no")) is None
        else bool(status),
        "backends": registry.availability(),
        # The `cpu` backend's pointwise variant (ATen's CPU capability; ATEN_CPU_CAPABILITY forces a narrower one).
        "cpu_pointwise_variant": torch.ops.fusedrnn.cpu_capability() if registry.availability()["cpu"] is None else None,
    }
