"""Read every GPU once per tick through NVML, surviving whatever the driver throws.

Every NVML call for a GPU goes through one choke point, ``NvmlCalls.call`` (``calls.py``), which
maps the error codes of ``shared/docs/NVML.md``: what a GPU does not support (or does not allow,
or whose function the driver lacks) is remembered per GPU and never asked again, and reads as
``None``; a lost GPU is marked ``"lost"`` while the others keep going; any other error makes that
one field ``None`` this tick (the GPU is ``"error"`` only when nothing at all could be read).
Every GPU NVML counts is listed: one whose UUID cannot be read is keyed by its index, one that
gives no handle is listed as lost. ``open`` and ``read`` never raise.

Beside it: ``power.py`` (one field-values call per GPU), ``direct.py`` (utilisation, memory,
temperature and clock straight through NVML's C functions when the binding is pynvml),
``processes.py`` (process lists) and ``mig.py`` (MIG instances); what a call made straight
through a C function returns is acted on as ``NvmlCalls.call`` acts on the binding's error of
that code. NVML reads driver state only: it never creates a CUDA context.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from tokentop.model import GpuReading, GpuSample
from tokentop.nvml.calls import (
    FUNCTION_MISSING,
    NO_GPU_PANEL,
    NO_PERMISSION,
    NOT_SUPPORTED,
    GpuFailure,
    GpuState,
    NvmlCalls,
    describe,
    nvml_text,
)
from tokentop.nvml.direct import MEMORY_QUERY, direct_reads, read_basic
from tokentop.nvml.mig import MIG_MEMORY_QUERY, MIG_UUID_QUERY, probe_mig, read_mig
from tokentop.nvml.power import (
    ENERGY_FIELD,
    POWER_AVERAGE_FIELD,
    POWER_FIELDS,
    POWER_LIMIT_FIELD,
    field_key,
    read_power,
)
from tokentop.nvml.processes import COMPUTE_PROCESS_CALLS, GRAPHICS_PROCESS_CALLS, read_processes

__all__ = [  # the names callers and tests have always taken from here
    "CLOSED",
    "COMPUTE_PROCESS_CALLS",
    "ENERGY_FIELD",
    "FUNCTION_MISSING",
    "GRAPHICS_PROCESS_CALLS",
    "MIG_MEMORY_QUERY",
    "MIG_UUID_QUERY",
    "NOT_OPENED",
    "NOT_SUPPORTED",
    "NO_GPU_PANEL",
    "NO_PERMISSION",
    "POWER_AVERAGE_FIELD",
    "POWER_FIELDS",
    "POWER_LIMIT_FIELD",
    "NvmlReader",
    "field_key",
]

log = logging.getLogger("tokentop.nvml")

NOT_OPENED = "NVML reader not opened"
CLOSED = "NVML reader closed"
UNKNOWN_NAME = "unknown GPU"
# NVML's memory and energy are unsigned 64-bit; past this no GPU's is a reading (9 million TB, or
# 290,000 years at a kilowatt), and the history stores signed 64-bit integers.
MAX_READING = 2**63 - 1


def index_key(index: int) -> str:
    """The key of a GPU whose UUID cannot be read: stable for the session, never a real UUID."""
    return f"nvml-index-{index}"


class NvmlReader:
    """Polls all GPUs through a pynvml-like module (the real ``pynvml`` by default)."""

    def __init__(self, lib: Any = None) -> None:
        self._lib: Any = lib
        self._initialised = False
        self._nvml: NvmlCalls | None = None  # the binding's constants and the choke point, at open
        self._gpus: list[GpuState] = []
        self.available = False
        self.reason: str | None = NOT_OPENED
        self.driver_version: str | None = None

    # --- lifecycle -------------------------------------------------------------------

    def open(self) -> None:
        """Start NVML, list the GPUs and probe once what each supports. Never raises."""
        if self._initialised:
            return
        self._gpus = []
        self.available = False
        try:
            if self._lib is None:
                self._lib = importlib.import_module("pynvml")
            nvml = self._nvml = NvmlCalls(self._lib)
        except ImportError:
            self.reason = f"nvidia-ml-py (pynvml) is not installed: {NO_GPU_PANEL}"
            return
        except Exception as exc:  # a broken binding must not stop the monitor
            self.reason = f"the NVML binding could not be loaded ({describe(exc)}): {NO_GPU_PANEL}"
            return
        try:
            self._lib.nvmlInit()
        except Exception as exc:
            self.reason = nvml.init_failure(exc)
            return
        self._initialised = True
        try:
            self.driver_version = nvml_text(self._lib.nvmlSystemGetDriverVersion())
        except Exception as exc:
            log.debug("driver version not readable: %s", describe(exc))
        try:
            count = int(self._lib.nvmlDeviceGetCount())
        except Exception as exc:
            self._give_up(f"NVML could not count the GPUs ({describe(exc)}): {NO_GPU_PANEL}")
            return
        if count <= 0:
            self._give_up(f"no GPU could be read through NVML (it counts none): {NO_GPU_PANEL}")
            return
        self._gpus = [self._add_gpu(index) for index in range(count)]
        self.available = True
        self.reason = None
        for gpu in self._gpus:  # the probe: the first read remembers what is not supported
            if gpu.unopened is None:
                probe_mig(nvml, gpu)
            self._read_gpu(gpu, with_processes=True)

    def close(self) -> None:
        """Shut NVML down. Idempotent; never raises. Why NVML was unusable stays in ``reason``."""
        if self.available or self.reason == NOT_OPENED:
            self.reason = CLOSED
        self.available = False
        if not self._initialised:
            return
        self._initialised = False
        try:
            self._lib.nvmlShutdown()
        except Exception as exc:
            log.debug("nvmlShutdown failed: %s", describe(exc))

    # --- per tick --------------------------------------------------------------------

    def read(self, t_mono: float, with_processes: bool) -> GpuReading:
        """All GPUs now. Process lists only when ``with_processes`` (a slower cadence)."""
        if not self.available:
            return GpuReading(
                t_mono=t_mono,
                gpus=(),
                available=False,
                reason=self.reason,
                driver_version=self.driver_version,
            )
        samples = tuple(self._read_gpu(gpu, with_processes) for gpu in self._gpus)
        return GpuReading(t_mono=t_mono, gpus=samples, driver_version=self.driver_version)

    def unavailable_queries(self, uuid: str) -> dict[str, str]:
        """Calls and fields no longer asked of this GPU, with the reason (for "N/A" tooltips)."""
        for gpu in self._gpus:
            if gpu.uuid == uuid:
                return dict(gpu.not_asked)
        return {}

    # --- internals -------------------------------------------------------------------

    def _give_up(self, reason: str) -> None:
        self.close()
        self._gpus = []
        self.reason = reason

    def _add_gpu(self, index: int) -> GpuState:
        """One GPU as NVML lists it: keyed by UUID, or by index when the UUID cannot be read;
        a GPU without a handle is kept too, and reads as lost."""
        nvml = self._nvml
        assert nvml is not None  # bound at open, before any GPU is listed
        try:
            handle = self._lib.nvmlDeviceGetHandleByIndex(index)
        except Exception as exc:
            why = f"GPU {index} could not be opened: {describe(exc)}"
            log.warning("%s; listed as lost until tokentop starts again", why)
            return GpuState(index, None, index_key(index), UNKNOWN_NAME, unopened=why)
        state = GpuState(index=index, handle=handle, uuid=index_key(index), name=UNKNOWN_NAME)
        uuid = name = None
        try:  # a failure is logged by the call; a lost GPU reads as lost from its first tick
            uuid = nvml.call(state, "nvmlDeviceGetUUID", handle)
            name = nvml.call(state, "nvmlDeviceGetName", handle)
        except GpuFailure:
            pass
        state.uuid = index_key(index) if uuid is None else nvml_text(uuid)
        state.name = UNKNOWN_NAME if name is None else nvml_text(name)
        state.fields = list(POWER_FIELDS)
        state.field_request = nvml.field_request()
        state.direct = direct_reads(nvml, handle)
        return state

    def _read_gpu(self, gpu: GpuState, with_processes: bool) -> GpuSample:
        """One GPU now: what it answered, ``None`` for the rest; lost only when it is gone."""
        if gpu.unopened is not None:
            return self._failed_sample(gpu, "lost", gpu.unopened)
        gpu.failures = []
        try:
            sample = self._sample(gpu, with_processes)
        except GpuFailure as failure:
            if failure.status == "lost" and not gpu.lost:
                log.warning(failure.message)
            gpu.lost = failure.status == "lost"
            return self._failed_sample(gpu, failure.status, failure.message)
        except Exception as exc:  # a bug in reading the answers must cost one GPU one tick, not the monitor
            return self._failed_sample(gpu, "error", f"unexpected NVML failure: {describe(exc)}")
        if gpu.lost:
            log.warning("GPU %d answers again", gpu.index)
            gpu.lost = False
        return sample

    def _failed_sample(self, gpu: GpuState, status: str, error: str) -> GpuSample:
        return GpuSample(uuid=gpu.uuid, index=gpu.index, name=gpu.name, status=status, error=error)

    def _sample(self, gpu: GpuState, with_processes: bool) -> GpuSample:
        """Every query of this tick; the failures of single queries are in ``gpu.failures``."""
        nvml = self._nvml
        assert nvml is not None  # bound at open, before any GPU is listed
        power_w, power_source, power_limit_w, energy_mj = read_power(nvml, gpu)
        utilization, memory_used, memory_total, temperature, sm_clock = read_basic(nvml, gpu)
        processes = read_processes(nvml, gpu) if with_processes else None
        mig = read_mig(nvml, gpu) if gpu.mig_slots else ()
        if energy_mj is not None and energy_mj > MAX_READING:
            nvml.failed(gpu, "energy counter", "past 2^63 mJ: not a reading")
            energy_mj = None
        if memory_used is not None and memory_total is not None:  # one answer: both or neither
            if memory_used > MAX_READING or memory_total > MAX_READING:
                nvml.failed(gpu, MEMORY_QUERY, "past 2^63 bytes: not a reading")
                memory_used = None
            else:
                memory_used = int(memory_used)
                gpu.memory_total_bytes = int(memory_total)
        nothing_read = bool(gpu.failures) and all(
            value is None
            for value in (utilization, memory_used, power_w, power_limit_w, energy_mj, temperature, sm_clock, processes)
        )
        return GpuSample(  # by position: keywords cost a GpuSample a third more, for every GPU every tick
            gpu.uuid,
            gpu.index,
            gpu.name,
            "error" if nothing_read else "ok",  # status
            "; ".join(gpu.failures) or None,  # error
            None if utilization is None else float(utilization),  # utilization_pct
            memory_used,  # memory_used_bytes
            gpu.memory_total_bytes,
            power_w,
            power_source,
            power_limit_w,
            energy_mj,  # energy_counter_mj
            None if temperature is None else float(temperature),  # temperature_c
            None if sm_clock is None else int(sm_clock),  # sm_clock_mhz
            processes,
            mig,
        )
