"""Read every GPU once per tick through NVML, surviving whatever the driver throws.

Every NVML call for a GPU goes through one choke point, ``NvmlReader._call``, which maps the
error codes of ``shared/docs/NVML.md``: what a GPU does not support (or does not allow, or whose
function the driver lacks) is remembered per GPU and never asked again, and reads as ``None``; a
lost GPU is marked ``"lost"`` while the others keep going; any other error marks that GPU
``"error"`` for this tick only. ``open`` and ``read`` never raise.

NVML reads driver state only: it never creates a CUDA context.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
from dataclasses import dataclass, field
from typing import Any

from tokentop.model import GpuProcess, GpuReading, GpuSample, MigSample

log = logging.getLogger("tokentop.nvml")

NO_GPU_PANEL = "running without a GPU panel"
NOT_OPENED = "NVML reader not opened"
CLOSED = "NVML reader closed"

# Field ids asked for in one nvmlDeviceGetFieldValues call per GPU (nvml.h).
POWER_AVERAGE_FIELD = 185  # NVML_FI_DEV_POWER_AVERAGE, mW, 1 s average (Ampere+ except A100)
ENERGY_FIELD = 83  # NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION, mJ since driver load (Volta+)
POWER_LIMIT_FIELD = 190  # NVML_FI_DEV_POWER_CURRENT_LIMIT, mW, the limit enforced now
POWER_FIELDS = (POWER_AVERAGE_FIELD, ENERGY_FIELD, POWER_LIMIT_FIELD)

# Process lists: the unversioned name first, then the older symbol an older driver still has.
COMPUTE_PROCESS_CALLS = (
    "nvmlDeviceGetComputeRunningProcesses",
    "nvmlDeviceGetComputeRunningProcesses_v2",
)
GRAPHICS_PROCESS_CALLS = (
    "nvmlDeviceGetGraphicsRunningProcesses",
    "nvmlDeviceGetGraphicsRunningProcesses_v2",
)

# Reasons a query is no longer asked, as shown by ``NvmlReader.unavailable_queries``.
NOT_SUPPORTED = "not supported"
NO_PERMISSION = "no permission"
FUNCTION_MISSING = "function not found (driver older than the binding)"

# Query keys of calls made on a MIG instance's handle, kept apart from the parent's own calls so
# that what a MIG instance does not support never silences the physical GPU's reading.
MIG_UUID_QUERY = "MIG nvmlDeviceGetUUID"
MIG_MEMORY_QUERY = "MIG nvmlDeviceGetMemoryInfo"


def field_key(field_id: int) -> str:
    """How a field id is named among the queries of a GPU."""
    return f"field {field_id}"


class _GpuFailure(Exception):
    """Ends the reading of one GPU for this tick: ``status`` is "lost" or "error"."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Gpu:
    """What the reader keeps about one GPU between ticks (decoded once at open)."""

    index: int
    handle: Any
    uuid: str
    name: str
    memory_total_bytes: int | None = None
    not_asked: dict[str, str] = field(default_factory=dict)  # query -> why it is not asked
    fields: list[int] = field(default_factory=lambda: list(POWER_FIELDS))
    lost: bool = False
    mig_slots: int = 0  # nvmlDeviceGetMaxMigDeviceCount when MIG mode is on, else 0
    mig_uuids: dict[int, tuple[Any, str]] = field(default_factory=dict)  # slot -> (handle key, UUID)


