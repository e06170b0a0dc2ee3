"""The session's clock: when each reading happened, as the monotonic clock measures it.

A wall clock can be set by hand, stepped by NTP or moved by a test harness while a session runs;
times read from it then go backwards or leap days ahead, and every duration taken from them
(the summary's duration, W, tok/s, $/hour) and every age (retention) is wrong. So the history
times a reading as the wall time of the session's first tick plus the monotonic seconds since
then (``SessionClock.time_of``); while the wall clock agrees with that to a millisecond, the
reading's wall time itself (the time its snapshot carries). These times never go backwards,
never advance by more than the measured interval and a millisecond, and their differences are
measured durations. The wall clock only places the
session's start; where it later disagrees with the session's clock by more than
``WALL_CLOCK_TOLERANCE_S`` that is said once (``note``): said again only when the wall clock
moves again, not every tick while it stays off.

The monotonic clock does not count a suspend: after one, the session's times run behind the
wall clock by the time suspended (nothing was watched meanwhile), which is said the same way.
"""

from __future__ import annotations

from tokentop.units import fmt_duration

WALL_CLOCK_TOLERANCE_S = 2.0
SAME_INSTANT_S = 1e-3  # the clocks agree this closely: a reading is timed by its wall time itself


class SessionClock:
    """Times of one session's readings from their ``(t_wall, t_mono)`` pairs."""

    def __init__(self) -> None:
        self._start: tuple[float, float] | None = None  # (wall, monotonic) of the first reading
        self.offset_s = 0.0  # the latest reading's wall time minus its session time
        self._said_offset: float | None = None  # the disagreement last said, while it lasts

    def time_of(self, t_wall: float, t_mono: float) -> float:
        """The session's time of a reading: the first reading's wall time plus the monotonic
        seconds since."""
        if self._start is None:
            self._start = (t_wall, t_mono)
        wall_0, mono_0 = self._start
        t = wall_0 + (t_mono - mono_0)
        self.offset_s = t_wall - t
        # Agreeing to a millisecond, the clocks differ only by when each was read and by
        # rounding (a few 1e-7 s at today's Unix times): the reading's own wall time then, the
        # time its snapshot carries (the exporter's, ``snapshot --json``), so that a range given
        # in those times selects exactly their rows; a boundary row otherwise fell out by 2e-7 s.
        return t_wall if abs(self.offset_s) <= SAME_INSTANT_S else t

    def now(self, t_wall: float) -> float:
        """The session's time of a wall time read just now (the latest offset still holds)."""
        return t_wall - self.offset_s

    def note(self) -> str | None:
        """One line when the wall clock comes to disagree with the session's clock, or moves
        again while it does; None while they agree and while the disagreement stays as said."""
        if abs(self.offset_s) <= WALL_CLOCK_TOLERANCE_S:
            self._said_offset = None
            return None
        if self._said_offset is not None and abs(self.offset_s - self._said_offset) <= WALL_CLOCK_TOLERANCE_S:
            return None
        self._said_offset = self.offset_s
        how = "ahead of" if self.offset_s > 0 else "behind"
        return (
            f"the wall clock is {fmt_duration(abs(self.offset_s))} {how} this session's clock (set, stepped, "
            "or a suspend): the history times readings by the monotonic clock from the session's start"
        )
