"""Every key of the live view and of the fleet view, as data: each app's bindings, its footer and
its help screen are all made from one table, so they cannot disagree. The fleet view's keys are
the live view's where they do the same thing (sorting, pausing, the theme, the graph's span)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from textual.binding import Binding


@dataclass(frozen=True)
class Key:
    keys: str  # Textual key names, comma separated
    display: str  # how the footer and the help screen write it
    action: str | None  # app action; None: handled by the focused table itself
    footer: str  # short word in the footer; "" keeps it to the help screen
    help: str  # one sentence for the help screen


KEYS: tuple[Key, ...] = (
    Key("q", "q", "quit", "quit", "Quit. Sampling stops and the history is closed cleanly."),
    Key("question_mark", "?", "help", "help", "This help: keys, what each column means, current messages."),
    Key("m", "m", "sort_cost", "$/Mtok", "Sort the GPU table by $/Mtok, dearest first; m again: cheapest first."),
    Key("s", "s", "sort_next", "sort", "Sort the GPU table by the next column (its header shows ▼ or ▲)."),
    Key("S", "S", "sort_reverse", "", "Reverse the sort order."),
    Key("up,down", "↑ ↓", None, "", "Select a GPU; the graph and the details follow the selection."),
    Key("w", "w", "next_window", "window", "Graph window: 1 min, 10 min (from memory), 1 h, 24 h (from the history)."),
    Key("g", "g", "toggle_scope", "GPU/host", "Graph the selected GPU or the whole host."),
    Key(
        "d",
        "d",
        "details",
        "details",
        "Details of the selected GPU: processes, clocks, limits, energy so far, price and its source.",
    ),
    Key(
        "P",
        "P",
        "toggle_processes",
        "procs",
        "Show or hide the processes on the GPUs: PID, user, GPU, GPU memory, the engine each belongs to, command.",
    ),
    Key("p", "p", "pause", "pause", "Pause drawing (sampling and the history go on); p again to resume."),
    Key("e", "e", "write_summary", "", "Write the session summary to a file now and say where."),
    Key("t", "t", "toggle_theme", "", "Switch between dark and light colours."),
)


# What the help screen adds to the keys: those of the screens over the live view, and the mouse.
OVERLAY_KEYS: tuple[tuple[str, str], ...] = (
    ("Esc", "Close this screen or the details (any screen over the live view)."),
    ("q", "Quits from any screen, this one included."),
)
MOUSE: tuple[tuple[str, str], ...] = (
    ("click a header", "Sort the GPU table by that column; click it again to reverse the order."),
    ("click a row", "Select that GPU (the graph and the details follow)."),
    ("wheel", "Scroll a table whose rows do not all fit (its last line says how many are hidden)."),
)


def _like_local(keys: str, help: str, footer: str | None = None) -> Key:
    """A live-view key as the fleet view words it: the same key and action, its own help."""
    local = next(k for k in KEYS if k.keys == keys)
    return replace(local, help=help, footer=local.footer if footer is None else footer)


# The fleet view (``tokentop --prometheus URL`` or ``--ssh HOST``): the hosts table, and a host's
# own GPU and engine tables once opened with Enter. "the table" is whichever is on screen.
FLEET_KEYS: tuple[Key, ...] = (
    Key("q", "q", "quit", "quit", "Quit. Polling stops and the source is closed."),
    _like_local("question_mark", "This help: keys, what each column means, current messages."),
    _like_local("m", "Sort the table by $/Mtok, dearest first; m again: cheapest first."),
    _like_local("s", "Sort the table by the next column (its header shows ▼ or ▲)."),
    _like_local("S", "Reverse the sort order."),
    _like_local("up,down", "Select a host (or, in a host, a GPU)."),
    Key(
        "enter",
        "Enter",
        "open_host",
        "open",
        "Open the selected host: its GPUs and engines, as the local view shows them.",
    ),
    Key("escape", "Esc", "close_host", "back", "Back from a host to the fleet."),
    _like_local("w", "Graph span: 1 h, 24 h, 7 d, read from the source's past (the fleet, or the open host)."),
    _like_local("p", "Pause drawing (polling goes on); p again to resume."),
    _like_local("t", "Switch between dark and light colours."),
)
FLEET_MOUSE: tuple[tuple[str, str], ...] = (
    ("click a header", "Sort the table by that column; click it again to reverse the order."),
    ("click a row", "Select that host (or GPU)."),
    ("wheel", "Scroll a table whose rows do not all fit (its last line says how many are hidden)."),
)


def bindings(keys: Sequence[Key] = KEYS) -> list[Binding]:
    """An app's bindings: every key with an action; footer words only where given."""
    out = [
        Binding(k.keys, k.action, k.footer or k.help, show=bool(k.footer), key_display=k.display)
        for k in keys
        if k.action is not None
    ]
    # Ctrl+C quits too (Textual only hints at Ctrl+Q by default): people press it in any top.
    out.append(Binding("ctrl+c", "quit", "quit", show=False, priority=True))
    return out
