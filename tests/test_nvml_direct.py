"""The per-tick NVML calls made straight through NVML's C functions (issue 13: ``direct.py``'s
four single queries, ``FieldRequest.answers`` for the field values) read exactly what pynvml's
wrappers read, and fail exactly as they do: over the C fake ``libnvidia-ml.so.1`` (both ways in
child processes, every GPU's every figure and error compared), and over stand-ins for what the
fake cannot do (a driver without a symbol, fields of every value type). The reader builds its
``GpuSample`` by position: every field is checked by name over the Python fake."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pynvml
from test_nvml_ctypes import fake_library  # noqa: F401  (the fixture: the C fake, built here)
from test_nvml_fields import VALUES, by_members, field_array

from tokentop.nvml import NvmlReader
from tokentop.nvml.calls import FUNCTION_MISSING, FieldRequest, GpuState, NvmlCalls
from tokentop.nvml.direct import CLOCK_QUERY, MEMORY_QUERY, TEMPERATURE_QUERY, UTILIZATION_QUERY, DirectReads
from tokentop.nvml.fake import MIB, FakeNvml

BOTH_WAYS = """
import dataclasses, json, sys
import tokentop.nvml.reader
from tokentop.nvml import NvmlReader
from tokentop.nvml.calls import NvmlCalls
if sys.argv[1] == "wrapper":  # every call through pynvml's own functions
    NvmlCalls.field_request = lambda self: None
    tokentop.nvml.reader.direct_reads = lambda nvml, handle: None
