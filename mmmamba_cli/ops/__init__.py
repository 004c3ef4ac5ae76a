"""SSD (Mamba-2 scan) ops: pure-PyTorch reference paths and the kernel dispatch point."""
from .kernels import kernels_available, ssd_scan, ssd_update
from .ssd_ref import ssd_chunked, ssd_naive, ssd_step

__all__ = ["kernels_available", "ssd_chunked", "ssd_naive", "ssd_scan", "ssd_step", "ssd_update"]
