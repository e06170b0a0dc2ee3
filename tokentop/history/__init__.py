"""The history: the only code that imports sqlite3 and sqlite_utils.

- ``store``: ``Store``, the facade the rest of tokentop uses: open, append, close, the queries,
  one lock around one connection shared by a writer and a reader.
- ``schema``: the tables and views, ``SCHEMA_VERSION``, creating the file's schema and migrating
  older versions (1 said "server" where 2 says "endpoint"; 3 added the session totals; 4 which
  command recorded each session and whether its host was simulated; 5 the states, ``states``:
  what repeats tick after tick stored once, power in milliwatts, memory in exact units).
- ``files``: opening the file (owner-only, checked, WAL) to write or read-only.
- ``writer``: a session's ticks, the queue that keeps them while the file is locked or the disk
  full, the count of ticks written and lost; ``rows`` (a snapshot as rows), ``ticks`` (one
  tick's rows and rollups), ``clock`` (the session's monotonic clock), ``totals`` (the session's
  totals, refreshed every minute), ``retention``, ``watch`` (the file deleted or replaced).
- ``queries``: the reads: sessions, GPUs, window totals, tracks for the summary; ``series``
  (chart series), ``kept`` (the session totals).
- ``records``: the frozen records the queries return.
- ``errors``: ``StoreError`` and SQLite's failures said in one line.
"""

from tokentop.history.errors import StoreError
from tokentop.history.records import (
    EndpointSessionTotals,
    EndpointTrack,
    GpuInfo,
    GpuMinutes,
    GpuSessionTotals,
    GpuTrack,
    SeriesPoint,
    SessionInfo,
)
from tokentop.history.schema import SCHEMA_VERSION
from tokentop.history.store import Store

__all__ = [
    "SCHEMA_VERSION",
    "EndpointSessionTotals",
    "EndpointTrack",
    "GpuInfo",
    "GpuMinutes",
    "GpuSessionTotals",
    "GpuTrack",
    "SeriesPoint",
    "SessionInfo",
    "Store",
    "StoreError",
]
