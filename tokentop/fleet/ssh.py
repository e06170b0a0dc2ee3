"""The fleet over ssh: each host's ``tokentop snapshot --json --follow`` read through the user's
own ``ssh`` client (``ssh_command``), one reader thread per host, merged into FleetReadings.

Each host goes connecting -> up, and stale when its feed goes quiet, or down with the reason
ssh's stderr gives (no tokentop there, a tokentop too old, a schema this one cannot read, a
lost connection); a lost feed is retried with backoff (1 s doubling to 30 s; at once the
longest for what will not mend by itself), the host staying down until a reading comes. A down
host's figures leave the fleet's sums.

Nothing remote is left behind: ``close`` closes each ssh's standard input, which the remote
``snapshot --follow`` takes as its end (it stops on end of input when its stdin is a pipe, and
on a closed stdout), then ends ssh itself. Without a terminal sshd sends no SIGHUP, so end of
input is what carries the quit across; it also works when this process is killed outright.

Clocks: each host stamps its own readings and computes its own rates over its own measured
intervals; those are kept as they are (``FleetHost.snapshot``). Ages are measured on the
viewer's clock from when a line arrived, and the host's clock offset is its stamp less the
arrival time (the largest of the recent ones: transit only ever makes it look behind).
``series`` places every host's own rates on the viewer's clock: the in-memory past of the
feeds, ``SERIES_KEEP_S`` long, each point one host's rate window (tok/s, W and $/h alike).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from tokentop.config import Config, SshHostConfig
from tokentop.fleet.feed import READ_CHUNK, FeedError, LineSplitter, SchemaError, parse_line
from tokentop.fleet.model import CLOCK_OFFSET_SHOWN_S, FleetHost, FleetReading, FleetSeries, HostState, fleet_figures
from tokentop.fleet.ssh_command import close_pipes, drain_stderr, end_process, failure_reason, ssh_argv
from tokentop.model import Snapshot
from tokentop.text import safe_text

log = logging.getLogger("tokentop.fleet.ssh")

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
SERIES_KEEP_S = 900.0  # the past kept of each feed, for the graphs
MAX_SERIES_POINTS = 500  # a graph's points at most, whatever its span
STDERR_LINES = 4  # the last lines of ssh's stderr kept for the reason
CLOSE_WAIT_S = 2.0  # for ssh to end by itself once its input is closed
OFFSET_SAMPLES = 10
FEED_ARGS = ("snapshot", "--json", "--follow", "--interval")

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class _Point:
    """One reading of one host for the graphs: its rate window's figures, on the viewer's clock."""

    t_wall: float  # the viewer's clock, when the line arrived
    tok_s_out: float | None
    power_w: float | None
    usd_per_hour: float | None  # None: the host has a GPU without a price


class HostFeed:
    """One host's feed: an ssh process at a time, read on its own thread, retried with backoff."""

    def __init__(self, host: SshHostConfig, refresh_s: float, *, clock: Clock, wall: Clock) -> None:
        self.host = host
        self.refresh_s = refresh_s
        self._clock, self._wall = clock, wall
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._state: HostState = "connecting"
        self._reason: str | None = None
        self._snapshot: Snapshot | None = None
        self._received = 0.0
        self._offsets: deque[float] = deque(maxlen=OFFSET_SAMPLES)
        self.past: deque[_Point] = deque(maxlen=int(SERIES_KEEP_S / max(refresh_s, 0.05)) + 1)
        self.garbage = 0
        self.first_garbage: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"tokentop-ssh-{host.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # -- the reader thread --

    def _run(self) -> None:
        backoff = BACKOFF_FIRST_S
        reason = ""
        while not self._stop.is_set():
            with self._lock:  # a down host stays down while it is tried again: one notice, not one a try
                if self._state == "down":
                    self._reason = f"{reason}; reconnecting"
            try:
                got_any, reason, lasting = self._follow_once()
            except Exception as exc:  # a bug must not silently end this host's feed: say it, retry
                log.exception("ssh feed of %s failed", self.host.name)
                got_any, reason, lasting = False, safe_text(f"tokentop failed reading the feed: {exc!r}"), False
            backoff = BACKOFF_FIRST_S if got_any else backoff
            wait = BACKOFF_MAX_S if lasting else backoff
            with self._lock:
                self._state, self._snapshot = "down", None
                self._reason = f"{reason}; retrying in {wait:g} s"
            self._stop.wait(wait)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _follow_once(self) -> tuple[bool, str, bool]:
        """Run ssh until its feed ends: (a snapshot came, why it ended, whether retrying soon is
        pointless: the remote's schema or version is wrong)."""
        argv = ssh_argv(self.host, (*FEED_ARGS, f"{self.refresh_s:g}"))
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
            )
        except OSError as exc:
            return False, f"cannot run ssh: {exc.strerror or exc}", True
        with self._lock:
            self._proc = proc
        if self._stop.is_set():  # close() came while starting: it may have missed this process
            end_process(proc)
        stderr: deque[str] = deque(maxlen=STDERR_LINES)
        errors = threading.Thread(target=drain_stderr, args=(proc, stderr), daemon=True)
        errors.start()
        got_any, fatal = self._read_lines(proc)
        if fatal is not None:
            end_process(proc)
        try:
            code: int | None = proc.wait(CLOSE_WAIT_S)
        except subprocess.TimeoutExpired:
            end_process(proc)
            code = None
        errors.join(CLOSE_WAIT_S)
        with self._lock:
            self._proc = None
        close_pipes(proc)
        if fatal is not None:
            return got_any, fatal, True
        reason = failure_reason(code, list(stderr))
        return got_any, reason, reason.startswith(("no tokentop", "the host's tokentop is too old"))

    def _read_lines(self, proc: subprocess.Popen[bytes]) -> tuple[bool, str | None]:
        """Read the feed until it ends: (any snapshot read, the fatal reason that ended it)."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        splitter = LineSplitter()
        got_any = False
        while True:
            chunk = os.read(fd, READ_CHUNK)
            if not chunk:
                return got_any, None
            for line in splitter.feed(chunk):
                try:
                    snapshot = parse_line(line, self._clock())
                except SchemaError as exc:
                    return got_any, str(exc)
                except FeedError as exc:
                    self._count_garbage(str(exc))
                    continue
                got_any = True
                self._take(snapshot)
            if splitter.oversized:
                for _ in range(splitter.oversized):
                    self._count_garbage(f"a line over {splitter.max_bytes // (1024 * 1024)} MiB, dropped")
                splitter.oversized = 0

    def _count_garbage(self, why: str) -> None:
        with self._lock:
            self.garbage += 1
            if self.first_garbage is None:
                self.first_garbage = safe_text(why)

    def _take(self, snapshot: Snapshot) -> None:
        now, wall = self._clock(), self._wall()
        host, window = snapshot.host, snapshot.host.rate_window
        watts = window.watts if window.energy_j > 0 else host.power_w  # power alone: no energy read
        point = _Point(wall, window.tok_s_out, watts, window.usd_per_hour)
        with self._lock:
            self._snapshot, self._received = snapshot, now
            self._state, self._reason = "up", None
            self._offsets.append(snapshot.t_wall - wall)
            self.past.append(point)

    # -- read from the viewer --

    def fleet_host(self) -> FleetHost:
        now = self._clock()
        stale_after = 3 * self.refresh_s + 2.0
        with self._lock:
            snapshot, state, reason = self._snapshot, self._state, self._reason
            age = now - self._received if snapshot is not None else None
            offset = max(self._offsets) if self._offsets and snapshot is not None else None
        if state == "up" and age is not None and age > stale_after:
            state, reason = "stale", f"no reading for {age:.0f} s"
        endpoints = snapshot.endpoints if snapshot is not None else ()
        models = sorted({g.sample.name for g in snapshot.gpus}) if snapshot is not None else []
        return FleetHost(
            name=self.host.name,
            state=state,
            reason=reason,
            snapshot=snapshot,
            age_s=age,
            clock_offset_s=offset,
            models=tuple(models),
            engines_up=sum(e.sample.status == "up" for e in endpoints),
            engines_total=len(endpoints),
        )

    def recent(self, since_wall: float) -> list[_Point]:
        """The kept points that arrived after ``since_wall`` (the viewer's clock), oldest first."""
        with self._lock:
            newest_first = list(itertools.takewhile(lambda p: p.t_wall > since_wall, reversed(self.past)))
        return newest_first[::-1]

    def garbage_message(self) -> str | None:
        """One line when the feed sent what is not a snapshot: the count and the first reason."""
        with self._lock:
            count, first = self.garbage, self.first_garbage
        if not count:
            return None
        return f"{self.host.name}: {count} unreadable line(s) from its feed ignored (first: {first})"

    def stop(self) -> None:
        """Close ssh's input (the remote feed's end of input): the first half of ``close``."""
        self._stop.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()

    def join(self, deadline: float) -> None:
        """Wait for ssh to end by itself until ``deadline``; then end it and its reader."""
        with self._lock:
            proc = self._proc
        if proc is not None:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                end_process(proc)
        self._thread.join(max(0.5, deadline - time.monotonic()))


class SshSource:
    """``FleetSource`` over ssh: the hosts of ``config.hosts`` (``[[hosts]]`` and ``--ssh``)."""

    def __init__(self, config: Config, *, clock: Clock = time.monotonic, wall: Clock = time.time) -> None:
        self.config = config
        self.refresh_s = config.interval_s
        self._wall = wall
        self.feeds = [HostFeed(h, self.refresh_s, clock=clock, wall=wall) for h in config.hosts]
        names = [h.name for h in config.hosts]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        self.description = f"ssh: {shown}"
        for feed in self.feeds:
            feed.start()

    def read(self) -> FleetReading:
        hosts = tuple(feed.fleet_host() for feed in self.feeds)
        rate_s, cost_s, windows_note = _windows(hosts, self.config)
        garbage = (feed.garbage_message() for feed in self.feeds)
        messages = [*(m for m in garbage if m is not None), *_clock_messages(hosts)]
        if windows_note:
            messages.append(windows_note)
        down = [h.name for h in hosts if h.state == "down"]
        return FleetReading(
            t_wall=self._wall(),
            source=self.description,
            mode="ssh",
            rate_window_s=rate_s,
            cost_window_s=cost_s,
            hosts=hosts,
            fleet=fleet_figures(hosts, rate_s, cost_s),
            status=f"{len(down)} of {len(hosts)} hosts down" if down else None,
            messages=tuple(messages),
        )

    def series(self, span_s: float, host: str | None = None) -> FleetSeries | None:
        """The feeds' own past, kept in memory for ``SERIES_KEEP_S``: a longer span gives what is
        kept, and its ``span_s`` says so. Steps of the refresh, or longer to stay within
        ``MAX_SERIES_POINTS``; each host's own rates placed by the viewer's clock (``series_of``)."""
        feeds = [f for f in self.feeds if host is None or f.host.name == host]
        if not feeds:
            return None
        span = min(span_s, SERIES_KEEP_S)
        end = self._wall()
        step = max(self.refresh_s, span / MAX_SERIES_POINTS)
        return series_of([feed.recent(end - span - step) for feed in feeds], span, step, end)

    def focus(self, host: str | None) -> None:
        """Nothing to do: every feed carries all its host's GPUs."""

    def all_settled(self) -> bool:
        """Every host has had its first reading with rates (two ticks), or is down."""
        hosts = [feed.fleet_host() for feed in self.feeds]
        return all(h.state == "down" or (h.snapshot is not None and h.snapshot.dt_s is not None) for h in hosts)

    def close(self) -> None:
        for feed in self.feeds:
            feed.stop()
        deadline = time.monotonic() + CLOSE_WAIT_S
        for feed in self.feeds:
            feed.join(deadline)


def series_of(pasts: Sequence[Sequence[_Point]], span_s: float, step_s: float, end: float) -> FleetSeries:
    """Hosts' points (one list a host, oldest first) as one series of steps ``step_s`` long up
    to ``end``, each point at the end of its step. A host counts once a step: the mean of its
    readings in it, or, when jitter left the step without one, its reading of the step before.
    The steps then add the hosts up; $/h and the tok/s it is divided by (``priced_tok_s_out``)
    add only the hosts whose reading has a cost."""
    first = math.floor((end - span_s) / step_s) + 1
    count = math.floor(end / step_s) - first + 1
    tok: list[float | None] = [None] * count
    watts: list[float | None] = [None] * count
    usd: list[float | None] = [None] * count
    priced: list[float | None] = [None] * count
    for points in pasts:
        for i, point in _host_steps(points, first, count, step_s):
            tok[i] = _plus(tok[i], point.tok_s_out)
            watts[i] = _plus(watts[i], point.power_w)
            if point.usd_per_hour is not None:
                usd[i] = _plus(usd[i], point.usd_per_hour)
                priced[i] = _plus(priced[i], point.tok_s_out)
    return FleetSeries(
        span_s=span_s,
        step_s=step_s,
        t_wall=tuple((first + i + 1) * step_s for i in range(count)),
        tok_s_out=tuple(tok),
        power_w=tuple(watts),
        usd_per_hour=tuple(usd),
        priced_tok_s_out=tuple(priced),
    )


def _host_steps(points: Sequence[_Point], first: int, count: int, step_s: float) -> list[tuple[int, _Point]]:
    """(step, the host's point for it): its readings in a step averaged; a step without one
    holds the step before's, when that one had readings."""
    grouped: dict[int, list[_Point]] = {}
    for point in points:
        grouped.setdefault(math.floor(point.t_wall / step_s) - first, []).append(point)
    means = {i: group[0] if len(group) == 1 else _mean(group) for i, group in grouped.items() if -1 <= i < count}
    held = {i + 1: p for i, p in means.items() if i + 1 < count and i + 1 not in means}
    return [(i, p) for i, p in {**means, **held}.items() if i >= 0]


def _mean(points: Sequence[_Point]) -> _Point:
    def mean(values: Iterable[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return sum(known) / len(known) if known else None

    return _Point(
        points[-1].t_wall,
        mean(p.tok_s_out for p in points),
        mean(p.power_w for p in points),
        mean(p.usd_per_hour for p in points),
    )


def _plus(total: float | None, value: float | None) -> float | None:
    if value is None:
        return total
    return value if total is None else total + value


def _windows(hosts: Iterable[FleetHost], config: Config) -> tuple[float, float, str | None]:
    """The hosts' own window lengths when they agree; else the viewer's, with a note: the fleet
    then adds each host's rates over its own windows, stated over the viewer's lengths."""
    spans = {(h.snapshot.rate_window_s, h.snapshot.cost_window_s) for h in hosts if h.snapshot is not None}
    if len(spans) == 1:
        rate_s, cost_s = spans.pop()
        return rate_s, cost_s, None
    if not spans:
        return config.rate_window_s, config.cost_window_s, None
    return (
        config.rate_window_s,
        config.cost_window_s,
        "the hosts use different windows (rate_window_s, cost_window_s): each host's figures are over its own, "
        "and the fleet's add their rates",
    )


def _clock_messages(hosts: Iterable[FleetHost]) -> list[str]:
    return [
        f"{h.name}: clock {abs(h.clock_offset_s):.1f} s {'ahead of' if h.clock_offset_s > 0 else 'behind'} this one"
        for h in hosts
        if h.clock_offset_s is not None and abs(h.clock_offset_s) > CLOCK_OFFSET_SHOWN_S
    ]
