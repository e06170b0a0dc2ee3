"""Every key of the live view, as data: the app's bindings, the footer and the help screen are
all made from this one table, so they cannot disagree."""

from __future__ import annotations

from dataclasses import dataclass

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


def bindings() -> list[Binding]:
    """The app's bindings: every key with an action; footer words only where given."""
    out = [
        Binding(k.keys, k.action, k.footer or k.help, show=bool(k.footer), key_display=k.display)
        for k in KEYS
        if k.action is not None
    ]
    # Ctrl+C quits too (Textual only hints at Ctrl+Q by default): people press it in any top.
    out.append(Binding("ctrl+c", "quit", "quit", show=False, priority=True))
    return out
