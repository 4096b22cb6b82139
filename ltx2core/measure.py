"""Seconds and peak memory of a block of work in this process: GPU (the caching allocator's peak of allocated bytes)
and host (the resident-set high-water mark, reset at the block's start where Linux allows it)."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

GIB = 2**30


@dataclass
class Measurement:
    seconds: float = 0.0
    gpu_peak_gib: float | None = None  # None: no CUDA device
    host_peak_gib: float | None = None


@contextmanager
def measured() -> Iterator[Measurement]:
    """Fill the yielded Measurement when the block ends (also when it raises)."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    _reset_host_peak()
    result = Measurement()
    started = time.perf_counter()
    try:
        yield result
    finally:
        if cuda:
            torch.cuda.synchronize()
            result.gpu_peak_gib = torch.cuda.max_memory_allocated() / GIB
        result.seconds = time.perf_counter() - started
        result.host_peak_gib = host_peak_bytes() / GIB


def _reset_host_peak() -> None:
    try:  # "5" resets VmHWM (Linux >= 4.0); elsewhere the peak is the process's whole life
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def host_peak_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
