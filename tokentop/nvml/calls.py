"""The one place a GPU is asked anything, and what each NVML error code means for that GPU.

``NvmlCalls.call`` maps the error codes of ``shared/docs/NVML.md``: what a GPU does not support
(or does not allow, or whose function the driver lacks) is remembered per GPU and never asked
again, and reads as ``None``; a lost GPU ends its reading with ``GpuFailure("lost")`` while the
others keep going; any other error (UNKNOWN, TIMEOUT, a binding bug) makes that one query read
``None`` this tick, is noted in ``GpuState.failures`` and logged once per GPU and query: one
failing field never hides the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from tokentop.text import safe_text

log = logging.getLogger("tokentop.nvml")

NO_GPU_PANEL = "running without a GPU panel"

# Reasons a query is no longer asked, as shown by ``NvmlReader.unavailable_queries``.
NOT_SUPPORTED = "not supported"
NO_PERMISSION = "no permission"
FUNCTION_MISSING = "function not found (driver older than the binding)"


class GpuFailure(Exception):
    """Ends the reading of one GPU for this tick: ``status`` is "lost" or "error"."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class GpuState:
    """What the reader keeps about one GPU between ticks (decoded once at open)."""

    index: int
    handle: Any
    uuid: str
    name: str
    memory_total_bytes: int | None = None
    not_asked: dict[str, str] = field(default_factory=dict)  # query -> why it is not asked
    fields: list[int] = field(default_factory=list)  # ids still asked in the one field-values call
    lost: bool = False
    mig_slots: int = 0  # nvmlDeviceGetMaxMigDeviceCount when MIG mode is on, else 0
    mig_uuids: dict[int, tuple[Any, str]] = field(default_factory=dict)  # slot -> (handle key, UUID)
    failures: list[str] = field(default_factory=list)  # queries that failed this tick, with why
    logged_failures: set[str] = field(default_factory=set)  # queries whose failure was logged
    unopened: str | None = None  # why NVML gave no handle for this GPU at open (it reads as lost)


