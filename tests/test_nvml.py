"""NvmlReader against FakeNvml: the reader's own code runs; only the pynvml module is fake."""

from __future__ import annotations

import logging

import pynvml
import pytest

from tokentop.model import GpuProcess, MigSample
from tokentop.nvml import NvmlReader
from tokentop.nvml.fake import H200_MEMORY_BYTES, MIB, FakeGpu, FakeMig, FakeNvml, fake_uuid
from tokentop.nvml.reader import FUNCTION_MISSING, NO_PERMISSION, NOT_SUPPORTED

PROCESS_CALLS = (
    "nvmlDeviceGetComputeRunningProcesses",
    "nvmlDeviceGetGraphicsRunningProcesses",
)


def opened(nvml: FakeNvml) -> NvmlReader:
    reader = NvmlReader(nvml)
    reader.open()
    return reader


def only_calls(gpu: FakeGpu) -> dict[str, int]:
    """Function calls made of one GPU (field ids left out)."""
    return {name: n for name, n in gpu.calls.items() if isinstance(name, str)}


# --- healthy ----------------------------------------------------------------------------


def test_healthy_eight_gpus_values_and_units() -> None:
    nvml = FakeNvml.healthy(count=8)
    for index, gpu in enumerate(nvml.gpus):
        gpu.power_w = 300.5 + index
        gpu.utilization_pct = 10 * index
        gpu.memory_used_bytes = (index + 1) * 1024 * MIB
        gpu.temperature_c = 40 + index
        gpu.sm_clock_mhz = 1900 + index
    reader = opened(nvml)

    reading = reader.read(t_mono=12.5, with_processes=False)

    assert reading.available and reading.reason is None
    assert reading.t_mono == 12.5
    assert reading.driver_version == "570.133.20"
    assert [s.index for s in reading.gpus] == list(range(8))
    assert [s.uuid for s in reading.gpus] == [fake_uuid(i) for i in range(8)]
    for index, sample in enumerate(reading.gpus):
        assert sample.status == "ok" and sample.error is None
        assert sample.name == "NVIDIA H200"
        assert sample.power_w == pytest.approx(300.5 + index)
        assert isinstance(sample.power_w, float)
        assert sample.power_source == "average_1s"
        assert sample.power_limit_w == pytest.approx(700.0)
        assert sample.energy_counter_mj == nvml.gpus[index].energy_mj
        assert isinstance(sample.energy_counter_mj, int)
        assert sample.utilization_pct == pytest.approx(10.0 * index)
        assert sample.memory_used_bytes == (index + 1) * 1024 * MIB
        assert sample.memory_total_bytes == H200_MEMORY_BYTES
        assert sample.temperature_c == pytest.approx(40.0 + index)
        assert sample.sm_clock_mhz == 1900 + index
        assert sample.processes is None


def test_energy_counter_follows_power_over_time() -> None:
    nvml = FakeNvml.healthy(count=1)
    gpu = nvml.gpus[0]
    reader = opened(nvml)
    before = reader.read(0.0, False).gpus[0].energy_counter_mj

    gpu.power_w = 500.0
    gpu.advance(2.0)
    after = reader.read(2.0, False).gpus[0]

    assert before is not None and after.energy_counter_mj is not None
    assert after.power_w == pytest.approx(500.0)
    assert after.energy_counter_mj - before == 1_000_000  # 500 W x 2 s = 1000 J = 1e6 mJ


def test_one_field_values_call_per_gpu_per_tick_and_no_reprobing() -> None:
    nvml = FakeNvml.healthy(count=8)
    reader = opened(nvml)
    for gpu in nvml.gpus:
        gpu.calls.clear()

    reader.read(1.0, with_processes=False)

    for gpu in nvml.gpus:
        assert only_calls(gpu) == {
            "nvmlDeviceGetFieldValues": 1,
            "nvmlDeviceGetUtilizationRates": 1,
            "nvmlDeviceGetMemoryInfo": 1,
            "nvmlDeviceGetTemperature": 1,
            "nvmlDeviceGetClockInfo": 1,
        }
        assert {gpu.calls[f] for f in (185, 83, 190)} == {1}


