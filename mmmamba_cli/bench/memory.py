"""Peak memory of one measured phase: the CUDA allocator's peak on a GPU, peak RSS on a CPU.

GPU: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` at the start of the
phase: weights + cache + activations + CUDA-graph pools, everything the allocator handed out.

CPU: the process's RSS high-water mark (``VmHWM``) is reset at the start of the phase by writing
5 to ``/proc/self/clear_refs`` (Linux), after ``gc.collect()`` and ``malloc_trim(0)`` so freed
heap from earlier phases is returned to the system rather than silently reused. The phase's peak
is then (peak RSS - RSS at the start of the cell) + the model's weight bytes: what the cell holds
at its peak on top of the already-resident weights (the decode phase counts the cache allocated
by the prefill), plus the weights: comparable with the GPU figure. The Python
interpreter and libraries (a few hundred MB, the same for every model) are not counted. Without
``clear_refs`` (not Linux) the figure falls back to the lifetime ``ru_maxrss`` and says so.
"""
from __future__ import annotations

import ctypes
import gc
import re

import torch

_STATUS = "/proc/self/status"


def _status_kib(key: str) -> int | None:
    try:
        with open(_STATUS) as f:
            m = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def _trim_heap() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """``start()`` a phase, run it, read ``peak()`` in bytes (``method`` says how it was measured)."""

    def __init__(self, device: torch.device, resident_bytes: int = 0):
        self.device, self.resident = torch.device(device), resident_bytes
        self.base = 0
        self.method = "cuda max_memory_allocated" if self.device.type == "cuda" else "rss"

    def start(self, keep_base: bool = False) -> None:
        """Begin a phase. ``keep_base``: count from the previous phase's starting RSS (CPU), so
        memory allocated earlier in the cell and still live (the cache) is counted, as the CUDA
        allocator's peak counts it."""
        if self.device.type == "cuda":
            gc.collect()
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        _trim_heap()
        if _reset_hwm() and _status_kib("VmRSS") is not None:
            self.method = "rss: VmHWM - VmRSS at the cell's start + weights"
            if not keep_base:
                self.base = _status_kib("VmRSS") * 1024
        else:
            self.method = "rss: lifetime ru_maxrss (not reset per phase)"
            self.base = 0

    def peak(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device))
        if self.method.startswith("rss: VmHWM"):
            return max(_status_kib("VmHWM") * 1024 - self.base, 0) + self.resident
        import resource  # deferred: Unix only

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
