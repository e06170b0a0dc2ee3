"""A GPU's four per-tick single queries (utilisation, memory, temperature, SM clock) made through
NVML's C functions themselves, when the binding is pynvml.

Each pynvml wrapper looks its function up, allocates a struct or ``c_uint`` and a ``byref``,
converts the enum argument, checks the return and reads the answer through a Python-level
``__getattribute__``: about three times the cost of the C call over ctypes. Here each GPU has one
buffer, laid out as nvml.h's out-parameters, and each call is bound once to its handle and its
place in that buffer: a tick makes the four calls and reads the buffer in one unpack.

The symbols and argument lists are pynvml's own (the same unversioned names it calls, the
handle it returned, ``int`` for the enum arguments, ``int`` return codes); every return code
goes through ``NvmlCalls.on_error`` as the wrapper's ``NVMLError`` would, with the retry
``NvmlCalls.call`` makes on INSUFFICIENT_SIZE: what a GPU answers, and what it fails, reads as
through the wrappers.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable
from functools import partial
from types import ModuleType
from typing import Any

from tokentop.nvml.calls import GpuState, NvmlCalls, describe

UTILIZATION_QUERY = "nvmlDeviceGetUtilizationRates"
MEMORY_QUERY = "nvmlDeviceGetMemoryInfo"
TEMPERATURE_QUERY = "nvmlDeviceGetTemperature"
CLOCK_QUERY = "nvmlDeviceGetClockInfo"

# The buffer: nvmlUtilization_t {gpu, memory} at 0, the temperature (unsigned int) at 8, the SM
# clock (unsigned int) at 12, nvmlMemory_t {total, free, used} (unsigned long long) at 16.
_BUFFER = struct.Struct("=4I3Q")
_UTILIZATION_AT, _TEMPERATURE_AT, _CLOCK_AT, _MEMORY_AT = 0, 8, 12, 16


# What the four queries answered this tick, None for each one that did not: the GPU's
# utilisation (%), memory used and total (bytes), temperature (C), SM clock (MHz). A plain tuple:
# a NamedTuple's ``__new__`` is Python code, and this is built for every GPU every tick.
BasicReading = tuple[int | None, int | None, int | None, int | None, int | None]


class DirectReads:
    """One GPU's four queries, each bound to its C function, the GPU's handle and its slot in
    the GPU's own buffer (8-byte aligned: an array of ``c_ulonglong``)."""

    def __init__(self, nvml: NvmlCalls, library: ctypes.CDLL, handle: Any) -> None:
        self._buffer = buffer = (ctypes.c_ulonglong * (_BUFFER.size // 8))()

        def bound(name: str, *arguments: Any) -> Callable[[], int]:
            try:
                function = library[name]  # a function object of its own: pynvml's stays untouched
            except AttributeError:  # pynvml fails a call to a symbol the driver lacks with this code
                return partial(int, nvml.function_not_found)
            return partial(function, handle, *arguments)

        temperature_sensor, sm_clock = nvml.temperature_sensor, nvml.sm_clock

        self._calls = (
            (UTILIZATION_QUERY, bound(UTILIZATION_QUERY, ctypes.byref(buffer, _UTILIZATION_AT))),
            (MEMORY_QUERY, bound(MEMORY_QUERY, ctypes.byref(buffer, _MEMORY_AT))),
            (TEMPERATURE_QUERY, bound(TEMPERATURE_QUERY, temperature_sensor, ctypes.byref(buffer, _TEMPERATURE_AT))),
            (CLOCK_QUERY, bound(CLOCK_QUERY, sm_clock, ctypes.byref(buffer, _CLOCK_AT))),
        )

    def read(self, nvml: NvmlCalls, gpu: GpuState) -> BasicReading:
        """The four queries in the wrappers' order; each failure handled as ``NvmlCalls.call``
        handles it (a lost GPU raises ``GpuFailure`` before the next query is made)."""
        not_asked = gpu.not_asked
        answered = []
        for query, call in self._calls:
            if query in not_asked:
                answered.append(False)
                continue
            try:
                code = call()
            except Exception as exc:  # a binding bug costs this query, not the GPU
                nvml.failed(gpu, query, f"unexpected NVML failure: {describe(exc)}")
                answered.append(False)
                continue
            answered.append(code == nvml.success or nvml.answered_after(gpu, query, code, call))
        utilization, _, temperature, clock, total, _, used = _BUFFER.unpack_from(self._buffer)
        utilization_ok, memory_ok, temperature_ok, clock_ok = answered
        if utilization_ok and memory_ok and temperature_ok and clock_ok:
            return utilization, used, total, temperature, clock
        return (
            utilization if utilization_ok else None,
            used if memory_ok else None,
            total if memory_ok else None,
            temperature if temperature_ok else None,
            clock if clock_ok else None,
        )


def direct_reads(nvml: NvmlCalls, handle: Any) -> DirectReads | None:
    """A GPU's ``DirectReads`` when the binding is pynvml itself (its loaded library at hand),
    else None: the binding's functions are called as they are."""
    library = getattr(nvml.lib, "nvmlLib", None)
    if not isinstance(nvml.lib, ModuleType) or not isinstance(library, ctypes.CDLL):
        return None
    return DirectReads(nvml, library, handle)


def read_basic(nvml: NvmlCalls, gpu: GpuState) -> BasicReading:
    """The four queries of this tick: straight to NVML where the GPU can, else through the
    binding's functions (the Python fake's, or another binding's)."""
    if gpu.direct is not None:
        direct: DirectReads = gpu.direct
        return direct.read(nvml, gpu)
    handle = gpu.handle
    utilization = nvml.call(gpu, UTILIZATION_QUERY, handle)
    memory = nvml.call(gpu, MEMORY_QUERY, handle)
    temperature = nvml.call(gpu, TEMPERATURE_QUERY, handle, nvml.temperature_sensor)
    sm_clock = nvml.call(gpu, CLOCK_QUERY, handle, nvml.sm_clock)
    return (
        None if utilization is None else utilization.gpu,
        None if memory is None else memory.used,
        None if memory is None else memory.total,
        temperature,
        sm_clock,
    )
