"""The fleet view (``tokentop --prometheus URL``, ``--ssh HOST``): every host of a fleet in one
table, a host's GPUs and engines in the local view's own tables, the source's past as graphs.

``app`` (``FleetApp``), ``host_screen`` (a host opened with Enter), ``help``, ``widgets`` (the
local header, graph and layout, fed with fleet data), ``events`` (messages across threads), and
the parts that need no Textual: ``host_table`` (rows and columns), ``header_parts`` (the
header's lines), ``graph_points`` (a source's past as graph buckets), ``notices`` (the message
line and the notifications). ``FleetApp`` is imported when first asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokentop.tui.fleet.app import FleetApp

__all__ = ["FleetApp"]


def __getattr__(name: str) -> Any:
    if name == "FleetApp":
        from tokentop.tui.fleet.app import FleetApp

        return FleetApp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
