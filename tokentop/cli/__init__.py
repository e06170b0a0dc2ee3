"""Commands: the only place argv is read.

``parser`` holds the grammar, ``runtime`` the wiring every command shares (settings, GPU source,
history, signals), and one module per command (``live``, ``record``, ``snapshot``, ``summary``,
``export``) turns parsed options into calls on the library. User mistakes and unusable inputs
end with one plain line on stderr and exit code 2, never a traceback; output that cannot be
written ends with one line and exit code 1, or silently (141) when the reader closed the pipe.
"""

from __future__ import annotations

import importlib
import logging
import sys

from tokentop.cli.output import EXIT_OUTPUT_LOST, EXIT_PIPE_CLOSED, OutputLost, PipeClosed, discard_stdout
from tokentop.cli.parser import build_parser, config_from_args
from tokentop.cli.runtime import UsageError
from tokentop.config import ConfigError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="tokentop: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = config_from_args(args)
        # Imported by name so that only the live view loads Textual (about 0.2 s of start-up).
        command = importlib.import_module(f"tokentop.cli.{args.command or 'live'}")
        return int(command.run(args, config))
    except (ConfigError, UsageError) as exc:
        print(f"tokentop: {exc}", file=sys.stderr)
        return 2
    except OutputLost as exc:  # a full disk, say: data was lost, so say so and fail
        discard_stdout()
        print(f"tokentop: {exc}", file=sys.stderr)
        return EXIT_OUTPUT_LOST
    except PipeClosed:  # ``| head`` read what it wanted: nothing to say
        discard_stdout()
        return EXIT_PIPE_CLOSED
    except KeyboardInterrupt:
        return 130
