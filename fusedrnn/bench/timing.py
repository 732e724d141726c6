"""Timers and memory probes: CUDA events on a GPU, the wall clock on CPU; CUDA allocator peak or process RSS peak."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity

#: Linux lets a process reset its own peak RSS (VmHWM) by writing "5" to /proc/self/clear_refs (since Linux 4.0).
_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"

CUDA_MEMORY_METHOD = "cuda allocator: torch.cuda.max_memory_allocated during one step, minus what was allocated before"
CPU_MEMORY_METHOD = (
    "cpu: peak of the bytes torch's CPU allocator holds during one step beyond those held before (profiler memory "
    "events; memory a backend mallocs itself is not seen); the JSON also records the process RSS growth (VmHWM)"
)


@dataclasses.dataclass
class Timing:
    """Per-repetition times of one step, in milliseconds."""

    times_ms: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def min(self) -> float:
        return min(self.times_ms)

    @property
    def max(self) -> float:
        return max(self.times_ms)


#: An outer alarm due while time_limit ran still fires, this soon after (setitimer(0) would cancel it instead).
_REARM_AT_LEAST_S = 1e-3


class TimeLimitExceeded(Exception):
    """A call ran past its time limit (`time_limit`) and was interrupted."""


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Interrupt the body with TimeLimitExceeded after `seconds` (None: no limit).

    Uses SIGALRM, so it limits only in the main thread of a POSIX process (elsewhere the body runs unlimited): a
    compilation cannot be cancelled any other way from inside the process. An alarm already pending (pytest-timeout's,
    say) is honoured: if it comes first this adds no limit, otherwise it is re-armed for its remaining time after."""
    if seconds is None or not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return
    outer_remaining, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    if outer_remaining and outer_remaining <= seconds:
        yield
        return

    def interrupt(signum, frame):
        raise TimeLimitExceeded(f"gave up after {seconds:.0f} s (the row's limit on its first call)")

    previous = signal.signal(signal.SIGALRM, interrupt)
    start = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_remaining:
            left = max(outer_remaining - (time.monotonic() - start), _REARM_AT_LEAST_S)
            signal.setitimer(signal.ITIMER_REAL, left, outer_interval)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_once(step: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of one run. On a GPU, CUDA events on the stream (launch overhead that overlaps GPU work is
    not counted twice); on CPU the wall clock."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    start_s = time.perf_counter()
    step()
    return (time.perf_counter() - start_s) * 1e3


def measure_interleaved(
    steps: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeat: int
) -> dict[str, Timing | Exception]:
    """Warm every step up, then time repetition r of every step before repetition r+1 of any.

    A step that raises is dropped from the rotation and reported as its exception instead of a Timing.
    """
    outcome: dict[str, Timing | Exception] = {name: Timing([]) for name in steps}
    active = dict(steps)
    for phase in ("warmup", "timed"):
        for _ in range(warmup if phase == "warmup" else repeat):
            for name, step in list(active.items()):
                try:
                    if phase == "warmup":
                        step()
                        synchronize(device)
                    else:
                        outcome[name].times_ms.append(_time_once(step, device))
                except Exception as error:  # noqa: BLE001 - the caller reports it in the row
                    outcome[name] = error
                    del active[name]
    return outcome


def memory_method(device: torch.device) -> str:
    return CUDA_MEMORY_METHOD if device.type == "cuda" else CPU_MEMORY_METHOD


@contextlib.contextmanager
def _quiet_fd2():
    """Silence file descriptor 2 (the profiler's C++ side logs start/stop lines there, not through Python)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory(step: Callable[[], object], device: torch.device) -> tuple[int, int | None]:
    """(extra bytes one run of `step` allocates at its peak beyond what was allocated before, see memory_method;
    on CPU also the growth of the process peak RSS during that run, else None), from one run."""
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        synchronize(device)
        return max(0, torch.cuda.max_memory_allocated(device) - before), None
    rss_before = _reset_rss_peak()
    with _quiet_fd2(), torch.profiler.profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profile:
        step()
    rss_growth = _rss_growth_since(rss_before)
    # Each "[memory]" event is one allocation (+bytes) or free (-bytes); their running sum in time order peaks at
    # the step's largest simultaneous footprint.
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in profile.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak, rss_growth


def _status_kib(field: str) -> int:
    with open(_STATUS) as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_rss_peak() -> int | None:
    """Reset the process peak RSS (VmHWM) and return the current RSS in KiB; None where Linux /proc is missing."""
    try:
        with open(_CLEAR_REFS, "w") as clear_refs:
            clear_refs.write("5")
        return _status_kib("VmRSS")
    except (OSError, KeyError, ValueError):
        return None


def _rss_growth_since(before_kib: int | None) -> int | None:
    """Bytes the peak RSS rose above `before_kib`. A lower bound: reused allocator caches do not show up."""
    if before_kib is None:
        return None
    try:
        return max(0, _status_kib("VmHWM") - before_kib) * 1024
    except (OSError, KeyError, ValueError):
        return None
