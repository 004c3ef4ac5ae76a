"""Where and with what a benchmark ran: device, library versions, git SHA, date, machine load."""
from __future__ import annotations

import datetime as dt
import os
import platform
from importlib import metadata

import torch

from ..io.save import git_sha
from ..ops.kernels import kernels_available

PACKAGES = ("torch", "triton", "mamba-ssm", "causal-conv1d", "numpy")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _sha() -> str:
    """The checkout's commit ("unknown" outside a git checkout, e.g. a copied tree)."""
    sha = git_sha()
    return sha if len(sha) == 40 and all(c in "0123456789abcdef" for c in sha) else "unknown"


def device_info(device: torch.device) -> dict:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return {"type": "cuda", "name": p.name, "memory_bytes": p.total_memory,
                "multiprocessors": p.multi_processor_count, "cuda": torch.version.cuda,
                "capability": f"{p.major}.{p.minor}"}
    return {"type": "cpu", "name": _cpu_name(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads()}


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def environment(device: torch.device) -> dict:
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_sha": _sha(),
        "device": device_info(device),
        "versions": {"python": platform.python_version(), **{p: _version(p) for p in PACKAGES}},
        "mamba_kernels": kernels_available(),
        "platform": platform.platform(),
        "load_average_start": load_average(),
    }
