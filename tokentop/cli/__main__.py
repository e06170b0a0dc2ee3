"""``python -m tokentop.cli``: the same as the ``tokentop`` command."""

import sys

from tokentop.cli import main

sys.exit(main())