reader = NvmlReader()
reader.open()
reads = [[dataclasses.asdict(g) for g in reader.read(float(t), with_processes=True).gpus] for t in (1, 2, 3)]
print(json.dumps({
    "direct": [g.direct is not None and g.field_request is not None for g in reader._gpus],
    "not_asked": [reader.unavailable_queries(g.uuid) for g in reader._gpus],
    "reads": reads,
}))
"""

# Constant load (power and temperature stay put); GPU 1 fails one query each way NVML.md lists,
# GPU 2 is lost at its second query, GPU 3 lacks the field-values call.
FAULTS = (
    "gpus = 4\nall.pattern = constant\nall.ripple_w = 0\n"
    "gpu1.errors = nvmlDeviceGetUtilizationRates:7,nvmlDeviceGetMemoryInfo:4,nvmlDeviceGetClockInfo:999\n"
    "gpu1.not_supported = nvmlDeviceGetTemperature\n"
    "gpu2.errors = nvmlDeviceGetMemoryInfo:15\n"
    "gpu3.not_supported = nvmlDeviceGetFieldValues\n"
)


def read_both_ways(library: Path, tmp_path: Path, mode: str) -> tuple[dict[str, Any], Counter[tuple[str, str]]]:
    """What the reader read (``mode``: "direct" or "wrapper"), and its calls per (function, GPU)."""
    conf, trace = tmp_path / "fake.conf", tmp_path / f"trace-{mode}.txt"
    conf.write_text(FAULTS)
    env = {**os.environ, "LD_LIBRARY_PATH": str(library), "FAKENVML_CONFIG": str(conf), "FAKENVML_TRACE": str(trace)}
    done = subprocess.run([sys.executable, "-c", BOTH_WAYS, mode], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    calls = Counter((line.split()[3], line.split()[4]) for line in trace.read_text().splitlines())
    return json.loads(done.stdout), calls


def without_energy(reads: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """The readings but the energy counter, which runs on between the two processes."""
    return [[{k: v for k, v in gpu.items() if k != "energy_counter_mj"} for gpu in read] for read in reads]


def test_the_direct_calls_read_and_fail_as_pynvml_does(fake_library: Path, tmp_path: Path) -> None:  # noqa: F811
    direct, direct_calls = read_both_ways(fake_library, tmp_path, "direct")
    wrapper, wrapper_calls = read_both_ways(fake_library, tmp_path, "wrapper")

    assert direct["direct"] == [True, True, True, True] and wrapper["direct"] == [False] * 4
    assert without_energy(direct["reads"]) == without_energy(wrapper["reads"])
    assert direct["not_asked"] == wrapper["not_asked"]
    assert direct_calls == wrapper_calls  # the same calls, retries included, none after a loss
    healthy, failing, lost, no_fields = direct["reads"][-1]
    assert healthy["status"] == "ok" and healthy["error"] is None
    assert healthy["utilization_pct"] == 50.0 and healthy["temperature_c"] > 30 and healthy["sm_clock_mhz"] > 0
    assert healthy["memory_total_bytes"] == 141 * 1024 * MIB and healthy["memory_used_bytes"] > 0
    assert failing["status"] == "ok" and failing["power_source"] == "average_1s"
    assert (failing["utilization_pct"], failing["memory_used_bytes"], failing["temperature_c"]) == (None, None, None)
    assert (
        failing["sm_clock_mhz"] is None and "nvmlDeviceGetClockInfo" in failing["error"] and "999" in failing["error"]
    )
    assert direct["not_asked"][1] == {MEMORY_QUERY: "no permission", TEMPERATURE_QUERY: "not supported"}
    assert direct_calls[UTILIZATION_QUERY, "gpu=1"] == 2 * 4  # INSUFFICIENT_SIZE: asked again once, each read
    assert direct_calls[TEMPERATURE_QUERY, "gpu=1"] == 1 and direct_calls[CLOCK_QUERY, "gpu=1"] == 4
    assert lost["status"] == "lost" and "GPU 2 is lost" in lost["error"]
    assert direct_calls[TEMPERATURE_QUERY, "gpu=2"] == 0  # nothing asked after the lost answer
    assert no_fields["power_source"] == "instant" and no_fields["temperature_c"] == healthy["temperature_c"]


class DriverWithout:
    """A loaded NVML library (ctypes.CDLL's ``library[name]``) that lacks every symbol."""

    def __getitem__(self, name: str) -> Any:
        raise AttributeError(name)


def test_a_symbol_the_driver_lacks_is_not_asked_again_as_through_pynvml() -> None:
    nvml = NvmlCalls(pynvml)
    gpu = GpuState(index=0, handle=None, uuid="GPU-x", name="H200")
    direct = DirectReads(nvml, DriverWithout(), handle=None)  # type: ignore[arg-type]

    assert direct.read(nvml, gpu) == (None, None, None, None, None)
    queries = (UTILIZATION_QUERY, MEMORY_QUERY, TEMPERATURE_QUERY, CLOCK_QUERY)
    assert gpu.not_asked == dict.fromkeys(queries, FUNCTION_MISSING)
    assert gpu.failures == []  # a fallback, not a failure


def filled_by_nvml(entries: list[tuple[int, int, int, str, float | int]]) -> Any:
    """A stand-in for the C function: fills the array it is given as ``entries`` say."""

    def function(handle: Any, count: ctypes.c_int32, values: Any) -> int:
        for slot, source in zip(values._obj, field_array(entries), strict=True):
            ctypes.memmove(ctypes.addressof(slot), ctypes.addressof(source), ctypes.sizeof(slot))
        return pynvml.NVML_SUCCESS

    return function


def test_the_answers_read_in_one_unpack_are_the_members_values() -> None:
    calls = NvmlCalls(pynvml)
    entries = [(100 + i, pynvml.NVML_SUCCESS, kind, member, number) for i, (kind, member, number) in enumerate(VALUES)]
    entries.append((150, pynvml.NVML_SUCCESS, 99, "ullVal", 2**64 - 1))  # a type unknown: unsigned long long
    function = filled_by_nvml(entries)
    request = FieldRequest(calls, lambda name: function)

    values = request(None, [field_id for field_id, *_ in entries])
    ids, answered = request.answers() or ((), ())
    assert list(zip(ids, answered, strict=True)) == [
        (field_id, value) for field_id, _, value in by_members(values, calls)
    ]
    assert isinstance(answered[0], float) and all(isinstance(value, int) for value in answered[1:])

    entries[1] = (101, pynvml.NVML_SUCCESS, pynvml.NVML_VALUE_TYPE_DOUBLE, "dVal", 2.5)  # the same ids, a new type
    function = filled_by_nvml(entries)
    request(None, [field_id for field_id, *_ in entries])
    assert request.answers() == ((*range(100, 107), 150), tuple(number for *_, number in entries))

    entries[4] = (entries[4][0], pynvml.NVML_ERROR_NOT_SUPPORTED, *entries[4][2:])
    function = filled_by_nvml(entries)
    request(None, [field_id for field_id, *_ in entries])
    assert request.answers() is None  # a field failed: read one by one, each with its code


def test_every_field_of_a_sample_is_the_one_named() -> None:
    nvml = FakeNvml.healthy(count=1)
    gpu = nvml.gpus[0]
    gpu.utilization_pct, gpu.memory_used_bytes, gpu.power_w, gpu.power_limit_w = 61, 7_000 * MIB, 412.5, 650.0
    gpu.temperature_c, gpu.sm_clock_mhz, gpu.energy_mj = 57, 1_755, 123_456_789.0
    gpu.compute_processes = [(4242, 3_000 * MIB)]
    reader = NvmlReader(nvml)
    reader.open()

    [sample] = reader.read(1.0, with_processes=True).gpus

    assert (sample.uuid, sample.index, sample.name, sample.status, sample.error) == (gpu.uuid, 0, gpu.name, "ok", None)
    assert (sample.utilization_pct, sample.memory_used_bytes, sample.memory_total_bytes) == (
        61.0,
        7_000 * MIB,
        gpu.memory_total_bytes,
    )
    assert (sample.power_w, sample.power_source, sample.power_limit_w) == (412.5, "average_1s", 650.0)
    assert (sample.energy_counter_mj, sample.temperature_c, sample.sm_clock_mhz) == (123_456_789, 57.0, 1_755)
    assert [(p.pid, p.used_memory_bytes) for p in sample.processes or ()] == [(4242, 3_000 * MIB)]
    assert sample.mig == ()
