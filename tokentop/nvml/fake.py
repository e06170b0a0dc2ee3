"""A stand-in for the ``pynvml`` module, so the real ``NvmlReader`` runs without a GPU.

``FakeNvml`` has the function names the reader calls; any other non-``nvml*`` name (constants,
``NVMLError`` and its subclasses, ``c_nvmlFieldValue_t`` ...) comes from the real ``pynvml``, and
errors are real ``pynvml.NVMLError(code)`` instances, so the reader's error handling is exercised
as it would be against a driver. Each GPU is a mutable ``FakeGpu``: a demo or a test sets its
power, utilisation and processes, moves time with ``advance``, and turns fault knobs::

    nvml = FakeNvml.healthy(count=8)              # 8x H200
    nvml.gpus[3].lost = True                      # GPU_IS_LOST from now on
    nvml.gpus[0].reset_energy()                   # driver reload: the counter starts again
    nvml.gpus[1].fail_next("nvmlDeviceGetUtilizationRates")           # UNKNOWN, once
    nvml.gpus[2].fail_next("nvmlDeviceGetComputeRunningProcesses",
                           pynvml.NVML_ERROR_INSUFFICIENT_SIZE)       # list grew, once
    nvml.gpus[4].unsupported |= {83, "nvmlDeviceGetTotalEnergyConsumption"}  # no counter
    nvml.support_nothing(5)                       # NOT_SUPPORTED to everything, UUID included

MIG: ``nvml.gpus[0].mig_instances = [FakeMig(uuid), None, FakeMig(uuid2)]`` turns MIG mode on
(``None`` is an empty slot, NOT_FOUND); ``FakeMig.error`` makes every call on that instance fail.

Fault keys are function names, or field ids (ints) for ``nvmlDeviceGetFieldValues``.
Every call is counted per GPU in ``FakeGpu.calls`` (field ids counted as asked), library-wide
calls in ``FakeNvml.calls``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pynvml

MIB = 1024 * 1024
H200_MEMORY_BYTES = 143_771 * MIB  # what nvidia-smi reports for an H200 141 GB
H200_POWER_LIMIT_W = 700.0

FaultKey = str | int  # a function name, or a field id

# pynvml wraps these in ``throwOnVersionMismatch``: a missing symbol surfaces as
# ``NVMLLibraryMismatchError`` instead of ``NVMLError_FunctionNotFound``.
_MISMATCH_WRAPPED = {
    "nvmlDeviceGetComputeRunningProcesses",
    "nvmlDeviceGetGraphicsRunningProcesses",
}
_NOT_AVAILABLE_ID = 0xFFFFFFFF  # gpuInstanceId / computeInstanceId outside MIG
_FIELD_IDS = (
    pynvml.NVML_FI_DEV_POWER_AVERAGE,
    pynvml.NVML_FI_DEV_POWER_INSTANT,
    pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION,
    pynvml.NVML_FI_DEV_POWER_CURRENT_LIMIT,
)


MAX_MIG_DEVICES = 7  # nvmlDeviceGetMaxMigDeviceCount of an A100 / H100 / H200


@dataclass(eq=False)
class FakeMig:
    """One simulated MIG instance (its handle is this object)."""

    uuid: str
    memory_total_bytes: int = 16_384 * MIB
    memory_used_bytes: int = 0
    error: int | None = None
    """Every call on this instance fails with this NVML code while set."""


@dataclass
class FakeGpu:
    """One simulated GPU: its readings and its fault knobs."""

    uuid: str
    name: str = "NVIDIA H200"
    memory_total_bytes: int = H200_MEMORY_BYTES
    memory_used_bytes: int = 0
    utilization_pct: int = 0
    power_w: float = 75.0
    power_limit_w: float = H200_POWER_LIMIT_W
    energy_mj: float = 0.0
    temperature_c: int = 30
    sm_clock_mhz: int = 345
    compute_processes: list[tuple[int, int | None]] = field(default_factory=list)
    """``(pid, used bytes or None)`` as NVML lists compute processes."""
    graphics_processes: list[tuple[int, int | None]] = field(default_factory=list)
    mig_instances: list[FakeMig | None] = field(default_factory=list)
    """MIG instances by slot (``None``: empty slot); MIG mode is on while any is set."""
    unsupported: set[FaultKey] = field(default_factory=set)
    """Calls and fields answered NOT_SUPPORTED."""
    no_permission: set[FaultKey] = field(default_factory=set)
    """Calls and fields answered NO_PERMISSION."""
    lost: bool = False
    """Every call answers GPU_IS_LOST while set."""
    pending_faults: dict[FaultKey, list[int]] = field(default_factory=dict)
    """Error codes the next calls (or fields) named here get, one per call, then they work again."""
    calls: Counter[FaultKey] = field(default_factory=Counter)

    def advance(self, dt_s: float) -> None:
        """Let ``dt_s`` seconds pass at the current power: the energy counter moves on."""
        self.energy_mj += self.power_w * dt_s * 1000.0

    def reset_energy(self) -> None:
        """What a driver reload does to the energy counter."""
        self.energy_mj = 0.0

    def fail_next(self, what: FaultKey, code: int = pynvml.NVML_ERROR_UNKNOWN, times: int = 1) -> None:
        """The next ``times`` calls (or field reads) of ``what`` fail with ``code``."""
        self.pending_faults.setdefault(what, []).extend([code] * times)

    def fault(self, what: FaultKey) -> int | None:
        """The error code the next call (or field) ``what`` gets, if any (uses up a pending one)."""
        if self.lost:
            return pynvml.NVML_ERROR_GPU_IS_LOST
        pending = self.pending_faults.get(what)
        if pending:
            return pending.pop(0)
        if what in self.no_permission:
            return pynvml.NVML_ERROR_NO_PERMISSION
        if what in self.unsupported:
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        return None


def fake_uuid(index: int) -> str:
    return f"GPU-{0x7E570000 + index:08x}-fa4e-4000-8000-{index:012x}"


class FakeNvml:
    """The ``pynvml`` functions ``NvmlReader`` uses, over a list of ``FakeGpu``."""

    def __init__(
        self,
        gpus: list[FakeGpu],
        *,
        driver_version: str = "570.133.20",
        init_error: int | BaseException | None = None,
        missing_functions: set[str] | None = None,
    ) -> None:
        self.gpus = gpus
        self.driver_version = driver_version
        self.init_error = init_error
        """``nvmlInit`` raises this (an NVML code, or an exception instance) when set."""
        self.missing_functions: set[str] = set(missing_functions or ())
        """Functions the "driver" lacks (FUNCTION_NOT_FOUND): a driver older than the binding."""
        self.calls: Counter[str] = Counter()
        self.init_count = 0

    def __getattr__(self, name: str) -> Any:
        if name.startswith("nvml"):
            raise AttributeError(f"FakeNvml does not implement {name}")
        return getattr(pynvml, name)

    # --- scenarios -------------------------------------------------------------------

    @classmethod
    def healthy(
        cls,
        count: int = 8,
        name: str = "NVIDIA H200",
        *,
        memory_total_bytes: int = H200_MEMORY_BYTES,
        power_w: float = 75.0,
        power_limit_w: float = H200_POWER_LIMIT_W,
        driver_version: str = "570.133.20",
    ) -> FakeNvml:
        """``count`` idle GPUs of one model; energy counters start at distinct values."""
        gpus = [
            FakeGpu(
                uuid=fake_uuid(index),
                name=name,
                memory_total_bytes=memory_total_bytes,
                memory_used_bytes=512 * MIB,
                power_w=power_w,
                power_limit_w=power_limit_w,
                energy_mj=float(1_000_000_000 + index * 1_000_000),
            )
            for index in range(count)
        ]
        return cls(gpus, driver_version=driver_version)

    @classmethod
    def no_driver(cls) -> FakeNvml:
        """No ``libnvidia-ml.so``: what every machine without an NVIDIA driver does."""
        return cls([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    @classmethod
    def driver_not_loaded(cls) -> FakeNvml:
        return cls([], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    @classmethod
    def driver_library_mismatch(cls) -> FakeNvml:
        """Driver upgraded without a reboot: kernel module and library differ."""
        return cls([], init_error=pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH)

    @classmethod
    def binding_mismatch(cls) -> FakeNvml:
        """``NVMLLibraryMismatchError``, which is not an ``NVMLError``."""
        error = pynvml.NVMLLibraryMismatchError("pyNVML version does not match the NVML lib version")
        return cls([], init_error=error)

    @classmethod
    def without_energy_counter(cls, count: int = 1) -> FakeNvml:
        """Pre-Volta or some vGPU: power is there, the energy counter is not."""
        nvml = cls.healthy(count)
        for gpu in nvml.gpus:
            gpu.unsupported |= {83, "nvmlDeviceGetTotalEnergyConsumption"}
        return nvml

    @classmethod
    def without_power(cls, count: int = 1) -> FakeNvml:
        """No power reading at all (field 185, field 186 and ``nvmlDeviceGetPowerUsage``)."""
        nvml = cls.healthy(count)
        for gpu in nvml.gpus:
            gpu.unsupported |= {185, 186, "nvmlDeviceGetPowerUsage"}
        return nvml

    @classmethod
    def older_driver(cls, count: int = 1) -> FakeNvml:
        """A driver older than the binding: ``nvmlDeviceGetFieldValues`` is missing."""
        nvml = cls.healthy(count)
        nvml.missing_functions.add("nvmlDeviceGetFieldValues")
        return nvml

    def support_nothing(self, index: int) -> None:
        """GPU ``index`` answers NOT_SUPPORTED to every device call and field, UUID and name
        included (its handle is still given): a GPU NVML lists but can say nothing about."""
        calls = {name for name in vars(FakeNvml) if name.startswith("nvmlDevice")}
        self.gpus[index].unsupported |= calls - {"nvmlDeviceGetHandleByIndex", "nvmlDeviceGetCount"}
        self.gpus[index].unsupported |= set(_FIELD_IDS)

    # --- library -----------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self.calls["nvmlInit"] += 1
        if isinstance(self.init_error, BaseException):
            raise self.init_error
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.init_count += 1

    def nvmlShutdown(self) -> None:
        self._library_call("nvmlShutdown")
        self.init_count -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._library_call("nvmlSystemGetDriverVersion")
        return self.driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._library_call("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._library_call("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[index]
        if gpu.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return gpu  # the handle is opaque to the reader

    # --- device ------------------------------------------------------------------------

    def nvmlDeviceGetUUID(self, gpu: FakeGpu | FakeMig) -> str:
        if isinstance(gpu, FakeMig):
            return self._mig_call(gpu, "nvmlDeviceGetUUID").uuid
        self._device_call(gpu, "nvmlDeviceGetUUID")
        return gpu.uuid

    def nvmlDeviceGetName(self, gpu: FakeGpu) -> str:
        self._device_call(gpu, "nvmlDeviceGetName")
        return gpu.name

    def nvmlDeviceGetUtilizationRates(self, gpu: FakeGpu) -> pynvml.c_nvmlUtilization_t:
        self._device_call(gpu, "nvmlDeviceGetUtilizationRates")
        return pynvml.c_nvmlUtilization_t(gpu=gpu.utilization_pct, memory=0)

    def nvmlDeviceGetMemoryInfo(self, gpu: FakeGpu | FakeMig) -> pynvml.c_nvmlMemory_t:
        if isinstance(gpu, FakeMig):
            self._mig_call(gpu, "nvmlDeviceGetMemoryInfo")
        else:
            self._device_call(gpu, "nvmlDeviceGetMemoryInfo")
        free = gpu.memory_total_bytes - gpu.memory_used_bytes
        return pynvml.c_nvmlMemory_t(total=gpu.memory_total_bytes, free=free, used=gpu.memory_used_bytes)

    def nvmlDeviceGetPowerUsage(self, gpu: FakeGpu) -> int:
        self._device_call(gpu, "nvmlDeviceGetPowerUsage")
        return int(gpu.power_w * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, gpu: FakeGpu) -> int:
        self._device_call(gpu, "nvmlDeviceGetTotalEnergyConsumption")
        return int(gpu.energy_mj)

    def nvmlDeviceGetEnforcedPowerLimit(self, gpu: FakeGpu) -> int:
        self._device_call(gpu, "nvmlDeviceGetEnforcedPowerLimit")
        return int(gpu.power_limit_w * 1000)

    def nvmlDeviceGetTemperature(self, gpu: FakeGpu, sensor: int) -> int:
        self._device_call(gpu, "nvmlDeviceGetTemperature")
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return gpu.temperature_c

    def nvmlDeviceGetClockInfo(self, gpu: FakeGpu, clock_type: int) -> int:
        self._device_call(gpu, "nvmlDeviceGetClockInfo")
        if clock_type != pynvml.NVML_CLOCK_SM:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu.sm_clock_mhz

    def nvmlDeviceGetFieldValues(self, gpu: FakeGpu, field_ids: list[int]) -> Any:
        """Real ``c_nvmlFieldValue_t`` structs, each with its own ``nvmlReturn``."""
        self._device_call(gpu, "nvmlDeviceGetFieldValues")
        values = (pynvml.c_nvmlFieldValue_t * len(field_ids))()
        for slot, field_id in zip(values, field_ids, strict=True):
            gpu.calls[field_id] += 1
            slot.fieldId = field_id
            code = gpu.fault(field_id)
            reading = None if code is not None else self._field_reading(gpu, field_id)
            if reading is None:
                slot.nvmlReturn = code if code is not None else pynvml.NVML_ERROR_NOT_SUPPORTED
                continue
            value_type, member, number = reading
            slot.nvmlReturn = pynvml.NVML_SUCCESS
            slot.valueType = value_type
            setattr(slot.value, member, number)
        return values

    def nvmlDeviceGetComputeRunningProcesses(self, gpu: FakeGpu) -> list[Any]:
        self._device_call(gpu, "nvmlDeviceGetComputeRunningProcesses")
        return _process_objects(gpu.compute_processes)

    def nvmlDeviceGetComputeRunningProcesses_v2(self, gpu: FakeGpu) -> list[Any]:
        self._device_call(gpu, "nvmlDeviceGetComputeRunningProcesses_v2")
        return _process_objects(gpu.compute_processes)

    def nvmlDeviceGetGraphicsRunningProcesses(self, gpu: FakeGpu) -> list[Any]:
        self._device_call(gpu, "nvmlDeviceGetGraphicsRunningProcesses")
        return _process_objects(gpu.graphics_processes)

    def nvmlDeviceGetGraphicsRunningProcesses_v2(self, gpu: FakeGpu) -> list[Any]:
        self._device_call(gpu, "nvmlDeviceGetGraphicsRunningProcesses_v2")
        return _process_objects(gpu.graphics_processes)

    def nvmlDeviceGetMigMode(self, gpu: FakeGpu) -> list[int]:
        """``[current, pending]``: enabled while the GPU has any MIG instance."""
        self._device_call(gpu, "nvmlDeviceGetMigMode")
        on = any(gpu.mig_instances)
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if on else pynvml.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, gpu: FakeGpu) -> int:
        self._device_call(gpu, "nvmlDeviceGetMaxMigDeviceCount")
        return max(MAX_MIG_DEVICES, len(gpu.mig_instances))

    def nvmlDeviceGetMigDeviceHandleByIndex(self, gpu: FakeGpu, slot: int) -> FakeMig:
        self._device_call(gpu, "nvmlDeviceGetMigDeviceHandleByIndex")
        if not 0 <= slot < max(MAX_MIG_DEVICES, len(gpu.mig_instances)):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        instance = gpu.mig_instances[slot] if slot < len(gpu.mig_instances) else None
        if instance is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return instance

    # --- internals -----------------------------------------------------------------------

    def _mig_call(self, instance: FakeMig, name: str) -> FakeMig:
        self._library_call(name)
        if instance.error is not None:
            raise pynvml.NVMLError(instance.error)
        return instance

    def _library_call(self, name: str) -> None:
        self.calls[name] += 1
        if self.init_count <= 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)

    def _device_call(self, gpu: FakeGpu, name: str) -> None:
        gpu.calls[name] += 1
        self._library_call(name)
        if name in self.missing_functions:
            if name in _MISMATCH_WRAPPED:
                raise pynvml.NVMLLibraryMismatchError(f"{name}: unversioned function not in the NVML lib")
            raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        code = gpu.fault(name)
        if code is not None:
            raise pynvml.NVMLError(code)

    @staticmethod
    def _field_reading(gpu: FakeGpu, field_id: int) -> tuple[int, str, int] | None:
        """``(valueType, union member, value)`` as the driver fills them; None: unsupported."""
        if field_id in (pynvml.NVML_FI_DEV_POWER_AVERAGE, pynvml.NVML_FI_DEV_POWER_INSTANT):
            return pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, "uiVal", int(gpu.power_w * 1000)
        if field_id == pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION:
            return pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, "ullVal", int(gpu.energy_mj)
        if field_id == pynvml.NVML_FI_DEV_POWER_CURRENT_LIMIT:
            return pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, "uiVal", int(gpu.power_limit_w * 1000)
        return None


def _process_objects(processes: list[tuple[int, int | None]]) -> list[Any]:
    """Process entries shaped as pynvml returns them (``usedGpuMemory`` None when unknown)."""
    return [
        pynvml.nvmlFriendlyObject(
            {
                "pid": pid,
                "usedGpuMemory": used,
                "gpuInstanceId": _NOT_AVAILABLE_ID,
                "computeInstanceId": _NOT_AVAILABLE_ID,
            }
        )
        for pid, used in processes
    ]