def test_processes_only_when_asked_compute_and_graphics_merged() -> None:
    nvml = FakeNvml.healthy(count=2)
    nvml.gpus[0].compute_processes = [(4242, 70 * 1024 * MIB), (5151, None)]
    # a PID in both lists is listed once, with the compute figure
    nvml.gpus[0].graphics_processes = [(4242, 300 * MIB), (6000, 64 * MIB)]
    reader = opened(nvml)
    for gpu in nvml.gpus:
        gpu.calls.clear()

    quiet = [reader.read(float(t), with_processes=False) for t in range(4)]
    assert all(s.processes is None for r in quiet for s in r.gpus)
    assert all(gpu.calls[name] == 0 for gpu in nvml.gpus for name in PROCESS_CALLS)

    busy = reader.read(5.0, with_processes=True)
    assert busy.gpus[0].processes == (
        GpuProcess(pid=4242, used_memory_bytes=70 * 1024 * MIB),
        GpuProcess(pid=5151, used_memory_bytes=None),
        GpuProcess(pid=6000, used_memory_bytes=64 * MIB),
    )
    assert busy.gpus[1].processes == ()
    assert all(gpu.calls[name] == 1 for gpu in nvml.gpus for name in PROCESS_CALLS)


# --- no GPU panel -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nvml", "words"),
    [
        (FakeNvml.no_driver(), "no NVIDIA driver found"),
        (FakeNvml.driver_not_loaded(), "driver is not loaded"),
        (FakeNvml.driver_library_mismatch(), "differ in version"),
        (FakeNvml.binding_mismatch(), "binding does not match"),
        (FakeNvml([], init_error=OSError("libnvidia-ml.so.1: bad ELF")), "bad ELF"),
        (FakeNvml.healthy(count=0), "no GPU could be read"),
    ],
    ids=[
        "library-not-found",
        "driver-not-loaded",
        "rm-mismatch",
        "binding-mismatch",
        "oserror",
        "zero-gpus",
    ],
)
def test_no_gpu_panel_with_a_reason_never_raises(nvml: FakeNvml, words: str) -> None:
    reader = opened(nvml)

    assert reader.available is False
    assert words in (reader.reason or "")
    assert (reader.reason or "").endswith("running without a GPU panel")
    reading = reader.read(3.0, with_processes=True)
    assert reading.available is False and reading.gpus == ()
    assert reading.reason == reader.reason
    reader.close()
    assert nvml.init_count == 0  # whatever was initialised is shut down
    assert words in (reader.read(4.0, False).reason or "")  # closing keeps the why


def test_real_pynvml_on_this_machine_reports_no_driver() -> None:
    """The default binding is the real pynvml; these machines have no NVIDIA driver."""
    reader = NvmlReader()
    reader.open()
    try:
        assert reader.available is False
        assert reader.reason == "no NVIDIA driver found (NVML library not loaded): running without a GPU panel"
    finally:
        reader.close()


def test_gpu_that_cannot_be_opened_is_listed_as_lost_others_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nvml = FakeNvml.healthy(count=3)
    nvml.gpus[1].lost = True  # nvmlDeviceGetHandleByIndex answers GPU_IS_LOST
    with caplog.at_level(logging.WARNING, logger="tokentop.nvml"):
        reader = opened(nvml)

    assert reader.available
    reading = reader.read(1.0, False)
    assert [s.index for s in reading.gpus] == [0, 1, 2]  # every GPU NVML counts is listed
    unopened = reading.gpus[1]
    assert (unopened.status, unopened.uuid, unopened.name) == ("lost", "nvml-index-1", "unknown GPU")
    assert "GPU 1 could not be opened" in (unopened.error or "")
    assert reading.gpus[0].status == reading.gpus[2].status == "ok"
    assert "GPU 1 could not be opened" in caplog.text


