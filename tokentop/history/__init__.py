"""The history: the only code that imports sqlite3 and sqlite_utils.

- ``store``: ``Store``, the facade the rest of tokentop uses: open, append, close, the queries,
  one lock around one connection shared by a writer and a reader.
- ``schema``: the tables and views, ``SCHEMA_VERSION``, opening and checking the file, creating
  it and migrating older versions (1 said "server" where 2 says "endpoint").
- ``writer``: one transaction per tick (rows and 1-minute rollups), the queue that keeps ticks
  while the file is locked or the disk full, retention.
- ``queries``: the reads: sessions, GPUs, chart series, window totals, tracks for the summary.
- ``records``: the frozen records the queries return.
- ``errors``: ``StoreError`` and SQLite's failures said in one line.
"""

from tokentop.history.errors import StoreError
from tokentop.history.records import EndpointTrack, GpuInfo, GpuMinutes, GpuTrack, SeriesPoint, SessionInfo
from tokentop.history.schema import SCHEMA_VERSION
from tokentop.history.store import Store

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
