"""The field values of ``nvmlDeviceGetFieldValues`` read from the array's bytes (issue 13) give
exactly what reading each struct's members gives, for every value type; a binding whose struct
is laid out otherwise is still read, member by member."""

from __future__ import annotations

import ctypes

import pynvml
import pytest

from tokentop.nvml import NvmlReader
from tokentop.nvml.calls import NvmlCalls
from tokentop.nvml.fake import FakeNvml

# (valueType, union member, a value that needs the member's whole width and sign)
VALUES = [
    (pynvml.NVML_VALUE_TYPE_DOUBLE, "dVal", -1234.5678e-3),
    (pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, "uiVal", 2**32 - 7),
    (pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG, "ulVal", 2**64 - 9),
    (pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, "ullVal", 2**63 + 12345),
    (pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG, "sllVal", -(2**62) - 3),
    (pynvml.NVML_VALUE_TYPE_SIGNED_INT, "siVal", -(2**31) + 5),
    (pynvml.NVML_VALUE_TYPE_UNSIGNED_SHORT, "usVal", 65_000),
]
UNKNOWN_TYPE = 99  # read as unsigned long long, as before


def field_array(entries: list[tuple[int, int, int, str, float | int]]) -> ctypes.Array:
    """``(fieldId, nvmlReturn, valueType, member, value)`` as NVML fills a field-values array."""
    values = (pynvml.c_nvmlFieldValue_t * len(entries))()
    for slot, (field_id, code, value_type, member, number) in zip(values, entries, strict=True):
        slot.fieldId, slot.scopeId, slot.nvmlReturn, slot.valueType = field_id, 3, code, value_type
        slot.timestamp, slot.latencyUsec = 1_700_000_000_000_000, 42
        setattr(slot.value, member, number)
    return values


def by_members(values: ctypes.Array, calls: NvmlCalls) -> list[tuple[int, int, object]]:
    """What reading each struct's members gives (how the fields were read before)."""
    return [
        (
            int(v.fieldId),
            v.nvmlReturn,
            getattr(v.value, calls.value_members.get(v.valueType, "ullVal")) if v.nvmlReturn == 0 else None,
        )
        for v in values
    ]


def test_every_value_type_reads_from_the_bytes_as_from_the_members() -> None:
    calls = NvmlCalls(pynvml)
    entries = [(100 + i, pynvml.NVML_SUCCESS, kind, member, number) for i, (kind, member, number) in enumerate(VALUES)]
    entries.append((150, pynvml.NVML_SUCCESS, UNKNOWN_TYPE, "ullVal", 2**64 - 1))
    entries.append((151, pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, "uiVal", 7))
    values = field_array(entries)

    read = calls.field_values(values)

    assert calls.field_struct is pynvml.c_nvmlFieldValue_t  # the bytes were read
    assert read == by_members(values, calls)
    assert [value for _, _, value in read[: len(VALUES)]] == [number for _, _, number in VALUES]
    assert read[-2] == (150, pynvml.NVML_SUCCESS, 2**64 - 1)
    assert read[-1] == (151, pynvml.NVML_ERROR_NOT_SUPPORTED, None)
    assert isinstance(read[0][2], float) and all(isinstance(v, int) for _, _, v in read[1 : len(VALUES)])


class OtherLayout(ctypes.Structure):
    """A field value struct laid out otherwise than nvml.h's (a binding this reader does not know)."""

    _fields_ = [("nvmlReturn", ctypes.c_uint), ("fieldId", ctypes.c_uint), ("value", pynvml.c_nvmlValue_t)]


class BindingOfAnotherLayout(FakeNvml):
    c_nvmlFieldValue_t = OtherLayout  # noqa: N815 (the name pynvml gives it)


def test_a_binding_of_another_layout_is_read_member_by_member() -> None:
    calls = NvmlCalls(BindingOfAnotherLayout([]))
    values = field_array([(185, pynvml.NVML_SUCCESS, pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, "uiVal", 312_345)])

    assert calls.field_struct is None
    assert calls.field_values(values) == [(185, pynvml.NVML_SUCCESS, 312_345)]
    assert calls.field_values(list(values)) == [(185, pynvml.NVML_SUCCESS, 312_345)]  # any sequence of structs


@pytest.mark.parametrize("binding", [FakeNvml, BindingOfAnotherLayout])
def test_the_reader_gives_the_same_power_energy_and_limit_either_way(binding: type[FakeNvml]) -> None:
    nvml = binding(FakeNvml.healthy(count=2).gpus)
    nvml.gpus[0].power_w, nvml.gpus[0].energy_mj, nvml.gpus[0].power_limit_w = 612.345, 9_876_543_210.0, 650.0
    nvml.gpus[1].unsupported |= {pynvml.NVML_FI_DEV_POWER_AVERAGE}  # that field fails: the single call instead
    reader = NvmlReader(nvml)
    reader.open()

    first, second = reader.read(1.0, with_processes=False).gpus

    assert (first.power_w, first.power_source, first.energy_counter_mj, first.power_limit_w) == (
        612.345,
        "average_1s",
        9_876_543_210,
        650.0,
    )
    assert (second.power_w, second.power_source) == (75.0, "instant")
    assert reader.unavailable_queries(second.uuid) == {"field 185": "not supported"}
