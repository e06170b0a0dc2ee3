"""The processes on one GPU: compute then graphics lists, one entry per PID, with the older
versioned symbol as fallback where the driver lacks the unversioned one."""

from __future__ import annotations

from typing import Any

from tokentop.model import GpuProcess
from tokentop.nvml.calls import GpuState, NvmlCalls

# Process lists: the unversioned name first, then the older symbol an older driver still has.
COMPUTE_PROCESS_CALLS = (
    "nvmlDeviceGetComputeRunningProcesses",
    "nvmlDeviceGetComputeRunningProcesses_v2",
)
GRAPHICS_PROCESS_CALLS = (
    "nvmlDeviceGetGraphicsRunningProcesses",
    "nvmlDeviceGetGraphicsRunningProcesses_v2",
)


def read_processes(nvml: NvmlCalls, gpu: GpuState) -> tuple[GpuProcess, ...] | None:
    """Compute then graphics processes, one entry per PID; None when not known this tick."""
    by_pid: dict[int, GpuProcess] = {}
    known = False
    for calls in (COMPUTE_PROCESS_CALLS, GRAPHICS_PROCESS_CALLS):
        processes = first_available(nvml, gpu, calls)
        if processes is None:
            if any(call not in gpu.not_asked for call in calls):
                return None  # a list that exists could not be read this tick
            continue
        known = True
        for process in processes:
            pid = int(process.pid)
            if pid not in by_pid:
                used = process.usedGpuMemory
                by_pid[pid] = GpuProcess(pid=pid, used_memory_bytes=None if used is None else int(used))
    return tuple(by_pid.values()) if known else None


def first_available(nvml: NvmlCalls, gpu: GpuState, calls: tuple[str, ...]) -> Any:
    """The first call of ``calls`` that this GPU still answers (older symbols as fallback)."""
    for call in calls:
        if call in gpu.not_asked:
            continue
        result = nvml.call(gpu, call, gpu.handle)
        if result is not None or call not in gpu.not_asked:
            return result
    return None
