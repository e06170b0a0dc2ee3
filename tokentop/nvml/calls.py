"""The one place a GPU is asked anything, and what each NVML error code means for that GPU.

``NvmlCalls.call`` maps the error codes of ``shared/docs/NVML.md``: what a GPU does not support
(or does not allow, or whose function the driver lacks) is remembered per GPU and never asked
again, and reads as ``None``; a lost GPU ends its reading with ``GpuFailure("lost")`` while the
others keep going; any other error (UNKNOWN, TIMEOUT, a binding bug) makes that one query read
``None`` this tick, is noted in ``GpuState.failures`` and logged once per GPU and query: one
failing field never hides the others.
"""

from __future__ import annotations

import ctypes
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, NamedTuple

from tokentop.text import safe_text

log = logging.getLogger("tokentop.nvml")

NO_GPU_PANEL = "running without a GPU panel"

# One nvmlFieldValue_t as nvml.h lays it out (fieldId, scopeId, timestamp, latencyUsec, valueType,
# nvmlReturn, an 8-byte union of values): the members tokentop reads, by offset and size.
_FIELD_RECORD = struct.Struct("=I20xII8s")  # fieldId, valueType, nvmlReturn, the union's bytes
_FIELD_MEMBERS = (("fieldId", 0, 4), ("valueType", 24, 4), ("nvmlReturn", 28, 4), ("value", 32, 8))
_UNSIGNED_LONG_LONG = struct.Struct("@Q")  # ullVal: what a value of an unknown type is read as

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
    field_request: FieldRequest | None = None  # its field-values call straight to NVML (pynvml itself)
    direct: Any = None  # its ``direct.DirectReads``: the four single queries straight to NVML (pynvml itself)


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
        self.field_struct = _known_field_layout(lib)
        union = dict(getattr(getattr(lib, "c_nvmlValue_t", None), "_fields_", ()))
        self.value_structs = {  # how each member of the value union reads from its bytes
            code: struct.Struct("@" + union.get(member, ctypes.c_ulonglong)._type_)
            for code, member in self.value_members.items()
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

    def call(self, gpu: GpuState, name: str, *args: Any, query: str | None = None, via: Any = None) -> Any:
        """The one place a GPU is asked anything. ``None``: not known (this tick or for good).

        ``query`` names the question when it differs from the function (calls on a MIG handle);
        ``via``: what makes the call instead of the binding's function of that name.
        """
        query = query or name
        if query in gpu.not_asked:
            return None
        function = via or getattr(self.lib, name, None)
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

    def answered_after(self, gpu: GpuState, query: str, code: int, again: Callable[[], int]) -> bool:
        """A C function called without the binding (``direct.py``) returned ``code``, not
        success: whether it answered after all, when ``call`` would ask again (``again``, once:
        INSUFFICIENT_SIZE); otherwise the code is acted on as ``call`` acts on the binding's
        ``NVMLError`` of that code, in the binding's words."""
        if code == self.insufficient_size:
            code = again()
            if code == self.success:
                return True
        self.on_error(gpu, query, code, self.error_text(code))
        return False

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

    def field_request(self) -> FieldRequest | None:
        """A GPU's own ``FieldRequest`` when the binding is pynvml itself, else None (its
        ``nvmlDeviceGetFieldValues`` is called as it is)."""
        lookup = getattr(self.lib, "_nvmlGetFunctionPointer", None)
        if not isinstance(self.lib, ModuleType) or not callable(lookup) or self.field_struct is None:
            return None
        return FieldRequest(self, lookup)

    def field_values(self, values: Any) -> list[tuple[int, int, Any]]:
        """``(field id, return code, value)`` of each entry ``nvmlDeviceGetFieldValues`` returned;
        the value only where the code is success (else None).

        pynvml's structs answer every attribute through a Python-level ``__getattribute__``: an
        array of the binding's own struct, laid out as nvml.h says, is read from its bytes."""
        success = self.success
        if isinstance(values, ctypes.Array) and values._type_ is self.field_struct:
            return [
                (field_id, code, self.value_structs.get(value_type, _UNSIGNED_LONG_LONG).unpack_from(raw)[0])
                if code == success
                else (field_id, code, None)
                for field_id, value_type, code, raw in _FIELD_RECORD.iter_unpack(values)
            ]
        return [(int(v.fieldId), v.nvmlReturn, self._member(v) if v.nvmlReturn == success else None) for v in values]

    def _member(self, value: Any) -> Any:
        return getattr(value.value, self.value_members.get(value.valueType, "ullVal"))

    def error_text(self, code: int) -> str:
        """The binding's own words for an error code (a field's return carries only the code)."""
        try:
            return str(self.nvml_error(code))
        except Exception:
            return f"NVML error {code}"


class FieldRequest:
    """One GPU's ``nvmlDeviceGetFieldValues`` made through the C function itself, over an array of
    its field ids made once. pynvml's wrapper builds that array anew on every call, each id set
    through a Python-level ``__setattr__`` after a failed tuple unpack: about seven times the cost
    of the NVML call, most of what reading a GPU through a real driver costs tokentop.

    Called as the binding's function is (``handle, field_ids``), it fails as the binding does: an
    ``NVMLError`` of the code NVML returned, FUNCTION_NOT_FOUND when the driver lacks the symbol.
    The array it returns is its own, filled again by the next call."""

    def __init__(self, calls: NvmlCalls, lookup: Any) -> None:
        self._calls = calls
        self._lookup = lookup  # pynvml's cached function-pointer lookup
        self._function: Any = None
        self._ids: list[int] = []
        self._values: Any = None
        self._arguments: tuple[Any, ...] = ()
        self._answers = _NOT_YET_READ  # how this array reads in one unpack

    def __call__(self, handle: Any, field_ids: list[int]) -> Any:
        if field_ids != self._ids:
            self._ids = list(field_ids)
            self._values = (self._calls.field_struct * len(field_ids))()
            for slot, field_id in zip(self._values, field_ids, strict=True):
                slot.fieldId = field_id
            self._arguments = (ctypes.c_int32(len(field_ids)), ctypes.byref(self._values))
            self._answers = _NOT_YET_READ
        if self._function is None:
            self._function = self._lookup("nvmlDeviceGetFieldValues")
        code = self._function(handle, *self._arguments)
        if code != self._calls.success:
            raise self._calls.nvml_error(code)
        return self._values

    def answers(self) -> tuple[tuple[int, ...], tuple[Any, ...]] | None:
        """The field ids of the last call's array and their values, when every field answered
        (else None: ``NvmlCalls.field_values`` reads them one by one). One unpack reads the
        whole array, each value as its type's member of the union, as ``field_values`` does."""
        answers = self._answers
        flat = answers.records.unpack_from(self._values)
        if flat[1::4] != answers.value_types:  # a new array, or NVML gave a field another type
            answers = self._answers = _answers_of(self._calls, self._values)
            flat = answers.records.unpack_from(self._values)
        if flat[2::4] != answers.successes:
            return None
        return flat[0::4], flat[3::4]


class _Answers(NamedTuple):
    """How an array of field values of these types reads: (fieldId, valueType, nvmlReturn, the
    value as its type's member) per field."""

    records: struct.Struct
    value_types: tuple[int, ...]
    successes: tuple[int, ...]  # every field's return, when all succeeded


_NOT_YET_READ = _Answers(struct.Struct(""), (-1,), ())  # reads nothing, matches no array


def _answers_of(calls: NvmlCalls, values: Any) -> _Answers:
    """The ``_Answers`` of this array's value types (read from it): each value at the start of
    its union's 8 bytes, in the member's own native type (an unknown type as unsigned long long)."""
    value_types = tuple(value_type for _, value_type, _, _ in _FIELD_RECORD.iter_unpack(values))
    layout = "".join(
        f"I20xII{member.format[1:]}{8 - member.size}x"
        for member in (calls.value_structs.get(value_type, _UNSIGNED_LONG_LONG) for value_type in value_types)
    )
    return _Answers(struct.Struct("@" + layout), value_types, (calls.success,) * len(value_types))


def _known_field_layout(lib: Any) -> Any:
    """The binding's ``c_nvmlFieldValue_t`` when it is laid out as ``_FIELD_MEMBERS`` says (so
    its arrays can be read from their bytes), else None."""
    struct_type: Any = getattr(lib, "c_nvmlFieldValue_t", None)
    try:
        known = ctypes.sizeof(struct_type) == _FIELD_RECORD.size and all(
            (getattr(struct_type, name).offset, getattr(struct_type, name).size) == (offset, size)
            for name, offset, size in _FIELD_MEMBERS
        )
    except (TypeError, AttributeError):
        return None
    return struct_type if known else None


class NeverRaised(Exception):
    """Stands in for ``NVMLLibraryMismatchError`` in bindings that lack it."""


def nvml_text(value: Any) -> str:
    """A string the binding returned (a name, UUID, driver version), as safe text: older
    bindings return bytes, and the driver's strings reach terminals and files."""
    return safe_text(value.decode(errors="replace") if isinstance(value, bytes) else str(value))


def describe(exc: BaseException) -> str:
    """An exception as its class name and message, for logs and reasons."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