def test_gpu_answering_not_supported_to_everything_is_still_listed() -> None:
    """Listed with its index, its UUID and name where readable, every figure None (N/A)."""
    nvml = FakeNvml.healthy(count=3)
    nvml.support_nothing(1)
    nvml.support_nothing(2)
    nvml.gpus[2].unsupported -= {"nvmlDeviceGetUUID", "nvmlDeviceGetName"}
    reader = opened(nvml)

    readings = [reader.read(float(t), with_processes=True) for t in range(3)]

    for reading in readings:
        assert [s.index for s in reading.gpus] == [0, 1, 2]
        silent, named = reading.gpus[1], reading.gpus[2]
        assert (silent.uuid, silent.name) == ("nvml-index-1", "unknown GPU")
        assert (named.uuid, named.name) == (fake_uuid(2), "NVIDIA H200")
        for sample in (silent, named):
            assert sample.status == "ok" and sample.error is None  # unsupported is not a failure
            assert sample.power_w is None and sample.energy_counter_mj is None
            assert sample.utilization_pct is None and sample.memory_used_bytes is None
            assert sample.temperature_c is None and sample.power_limit_w is None
            assert sample.processes is None
        assert reading.gpus[0].power_w == pytest.approx(75.0)
    assert nvml.gpus[1].calls["nvmlDeviceGetUtilizationRates"] == 1  # asked once, at open


def test_nvml_strings_are_made_safe_where_they_enter() -> None:
    nvml = FakeNvml.healthy(count=1, driver_version="570.1\x1b[2J")
    nvml.gpus[0].name = "NVIDIA\x1b]0;owned\x07 H200\n| =cmd"
    nvml.gpus[0].uuid = "GPU-1234\x1b[31m\r"
    nvml.gpus[0].mig_instances = [FakeMig("MIG-\x9b2J-aaaa")]
    reader = opened(nvml)

    reading = reader.read(1.0, False)
    sample = reading.gpus[0]

    assert sample.name == "NVIDIA\ufffd]0;owned\ufffd H200 | =cmd"
    assert sample.uuid == "GPU-1234\ufffd[31m "  # the CR folds to a space
    assert reading.driver_version == "570.1\ufffd[2J"
    assert [m.uuid for m in sample.mig] == ["MIG-\ufffd2J-aaaa"]
    assert all(text.isprintable() for text in (sample.name, sample.uuid, reading.driver_version))


# --- power and energy faults ------------------------------------------------------------


def test_gpu_without_energy_counter_is_not_asked_again() -> None:
    nvml = FakeNvml.without_energy_counter(count=2)
    reader = opened(nvml)

    readings = [reader.read(float(t), with_processes=False) for t in range(5)]

    for sample in (s for r in readings for s in r.gpus):
        assert sample.status == "ok"
        assert sample.energy_counter_mj is None
        assert sample.power_w == pytest.approx(75.0)
        assert sample.power_source == "average_1s"
    for gpu in nvml.gpus:
        assert gpu.calls[83] == 1  # the probe at open, never again
        assert gpu.calls["nvmlDeviceGetTotalEnergyConsumption"] == 1
        assert gpu.calls[185] == 6  # the others are still asked each tick
        assert reader.unavailable_queries(gpu.uuid) == {
            "field 83": NOT_SUPPORTED,
            "nvmlDeviceGetTotalEnergyConsumption": NOT_SUPPORTED,
        }


def test_power_not_supported_reads_none_and_stops_asking() -> None:
    nvml = FakeNvml.without_power(count=1)
    reader = opened(nvml)

    samples = [reader.read(float(t), False).gpus[0] for t in range(4)]

    for sample in samples:
        assert sample.status == "ok"
        assert sample.power_w is None and sample.power_source is None
        assert sample.energy_counter_mj is not None
        assert sample.power_limit_w == pytest.approx(700.0)
    gpu = nvml.gpus[0]
    assert gpu.calls[185] == 1
    assert gpu.calls["nvmlDeviceGetPowerUsage"] == 1


