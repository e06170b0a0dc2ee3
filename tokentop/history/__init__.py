"""The history: the only code that imports sqlite3 and sqlite_utils."""

from tokentop.history.store import (
    SCHEMA_VERSION,
    EndpointTrack,
    GpuInfo,
    GpuMinutes,
    GpuTrack,
    SeriesPoint,
    SessionInfo,
    Store,
    StoreError,
)

__all__ = [
    "SCHEMA_VERSION",
    "EndpointTrack",
    "GpuInfo",
    "GpuMinutes",
    "GpuTrack",
    "SeriesPoint",
    "SessionInfo",
    "Store",
    "StoreError",
]
