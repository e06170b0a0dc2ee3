"""What the live view reads of the host itself: CPU and memory use for the header, and who runs
each GPU process for the processes panel. Both read /proc (psutil), so the app calls them off
the event loop: ``usage`` on the sampler thread with each tick, ``processes`` on a worker.

``HostReader`` is what the app needs; tests and the README pictures give fixed figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from tokentop.tui.processes import UNKNOWN, ProcessInfo, describe_processes


@dataclass(frozen=True)
class HostUsage:
    cpu_fraction: float | None  # busy share of all CPUs since the last reading; None on the first
    memory_used_bytes: int  # total less what is available (page cache counts as free)
    memory_total_bytes: int


class HostReader(Protocol):
    def usage(self) -> HostUsage | None: ...
    def processes(self, pids: Iterable[int]) -> dict[int, ProcessInfo]: ...


class PsutilHost:
    """The real host, through psutil. CPU use is the busy share between two calls."""

    def __init__(self) -> None:
        self._cpu: tuple[float, float] | None = None  # busy, total CPU seconds at the last call

    def usage(self) -> HostUsage | None:
        import psutil

        try:
            times = psutil.cpu_times()._asdict()
            memory = psutil.virtual_memory()
        except (psutil.Error, OSError):
            return None
        # guest time is counted in user time already (Linux)
        total = sum(value for name, value in times.items() if name not in ("guest", "guest_nice"))
        busy = total - times.get("idle", 0.0) - times.get("iowait", 0.0)
        last, self._cpu = self._cpu, (busy, total)
        fraction = None
        if last is not None and total > last[1]:
            fraction = min(1.0, max(0.0, (busy - last[0]) / (total - last[1])))
        return HostUsage(fraction, memory.total - memory.available, memory.total)

    def processes(self, pids: Iterable[int]) -> dict[int, ProcessInfo]:
        return describe_processes(pids)


class DemoProcessHost(PsutilHost):
    """``--demo``: this machine's CPU and memory, and the simulated engines as the processes
    behind their simulated PIDs (``tokentop.demo.simulated_processes``), never whatever real
    process has that PID here."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed

    def processes(self, pids: Iterable[int]) -> dict[int, ProcessInfo]:
        from tokentop.demo import simulated_processes  # only when a process list is shown

        known = {
            pid: ProcessInfo("vllm", user, command) for pid, (user, command) in simulated_processes(self.seed).items()
        }
        return {pid: known.get(pid, UNKNOWN) for pid in pids}


class FixedHost:
    """A host whose figures are given: the README pictures and the tests do not depend on the
    machine that draws them. A PID not in ``processes`` is not visible."""

    def __init__(self, usage: HostUsage | None = None, processes: dict[int, ProcessInfo] | None = None) -> None:
        self.fixed_usage = usage
        self.fixed_processes = processes or {}

    def usage(self) -> HostUsage | None:
        return self.fixed_usage

    def processes(self, pids: Iterable[int]) -> dict[int, ProcessInfo]:
        return {pid: self.fixed_processes.get(pid, UNKNOWN) for pid in pids}
