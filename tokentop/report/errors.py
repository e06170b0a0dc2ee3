"""The one error the report package raises."""

from __future__ import annotations


class SummaryError(Exception):
    """No summary can be made; the message is one line that says why."""