def test_no_power_average_falls_back_to_instant_power() -> None:
    """A100 and older: field 185 is not supported, nvmlDeviceGetPowerUsage is."""
    nvml = FakeNvml.healthy(count=1, name="NVIDIA A100-SXM4-80GB")
    nvml.gpus[0].unsupported.add(185)
    nvml.gpus[0].power_w = 312.25
    reader = opened(nvml)

    samples = [reader.read(float(t), False).gpus[0] for t in range(3)]

    assert all(s.power_w == pytest.approx(312.25) for s in samples)
    assert all(s.power_source == "instant" for s in samples)
    assert nvml.gpus[0].calls[185] == 1
    assert nvml.gpus[0].calls["nvmlDeviceGetPowerUsage"] == 4  # probe + 3 ticks


def test_energy_counter_reset_is_reported_raw() -> None:
    """A driver reload restarts the counter; the reader reports it, derive handles the drop."""
    nvml = FakeNvml.healthy(count=1)
    gpu = nvml.gpus[0]
    reader = opened(nvml)
    gpu.advance(10.0)
    before = reader.read(10.0, False).gpus[0]

    gpu.reset_energy()
    gpu.advance(1.0)
    after = reader.read(11.0, False).gpus[0]

    assert after.status == "ok"
    assert after.energy_counter_mj == 75_000
    assert before.energy_counter_mj is not None and before.energy_counter_mj > 75_000


def test_an_energy_counter_or_memory_past_63_bits_is_not_a_reading() -> None:
    """A u64 that no GPU reaches (a driver's garbage): not known, said, and the other values
    kept; the next sane reading is taken again (the history stores signed 64-bit integers)."""
    nvml = FakeNvml.healthy(count=2)
    garbage = nvml.gpus[0]
    garbage.energy_mj = float(2**64 - 2048)
    garbage.memory_total_bytes = garbage.memory_used_bytes = 2**63
    reader = opened(nvml)

    bad, good = reader.read(1.0, False).gpus

    assert (bad.energy_counter_mj, bad.memory_used_bytes) == (None, None)
    assert bad.status == "ok" and bad.power_w == pytest.approx(garbage.power_w)
    assert bad.error == (
        "energy counter: past 2^63 mJ: not a reading; nvmlDeviceGetMemoryInfo: past 2^63 bytes: not a reading"
    )
    assert good.error is None and good.energy_counter_mj == int(nvml.gpus[1].energy_mj)

    garbage.energy_mj, garbage.memory_total_bytes, garbage.memory_used_bytes = 5_000.0, H200_MEMORY_BYTES, 7 * MIB
    again = reader.read(2.0, False).gpus[0]
    assert (again.energy_counter_mj, again.memory_used_bytes, again.error) == (5_000, 7 * MIB, None)


def test_older_driver_without_field_values_falls_back_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nvml = FakeNvml.older_driver(count=2)
    nvml.gpus[1].power_w = 250.0
    with caplog.at_level(logging.INFO, logger="tokentop.nvml"):
        reader = opened(nvml)
        samples = [reader.read(float(t), False).gpus[1] for t in range(5)]

    for sample in samples:
        assert sample.status == "ok"
        assert sample.power_w == pytest.approx(250.0)
        assert sample.power_source == "instant"
        assert sample.energy_counter_mj == int(nvml.gpus[1].energy_mj)
        assert sample.power_limit_w == pytest.approx(700.0)
    for gpu in nvml.gpus:
        assert gpu.calls["nvmlDeviceGetFieldValues"] == 1
        assert reader.unavailable_queries(gpu.uuid) == {"nvmlDeviceGetFieldValues": FUNCTION_MISSING}
    missing_logs = [r for r in caplog.records if "nvmlDeviceGetFieldValues" in r.getMessage()]
    assert [r.getMessage().split(" ")[1] for r in missing_logs] == ["0", "1"]  # once per GPU


