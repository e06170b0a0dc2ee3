"""MIG instances of one GPU: probed once at open, then read each tick. What an instance does not
support, or an instance that fails, never silences the physical GPU's own reading."""

from __future__ import annotations

import ctypes
import logging
from typing import Any

from tokentop.model import MigSample
from tokentop.nvml.calls import GpuState, NvmlCalls, describe, nvml_text

log = logging.getLogger("tokentop.nvml")

# Query keys of calls made on a MIG instance's handle, kept apart from the parent's own calls so
# that what a MIG instance does not support never silences the physical GPU's reading.
MIG_UUID_QUERY = "MIG nvmlDeviceGetUUID"
MIG_MEMORY_QUERY = "MIG nvmlDeviceGetMemoryInfo"


def probe_mig(nvml: NvmlCalls, gpu: GpuState) -> None:
    """Once at open: is MIG mode on, and how many instance slots are there to look at?"""
    try:
        mode = nvml.call(gpu, "nvmlDeviceGetMigMode", gpu.handle)
        if mode is None or int(mode[0]) != nvml.mig_enabled:
            return  # off, or not a MIG-capable GPU (NOT_SUPPORTED is remembered)
        slots = nvml.call(gpu, "nvmlDeviceGetMaxMigDeviceCount", gpu.handle)
    except Exception as exc:  # the GPU's own reading decides what a failing GPU shows
        log.debug("GPU %d MIG mode not readable: %s", gpu.index, describe(exc))
        return
    gpu.mig_slots = int(slots or 0)
    if gpu.mig_slots:
        log.info("GPU %d has MIG mode on (%d instance slots)", gpu.index, gpu.mig_slots)


def read_mig(nvml: NvmlCalls, gpu: GpuState) -> tuple[MigSample, ...]:
    """The MIG instances now: one without a handle or UUID is left out this tick, one whose
    memory fails reads ``None``. An instance's failures are logged, never the GPU's error."""
    physical_failures = len(gpu.failures)
    instances = []
    for slot in range(gpu.mig_slots):
        handle = mig_handle(nvml, gpu, slot)
        if handle is None:
            continue
        try:
            uuid = mig_uuid(nvml, gpu, slot, handle)
            if uuid is None:
                continue  # an instance without a UUID cannot be keyed
            memory = nvml.call(gpu, "nvmlDeviceGetMemoryInfo", handle, query=MIG_MEMORY_QUERY)
        except Exception as exc:  # GpuFailure included: the parent GPU's reading stands
            log.debug("GPU %d MIG slot %d: %s", gpu.index, slot, exc)
            continue
        instances.append(
            MigSample(
                uuid=uuid,
                index=slot,
                memory_used_bytes=None if memory is None else int(memory.used),
                memory_total_bytes=None if memory is None else int(memory.total),
            )
        )
    del gpu.failures[physical_failures:]
    return tuple(instances)


def mig_handle(nvml: NvmlCalls, gpu: GpuState, slot: int) -> Any:
    """The handle of the instance in ``slot``; None for an empty slot or a failed call."""
    try:
        return nvml.lib.nvmlDeviceGetMigDeviceHandleByIndex(gpu.handle, slot)
    except nvml.nvml_error as exc:
        code = getattr(exc, "value", None)
        if code == nvml.not_found:
            gpu.mig_uuids.pop(slot, None)  # no instance there (any more)
        elif code in (nvml.not_supported, nvml.function_not_found):
            log.info("GPU %d: MIG instances not readable (%s); not asked again", gpu.index, exc)
            gpu.mig_slots = 0
        else:
            log.debug("GPU %d MIG slot %d: %s", gpu.index, slot, exc)
        return None
    except Exception as exc:
        log.debug("GPU %d MIG slot %d: %s", gpu.index, slot, describe(exc))
        return None


def mig_uuid(nvml: NvmlCalls, gpu: GpuState, slot: int, handle: Any) -> str | None:
    """The instance's UUID, read once per instance (a new handle in the slot reads again)."""
    key = handle_key(handle)
    cached = gpu.mig_uuids.get(slot)
    if cached is not None and cached[0] == key:
        return cached[1]
    uuid = nvml.call(gpu, "nvmlDeviceGetUUID", handle, query=MIG_UUID_QUERY)
    if uuid is None:
        return None
    gpu.mig_uuids[slot] = (key, nvml_text(uuid))
    return gpu.mig_uuids[slot][1]


def handle_key(handle: Any) -> Any:
    """What tells one device handle from another: the address a ctypes handle points to."""
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value
    except (ctypes.ArgumentError, TypeError):
        return id(handle)
