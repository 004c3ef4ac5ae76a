"""Timing that a GPU cannot fool: synchronise around host-timed regions, device events per step.

On a CPU each region is also timed in process CPU seconds (``time.process_time``): on a machine
shared with other jobs the wall clock includes the time this process waited for a core, the CPU
time does not, so it is the steadier measure of the work itself (both are reported).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Sample:
    wall: float  # seconds (device time per step on CUDA)
    cpu: float | None  # process CPU seconds; None on CUDA


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[object, Sample]:
    """(fn(), its Sample), with all queued device work finished before and after."""
    sync(device)
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    sync(device)
    t1, c1 = time.perf_counter(), time.process_time()
    return out, Sample(t1 - t0, None if device.type == "cuda" else c1 - c0)


def time_steps(step: Callable[[], object], n: int, device: torch.device) -> list[Sample]:
    """A Sample for each of ``n`` consecutive calls of ``step``.

    CUDA: an event pair around each call, read after one final synchronisation, so the host can
    queue ahead as it would in a real decode loop and the numbers are the device's time per step
    (idle gaps included when the host is the bottleneck). CPU: wall and CPU clocks around each call.
    """
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        sync(device)
        for start, end in events:
            start.record()
            step()
            end.record()
        sync(device)
        return [Sample(start.elapsed_time(end) / 1e3, None) for start, end in events]
    return [timed(step, device)[1] for _ in range(n)]


def median(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