def test_process_list_missing_from_driver_falls_back_to_v2() -> None:
    """pynvml raises NVMLLibraryMismatchError (not an NVMLError) for these missing symbols."""
    nvml = FakeNvml.healthy(count=1)
    nvml.missing_functions |= set(PROCESS_CALLS)
    nvml.gpus[0].compute_processes = [(31337, 8 * 1024 * MIB)]
    reader = opened(nvml)

    samples = [reader.read(float(t), with_processes=True).gpus[0] for t in range(3)]

    assert all(s.status == "ok" for s in samples)
    assert all(s.processes == (GpuProcess(31337, 8 * 1024 * MIB),) for s in samples)
    assert nvml.gpus[0].calls["nvmlDeviceGetComputeRunningProcesses"] == 1
    assert nvml.gpus[0].calls["nvmlDeviceGetComputeRunningProcesses_v2"] == 4


def test_no_permission_reads_none_and_is_not_asked_again() -> None:
    nvml = FakeNvml.healthy(count=1)
    nvml.gpus[0].no_permission.add("nvmlDeviceGetTemperature")
    reader = opened(nvml)

    samples = [reader.read(float(t), False).gpus[0] for t in range(3)]

    assert all(s.status == "ok" and s.temperature_c is None for s in samples)
    assert all(s.power_w is not None for s in samples)
    assert nvml.gpus[0].calls["nvmlDeviceGetTemperature"] == 1
    assert reader.unavailable_queries(nvml.gpus[0].uuid) == {"nvmlDeviceGetTemperature": NO_PERMISSION}


# --- per-tick faults ----------------------------------------------------------------------


def test_gpu_lost_mid_run_others_keep_going(caplog: pytest.LogCaptureFixture) -> None:
    nvml = FakeNvml.healthy(count=8)
    reader = opened(nvml)
    assert all(s.status == "ok" for s in reader.read(1.0, False).gpus)

    nvml.gpus[3].lost = True
    with caplog.at_level(logging.WARNING, logger="tokentop.nvml"):
        readings = [reader.read(float(t), with_processes=True) for t in range(2, 5)]

    for reading in readings:
        lost = reading.gpus[3]
        assert lost.status == "lost"
        assert lost.uuid == fake_uuid(3) and lost.index == 3
        assert "GPU 3 is lost" in (lost.error or "")
        assert lost.power_w is None and lost.processes is None
        others = [s for s in reading.gpus if s.index != 3]
        assert all(s.status == "ok" and s.power_w == pytest.approx(75.0) for s in others)
    assert sum("is lost" in r.getMessage() for r in caplog.records) == 1  # said once, not per tick
    assert reader.unavailable_queries(fake_uuid(3)) == {}  # lost is not "unsupported"

    nvml.gpus[3].lost = False
    assert reader.read(6.0, False).gpus[3].status == "ok"


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_UNKNOWN, pynvml.NVML_ERROR_TIMEOUT], ids=["unknown", "timeout"])
def test_one_failing_call_makes_that_field_na_this_tick_not_the_gpu(code: int) -> None:
    nvml = FakeNvml.healthy(count=3)
    reader = opened(nvml)
    nvml.gpus[1].fail_next("nvmlDeviceGetUtilizationRates", code)

    failed = reader.read(1.0, False)
    recovered = reader.read(2.0, False)

    sample = failed.gpus[1]
    assert sample.status == "ok" and sample.utilization_pct is None
    assert sample.power_w == pytest.approx(75.0) and sample.energy_counter_mj is not None
    assert sample.memory_used_bytes == 512 * MIB and sample.temperature_c is not None
    assert "nvmlDeviceGetUtilizationRates" in (sample.error or "")  # why it is N/A, this tick
    assert f"NVML error {code}" in (sample.error or "")
    assert failed.gpus[0].status == failed.gpus[2].status == "ok"
    assert recovered.gpus[1].status == "ok" and recovered.gpus[1].error is None
    assert recovered.gpus[1].utilization_pct == pytest.approx(0.0)
    assert reader.unavailable_queries(nvml.gpus[1].uuid) == {}


