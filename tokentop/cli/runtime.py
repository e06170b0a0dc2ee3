"""What every command runs on: the settings, the GPU source (NVML or the demo's), the history,
and the signals that end a run cleanly.

The demo, NVML, the history and the sampler are imported by the functions that need them, so
that importing this module (for ``UsageError``, say) costs nothing: the live view builds them on
a thread after its first screen is drawn.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from tokentop import __version__
from tokentop.config import Config, default_db_path

if TYPE_CHECKING:
    from tokentop.demo import DemoHost
    from tokentop.history import Store
    from tokentop.sampler import GpuSource

FLEET_OPTIONS = ("--prometheus", "--prometheus-token-env", "--ssh")
"""The options that point a command at a fleet instead of this host (``tokentop.fleet``)."""


class UsageError(Exception):
    """Something the user can fix; printed as one line, exit code 2."""


@dataclass
class Runtime:
    """What a command runs on: the settings, the GPU source and, with --demo, the simulation."""

    config: Config
    gpus: GpuSource
    demo_host: DemoHost | None = None

    def close(self) -> None:
        if self.demo_host is not None:
            self.demo_host.close()


def build_runtime(config: Config) -> Runtime:
    """The real host, or with ``--demo`` a simulated one whose engines serve on loopback."""
    if config.demo:
        from tokentop.demo import DemoGpuReader, DemoHost

        host = DemoHost(seed=config.seed)
        try:
            served = host.serve()
        except BaseException:  # the engines already serving are not left behind
            host.close()
            raise
        config = replace(config, endpoints=tuple(config.endpoints) + served)
        return Runtime(config, DemoGpuReader(host), host)
    from tokentop.nvml.reader import NvmlReader

    return Runtime(config, NvmlReader())


def history_path(config: Config) -> Path:
    """``--db``, else the default file: ``demo.db`` for a simulated host, ``history.db`` else."""
    return config.db_path or default_db_path(demo=config.demo)


def open_store(
    config: Config, *, required: bool, origin: str = "live", say: Callable[[str], None] | None = None
) -> Store | None:
    """The history store, or None when history is off. ``required``: failing is fatal.
    ``origin``: the command that records (``live``, ``record``, ``export``, ``snapshot``).
    ``say``: where the one line about a history that cannot be used goes (default: stderr)."""
    if not config.history:
        return None
    from tokentop.history import Store, StoreError

    try:
        return Store.open(
            history_path(config),
            host=socket.gethostname(),
            version=__version__,
            config=config.public_dict(),
            origin=origin,
            simulated=config.demo,
            raw_retention_h=config.raw_retention_h,
            rollup_retention_d=config.rollup_retention_d,
        )
    except StoreError as exc:
        if required:
            raise UsageError(f"cannot record: {exc}") from None
        line = f"tokentop: {exc}; monitoring without history"
        if say is None:
            print(line, file=sys.stderr)
        else:
            say(line)
        return None


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """SIGINT, SIGTERM and SIGHUP set the event (so a clean stop flushes the store)."""
    stop = threading.Event()
    previous = {}

    def handler(signum: int, frame: object) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
