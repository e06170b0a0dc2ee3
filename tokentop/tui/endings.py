"""How a live view ends when something outside it ends it: the signals and their exit codes.
Without Textual: the first frame (``cli.first_frame``), written before Textual is loaded, ends
on them as the app (``terminal_app``) does."""

from __future__ import annotations

import signal

ENDING_SIGNALS = ((signal.SIGHUP, "hangup", 129), (signal.SIGTERM, "terminated", 143))
