"""``python -m tokentop``: the same as the ``tokentop`` command."""

import sys

from tokentop.cli import main

sys.exit(main())
