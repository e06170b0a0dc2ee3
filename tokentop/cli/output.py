"""Standard output that can fail: a full disk, a closed pipe (``| head``). Each command writes
through ``write_stdout``; ``main`` turns a failure into one line and an exit code."""

from __future__ import annotations

import os
import sys
from pathlib import Path

EXIT_OUTPUT_LOST = 1
EXIT_NO_OUTPUT_FILE = 2  # as a summary with nothing to show
EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE: what a tool stopped by a closed pipe ends with


class OutputLost(Exception):
    """Standard output could not take what was written; the message says why."""


class PipeClosed(Exception):
    """The reader of standard output went away (``| head``): stop quietly."""


def write_stdout(text: str) -> None:
    """Write and flush, raising ``PipeClosed`` or ``OutputLost`` when it cannot be done."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise PipeClosed from None
    except OSError as exc:
        raise OutputLost(f"cannot write to standard output: {exc.strerror or exc}") from None


def discard_stdout() -> None:
    """Point standard output at /dev/null, so that the flush at exit neither fails again nor
    prints "Exception ignored" about the text still buffered."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real file descriptor (a test's capture): nothing to protect
        pass


def write_output(text: str, path: Path | None) -> int:
    """``text`` to standard output, or to the file at ``path``: 0, or 2 with one line on stderr
    when the file cannot be written (standard output's failures raise as ``write_stdout``'s)."""
    if path is None:
        write_stdout(text)
        return 0
    try:
        path.write_text(text)
    except OSError as exc:
        print(f"tokentop: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_NO_OUTPUT_FILE
    return 0