class NvmlReader:
    """Polls all GPUs through a pynvml-like module (the real ``pynvml`` by default)."""

    def __init__(self, lib: Any = None) -> None:
        self._lib: Any = lib
        self._initialised = False
        self._gpus: list[_Gpu] = []
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
            self._bind(self._lib)
        except ImportError:
            self.reason = f"nvidia-ml-py (pynvml) is not installed: {NO_GPU_PANEL}"
            return
        except Exception as exc:  # a broken binding must not stop the monitor
            self.reason = f"the NVML binding could not be loaded ({_describe(exc)}): {NO_GPU_PANEL}"
            return
        try:
            self._lib.nvmlInit()
        except Exception as exc:
            self.reason = self._init_failure(exc)
            return
        self._initialised = True
        try:
            self.driver_version = _text(self._lib.nvmlSystemGetDriverVersion())
        except Exception as exc:
            log.debug("driver version not readable: %s", _describe(exc))
        try:
            count = int(self._lib.nvmlDeviceGetCount())
        except Exception as exc:
            self._give_up(f"NVML could not count the GPUs ({_describe(exc)}): {NO_GPU_PANEL}")
            return
        skipped = [message for index in range(count) if (message := self._add_gpu(index))]
        if not self._gpus:
            why = f" ({skipped[0]})" if skipped else ""
            self._give_up(f"no GPU could be read through NVML{why}: {NO_GPU_PANEL}")
            return
        self.available = True
        self.reason = None
        for gpu in self._gpus:  # the probe: the first read remembers what is not supported
            self._probe_mig(gpu)
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
            log.debug("nvmlShutdown failed: %s", _describe(exc))

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

    def _bind(self, lib: Any) -> None:
        """Take the error classes and constants from the binding once."""
        self._nvml_error: type[BaseException] = lib.NVMLError
        self._mismatch_error: type[BaseException] = getattr(lib, "NVMLLibraryMismatchError", _NeverRaised)
        self._success = lib.NVML_SUCCESS
        self._not_supported = lib.NVML_ERROR_NOT_SUPPORTED
        self._no_permission = lib.NVML_ERROR_NO_PERMISSION
        self._function_not_found = lib.NVML_ERROR_FUNCTION_NOT_FOUND
        self._insufficient_size = lib.NVML_ERROR_INSUFFICIENT_SIZE
        self._not_found = lib.NVML_ERROR_NOT_FOUND
        self._mig_enabled = lib.NVML_DEVICE_MIG_ENABLE
        self._lost_codes = {
            lib.NVML_ERROR_GPU_IS_LOST: "it fell off the bus or stopped answering",
            lib.NVML_ERROR_RESET_REQUIRED: "it needs a reset",
        }
        self._temperature_sensor = lib.NVML_TEMPERATURE_GPU
        self._sm_clock = lib.NVML_CLOCK_SM
        self._value_members = {
            lib.NVML_VALUE_TYPE_DOUBLE: "dVal",
            lib.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
            lib.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
            lib.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
            lib.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
            lib.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
            lib.NVML_VALUE_TYPE_UNSIGNED_SHORT: "usVal",
        }
        self._init_reasons = {
            lib.NVML_ERROR_LIBRARY_NOT_FOUND: "no NVIDIA driver found (NVML library not loaded)",
            lib.NVML_ERROR_DRIVER_NOT_LOADED: "the NVIDIA kernel driver is not loaded",
            lib.NVML_ERROR_LIB_RM_VERSION_MISMATCH: (
                "the NVIDIA driver and its NVML library differ in version (driver upgraded without a reboot?)"
            ),
            lib.NVML_ERROR_NO_PERMISSION: "no permission to open the NVIDIA devices",
        }

    def _init_failure(self, exc: BaseException) -> str:
        if isinstance(exc, self._mismatch_error):
            return f"the nvidia-ml-py binding does not match the installed NVML library ({exc}): {NO_GPU_PANEL}"
        if isinstance(exc, self._nvml_error):
            code = getattr(exc, "value", None)
            known = self._init_reasons.get(code)
            if known:
                return f"{known}: {NO_GPU_PANEL}"
            return f"NVML could not start ({exc}, error {code}): {NO_GPU_PANEL}"
        return f"NVML could not start ({_describe(exc)}): {NO_GPU_PANEL}"

    def _give_up(self, reason: str) -> None:
        self.close()
        self._gpus = []
        self.reason = reason

    def _add_gpu(self, index: int) -> str | None:
        """Enumerate one GPU; a GPU without a handle or UUID cannot be keyed and is skipped."""
        try:
            handle = self._lib.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(self._lib.nvmlDeviceGetUUID(handle))
        except Exception as exc:
            message = f"GPU {index} skipped: {_describe(exc)}"
            log.warning(message)
            return message
        try:
            name = _text(self._lib.nvmlDeviceGetName(handle))
        except Exception as exc:
            log.debug("GPU %d name not readable: %s", index, _describe(exc))
            name = "unknown GPU"
        self._gpus.append(_Gpu(index=index, handle=handle, uuid=uuid, name=name))
        return None

    def _call(self, gpu: _Gpu, name: str, *args: Any, query: str | None = None) -> Any:
        """The one place a GPU is asked anything. ``None``: not known (this tick or for good).

        ``query`` names the question when it differs from the function (calls on a MIG handle).
        """
        query = query or name
        if query in gpu.not_asked:
            return None
        function = getattr(self._lib, name, None)
        if function is None:
            self._on_error(gpu, query, self._function_not_found, "absent from the NVML binding")
            return None
        for attempt in (1, 2):
            try:
                return function(*args)
            # pynvml turns FUNCTION_NOT_FOUND into this on its unversioned process-list calls
            except self._mismatch_error as exc:
                self._on_error(gpu, query, self._function_not_found, str(exc))
                return None
            except self._nvml_error as exc:
                code = getattr(exc, "value", None)
                if code == self._insufficient_size and attempt == 1:
                    continue  # the process list grew between NVML's two calls: ask again
                self._on_error(gpu, query, code, str(exc))
                return None
        return None

    def _on_error(self, gpu: _Gpu, query: str, code: int | None, message: str) -> None:
        """Act on the error code of one query of one GPU, as NVML.md's table of errors says."""
        if code == self._not_supported or code == self._no_permission:
            reason = NOT_SUPPORTED if code == self._not_supported else NO_PERMISSION
            gpu.not_asked[query] = reason
            log.debug("GPU %d %s: %s; not asked again", gpu.index, query, reason)
        elif code == self._function_not_found:
            gpu.not_asked[query] = FUNCTION_MISSING
            log.info("GPU %d %s: %s (%s); falling back", gpu.index, query, FUNCTION_MISSING, message)
        elif code == self._insufficient_size:
            log.debug("GPU %d %s: list still growing; skipped this tick", gpu.index, query)
        elif code in self._lost_codes:
            raise _GpuFailure("lost", f"GPU {gpu.index} is lost: {self._lost_codes[code]} ({message})")
        else:
            raise _GpuFailure("error", f"{query}: {message} (NVML error {code})")

    def _read_gpu(self, gpu: _Gpu, with_processes: bool) -> GpuSample:
        handle = gpu.handle
        try:
            power_w, power_source, power_limit_w, energy_mj = self._read_power(gpu)
            utilization = self._call(gpu, "nvmlDeviceGetUtilizationRates", handle)
            memory = self._call(gpu, "nvmlDeviceGetMemoryInfo", handle)
            temperature = self._call(gpu, "nvmlDeviceGetTemperature", handle, self._temperature_sensor)
            sm_clock = self._call(gpu, "nvmlDeviceGetClockInfo", handle, self._sm_clock)
            processes = self._read_processes(gpu) if with_processes else None
            mig = self._read_mig(gpu) if gpu.mig_slots else ()
        except _GpuFailure as failure:
            if failure.status == "lost" and not gpu.lost:
                log.warning(failure.message)
            gpu.lost = failure.status == "lost"
            return GpuSample(
                uuid=gpu.uuid,
                index=gpu.index,
                name=gpu.name,
                status=failure.status,
                error=failure.message,
            )
        except Exception as exc:  # a binding bug must cost one GPU one tick, not the monitor
            return GpuSample(
                uuid=gpu.uuid,
                index=gpu.index,
                name=gpu.name,
                status="error",
                error=f"unexpected NVML failure: {_describe(exc)}",
            )
        if gpu.lost:
            log.warning("GPU %d answers again", gpu.index)
            gpu.lost = False
        memory_used = None
        if memory is not None:
            memory_used = int(memory.used)
            gpu.memory_total_bytes = int(memory.total)
        return GpuSample(
            uuid=gpu.uuid,
            index=gpu.index,
            name=gpu.name,
            utilization_pct=None if utilization is None else float(utilization.gpu),
            memory_used_bytes=memory_used,
            memory_total_bytes=gpu.memory_total_bytes,
            power_w=power_w,
            power_source=power_source,
            power_limit_w=power_limit_w,
            energy_counter_mj=energy_mj,
            temperature_c=None if temperature is None else float(temperature),
            sm_clock_mhz=None if sm_clock is None else int(sm_clock),
            processes=processes,
            mig=mig,
        )

    def _probe_mig(self, gpu: _Gpu) -> None:
        """Once at open: is MIG mode on, and how many instance slots are there to look at?"""
        try:
            mode = self._call(gpu, "nvmlDeviceGetMigMode", gpu.handle)
            if mode is None or int(mode[0]) != self._mig_enabled:
                return  # off, or not a MIG-capable GPU (NOT_SUPPORTED is remembered)
            slots = self._call(gpu, "nvmlDeviceGetMaxMigDeviceCount", gpu.handle)
        except Exception as exc:  # the GPU's own reading decides what a failing GPU shows
            log.debug("GPU %d MIG mode not readable: %s", gpu.index, _describe(exc))
            return
        gpu.mig_slots = int(slots or 0)
        if gpu.mig_slots:
            log.info("GPU %d has MIG mode on (%d instance slots)", gpu.index, gpu.mig_slots)

    def _read_mig(self, gpu: _Gpu) -> tuple[MigSample, ...]:
        """The MIG instances now. A failing instance is left out this tick; the GPU reads on."""
        instances = []
        for slot in range(gpu.mig_slots):
            handle = self._mig_handle(gpu, slot)
            if handle is None:
                continue
            try:
                uuid = self._mig_uuid(gpu, slot, handle)
                if uuid is None:
                    continue  # an instance without a UUID cannot be keyed
                memory = self._call(gpu, "nvmlDeviceGetMemoryInfo", handle, query=MIG_MEMORY_QUERY)
            except Exception as exc:  # _GpuFailure included: the parent GPU's reading stands
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
        return tuple(instances)

    def _mig_handle(self, gpu: _Gpu, slot: int) -> Any:
        """The handle of the instance in ``slot``; None for an empty slot or a failed call."""
        try:
            return self._lib.nvmlDeviceGetMigDeviceHandleByIndex(gpu.handle, slot)
        except self._nvml_error as exc:
            code = getattr(exc, "value", None)
            if code == self._not_found:
                gpu.mig_uuids.pop(slot, None)  # no instance there (any more)
            elif code in (self._not_supported, self._function_not_found):
                log.info("GPU %d: MIG instances not readable (%s); not asked again", gpu.index, exc)
                gpu.mig_slots = 0
            else:
                log.debug("GPU %d MIG slot %d: %s", gpu.index, slot, exc)
            return None
        except Exception as exc:
            log.debug("GPU %d MIG slot %d: %s", gpu.index, slot, _describe(exc))
            return None

    def _mig_uuid(self, gpu: _Gpu, slot: int, handle: Any) -> str | None:
        """The instance's UUID, read once per instance (a new handle in the slot reads again)."""
        key = _handle_key(handle)
        cached = gpu.mig_uuids.get(slot)
        if cached is not None and cached[0] == key:
            return cached[1]
        uuid = self._call(gpu, "nvmlDeviceGetUUID", handle, query=MIG_UUID_QUERY)
        if uuid is None:
            return None
        gpu.mig_uuids[slot] = (key, _text(uuid))
        return gpu.mig_uuids[slot][1]

    def _read_power(self, gpu: _Gpu) -> tuple[float | None, str | None, float | None, int | None]:
        """Power, its kind, limit and energy: one field-values call, single calls as fallback."""
        found: dict[int, float | int] = {}
        if gpu.fields:
            values = self._call(gpu, "nvmlDeviceGetFieldValues", gpu.handle, gpu.fields)
            if values is None:
                if "nvmlDeviceGetFieldValues" in gpu.not_asked:
                    gpu.fields = []
            else:
                self._take_fields(gpu, values, found)
        handle = gpu.handle

        power_w: float | None = None
        power_source: str | None = None
        if POWER_AVERAGE_FIELD in found:
            power_w, power_source = found[POWER_AVERAGE_FIELD] / 1000.0, "average_1s"
        elif POWER_AVERAGE_FIELD not in gpu.fields:
            milliwatts = self._call(gpu, "nvmlDeviceGetPowerUsage", handle)
            if milliwatts is not None:
                power_w, power_source = milliwatts / 1000.0, "instant"

        energy_mj: int | None = None
        if ENERGY_FIELD in found:
            energy_mj = int(found[ENERGY_FIELD])
        elif ENERGY_FIELD not in gpu.fields:
            counter = self._call(gpu, "nvmlDeviceGetTotalEnergyConsumption", handle)
            energy_mj = None if counter is None else int(counter)

        power_limit_w: float | None = None
        if POWER_LIMIT_FIELD in found:
            power_limit_w = found[POWER_LIMIT_FIELD] / 1000.0
        elif POWER_LIMIT_FIELD not in gpu.fields:
            limit = self._call(gpu, "nvmlDeviceGetEnforcedPowerLimit", handle)
            power_limit_w = None if limit is None else limit / 1000.0
        return power_w, power_source, power_limit_w, energy_mj

    def _take_fields(self, gpu: _Gpu, values: Any, found: dict[int, float | int]) -> None:
        """Check each field's own return: the call can succeed while single fields fail."""
        for value in values:
            field_id = int(value.fieldId)
            code = value.nvmlReturn
            if code == self._success:
                member = self._value_members.get(value.valueType, "ullVal")
                found[field_id] = getattr(value.value, member)
                continue
            key = field_key(field_id)
            self._on_error(gpu, key, code, _error_text(self._nvml_error, code))
            if key in gpu.not_asked:
                gpu.fields = [f for f in gpu.fields if f != field_id]

    def _read_processes(self, gpu: _Gpu) -> tuple[GpuProcess, ...] | None:
        """Compute then graphics processes, one entry per PID; None when not known this tick."""
        by_pid: dict[int, GpuProcess] = {}
        known = False
        for calls in (COMPUTE_PROCESS_CALLS, GRAPHICS_PROCESS_CALLS):
            processes = self._first_available(gpu, calls)
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

    def _first_available(self, gpu: _Gpu, calls: tuple[str, ...]) -> Any:
        """The first call of ``calls`` that this GPU still answers (older symbols as fallback)."""
        for call in calls:
            if call in gpu.not_asked:
                continue
            result = self._call(gpu, call, gpu.handle)
            if result is not None or call not in gpu.not_asked:
                return result
        return None


class _NeverRaised(Exception):
    """Stands in for ``NVMLLibraryMismatchError`` in bindings that lack it."""


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _handle_key(handle: Any) -> Any:
    """What tells one device handle from another: the address a ctypes handle points to."""
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value
    except (ctypes.ArgumentError, TypeError):
        return id(handle)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _error_text(error_class: Any, code: int) -> str:
    try:
        return str(error_class(code))
    except Exception:
        return f"NVML error {code}"
