"""One way to time a callable and to read its peak memory, shared by every benchmark suite.

Time: ``warmup`` untimed calls, then ``iters`` timed calls (CUDA synchronised around each); the
median and the spread (min, max) in milliseconds are reported.

Peak memory, in MiB above what was in use before the first timed call:

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensor memory, exact).
* CPU: the process's resident-set high-water mark (``VmHWM``), reset through
  ``/proc/self/clear_refs`` (Linux). This is process-wide and includes allocator caching, so it is an
  upper bound of what the callable needs; it is ``None`` where the kernel does not allow the reset.
"""
from __future__ import annotations

import json
import platform
import re
import statistics
import sys
import time
from typing import Callable, Optional

import torch

__all__ = ["measure", "best_of_rounds", "set_threads", "device_name", "device_roof", "roof_flops", "progress",
           "add_timing_arguments"]

# (pattern of torch.cuda.get_device_name, device, peak memory bandwidth in bytes/s, dense bf16/fp16 tensor-core
# FLOP/s), from NVIDIA's data sheets. Only the SXM parts: a PCIe or NVL board has other peaks, so it gets no roof.
DEVICE_ROOFS = (
    (r"H200(?!.*NVL)", "H200 SXM", 4.8e12, 989e12),
    (r"H100.*(SXM|HBM3)", "H100 SXM", 3.35e12, 989e12),
)


def _proc_status_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_cpu_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # 5 = reset the peak RSS (VmHWM) to the current RSS
        return True
    except OSError:
        return False


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device="cpu", warmup: int = 2, iters: int = 5) -> dict:
    """Time ``fn()`` and read its peak memory; returns ``dict(ms, ms_min, ms_max, peak_mb)``."""
    if iters < 1 or warmup < 0:
        raise ValueError(f"measure: iters must be >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        ok = _reset_cpu_peak()
        base = _proc_status_kb("VmRSS") if ok else None
    times = []
    for _ in range(iters):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    if device.type == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        hwm = _proc_status_kb("VmHWM")
        peak_mb = None if base is None or hwm is None else max(hwm - base, 0) / 1024
    return dict(ms=statistics.median(times), ms_min=min(times), ms_max=max(times), peak_mb=peak_mb)


def best_of_rounds(fns: dict, device="cpu", warmup: int = 2, iters: int = 5, repeats: int = 3) -> dict:
    """``{name: measure(fn)}`` over ``repeats`` rounds in which the callables alternate (so a load that comes
    and goes on a shared machine hits them alike), keeping each one's round with the lowest median."""
    best = {}
    for _ in range(max(1, repeats)):
        for name, fn in fns.items():
            r = measure(fn, device, warmup, iters)
            if name not in best or r["ms"] < best[name]["ms"]:
                best[name] = r
    return best


def set_threads(threads: Optional[int]) -> int:
    """``torch.set_num_threads(threads)`` when given (CPU benchmarks state it); returns the count in use."""
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def device_name(device="cpu") -> str:
    """A human-readable name of where a benchmark ran (GPU model, or CPU and its thread count)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def device_roof(name: str) -> Optional[dict]:
    """The roof of a device named as ``torch.cuda.get_device_name`` names it: ``dict(device, bytes_per_s, flops)``
    (16-bit dense peaks), or ``None`` where it is not in :data:`DEVICE_ROOFS` (the CPU, other GPUs)."""
    for pattern, device, bytes_per_s, flops in DEVICE_ROOFS:
        if re.search(pattern, name):
            return dict(device=device, bytes_per_s=bytes_per_s, flops=flops)
    return None


def roof_flops(roof: dict, flops: float, bytes_moved: float) -> float:
    """Attainable FLOP/s of a kernel that does ``flops`` on ``bytes_moved`` bytes (the roofline):
    ``min(peak FLOP/s, arithmetic intensity x peak bandwidth)``."""
    return min(roof["flops"], flops / bytes_moved * roof["bytes_per_s"])


def progress(row: dict) -> dict:
    """Print one finished row to stderr as it comes (a run stopped by a time limit keeps what it measured)."""
    print("row " + json.dumps(row, default=str), file=sys.stderr, flush=True)
    return row


def add_timing_arguments(p, iters: int = 3) -> None:
    """The options of a suite that times models in interleaved rounds: device, dtype, CPU threads, rounds,
    warm-up and timed calls."""
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; each case keeps its best")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=iters)