def test_unknown_error_in_one_field_makes_that_field_na_this_tick_only() -> None:
    nvml = FakeNvml.healthy(count=1)
    reader = opened(nvml)
    nvml.gpus[0].fail_next(83)

    failed = reader.read(1.0, False).gpus[0]
    recovered = reader.read(2.0, False).gpus[0]

    assert failed.status == "ok" and "field 83" in (failed.error or "")
    assert failed.energy_counter_mj is None and failed.power_w == pytest.approx(75.0)
    assert failed.power_limit_w == pytest.approx(700.0)
    assert recovered.status == "ok" and recovered.energy_counter_mj is not None
    assert nvml.gpus[0].calls[83] == 3  # probe + both ticks: a passing error is asked again


def test_utilisation_failing_every_tick_keeps_power_and_energy_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nvml = FakeNvml.healthy(count=2)
    reader = opened(nvml)
    nvml.gpus[1].fail_next("nvmlDeviceGetUtilizationRates", times=5)

    with caplog.at_level(logging.DEBUG, logger="tokentop.nvml"):
        samples = []
        for t in range(1, 6):
            nvml.gpus[1].advance(1.0)
            samples.append(reader.read(float(t), False).gpus[1])

    assert all(s.status == "ok" and s.utilization_pct is None for s in samples)
    assert all(s.power_w == pytest.approx(75.0) for s in samples)
    counters = [s.energy_counter_mj for s in samples]
    assert None not in counters and counters == sorted(counters) and counters[0] != counters[-1]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage().split(" failed")[0] for r in warnings] == ["GPU 1 nvmlDeviceGetUtilizationRates"]


def test_a_gpu_whose_every_query_fails_is_error_this_tick() -> None:
    nvml = FakeNvml.healthy(count=2)
    reader = opened(nvml)
    for call in (
        "nvmlDeviceGetFieldValues",
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetMemoryInfo",
        "nvmlDeviceGetTemperature",
        "nvmlDeviceGetClockInfo",
    ):
        nvml.gpus[0].fail_next(call)

    failed = reader.read(1.0, False)

    assert failed.gpus[0].status == "error" and "nvmlDeviceGetFieldValues" in (failed.gpus[0].error or "")
    assert failed.gpus[0].power_w is None
    assert failed.gpus[1].status == "ok"
    assert reader.read(2.0, False).gpus[0].status == "ok"


@pytest.mark.parametrize(
    "code",
    [pynvml.NVML_ERROR_GPU_IS_LOST, pynvml.NVML_ERROR_RESET_REQUIRED, pynvml.NVML_ERROR_GPU_NOT_FOUND],
    ids=["gpu-is-lost", "reset-required", "gpu-not-found"],
)
def test_errors_that_mean_the_gpu_is_gone_mark_it_lost(code: int) -> None:
    nvml = FakeNvml.healthy(count=2)
    reader = opened(nvml)
    nvml.gpus[0].fail_next("nvmlDeviceGetUtilizationRates", code)

    sample = reader.read(1.0, False).gpus[0]

    assert sample.status == "lost" and "GPU 0 is lost" in (sample.error or "")
    assert sample.power_w is None  # nothing a lost GPU said this tick is kept
    assert reader.read(2.0, False).gpus[0].status == "ok"


