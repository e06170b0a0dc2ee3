"""Power, power limit and energy of one GPU: one ``nvmlDeviceGetFieldValues`` call, each field's
own return checked, and the single calls as fallback for what the fields do not give."""

from __future__ import annotations

from typing import Any

from tokentop.nvml.calls import GpuState, NvmlCalls

# Field ids asked for in one nvmlDeviceGetFieldValues call per GPU (nvml.h).
POWER_AVERAGE_FIELD = 185  # NVML_FI_DEV_POWER_AVERAGE, mW, 1 s average (Ampere+ except A100)
ENERGY_FIELD = 83  # NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION, mJ since driver load (Volta+)
POWER_LIMIT_FIELD = 190  # NVML_FI_DEV_POWER_CURRENT_LIMIT, mW, the limit enforced now
POWER_FIELDS = (POWER_AVERAGE_FIELD, ENERGY_FIELD, POWER_LIMIT_FIELD)

_NOT_ANSWERED: Any = object()  # a field the field-values call did not answer this tick

PowerReading = tuple[float | None, str | None, float | None, int | None]  # W, kind, limit W, mJ


def field_key(field_id: int) -> str:
    """How a field id is named among the queries of a GPU."""
    return f"field {field_id}"


def read_power(nvml: NvmlCalls, gpu: GpuState) -> PowerReading:
    """Power, its kind, limit and energy: one field-values call, single calls as fallback."""
    average = energy = limit = _NOT_ANSWERED
    if gpu.fields:
        values = nvml.call(gpu, "nvmlDeviceGetFieldValues", gpu.handle, gpu.fields, via=gpu.field_request)
        if values is None:
            if "nvmlDeviceGetFieldValues" in gpu.not_asked:
                gpu.fields = []
        else:
            average, energy, limit = _answered_fields(nvml, gpu, values)
    return _power_of(nvml, gpu, average, energy, limit)


def _answered_fields(nvml: NvmlCalls, gpu: GpuState, values: Any) -> tuple[Any, Any, Any]:
    """The power, energy and limit fields' values (``_NOT_ANSWERED`` for each one that failed
    or was not asked): read in one unpack when every field answered (``FieldRequest.answers``),
    else field by field, each failure acted on."""
    answers = None if gpu.field_request is None else gpu.field_request.answers()
    if answers is not None and answers[0] == POWER_FIELDS:  # the usual tick: all three, in order
        average, energy, limit = answers[1]
        return average, energy, limit
    found: dict[int, Any] = {}
    if answers is None:
        take_fields(nvml, gpu, values, found)
    else:
        found.update(zip(*answers, strict=True))
    average = found.get(POWER_AVERAGE_FIELD, _NOT_ANSWERED)
    return average, found.get(ENERGY_FIELD, _NOT_ANSWERED), found.get(POWER_LIMIT_FIELD, _NOT_ANSWERED)


def _power_of(nvml: NvmlCalls, gpu: GpuState, average: Any, energy: Any, limit: Any) -> PowerReading:
    """The reading from the fields' values, each one not answered asked by its single call when
    its field is no longer asked (else it is not known this tick)."""
    handle = gpu.handle

    power_w: float | None = None
    power_source: str | None = None
    if average is not _NOT_ANSWERED:
        power_w, power_source = average / 1000.0, "average_1s"
    elif POWER_AVERAGE_FIELD not in gpu.fields:
        milliwatts = nvml.call(gpu, "nvmlDeviceGetPowerUsage", handle)
        if milliwatts is not None:
            power_w, power_source = milliwatts / 1000.0, "instant"

    energy_mj: int | None = None
    if energy is not _NOT_ANSWERED:
        energy_mj = int(energy)
    elif ENERGY_FIELD not in gpu.fields:
        counter = nvml.call(gpu, "nvmlDeviceGetTotalEnergyConsumption", handle)
        energy_mj = None if counter is None else int(counter)

    power_limit_w: float | None = None
    if limit is not _NOT_ANSWERED:
        power_limit_w = limit / 1000.0
    elif POWER_LIMIT_FIELD not in gpu.fields:
        limit_mw = nvml.call(gpu, "nvmlDeviceGetEnforcedPowerLimit", handle)
        power_limit_w = None if limit_mw is None else limit_mw / 1000.0
    return power_w, power_source, power_limit_w, energy_mj


def take_fields(nvml: NvmlCalls, gpu: GpuState, values: Any, found: dict[int, float | int]) -> None:
    """Check each field's own return: the call can succeed while single fields fail."""
    for field_id, code, value in nvml.field_values(values):
        if code == nvml.success:
            found[field_id] = value
            continue
        key = field_key(field_id)
        nvml.on_error(gpu, key, code, nvml.error_text(code))
        if key in gpu.not_asked:
            gpu.fields = [f for f in gpu.fields if f != field_id]