class NvmlCalls:
    """A pynvml-like module with its error classes and constants taken once, and the choke point."""

    def __init__(self, lib: Any) -> None:
        self.lib = lib
        self.nvml_error: type[BaseException] = lib.NVMLError
        self.mismatch_error: type[BaseException] = getattr(lib, "NVMLLibraryMismatchError", NeverRaised)
        self.success = lib.NVML_SUCCESS
        self.not_supported = lib.NVML_ERROR_NOT_SUPPORTED
        self.no_permission = lib.NVML_ERROR_NO_PERMISSION
        self.function_not_found = lib.NVML_ERROR_FUNCTION_NOT_FOUND
        self.insufficient_size = lib.NVML_ERROR_INSUFFICIENT_SIZE
        self.not_found = lib.NVML_ERROR_NOT_FOUND
        self.mig_enabled = lib.NVML_DEVICE_MIG_ENABLE
        self.lost_codes = {  # the GPU itself is gone: nothing else it says can be read
            lib.NVML_ERROR_GPU_IS_LOST: "it fell off the bus or stopped answering",
            lib.NVML_ERROR_RESET_REQUIRED: "it needs a reset",
            getattr(lib, "NVML_ERROR_GPU_NOT_FOUND", 28): "NVML no longer finds it",  # 28: newer bindings
        }
        self.temperature_sensor = lib.NVML_TEMPERATURE_GPU
        self.sm_clock = lib.NVML_CLOCK_SM
        self.value_members = {
            lib.NVML_VALUE_TYPE_DOUBLE: "dVal",
            lib.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
            lib.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
            lib.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
            lib.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
            lib.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
            lib.NVML_VALUE_TYPE_UNSIGNED_SHORT: "usVal",
        }
        self.init_reasons = {
            lib.NVML_ERROR_LIBRARY_NOT_FOUND: "no NVIDIA driver found (NVML library not loaded)",
            lib.NVML_ERROR_DRIVER_NOT_LOADED: "the NVIDIA kernel driver is not loaded",
            lib.NVML_ERROR_LIB_RM_VERSION_MISMATCH: (
                "the NVIDIA driver and its NVML library differ in version (driver upgraded without a reboot?)"
            ),
            lib.NVML_ERROR_NO_PERMISSION: "no permission to open the NVIDIA devices",
        }

    def init_failure(self, exc: BaseException) -> str:
        """Why ``nvmlInit`` failed, in words, as the reader's ``reason``."""
        if isinstance(exc, self.mismatch_error):
            return f"the nvidia-ml-py binding does not match the installed NVML library ({exc}): {NO_GPU_PANEL}"
        if isinstance(exc, self.nvml_error):
            code = getattr(exc, "value", None)
            known = self.init_reasons.get(code)
            if known:
                return f"{known}: {NO_GPU_PANEL}"
            return f"NVML could not start ({exc}, error {code}): {NO_GPU_PANEL}"
        return f"NVML could not start ({describe(exc)}): {NO_GPU_PANEL}"

    def call(self, gpu: GpuState, name: str, *args: Any, query: str | None = None) -> Any:
        """The one place a GPU is asked anything. ``None``: not known (this tick or for good).

        ``query`` names the question when it differs from the function (calls on a MIG handle).
        """
        query = query or name
        if query in gpu.not_asked:
            return None
        function = getattr(self.lib, name, None)
        if function is None:
            self.on_error(gpu, query, self.function_not_found, "absent from the NVML binding")
            return None
        for attempt in (1, 2):
            try:
                return function(*args)
            # pynvml turns FUNCTION_NOT_FOUND into this on its unversioned process-list calls
            except self.mismatch_error as exc:
                self.on_error(gpu, query, self.function_not_found, str(exc))
                return None
            except self.nvml_error as exc:
                code = getattr(exc, "value", None)
                if code == self.insufficient_size and attempt == 1:
                    continue  # the process list grew between NVML's two calls: ask again
                self.on_error(gpu, query, code, str(exc))
                return None
            except Exception as exc:  # a binding bug costs this query, not the GPU
                self.failed(gpu, query, f"unexpected NVML failure: {describe(exc)}")
                return None
        return None

    def on_error(self, gpu: GpuState, query: str, code: int | None, message: str) -> None:
        """Act on the error code of one query of one GPU, as NVML.md's table of errors says."""
        if code == self.not_supported or code == self.no_permission:
            reason = NOT_SUPPORTED if code == self.not_supported else NO_PERMISSION
            gpu.not_asked[query] = reason
            log.debug("GPU %d %s: %s; not asked again", gpu.index, query, reason)
        elif code == self.function_not_found:
            gpu.not_asked[query] = FUNCTION_MISSING
            log.info("GPU %d %s: %s (%s); falling back", gpu.index, query, FUNCTION_MISSING, message)
        elif code == self.insufficient_size:
            log.debug("GPU %d %s: list still growing; skipped this tick", gpu.index, query)
        elif code in self.lost_codes:
            raise GpuFailure("lost", f"GPU {gpu.index} is lost: {self.lost_codes[code]} ({message})")
        else:
            self.failed(gpu, query, f"{message} (NVML error {code})")

    def failed(self, gpu: GpuState, query: str, why: str) -> None:
        """One query failed this tick: it reads ``None`` and is asked again next tick."""
        gpu.failures.append(f"{query}: {why}")
        if query in gpu.logged_failures:
            log.debug("GPU %d %s failed again: %s", gpu.index, query, why)
            return
        gpu.logged_failures.add(query)
        log.warning("GPU %d %s failed: %s; N/A while it fails, asked again each tick", gpu.index, query, why)

    def error_text(self, code: int) -> str:
        """The binding's own words for an error code (a field's return carries only the code)."""
        try:
            return str(self.nvml_error(code))
        except Exception:
            return f"NVML error {code}"


class NeverRaised(Exception):
    """Stands in for ``NVMLLibraryMismatchError`` in bindings that lack it."""


def nvml_text(value: Any) -> str:
    """A string the binding returned (a name, UUID, driver version), as safe text: older
    bindings return bytes, and the driver's strings reach terminals and files."""
    return safe_text(value.decode(errors="replace") if isinstance(value, bytes) else str(value))


def describe(exc: BaseException) -> str:
    """An exception as its class name and message, for logs and reasons."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