def test_a_binding_bug_in_one_call_costs_that_field_only(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml.healthy(count=1)
    reader = opened(nvml)

    def broken(*_: object) -> int:
        raise ValueError("bad struct")

    monkeypatch.setattr(nvml, "nvmlDeviceGetTemperature", broken, raising=False)
    sample = reader.read(1.0, False).gpus[0]

    assert sample.status == "ok" and sample.temperature_c is None
    assert sample.power_w == pytest.approx(75.0)
    assert "unexpected NVML failure: ValueError: bad struct" in (sample.error or "")


def test_insufficient_size_once_on_process_list_is_retried() -> None:
    nvml = FakeNvml.healthy(count=1)
    gpu = nvml.gpus[0]
    gpu.compute_processes = [(100, 1024 * MIB), (101, 2048 * MIB)]
    reader = opened(nvml)
    gpu.calls.clear()
    gpu.fail_next("nvmlDeviceGetComputeRunningProcesses", pynvml.NVML_ERROR_INSUFFICIENT_SIZE)

    sample = reader.read(1.0, with_processes=True).gpus[0]

    assert sample.status == "ok"
    assert [p.pid for p in sample.processes or ()] == [100, 101]
    assert gpu.calls["nvmlDeviceGetComputeRunningProcesses"] == 2


def test_process_list_still_growing_twice_is_unknown_this_tick_not_an_error() -> None:
    nvml = FakeNvml.healthy(count=1)
    gpu = nvml.gpus[0]
    gpu.compute_processes = [(100, 1024 * MIB)]
    reader = opened(nvml)
    gpu.fail_next("nvmlDeviceGetComputeRunningProcesses", pynvml.NVML_ERROR_INSUFFICIENT_SIZE, times=2)

    growing = reader.read(1.0, with_processes=True).gpus[0]
    settled = reader.read(2.0, with_processes=True).gpus[0]

    assert growing.status == "ok"
    assert growing.processes is None  # not known this tick, not "no processes"
    assert growing.power_w is not None
    assert settled.processes == (GpuProcess(100, 1024 * MIB),)
    assert reader.unavailable_queries(gpu.uuid) == {}


# --- lifecycle ----------------------------------------------------------------------------


def test_close_is_idempotent_and_shuts_nvml_down_once() -> None:
    nvml = FakeNvml.healthy(count=2)
    reader = opened(nvml)

    reader.close()
    reader.close()

    assert nvml.calls["nvmlShutdown"] == 1
    assert nvml.init_count == 0
    reading = reader.read(9.0, with_processes=True)
    assert reading.available is False and reading.gpus == ()
    assert reading.reason == "NVML reader closed"


def test_close_never_raises_even_when_shutdown_fails() -> None:
    nvml = FakeNvml.healthy(count=1)
    reader = opened(nvml)
    nvml.init_count = 0  # someone else shut NVML down: nvmlShutdown answers UNINITIALIZED

    reader.close()

    assert nvml.calls["nvmlShutdown"] == 1
    assert reader.available is False


def test_close_before_open_and_reopen_after_close() -> None:
    nvml = FakeNvml.healthy(count=1)
    reader = NvmlReader(nvml)
    reader.close()
    assert nvml.calls["nvmlShutdown"] == 0
    assert reader.read(0.0, False).reason == "NVML reader closed"

    reader.open()
    reader.close()
    reader.open()

    assert reader.available
    assert reader.read(1.0, False).gpus[0].status == "ok"
    assert nvml.calls["nvmlInit"] == 2 and nvml.init_count == 1


# --- MIG ---------------------------------------------------------------------------------


def mig_host() -> FakeNvml:
    """Two GPUs: GPU 0 with MIG instances in slots 0 and 2 (slot 1 empty), GPU 1 without MIG."""
    nvml = FakeNvml.healthy(count=2)
    nvml.gpus[0].mig_instances = [
        FakeMig("MIG-aaaa", memory_total_bytes=18_000 * MIB, memory_used_bytes=2_000 * MIB),
        None,
        FakeMig("MIG-cccc", memory_total_bytes=35_000 * MIB, memory_used_bytes=9_000 * MIB),
    ]
    return nvml


def test_mig_instances_read_with_uuid_and_memory_empty_slots_skipped() -> None:
    nvml = mig_host()
    reader = opened(nvml)
    nvml.gpus[0].mig_instances[2].memory_used_bytes = 11_000 * MIB  # type: ignore[union-attr]

    reading = reader.read(t_mono=1.0, with_processes=False)

    with_mig, without_mig = reading.gpus
    assert with_mig.status == "ok" and with_mig.power_w == pytest.approx(75.0)
    assert with_mig.mig == (
        MigSample("MIG-aaaa", 0, 2_000 * MIB, 18_000 * MIB),
        MigSample("MIG-cccc", 2, 11_000 * MIB, 35_000 * MIB),
    )
    assert without_mig.mig == ()
    assert without_mig.memory_used_bytes == 512 * MIB  # MIG calls never touch the other GPU
    assert nvml.gpus[1].calls["nvmlDeviceGetMigMode"] == 1  # probed once, at open
    assert nvml.gpus[1].calls["nvmlDeviceGetMigDeviceHandleByIndex"] == 0


def test_mig_uuid_read_once_per_instance_and_again_for_a_new_one() -> None:
    nvml = mig_host()
    reader = opened(nvml)
    for tick in range(3):
        reader.read(t_mono=float(tick), with_processes=False)
    assert nvml.calls["nvmlDeviceGetUUID"] == 2 + 2  # the two GPUs at open, each instance once

    nvml.gpus[0].mig_instances[0] = FakeMig("MIG-dddd")  # the slot was reconfigured
    reading = reader.read(t_mono=5.0, with_processes=False)
    assert [m.uuid for m in reading.gpus[0].mig] == ["MIG-dddd", "MIG-cccc"]


def test_mig_not_supported_means_no_mig_and_is_not_asked_again() -> None:
    nvml = FakeNvml.healthy(count=1)
    nvml.gpus[0].unsupported.add("nvmlDeviceGetMigMode")  # a GPU without MIG (consumer, pre-Ampere)
    reader = opened(nvml)
    for tick in range(3):
        sample = reader.read(t_mono=float(tick), with_processes=False).gpus[0]
        assert sample.status == "ok" and sample.mig == ()
    assert nvml.gpus[0].calls["nvmlDeviceGetMigMode"] == 1
    assert reader.unavailable_queries(sample.uuid) == {"nvmlDeviceGetMigMode": NOT_SUPPORTED}


def test_mig_errors_never_break_the_physical_gpu() -> None:
    nvml = mig_host()
    reader = opened(nvml)
    third = nvml.gpus[0].mig_instances[2]
    assert third is not None
    nvml.gpus[0].fail_next("nvmlDeviceGetMigDeviceHandleByIndex", pynvml.NVML_ERROR_UNKNOWN)  # slot 0
    third.error = pynvml.NVML_ERROR_UNKNOWN  # every call on the slot-2 instance fails

    sample = reader.read(t_mono=1.0, with_processes=False).gpus[0]

    assert sample.status == "ok" and sample.error is None
    assert sample.power_w == pytest.approx(75.0) and sample.memory_used_bytes == 512 * MIB
    # slot 0 (no handle) left out this tick; slot 2 (UUID known) with its memory N/A this tick
    assert sample.mig == (MigSample("MIG-cccc", 2, None, None),)
    third.error = None
    sample = reader.read(t_mono=2.0, with_processes=False).gpus[0]
    assert [m.uuid for m in sample.mig] == ["MIG-aaaa", "MIG-cccc"]


def test_mig_memory_not_supported_keeps_the_gpu_memory() -> None:
    nvml = mig_host()
    reader = opened(nvml)
    third = nvml.gpus[0].mig_instances[2]
    assert third is not None
    third.error = pynvml.NVML_ERROR_NOT_SUPPORTED  # the UUID is cached, so memory is what fails
    for tick in range(2):
        sample = reader.read(t_mono=float(tick), with_processes=False).gpus[0]
        assert sample.memory_used_bytes == 512 * MIB  # the physical GPU's own memory is still asked
    assert [(m.uuid, m.memory_used_bytes) for m in sample.mig] == [
        ("MIG-aaaa", None),
        ("MIG-cccc", None),
    ]  # MIG memory is not asked again, for any instance
