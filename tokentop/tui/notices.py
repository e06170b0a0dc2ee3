"""What the live view tells the user in words: the message line (snapshot messages, failing
endpoints and GPUs, recent log warnings) and the recent log for the help screen. Plain functions
of the snapshots and the kept log lines. The notifications of changes come from
``tokentop.changes``, which ``record`` and ``export`` share."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from tokentop.model import Snapshot

LOG_SHOWN_S = 30.0  # how long a logged warning stays in the message line
LOG_LINES_IN_HELP = 20

LogEntry = tuple[float, int, str]  # created (wall clock), level, text


def current_messages(latest: Snapshot | None, log_lines: Iterable[LogEntry]) -> tuple[str, ...]:
    """What the message line shows now: the snapshot's own messages, endpoints and GPUs that
    fail, and log warnings from the last ``LOG_SHOWN_S`` seconds."""
    messages = tuple(latest.messages) if latest is not None else ()
    if latest is not None:
        messages += tuple(
            f"{s.sample.name}: {s.sample.error or 'down'}" for s in latest.endpoints if s.sample.status == "error"
        )
        messages += tuple(
            f"GPU {g.sample.index} {g.sample.status}: {g.sample.error or 'no reading'}"
            for g in latest.gpus
            if g.sample.status != "ok"
        )
    newest = latest.t_wall if latest is not None else None
    messages += tuple(
        text
        for created, level, text in log_lines
        if level >= logging.WARNING and (newest is None or newest - created <= LOG_SHOWN_S)
    )
    return messages


def help_log(log_lines: Iterable[LogEntry]) -> tuple[str, ...]:
    """The last ``LOG_LINES_IN_HELP`` log records, timed, for the help screen."""
    return tuple(
        f"{time.strftime('%H:%M:%S', time.localtime(created))} {logging.getLevelName(level)} {text}"
        for created, level, text in list(log_lines)[-LOG_LINES_IN_HELP:]
    )
